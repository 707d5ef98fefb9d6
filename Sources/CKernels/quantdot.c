#include "CKernels.h"
#include "row_groups.h"

#include <math.h>
#include <string.h>

// MARK: - Decode GEMV with 8-bit activations (GEMV.QuantDot.int8)
//
// llama.cpp's way for GGML block weights: each activation row is quantized once per call to 8-bit
// blocks (block_q8_0/q8_1 for the 32-value formats, block_q8_K for the K-quants), then each weight
// block meets the activation block under it in an integer dot product: `vpmaddubsw` (u8 × s8 →
// 16-bit pair sums, never saturating here: codes ≤ 128 against |q| ≤ 127) and `vpmaddwd` on AVX2,
// `vpdpbusd` / `vpdpwssd` on AVX-512 VNNI, exact int32 either way. The f32 work is one multiply-add
// per block (per 256 values for the K-quants) instead of one per weight, and x is read as 1 byte
// per value instead of 4.
//
// The semantics are ggml's (see CKernels.h; the quantizers follow ggml-cpu's x86 code, which is
// what llama.cpp runs on these CPUs), so the results equal a plain evaluation of ggml's formula up
// to f32 summation order. The package builds for baseline x86-64: `_avx2` / `_vnni` functions get
// their instruction sets from target attributes and GEMV.swift calls them only where cpuid says
// they run; the `_scalar` ones are portable C.

// Nothing here may be contracted into an FMA behind our back: the quantizers must round exactly as
// the reference does.
#pragma STDC FP_CONTRACT OFF

#define INLINE static inline __attribute__((always_inline))

enum { Q_Q8_0, Q_Q4_0, Q_Q4_1, Q_Q5_0, Q_Q5_1, Q_Q4_K, Q_Q5_K, Q_Q6_K };

static inline long qblock_bytes(int kind) {
    switch (kind) {
    case Q_Q8_0: return 34;
    case Q_Q4_0: return 18;
    case Q_Q4_1: return 20;
    case Q_Q5_0: return 22;
    case Q_Q5_1: return 24;
    case Q_Q4_K: return 144;
    case Q_Q5_K: return 176;
    default: return 210;  // Q_Q6_K
    }
}

static inline int is_kquant(int kind) { return kind >= Q_Q4_K; }
static inline int has_min(int kind) { return kind == Q_Q4_1 || kind == Q_Q5_1; }

static inline uint16_t ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t ld32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline float from_bits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint32_t to_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/// IEEE half → f32, exact (subnormals, inf, NaN), integer operations only.
static inline float half_to_float(uint16_t h) {
    const uint32_t em = h & 0x7FFFu, sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t bits;
    if (em < 0x0400u) bits = to_bits((float)em * 0x1p-24f);
    else if (em >= 0x7C00u) bits = (em << 13) | 0x7F800000u;
    else bits = (em << 13) + 0x38000000u;
    return from_bits(bits | sign);
}

/// Round-half-even to an integer-valued float, for |v| < 2²²: adding 1.5·2²³ leaves no fraction
/// bits, in the default rounding mode (ggml's `nearest_int` trick; `_mm256_round_ps` gives the same).
static inline float round_even(float v) {
    const float magic = 12582912.0f;
    return (v + magic) - magic;
}

/// `v` rounded to the nearest f16 value (ties to even), as f32: what an f32 → f16 → f32 round trip
/// gives (F16C's `vcvtps2ph` with rounding 0, Swift's `Float(Float16(v))`), without F16C.
static inline float f16_round(float v) {
    const uint32_t u = to_bits(v), sign = u & 0x80000000u;
    const float a = from_bits(u & 0x7FFFFFFFu);
    float r;
    if (a != a) return v;
    if (a >= 65520.0f) r = INFINITY;                                   // rounds past 65504
    else if (a < 0x1p-14f) r = round_even(a * 0x1p24f) * 0x1p-24f;    // f16 subnormal: multiples of 2⁻²⁴
    else {
        uint32_t b = to_bits(a);
        b += 0x0FFFu + ((b >> 13) & 1u);                               // 23 → 10 mantissa bits, ties to even
        r = from_bits(b & ~0x1FFFu);
    }
    return from_bits(to_bits(r) | sign);
}

/// `round_even(v)` as an int8 code, clamped to ±127 (only reached for non-finite input), NaN → 0.
static inline int code8(float v) {
    v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
    return v == v ? (int)round_even(v) : 0;
}

// MARK: Activation quantization

long ft_q8_row_bytes(long k, int superblock) {
    const long bytes = superblock ? 2 * k + 4 * (k / 256) + 2 * (k / 16) : k + 72 * (k / 32);
    return (bytes + 63) & ~63L;
}

INLINE void quantize_q8_32(const float *x, long k, uint8_t *out) {
    const long nb = k / 32;
    int8_t *qs = (int8_t *)out;
    float *d = (float *)(out + k), *s = d + nb;
    int32_t *z = (int32_t *)(s + nb);
    for (long b = 0; b < nb; b++) {
        const float *xb = x + 32 * b;
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) { const float a = fabsf(xb[i]); amax = a > amax ? a : amax; }
        const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        int8_t q[32];
        for (int i = 0; i < 32; i++) q[i] = (int8_t)code8(xb[i] * id);
        int sum = 0;
        for (int i = 0; i < 32; i++) { qs[32 * b + i] = q[i]; sum += q[i]; }
        const float dd = amax / 127.0f;
        d[b] = f16_round(dd);
        s[b] = f16_round(dd * (float)sum);
        for (int l = 0; l < 8; l++) {
            const int g = q[4 * l] + q[4 * l + 1] + q[4 * l + 2] + q[4 * l + 3];
            z[16 * b + l] = -8 * g;
            z[16 * b + 8 + l] = -16 * g;
        }
    }
}

INLINE void quantize_q8_K(const float *x, long k, uint8_t *out) {
    const long nb = k / 256;
    int8_t *qs = (int8_t *)out;
    float *d = (float *)(out + k);
    int16_t *bsums = (int16_t *)(d + nb), *pairs32 = bsums + k / 16;
    for (long b = 0; b < nb; b++) {
        const float *xb = x + 256 * b;
        int8_t *qb = qs + 256 * b;
        float amax = 0.0f;
        for (int i = 0; i < 256; i++) { const float a = fabsf(xb[i]); amax = a > amax ? a : amax; }
        if (amax == 0.0f) {
            d[b] = 0.0f;
            memset(qb, 0, 256);
            for (int g = 0; g < 16; g++) bsums[16 * b + g] = 0;
            for (int i = 0; i < 128; i++) pairs32[128 * b + i] = 0;
            continue;
        }
        float mx = 0.0f;  // the first value of largest magnitude, as ggml's strict `>` scan keeps it
        for (int i = 0; i < 256; i++) if (fabsf(xb[i]) == amax) { mx = xb[i]; break; }
        const float iscale = -127.0f / mx;
        for (int i = 0; i < 256; i++) {
            const int q = code8(iscale * xb[i]);
            qb[i] = (int8_t)(q < 127 ? q : 127);
        }
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += qb[16 * g + i];
            bsums[16 * b + g] = (int16_t)sum;
        }
        for (int i = 0; i < 128; i++) pairs32[128 * b + i] = (int16_t)(32 * (qb[2 * i] + qb[2 * i + 1]));
        d[b] = 1.0f / iscale;
    }
}

void ft_quantize_q8(const float *x, long k, int superblock, void *out) {
    if (superblock) quantize_q8_K(x, k, (uint8_t *)out);
    else quantize_q8_32(x, k, (uint8_t *)out);
}

// MARK: - Portable kernels (scalar C, any CPU)

/// A 32-value block's codes as signed integers in value order (Q4_0 / Q5_0 with their −8 / −16),
/// its scale and its additive min (Q4_1 / Q5_1; else 0).
static inline void codes32_scalar(int kind, const uint8_t *p, int8_t c[32], float *d, float *m) {
    *d = half_to_float(ld16(p));
    *m = has_min(kind) ? half_to_float(ld16(p + 2)) : 0.0f;
    switch (kind) {
    case Q_Q8_0: memcpy(c, p + 2, 32); return;
    case Q_Q4_0: case Q_Q4_1: {
        const uint8_t *q = p + (kind == Q_Q4_0 ? 2 : 4);
        const int bias = kind == Q_Q4_0 ? 8 : 0;
        for (int l = 0; l < 16; l++) { c[l] = (int8_t)((q[l] & 15) - bias); c[l + 16] = (int8_t)((q[l] >> 4) - bias); }
        return;
    }
    default: {  // Q5_0, Q5_1: the fifth bit of value l is bit l of qh
        const int q5_1 = kind == Q_Q5_1;
        const uint32_t qh = ld32(p + (q5_1 ? 4 : 2));
        const uint8_t *q = p + (q5_1 ? 8 : 6);
        const int bias = q5_1 ? 0 : 16;
        for (int l = 0; l < 16; l++) {
            c[l] = (int8_t)(((q[l] & 15) | (((qh >> l) & 1) << 4)) - bias);
            c[l + 16] = (int8_t)(((q[l] >> 4) | (((qh >> (l + 16)) & 1) << 4)) - bias);
        }
        return;
    }
    }
}

/// A K-quant super-block's 256 codes (Q6_K with its −32), a scale per 16 values (sc16), a min per
/// 16 values (mn16; Q6_K none), d and dmin.
static inline void codesK_scalar(int kind, const uint8_t *p, int8_t c[256], int sc16[16], int mn16[16], float *d, float *dmin) {
    if (kind == Q_Q6_K) {
        *d = half_to_float(ld16(p + 208));
        *dmin = 0.0f;
        for (int H = 0; H < 2; H++) {
            const uint8_t *ql = p + 64 * H, *qh = p + 128 + 32 * H;
            int8_t *o = c + 128 * H;
            for (int l = 0; l < 32; l++) {
                o[l] = (int8_t)(((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32);
                o[l + 32] = (int8_t)(((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32);
                o[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
        }
        for (int i = 0; i < 16; i++) { sc16[i] = (int8_t)p[192 + i]; mn16[i] = 0; }
        return;
    }
    *d = half_to_float(ld16(p));
    *dmin = half_to_float(ld16(p + 2));
    const uint8_t *s = p + 4;
    for (int j = 0; j < 8; j++) {
        int sc, mn;
        if (j < 4) { sc = s[j] & 63; mn = s[j + 4] & 63; }
        else { sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4); mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4); }
        sc16[2 * j] = sc16[2 * j + 1] = sc;
        mn16[2 * j] = mn16[2 * j + 1] = mn;
    }
    const uint8_t *qs = p + (kind == Q_Q5_K ? 48 : 16), *qh = p + 16;
    for (int j = 0; j < 4; j++) {
        for (int l = 0; l < 32; l++) {
            int lo = qs[32 * j + l] & 15, hi = qs[32 * j + l] >> 4;
            if (kind == Q_Q5_K) { lo |= ((qh[l] >> (2 * j)) & 1) << 4; hi |= ((qh[l] >> (2 * j + 1)) & 1) << 4; }
            c[64 * j + l] = (int8_t)lo;
            c[64 * j + 32 + l] = (int8_t)hi;
        }
    }
}

static void rows_scalar(int kind, const uint8_t *w, long rb, long n, long k, const uint8_t *xq, long m, long ldxq,
                        float *y, long ldy) {
    if (!is_kquant(kind)) {
        const long nb = k / 32, bb = qblock_bytes(kind);
        for (long j = 0; j < n; j++) {
            for (long r = 0; r < m; r++) {
                const uint8_t *xr = xq + r * ldxq;
                const int8_t *qs = (const int8_t *)xr;
                const float *xd = (const float *)(xr + k), *xs = xd + nb;
                const uint8_t *p = w + j * rb;
                float sum = 0.0f;
                for (long b = 0; b < nb; b++, p += bb) {
                    int8_t c[32];
                    float d, mn;
                    codes32_scalar(kind, p, c, &d, &mn);
                    int isum = 0;
                    for (int l = 0; l < 32; l++) isum += c[l] * qs[32 * b + l];
                    sum += (d * xd[b]) * (float)isum;
                    if (has_min(kind)) sum += mn * xs[b];
                }
                y[r * ldy + j] = sum;
            }
        }
        return;
    }
    const long nb = k / 256, bb = qblock_bytes(kind);
    for (long j = 0; j < n; j++) {
        for (long r = 0; r < m; r++) {
            const uint8_t *xr = xq + r * ldxq;
            const int8_t *qs = (const int8_t *)xr;
            const float *xd = (const float *)(xr + k);
            const int16_t *bsums = (const int16_t *)(xd + nb);
            const uint8_t *p = w + j * rb;
            float sum = 0.0f;
            for (long b = 0; b < nb; b++, p += bb) {
                int8_t c[256];
                int sc16[16], mn16[16];
                float d, dmin;
                codesK_scalar(kind, p, c, sc16, mn16, &d, &dmin);
                int isum = 0, msum = 0;
                for (int g = 0; g < 16; g++) {
                    int t = 0;
                    for (int l = 0; l < 16; l++) t += c[16 * g + l] * qs[256 * b + 16 * g + l];
                    isum += sc16[g] * t;
                    msum += mn16[g] * bsums[16 * b + g];
                }
                sum += (d * xd[b]) * (float)isum;
                if (kind != Q_Q6_K) sum -= (dmin * xd[b]) * (float)msum;
            }
            y[r * ldy + j] = sum;
        }
    }
}

#define Q8_SCALAR(type, kind)                                                                              \
    void ft_gemv_##type##_q8_scalar(const void *w, long rb, long n, long k, const void *xq, long m, long ldxq, \
                                    float *y, long ldy) {                                                  \
        rows_scalar(kind, (const uint8_t *)w, rb, n, k, (const uint8_t *)xq, m, ldxq, y, ldy);              \
    }

Q8_SCALAR(q8_0, Q_Q8_0)
Q8_SCALAR(q4_0, Q_Q4_0)
Q8_SCALAR(q4_1, Q_Q4_1)
Q8_SCALAR(q5_0, Q_Q5_0)
Q8_SCALAR(q5_1, Q_Q5_1)
Q8_SCALAR(q4_K, Q_Q4_K)
Q8_SCALAR(q5_K, Q_Q5_K)
Q8_SCALAR(q6_K, Q_Q6_K)

#if defined(__x86_64__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))

#include "kquant_codes.h"

/// The quantizer compiled for AVX2 (the same operations, so the same results: no FMA is enabled).
__attribute__((target("avx2"))) void ft_quantize_q8_avx2(const float *x, long k, int superblock, void *out) {
    if (superblock) quantize_q8_K(x, k, (uint8_t *)out);
    else quantize_q8_32(x, k, (uint8_t *)out);
}

AVX2 INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 INLINE float hsum4(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// An f16 broadcast to 8 lanes (see kernels.c's `half_broadcast256` for why not `_cvtsh_ss`).
AVX2 INLINE __m256 half8(const uint8_t *p) { return _mm256_cvtph_ps(_mm_set1_epi16((short)ld16(p))); }

/// An f16 in lane 0 of an SSE register (movd: no merge into a live register).
AVX2 INLINE __m128 half1(const uint8_t *p) { return _mm_cvtph_ps(_mm_cvtsi32_si128(ld16(p))); }

/// 0xFF in byte l where bit l of `bits` is set (32 bytes).
AVX2 INLINE __m256i bits_to_bytes32(uint32_t bits) {
    const __m256i spread = _mm256_setr_epi64x(0, 0x0101010101010101LL, 0x0202020202020202LL, 0x0303030303030303LL);
    const __m256i select = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread);
    return _mm256_cmpeq_epi8(_mm256_and_si256(v, select), select);
}

/// A 32-value block's codes as bytes in value order: signed for Q8_0, else unsigned (Q4_0/Q4_1
/// nibbles 0–15, Q5_0/Q5_1 0–31; Q4_0's −8 and Q5_0's −16 come in through x's lane sums `z`).
AVX2 INLINE __m256i codes32_avx2(const int kind, const uint8_t *p) {
    const __m256i low4 = _mm256_set1_epi8(0x0F);
    switch (kind) {
    case Q_Q8_0: return _mm256_loadu_si256((const __m256i *)(p + 2));
    case Q_Q4_0: case Q_Q4_1: {
        const __m128i q = _mm_loadu_si128((const __m128i *)(p + (kind == Q_Q4_0 ? 2 : 4)));
        return _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1), low4);
    }
    default: {  // Q5_0, Q5_1
        const int q5_1 = kind == Q_Q5_1;
        const __m128i q = _mm_loadu_si128((const __m128i *)(p + (q5_1 ? 8 : 6)));
        __m256i c = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1), low4);
        return _mm256_or_si256(c, _mm256_and_si256(bits_to_bytes32(ld32(p + (q5_1 ? 4 : 2))), _mm256_set1_epi8(16)));
    }
    }
}

/// `codes32_avx2` at the VNNI level: Q5_0/Q5_1's fifth bits go in as a byte mask (AVX-512BW/VL).
VNNI INLINE __m256i codes32_vnni(const int kind, const uint8_t *p) {
    if (kind != Q_Q5_0 && kind != Q_Q5_1) return codes32_avx2(kind, p);
    const int q5_1 = kind == Q_Q5_1;
    const __m128i q = _mm_loadu_si128((const __m128i *)(p + (q5_1 ? 8 : 6)));
    const __m256i c = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1),
                                       _mm256_set1_epi8(0x0F));
    return _mm256_mask_add_epi8(c, (__mmask32)ld32(p + (q5_1 ? 4 : 2)), c, _mm256_set1_epi8(16));  // codes < 16: + is |
}

/// `kquant_codes_avx2` for this file's kinds: a sub-block's (Q6_K: group's) 32 unsigned codes.
AVX2 INLINE __m256i kcodes(const int kind, const uint8_t *p, const int s) {
    return kquant_codes_avx2(kind == Q_Q4_K ? KQ_Q4_K : (kind == Q_Q5_K ? KQ_Q5_K : KQ_Q6_K), p, s);
}

/// Q4_K/Q5_K's 6-bit scales and mins of the 12 bytes at `s` (ggml's `get_scale_min_k4`), as
/// 8 int16 each (sub-block order).
AVX2 INLINE void k4_scales(const uint8_t *s, __m128i *sc, __m128i *mn) {
    const uint32_t a0 = ld32(s), a1 = ld32(s + 4), a2 = ld32(s + 8);
    const uint32_t sc_hi = (a2 & 0x0F0F0F0Fu) | (((a0 >> 6) & 0x03030303u) << 4);
    const uint32_t mn_hi = ((a2 >> 4) & 0x0F0F0F0Fu) | (((a1 >> 6) & 0x03030303u) << 4);
    const __m128i v = _mm_setr_epi32((int)(a0 & 0x3F3F3F3Fu), (int)sc_hi, (int)(a1 & 0x3F3F3F3Fu), (int)mn_hi);
    *sc = _mm_cvtepu8_epi16(v);
    *mn = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(v, v));
}

/// `vpshufb` control repeating int16 `lo` over the low 128-bit lane and int16 `hi` over the high one.
AVX2 INLINE __m256i rep16(int lo, int hi) {
    return _mm256_setr_m128i(_mm_set1_epi16((short)(2 * lo | (2 * lo + 1) << 8)), _mm_set1_epi16((short)(2 * hi | (2 * hi + 1) << 8)));
}

// The integer dot steps, AVX2 and VNNI.

/// acc + u8 × s8, four products summed per int32 lane.
AVX2 INLINE __m256i dot_u8s8_avx2(__m256i acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
VNNI INLINE __m256i dot_u8s8_vnni(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }

/// acc + pairs of int16 products summed per int32 lane.
AVX2 INLINE __m256i madd_acc_avx2(__m256i acc, __m256i a, __m256i b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
VNNI INLINE __m256i madd_acc_vnni(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_epi32(acc, a, b); }

/// One 32-value block for M input rows into accumulators `a` of each row. Q8_0's signed codes take
/// ggml's sign trick (|w| unsigned, x carrying w's sign); Q4_0/Q5_0's unsigned codes start each
/// lane's integer dot from x's stored −8·(its four q) (−16· for Q5_0): the format's bias, so every
/// lane holds exactly the Σ (code − bias)·q that ggml's lanes hold.
#define Q8_BLOCK32(ATTR, DOT, CODES)                                                                            \
    ATTR INLINE void block32_##DOT(const int kind, const int M, const int a, const uint8_t *p, long b,             \
                                   const int8_t *const xs[3], const float *const xd[3], const float *const xm[3], \
                                   const int32_t *const xz[3], __m256 acc[3][2], __m128 accm[3][2]) {           \
        const __m256i c = CODES(kind, p);                                                                       \
        const __m256i u = kind == Q_Q8_0 ? _mm256_sign_epi8(c, c) : c;                                          \
        const __m256 dw = half8(p);                                                                             \
        const __m128 mw = has_min(kind) ? half1(p + 2) : _mm_setzero_ps();                                      \
        for (int r = 0; r < M; r++) {                                                                           \
            __m256i xv = _mm256_loadu_si256((const __m256i *)(xs[r] + 32 * b));                                 \
            if (kind == Q_Q8_0) xv = _mm256_sign_epi8(xv, c);                                                   \
            __m256i init = _mm256_setzero_si256();                                                              \
            if (kind == Q_Q4_0 || kind == Q_Q5_0)                                                               \
                init = _mm256_loadu_si256((const __m256i *)(xz[r] + 16 * b + (kind == Q_Q5_0 ? 8 : 0)));        \
            const __m256 scale = _mm256_mul_ps(dw, _mm256_broadcast_ss(xd[r] + b));                            \
            acc[r][a] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(init, u, xv)), scale, acc[r][a]);                \
            if (has_min(kind)) accm[r][a] = _mm_fmadd_ss(mw, _mm_load_ss(xm[r] + b), accm[r][a]);               \
        }                                                                                                       \
    }

/// M (1–3) input rows against 32-value-block weight rows: each block decoded once to 32 code
/// bytes; per row one integer dot (`block32_*`), then (d_w·d_x) times it added in f32. (Reducing
/// four outputs' f32 sums together measured no faster here: the loop waits on the weight stream.) Two accumulators per row (alternate blocks)
/// for one or two rows, so the FMA latency chain does not bound the stream.
#define Q8_ROWS32(ATTR, DOT, CODES)                                                                            \
    Q8_BLOCK32(ATTR, DOT, CODES)                                                                               \
    ATTR INLINE void rows32_##DOT(const int kind, const int M, const uint8_t *w, long rb, long n, long k,        \
                                  const uint8_t *xq, long ldxq, float *y, long ldy) {                          \
        const long nb = k / 32, bb = qblock_bytes(kind);                                                       \
        const int NA = M == 3 ? 1 : 2;                                                                         \
        const int8_t *xs[3];                                                                                   \
        const float *xd[3], *xm[3];                                                                            \
        const int32_t *xz[3];                                                                                  \
        for (int r = 0; r < M; r++) {                                                                          \
            xs[r] = (const int8_t *)(xq + r * ldxq);                                                           \
            xd[r] = (const float *)(xq + r * ldxq + k);                                                        \
            xm[r] = xd[r] + nb;                                                                                \
            xz[r] = (const int32_t *)(xm[r] + nb);                                                             \
        }                                                                                                      \
        for (long j = 0; j < n; j++) {                                                                         \
            const uint8_t *p = w + j * rb;                                                                     \
            __m256 acc[3][2];                                                                                  \
            __m128 accm[3][2];                                                                                 \
            for (int r = 0; r < M; r++) {                                                                      \
                acc[r][0] = acc[r][1] = _mm256_setzero_ps();                                                   \
                accm[r][0] = accm[r][1] = _mm_setzero_ps();                                                    \
            }                                                                                                  \
            long b = 0;                                                                                        \
            if (NA == 2)                                                                                       \
                for (; b + 2 <= nb; b += 2, p += 2 * bb) {                                                     \
                    block32_##DOT(kind, M, 0, p, b, xs, xd, xm, xz, acc, accm);                                \
                    block32_##DOT(kind, M, 1, p + bb, b + 1, xs, xd, xm, xz, acc, accm);                       \
                }                                                                                              \
            for (; b < nb; b++, p += bb) block32_##DOT(kind, M, 0, p, b, xs, xd, xm, xz, acc, accm);            \
            for (int r = 0; r < M; r++) {                                                                      \
                float v = hsum8(_mm256_add_ps(acc[r][0], acc[r][1]));                                          \
                if (has_min(kind)) v += _mm_cvtss_f32(_mm_add_ss(accm[r][0], accm[r][1]));                     \
                y[r * ldy + j] = v;                                                                            \
            }                                                                                                  \
        }                                                                                                      \
    }

/// M (1–3) input rows against K-quant weight rows (k a multiple of 256). Per super-block: each
/// sub-block's 32 unsigned codes once, then per row `vpmaddubsw` against x (16-bit pair sums) and
/// `vpmaddwd`/`vpdpwssd` with the sub-block scale (int16, in every lane), summed in int32 over the
/// super-block: Σ_s sc_s·Σ q_w q_x exactly. Q6_K's −32 comes off each 16-bit pair sum (x's stored
/// 32·(q_2i + q_2i+1)), as ggml does, so every lane holds true products; Q4_K/Q5_K's mins are
/// Σ_s m_s·(bsum_2s + bsum_2s+1). Then (d_w·d_x)·sum − (dmin_w·d_x)·mins in f32.
#define Q8_ROWSK(ATTR, DOT, MADD_ACC)                                                                         \
    ATTR INLINE void rowsK_##DOT(const int kind, const int M, const uint8_t *w, long rb, long n, long k,        \
                                 const uint8_t *xq, long ldxq, float *y, long ldy) {                           \
        const long nb = k / 256, bb = qblock_bytes(kind);                                                      \
        const int q6 = kind == Q_Q6_K, NC = M == 1 ? 4 : (M == 2 ? 2 : 1);                                     \
        const int8_t *xs[3];                                                                                   \
        const float *xd[3];                                                                                    \
        const int16_t *xb[3], *x32[3];                                                                         \
        for (int r = 0; r < M; r++) {                                                                          \
            xs[r] = (const int8_t *)(xq + r * ldxq);                                                           \
            xd[r] = (const float *)(xq + r * ldxq + k);                                                        \
            xb[r] = (const int16_t *)(xd[r] + nb);                                                             \
            x32[r] = xb[r] + k / 16;                                                                           \
        }                                                                                                      \
        for (long j = 0; j < n; j++) {                                                                         \
            const uint8_t *p = w + j * rb;                                                                     \
            __m256 acc[3];                                                                                     \
            __m128 accm[3];                                                                                    \
            for (int r = 0; r < M; r++) { acc[r] = _mm256_setzero_ps(); accm[r] = _mm_setzero_ps(); }          \
            for (long b = 0; b < nb; b++, p += bb) {                                                           \
                __m256i S0, S1 = _mm256_setzero_si256();                                                       \
                __m128i mn = _mm_setzero_si128();                                                              \
                if (q6) {                                                                                      \
                    const __m128i s8 = _mm_loadu_si128((const __m128i *)(p + 192));                             \
                    S0 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(s8));                                   \
                    S1 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_unpackhi_epi64(s8, s8)));           \
                } else {                                                                                       \
                    __m128i sc;                                                                                \
                    k4_scales(p + 4, &sc, &mn);                                                                \
                    S0 = _mm256_broadcastsi128_si256(sc);                                                      \
                }                                                                                              \
                /* NC independent integer chains per row (vpdpwssd's latency would bound one). */             \
                __m256i sumi[3][4];                                                                            \
                for (int r = 0; r < M; r++) for (int i = 0; i < NC; i++) sumi[r][i] = _mm256_setzero_si256();  \
                for (int s = 0; s < 8; s++) {                                                                  \
                    const __m256i c = kcodes(kind, p, s);                                                      \
                    /* Q4_K/Q5_K: scale s in every lane; Q6_K: scales 2s (values 0–15), 2s+1 (16–31). */        \
                    const __m256i scv = q6 ? _mm256_shuffle_epi8(s < 4 ? S0 : S1, rep16(2 * (s % 4), 2 * (s % 4) + 1)) \
                                           : _mm256_shuffle_epi8(S0, rep16(s, s));                            \
                    for (int r = 0; r < M; r++) {                                                              \
                        const __m256i xv = _mm256_loadu_si256((const __m256i *)(xs[r] + 256 * b + 32 * s));    \
                        __m256i p16 = _mm256_maddubs_epi16(c, xv);                                             \
                        if (q6) p16 = _mm256_sub_epi16(p16, _mm256_loadu_si256((const __m256i *)(x32[r] + 128 * b + 16 * s))); \
                        sumi[r][s % NC] = MADD_ACC(sumi[r][s % NC], p16, scv);                                 \
                    }                                                                                          \
                }                                                                                              \
                const __m256 dw = half8(p + (q6 ? 208 : 0));                                                   \
                const __m128 dmin = q6 ? _mm_setzero_ps() : _mm256_castps256_ps128(half8(p + 2));              \
                for (int r = 0; r < M; r++) {                                                                  \
                    const __m256 dx = _mm256_broadcast_ss(xd[r] + b);                                          \
                    __m256i t = sumi[r][0];                                                                    \
                    for (int i = 1; i < NC; i++) t = _mm256_add_epi32(t, sumi[r][i]);                          \
                    acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), _mm256_mul_ps(dw, dx), acc[r]);            \
                    if (!q6) {                                                                                 \
                        const __m256i bs = _mm256_loadu_si256((const __m256i *)(xb[r] + 16 * b));              \
                        const __m128i pairs = _mm_hadd_epi16(_mm256_castsi256_si128(bs), _mm256_extracti128_si256(bs, 1)); \
                        const __m128i mins = _mm_madd_epi16(pairs, mn);                                        \
                        accm[r] = _mm_fmadd_ps(_mm_cvtepi32_ps(mins), _mm_mul_ps(dmin, _mm256_castps256_ps128(dx)), accm[r]); \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
            for (int r = 0; r < M; r++) y[r * ldy + j] = hsum8(acc[r]) - (q6 ? 0.0f : hsum4(accm[r]));         \
        }                                                                                                      \
    }

Q8_ROWS32(AVX2, dot_u8s8_avx2, codes32_avx2)
Q8_ROWS32(VNNI, dot_u8s8_vnni, codes32_vnni)
Q8_ROWSK(AVX2, avx2, madd_acc_avx2)
Q8_ROWSK(VNNI, vnni, madd_acc_vnni)

/// The input rows in groups of three (then two or one), so each group shares the weight decode.
#define Q8_KERNEL(name, ATTR, rows_fn, kind)                                                                 \
    ATTR void name(const void *w, long rb, long n, long k, const void *xq, long m, long ldxq, float *y, long ldy) { \
        FT_ROW_GROUPS(rows_fn, kind, (const uint8_t *)w, rb, n, k, (const uint8_t *)xq, m, ldxq, y, ldy);      \
    }

/// Every 8-bit-activation kernel of one ISA level (`isa`: the name suffix and the rows functions').
#define Q8_KERNELS(isa, ATTR)                                                      \
    Q8_KERNEL(ft_gemv_q8_0_q8_##isa, ATTR, rows32_dot_u8s8_##isa, Q_Q8_0)          \
    Q8_KERNEL(ft_gemv_q4_0_q8_##isa, ATTR, rows32_dot_u8s8_##isa, Q_Q4_0)          \
    Q8_KERNEL(ft_gemv_q4_1_q8_##isa, ATTR, rows32_dot_u8s8_##isa, Q_Q4_1)          \
    Q8_KERNEL(ft_gemv_q5_0_q8_##isa, ATTR, rows32_dot_u8s8_##isa, Q_Q5_0)          \
    Q8_KERNEL(ft_gemv_q5_1_q8_##isa, ATTR, rows32_dot_u8s8_##isa, Q_Q5_1)          \
    Q8_KERNEL(ft_gemv_q4_K_q8_##isa, ATTR, rowsK_##isa, Q_Q4_K)                    \
    Q8_KERNEL(ft_gemv_q5_K_q8_##isa, ATTR, rowsK_##isa, Q_Q5_K)                    \
    Q8_KERNEL(ft_gemv_q6_K_q8_##isa, ATTR, rowsK_##isa, Q_Q6_K)

Q8_KERNELS(avx2, AVX2)  // vpmaddubsw: AVX2 CPUs, and AVX-512 ones without VNNI
Q8_KERNELS(vnni, VNNI)  // vpdpbusd on 256-bit vectors (AVX512-VNNI + VL)

#else  // not x86-64

// Not x86-64: GEMV.swift never selects these (CPU.detectedISA is baseline).
void ft_quantize_q8_avx2(const float *x, long k, int superblock, void *out) { ft_quantize_q8(x, k, superblock, out); }

#define Q8_TRAP(name)                                                                                       \
    void name(const void *w, long rb, long n, long k, const void *xq, long m, long ldxq, float *y, long ldy) { \
        (void)w; (void)rb; (void)n; (void)k; (void)xq; (void)m; (void)ldxq; (void)y; (void)ldy;               \
        __builtin_trap();                                                                                   \
    }
#define Q8_TRAPS(type) Q8_TRAP(ft_gemv_##type##_q8_avx2) Q8_TRAP(ft_gemv_##type##_q8_vnni)
Q8_TRAPS(q8_0)
Q8_TRAPS(q4_0)
Q8_TRAPS(q4_1)
Q8_TRAPS(q5_0)
Q8_TRAPS(q5_1)
Q8_TRAPS(q4_K)
Q8_TRAPS(q5_K)
Q8_TRAPS(q6_K)

#endif
