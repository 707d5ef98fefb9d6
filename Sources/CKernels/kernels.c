#include "CKernels.h"

#include <string.h>

// MARK: - GEMV kernels (decode)
//
// Every kernel has the `ft_gemv_fn` contract: y[r*ldy + j] = Σ_i x[r*ldx + i] · w_j[i] for input
// rows r < m and weight rows j < n, weight row j at `w + j*row_bytes` in its stored dtype. The
// weights are widened in registers to exactly the f32 values the Swift widener / dequantizer
// produces (bf16 and f16 conversions are exact; a block value d·q is exact in f32 because q has at
// most 8 significant bits and d 11; Q4_1/Q5_1's d·q + m is one FMA, i.e. the same single rounding
// as the dequantizer's multiply-then-add), then multiply-added into f32 accumulators: activations
// are never quantized. Results therefore equal widen-then-sgemm up to f32 summation order.
//
// Up to three input rows share each weight load (decode batches a few sequences; more rows go to
// sgemm, see GEMV.maxRows). The package builds for baseline x86-64: each kernel is compiled for
// its instruction set by a function target attribute and GEMV.swift chooses one at run time from
// CPU.isa (cpuid capped by FINETUNE_ISA), so these are only ever called where they run.

#if defined(__x86_64__)
#include <immintrin.h>

/// F16C converts f16 weights and block scales; every AVX2 CPU has it, but a hypervisor may hide
/// it, so GEMV.swift checks it with AVX2 and FMA.
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

#include "kquant_codes.h"
#include "row_groups.h"

/// Element kinds and block formats the shared loops below are specialised for (always constant
/// after inlining, so every switch on them folds away).
enum { K_F32, K_BF16, K_F16, K_Q8_0, K_Q4_0, K_Q4_1, K_Q5_0, K_Q5_1, K_Q4_K, K_Q5_K, K_Q6_K };

static inline long element_bytes(int kind) { return kind == K_F32 ? 4 : 2; }

static inline long block_bytes(int kind) {
    switch (kind) {
    case K_Q8_0: return 34;
    case K_Q4_0: return 18;
    case K_Q4_1: return 20;
    case K_Q5_0: return 22;
    case K_Q5_1: return 24;
    case K_Q4_K: return 144;
    case K_Q5_K: return 176;
    default: return 210;  // K_Q6_K
    }
}

static inline uint16_t load_u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static inline uint32_t load_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

/// bf16 → f32 is exact: the bits become the top half.
static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f; memcpy(&f, &u, 4); return f;
}

// MARK: - AVX2 + FMA (8 lanes)

AVX2 INLINE float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// 8 element weights at `p` widened to f32.
AVX2 INLINE __m256 load8(const int kind, const uint8_t *p) {
    switch (kind) {
    case K_F32: return _mm256_loadu_ps((const float *)p);
    case K_BF16: {
        __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
        return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    }
    default: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));  // K_F16: exact, inf/NaN too
    }
}

/// An f16 (a block scale) broadcast to 8 lanes. Not `_cvtsh_ss`: clang builds its operand with a
/// `vpinsrw` merging into whatever register is free (an accumulator, as it happened), which chains
/// every block's decode to the previous block's FMAs and ran Q4_0 at half speed.
AVX2 INLINE __m256 half_broadcast256(const uint8_t *p) { return _mm256_cvtph_ps(_mm_set1_epi16((short)load_u16(p))); }

AVX2 INLINE float scalar_element(const int kind, const uint8_t *p) {
    switch (kind) {
    case K_F32: { float f; memcpy(&f, p, 4); return f; }
    case K_BF16: return bf16_to_f32(load_u16(p));
    default: return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(load_u16(p))));  // movd: no merge
    }
}

/// The whole 16-weight steps of one element-type weight row for M input rows: each step loaded
/// and widened once, multiply-added into two accumulators per row. Returns where they stop.
AVX2 INLINE long elem_steps16(const int kind, const int M, const uint8_t *wr, long es, long k,
                              const float *x, long ldx, __m256 a0[3], __m256 a1[3]) {
    long i = 0;
    for (; i + 16 <= k; i += 16) {
        __m256 w0 = load8(kind, wr + i * es), w1 = load8(kind, wr + (i + 8) * es);
        for (int r = 0; r < M; r++) {
            a0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * ldx + i), a0[r]);
            a1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + r * ldx + i + 8), a1[r]);
        }
    }
    return i;
}

/// M (1–3) input rows against element-type weight rows: each 16-weight step is loaded and
/// widened once, then multiply-added into two accumulators per input row; the last k % 8 values
/// are scalar (real widths are multiples of 64, so this only runs for odd test sizes).
AVX2 INLINE void elem_rows_avx2(const int kind, const int M, const uint8_t *w, long rb, long n, long k,
                                 const float *x, long ldx, float *y, long ldy) {
    const long es = element_bytes(kind);
    for (long j = 0; j < n; j++) {
        const uint8_t *wr = w + j * rb;
        __m256 a0[3], a1[3];
        for (int r = 0; r < M; r++) { a0[r] = _mm256_setzero_ps(); a1[r] = _mm256_setzero_ps(); }
        long i = elem_steps16(kind, M, wr, es, k, x, ldx, a0, a1);
        if (i + 8 <= k) {
            __m256 w0 = load8(kind, wr + i * es);
            for (int r = 0; r < M; r++) a0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * ldx + i), a0[r]);
            i += 8;
        }
        for (int r = 0; r < M; r++) {
            float s = hsum256(_mm256_add_ps(a0[r], a1[r]));
            for (long t = i; t < k; t++) s += x[r * ldx + t] * scalar_element(kind, wr + t * es);
            y[r * ldy + j] = s;
        }
    }
}

/// Bytes b of a 32-bit value as 16 bytes: 0xFF where bit b of `bits` (b < 16) is set, else 0.
AVX2 INLINE __m128i bits_to_bytes16(uint32_t bits) {
    const __m128i spread = _mm_set_epi64x(0x0101010101010101LL, 0);  // byte 0 → lanes 0–7, byte 1 → 8–15
    const __m128i select = _mm_set1_epi64x((long long)0x8040201008040201ULL);
    __m128i v = _mm_shuffle_epi8(_mm_cvtsi32_si128((int)bits), spread);
    return _mm_cmpeq_epi8(_mm_and_si128(v, select), select);
}

/// A block's 32 codes as int8: values 0–15 in `lo`, 16–31 in `hi` (already minus the format's
/// bias), its scale `d` and additive min `mn` (0 without one), broadcast.
AVX2 INLINE void codes_avx2(const int kind, const uint8_t *p, __m128i *lo, __m128i *hi, __m256 *d, __m256 *mn) {
    *d = half_broadcast256(p);
    *mn = _mm256_setzero_ps();
    const __m128i low4 = _mm_set1_epi8(0x0F);
    switch (kind) {
    case K_Q8_0:
        *lo = _mm_loadu_si128((const __m128i *)(p + 2));
        *hi = _mm_loadu_si128((const __m128i *)(p + 18));
        return;
    case K_Q4_0: case K_Q4_1: {
        __m128i q = _mm_loadu_si128((const __m128i *)(p + (kind == K_Q4_0 ? 2 : 4)));
        *lo = _mm_and_si128(q, low4);
        *hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
        if (kind == K_Q4_0) {
            *lo = _mm_sub_epi8(*lo, _mm_set1_epi8(8));
            *hi = _mm_sub_epi8(*hi, _mm_set1_epi8(8));
        } else {
            *mn = half_broadcast256(p + 2);
        }
        return;
    }
    default: {  // K_Q5_0, K_Q5_1: the fifth bit of value l is bit l of qh
        const int q5_1 = kind == K_Q5_1;
        uint32_t qh = load_u32(p + (q5_1 ? 4 : 2));
        __m128i q = _mm_loadu_si128((const __m128i *)(p + (q5_1 ? 8 : 6)));
        const __m128i sixteen = _mm_set1_epi8(16);
        *lo = _mm_or_si128(_mm_and_si128(q, low4), _mm_and_si128(bits_to_bytes16(qh & 0xFFFF), sixteen));
        *hi = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(q, 4), low4), _mm_and_si128(bits_to_bytes16(qh >> 16), sixteen));
        if (q5_1) {
            *mn = half_broadcast256(p + 2);
        } else {
            *lo = _mm_sub_epi8(*lo, sixteen);
            *hi = _mm_sub_epi8(*hi, sixteen);
        }
        return;
    }
    }
}

/// 8 int8 codes (the low 8 bytes of `q`) → d·q (+ mn, one rounding), exactly the dequantizer's value.
AVX2 INLINE __m256 scale8(const int kind, __m128i q, __m256 d, __m256 mn) {
    __m256 c = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
    return kind == K_Q4_1 || kind == K_Q5_1 ? _mm256_fmadd_ps(c, d, mn) : _mm256_mul_ps(c, d);
}

/// `y[r·ldy + j]` = the sum of input row r's `NA` accumulators, for the M rows.
AVX2 INLINE void store_sums_avx2(__m256 acc[3][4], const int M, const int NA, float *y, long ldy, long j) {
    for (int r = 0; r < M; r++) {
        __m256 s = _mm256_add_ps(acc[r][0], acc[r][1]);
        if (NA == 4) s = _mm256_add_ps(s, _mm256_add_ps(acc[r][2], acc[r][3]));
        y[r * ldy + j] = hsum256(s);
    }
}

/// One block (four decoded vectors) multiply-added for M input rows into accumulators
/// `(base + v) % NA` of each row.
AVX2 INLINE void quant_block_avx2(const int kind, const int M, const int NA, const int base, const uint8_t *p,
                                  const float *xb, long ldx, __m256 acc[3][4]) {
    __m128i lo, hi;
    __m256 d, mn;
    codes_avx2(kind, p, &lo, &hi, &d, &mn);
    __m256 wv[4] = { scale8(kind, lo, d, mn), scale8(kind, _mm_unpackhi_epi64(lo, lo), d, mn),
                     scale8(kind, hi, d, mn), scale8(kind, _mm_unpackhi_epi64(hi, hi), d, mn) };
    for (int v = 0; v < 4; v++)
        for (int r = 0; r < M; r++)
            acc[r][(base + v) % NA] = _mm256_fmadd_ps(wv[v], _mm256_loadu_ps(xb + r * ldx + 8 * v), acc[r][(base + v) % NA]);
}

/// M (1–3) input rows against block-format weight rows (k a multiple of 32): each block is
/// decoded once, then multiply-added per input row. One or two rows keep four accumulators each
/// so the FMA latency chain (one FMA per block per accumulator) does not bound the weight stream;
/// three rows have enough independent chains with two each (16 registers).
AVX2 INLINE void quant_rows_avx2(const int kind, const int M, const uint8_t *w, long rb, long n, long k,
                                 const float *x, long ldx, float *y, long ldy) {
    const int NA = M == 3 ? 2 : 4;
    const long bb = block_bytes(kind), nb = k / 32;
    for (long j = 0; j < n; j++) {
        const uint8_t *p = w + j * rb;
        __m256 acc[3][4];
        for (int r = 0; r < M; r++) for (int a = 0; a < NA; a++) acc[r][a] = _mm256_setzero_ps();
        for (long b = 0; b < nb; b++, p += bb) quant_block_avx2(kind, M, NA, 0, p, x + 32 * b, ldx, acc);
        store_sums_avx2(acc, M, NA, y, ldy, j);
    }
}

// MARK: - K-quants (256-value super-blocks), exact: AVX2

/// Q4_K/Q5_K's eight 6-bit scales and mins (ggml's `get_scale_min_k4`) from the 12 bytes at `s`,
/// as two 8-byte groups: scales (sub-blocks 0–7) in `*sc`, mins in `*mn`, byte i = sub-block i.
static inline void k4_scales_mins(const uint8_t *s, uint64_t *sc, uint64_t *mn) {
    const uint32_t a0 = load_u32(s), a1 = load_u32(s + 4), a2 = load_u32(s + 8);
    const uint32_t sc_hi = (a2 & 0x0F0F0F0Fu) | (((a0 >> 6) & 0x03030303u) << 4);
    const uint32_t mn_hi = ((a2 >> 4) & 0x0F0F0F0Fu) | (((a1 >> 6) & 0x03030303u) << 4);
    *sc = (uint64_t)(a0 & 0x3F3F3F3Fu) | ((uint64_t)sc_hi << 32);
    *mn = (uint64_t)(a1 & 0x3F3F3F3Fu) | ((uint64_t)mn_hi << 32);
}

/// `kquant_codes_avx2` for this file's kinds.
AVX2 INLINE __m256i kcodes_avx2(const int kind, const uint8_t *p, const int s) {
    return kquant_codes_avx2(kind == K_Q4_K ? KQ_Q4_K : (kind == K_Q5_K ? KQ_Q5_K : KQ_Q6_K), p, s);
}

/// Per-sub-block weight scale and additive term of a K-quant super-block, exactly the
/// dequantizer's: Q4_K/Q5_K value = (d·sc)·q − dmin·m (d·sc has ≤ 17 significant bits and q ≤ 5,
/// so (d·sc)·q is exact and one FMA rounds like the dequantizer's multiply-then-subtract);
/// Q6_K value = (d·sc)·(q − 32) with one scale per 16 values (exact product: ≤ 18 + 6 bits).
/// `scale[2s]`, `scale[2s+1]`: values 32s…32s+15 and 32s+16…32s+31; `neg_min[s]`: −dmin·m.
static inline void kscales(const int kind, const uint8_t *p, float d, float dmin, float scale[16], float neg_min[8]) {
    if (kind == K_Q6_K) {
        for (int i = 0; i < 16; i++) scale[i] = d * (float)(int8_t)p[192 + i];
        return;
    }
    uint64_t sc, mn;
    k4_scales_mins(p + 4, &sc, &mn);
    for (int s = 0; s < 8; s++) {
        scale[2 * s] = scale[2 * s + 1] = d * (float)((sc >> (8 * s)) & 0xFF);
        neg_min[s] = -(dmin * (float)((mn >> (8 * s)) & 0xFF));
    }
}

/// 8 unsigned code bytes (the low 8 of `c`) → f32 weights: `scale·c + neg_min`, or for Q6_K
/// `scale·(c − 32)`.
AVX2 INLINE __m256 kvalues8(const int kind, __m128i c, __m256 scale, __m256 neg_min) {
    if (kind == K_Q6_K) {
        __m256 v = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(c), _mm256_set1_epi32(32)));
        return _mm256_mul_ps(v, scale);
    }
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(c)), scale, neg_min);
}

/// M (1–3) input rows against K-quant weight rows (k a multiple of 256): each 32-value sub-block is
/// decoded once into four 8-lane f32 vectors, then multiply-added per input row (accumulators as
/// `quant_rows_avx2`).
AVX2 INLINE void kquant_rows_avx2(const int kind, const int M, const uint8_t *w, long rb, long n, long k,
                                  const float *x, long ldx, float *y, long ldy) {
    const int NA = M == 3 ? 2 : 4;
    const long nb = k / 256, bb = block_bytes(kind);
    for (long j = 0; j < n; j++) {
        const uint8_t *p = w + j * rb;
        __m256 acc[3][4];
        for (int r = 0; r < M; r++) for (int a = 0; a < NA; a++) acc[r][a] = _mm256_setzero_ps();
        for (long b = 0; b < nb; b++, p += bb) {
            float scale[16], neg_min[8];
            if (kind == K_Q6_K) kscales(kind, p, _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(load_u16(p + 208)))), 0, scale, neg_min);
            else kscales(kind, p, _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(load_u16(p)))),
                         _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(load_u16(p + 2)))), scale, neg_min);
            const float *xb = x + 256 * b;
            for (int s = 0; s < 8; s++) {
                const __m256i c = kcodes_avx2(kind, p, s);
                const __m128i lo = _mm256_castsi256_si128(c), hi = _mm256_extracti128_si256(c, 1);
                const __m256 s0 = _mm256_set1_ps(scale[2 * s]), s1 = _mm256_set1_ps(scale[2 * s + 1]);
                const __m256 nm = kind == K_Q6_K ? _mm256_setzero_ps() : _mm256_set1_ps(neg_min[s]);
                __m256 wv[4] = { kvalues8(kind, lo, s0, nm), kvalues8(kind, _mm_unpackhi_epi64(lo, lo), s0, nm),
                                 kvalues8(kind, hi, s1, nm), kvalues8(kind, _mm_unpackhi_epi64(hi, hi), s1, nm) };
                for (int v = 0; v < 4; v++)
                    for (int r = 0; r < M; r++)
                        acc[r][v % NA] = _mm256_fmadd_ps(wv[v], _mm256_loadu_ps(xb + r * ldx + 32 * s + 8 * v), acc[r][v % NA]);
            }
        }
        store_sums_avx2(acc, M, NA, y, ldy, j);
    }
}

// MARK: - AVX-512 (element types 8 lanes with masked tails; block formats 16 lanes)

/// 8 element weights at `p` widened to f32; `mask` selects the lanes read (the rest are 0 and not
/// touched in memory, so a row's tail never reads past the tensor).
AVX512 INLINE __m256 load8_masked(const int kind, const uint8_t *p, __mmask8 mask) {
    switch (kind) {
    case K_F32: return _mm256_maskz_loadu_ps(mask, p);
    case K_BF16: return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_maskz_loadu_epi16(mask, p)), 16));
    default: return _mm256_cvtph_ps(_mm_maskz_loadu_epi16(mask, p));  // K_F16: exact, inf/NaN too
    }
}

/// M (1–3) input rows against element-type weight rows at the AVX-512 level: the AVX2 loop
/// (16 weights per step, two accumulators per input row) with the last k % 16 values in masked
/// 8-lane steps instead of scalar code. 8 lanes, not 16, because these kernels are bound by the
/// weight stream, and on the Zen 4 here 512-bit vectors streamed slower: a plain f32 read loop
/// ran 22.5 GB/s with 64-byte loads against 25.8 with 32-byte ones on one core, and decode's
/// shapes (SmolLM2-135M, one thread) took f32 / f16 GEMVs ~15% / ~25% longer with 16 lanes (the
/// f16 cause not isolated); bf16 was level. On older Intel parts 512-bit code also lowers the
/// clock, for no gain in a memory-bound loop. Block formats decode more per byte and keep 16.
AVX512 INLINE void elem_rows_avx512(const int kind, const int M, const uint8_t *w, long rb, long n, long k,
                                    const float *x, long ldx, float *y, long ldy) {
    const long es = element_bytes(kind);
    for (long j = 0; j < n; j++) {
        const uint8_t *wr = w + j * rb;
        __m256 a0[3], a1[3];
        for (int r = 0; r < M; r++) { a0[r] = _mm256_setzero_ps(); a1[r] = _mm256_setzero_ps(); }
        long i = elem_steps16(kind, M, wr, es, k, x, ldx, a0, a1);
        for (; i < k; i += 8) {
            const long left = k - i;
            const __mmask8 mask = left >= 8 ? 0xFF : (__mmask8)((1u << left) - 1);
            __m256 w0 = load8_masked(kind, wr + i * es, mask);
            for (int r = 0; r < M; r++) a0[r] = _mm256_fmadd_ps(w0, _mm256_maskz_loadu_ps(mask, x + r * ldx + i), a0[r]);
        }
        for (int r = 0; r < M; r++) y[r * ldy + j] = hsum256(_mm256_add_ps(a0[r], a1[r]));
    }
}

/// An f16 (a block scale) broadcast to 16 lanes (see `half_broadcast256`).
AVX512 INLINE __m512 half_broadcast512(const uint8_t *p) { return _mm512_cvtph_ps(_mm256_set1_epi16((short)load_u16(p))); }

/// A block's 32 weights as two 16-lane vectors (values 0–15, 16–31), exactly the dequantizer's.
AVX512 INLINE void block_avx512(const int kind, const uint8_t *p, __m512 *w0, __m512 *w1) {
    const __m512 d = half_broadcast512(p);
    const __m128i low4 = _mm_set1_epi8(0x0F);
    __m128i lo, hi;
    switch (kind) {
    case K_Q8_0:
        lo = _mm_loadu_si128((const __m128i *)(p + 2));
        hi = _mm_loadu_si128((const __m128i *)(p + 18));
        break;
    case K_Q4_0: case K_Q4_1: {
        __m128i q = _mm_loadu_si128((const __m128i *)(p + (kind == K_Q4_0 ? 2 : 4)));
        lo = _mm_and_si128(q, low4);
        hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
        if (kind == K_Q4_0) { lo = _mm_sub_epi8(lo, _mm_set1_epi8(8)); hi = _mm_sub_epi8(hi, _mm_set1_epi8(8)); }
        break;
    }
    default: {  // K_Q5_0, K_Q5_1: qh's bits are byte masks directly (AVX-512BW/VL)
        const int q5_1 = kind == K_Q5_1;
        uint32_t qh = load_u32(p + (q5_1 ? 4 : 2));
        __m128i q = _mm_loadu_si128((const __m128i *)(p + (q5_1 ? 8 : 6)));
        const __m128i sixteen = _mm_set1_epi8(16);
        lo = _mm_and_si128(q, low4);
        hi = _mm_and_si128(_mm_srli_epi16(q, 4), low4);
        lo = _mm_mask_add_epi8(lo, (__mmask16)(qh & 0xFFFF), lo, sixteen);  // codes < 16: + is |
        hi = _mm_mask_add_epi8(hi, (__mmask16)(qh >> 16), hi, sixteen);
        if (!q5_1) { lo = _mm_sub_epi8(lo, sixteen); hi = _mm_sub_epi8(hi, sixteen); }
        break;
    }
    }
    __m512 c0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), c1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi));
    if (kind == K_Q4_1 || kind == K_Q5_1) {
        const __m512 mn = half_broadcast512(p + 2);
        *w0 = _mm512_fmadd_ps(c0, d, mn);
        *w1 = _mm512_fmadd_ps(c1, d, mn);
    } else {
        *w0 = _mm512_mul_ps(c0, d);
        *w1 = _mm512_mul_ps(c1, d);
    }
}

/// `y[r·ldy + j]` = the sum of input row r's `NA` accumulators, for the M rows.
AVX512 INLINE void store_sums_avx512(__m512 acc[3][4], const int M, const int NA, float *y, long ldy, long j) {
    for (int r = 0; r < M; r++) {
        __m512 s = _mm512_add_ps(acc[r][0], acc[r][1]);
        if (NA == 4) s = _mm512_add_ps(s, _mm512_add_ps(acc[r][2], acc[r][3]));
        y[r * ldy + j] = _mm512_reduce_add_ps(s);
    }
}

/// One block (two decoded vectors) multiply-added for M input rows into accumulators
/// `(base + v) % NA` of each row.
AVX512 INLINE void quant_block_avx512(const int kind, const int M, const int NA, const int base, const uint8_t *p,
                                      const float *xb, long ldx, __m512 acc[3][4]) {
    __m512 wv[2];
    block_avx512(kind, p, &wv[0], &wv[1]);
    for (int r = 0; r < M; r++) {
        const float *xr = xb + r * ldx;
        acc[r][base % NA] = _mm512_fmadd_ps(wv[0], _mm512_loadu_ps(xr), acc[r][base % NA]);
        acc[r][(base + 1) % NA] = _mm512_fmadd_ps(wv[1], _mm512_loadu_ps(xr + 16), acc[r][(base + 1) % NA]);
    }
}

/// M (1–3) input rows against block-format weight rows (k a multiple of 32): each block decoded
/// once into two vectors, multiply-added per input row. One row takes two blocks per step into
/// four accumulators (one FMA per block per accumulator would otherwise bound the stream by FMA
/// latency); more rows are independent chains already.
AVX512 INLINE void quant_rows_avx512(const int kind, const int M, const uint8_t *w, long rb, long n, long k,
                                     const float *x, long ldx, float *y, long ldy) {
    const int NA = M == 1 ? 4 : 2;
    const long bb = block_bytes(kind), nb = k / 32;
    for (long j = 0; j < n; j++) {
        const uint8_t *p = w + j * rb;
        __m512 acc[3][4];
        for (int r = 0; r < M; r++) for (int a = 0; a < NA; a++) acc[r][a] = _mm512_setzero_ps();
        long b = 0;
        if (NA == 4) {
            for (; b + 2 <= nb; b += 2, p += 2 * bb) {
                quant_block_avx512(kind, M, NA, 0, p, x + 32 * b, ldx, acc);
                quant_block_avx512(kind, M, NA, 2, p + bb, x + 32 * (b + 1), ldx, acc);
            }
        }
        for (; b < nb; b++, p += bb) quant_block_avx512(kind, M, NA, 0, p, x + 32 * b, ldx, acc);
        store_sums_avx512(acc, M, NA, y, ldy, j);
    }
}

/// M (1–3) input rows against K-quant weight rows at the AVX-512 level: each 32-value sub-block
/// decoded once into two 16-lane f32 vectors (the same exact values as `kquant_rows_avx2`), then
/// multiply-added per input row; one row alternates two accumulator pairs across sub-blocks.
AVX512 INLINE void kquant_rows_avx512(const int kind, const int M, const uint8_t *w, long rb, long n, long k,
                                      const float *x, long ldx, float *y, long ldy) {
    const int NA = M == 1 ? 4 : 2;
    const long nb = k / 256, bb = block_bytes(kind);
    float scale[16], neg_min[8];  // of the current super-block
    for (long j = 0; j < n; j++) {
        const uint8_t *p = w + j * rb;
        __m512 acc[3][4];
        for (int r = 0; r < M; r++) for (int a = 0; a < NA; a++) acc[r][a] = _mm512_setzero_ps();
        for (long b = 0; b < nb; b++, p += bb) {
            if (kind == K_Q6_K) kscales(kind, p, _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(load_u16(p + 208)))), 0, scale, neg_min);
            else kscales(kind, p, _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(load_u16(p)))),
                         _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(load_u16(p + 2)))), scale, neg_min);
            for (int s = 0; s < 8; s++) {
                const float *xs = x + 256 * b + 32 * s;
                const __m256i c = kcodes_avx2(kind, p, s);
                __m512i c0 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(c));
                __m512i c1 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(c, 1));
                const __m512 s0 = _mm512_set1_ps(scale[2 * s]), s1 = _mm512_set1_ps(scale[2 * s + 1]);
                __m512 wv[2];
                if (kind == K_Q6_K) {
                    const __m512i b32 = _mm512_set1_epi32(32);
                    wv[0] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c0, b32)), s0);
                    wv[1] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c1, b32)), s1);
                } else {
                    const __m512 nm = _mm512_set1_ps(neg_min[s]);
                    wv[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c0), s0, nm);
                    wv[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c1), s1, nm);
                }
                const int base = NA == 4 ? 2 * (s & 1) : 0;
                for (int v = 0; v < 2; v++)
                    for (int r = 0; r < M; r++)
                        acc[r][base + v] = _mm512_fmadd_ps(wv[v], _mm512_loadu_ps(xs + r * ldx + 16 * v), acc[r][base + v]);
            }
        }
        store_sums_avx512(acc, M, NA, y, ldy, j);
    }
}

// MARK: - Entry points

/// The input rows in groups of three (then two or one), so each group shares the weight loads.
#define GEMV_KERNEL(name, attr, rows_fn, kind)                                                       \
    attr void name(const void *w, long rb, long n, long k, const float *x, long m, long ldx,          \
                   float *y, long ldy) {                                                              \
        FT_ROW_GROUPS(rows_fn, kind, (const uint8_t *)w, rb, n, k, x, m, ldx, y, ldy);               \
    }

/// Every exact kernel of one ISA level (`isa`: the name suffix, `ATTR`: its target attribute).
#define GEMV_KERNELS(isa, ATTR)                                           \
    GEMV_KERNEL(ft_gemv_f32_##isa, ATTR, elem_rows_##isa, K_F32)          \
    GEMV_KERNEL(ft_gemv_bf16_##isa, ATTR, elem_rows_##isa, K_BF16)        \
    GEMV_KERNEL(ft_gemv_f16_##isa, ATTR, elem_rows_##isa, K_F16)          \
    GEMV_KERNEL(ft_gemv_q8_0_##isa, ATTR, quant_rows_##isa, K_Q8_0)       \
    GEMV_KERNEL(ft_gemv_q4_0_##isa, ATTR, quant_rows_##isa, K_Q4_0)       \
    GEMV_KERNEL(ft_gemv_q4_1_##isa, ATTR, quant_rows_##isa, K_Q4_1)       \
    GEMV_KERNEL(ft_gemv_q5_0_##isa, ATTR, quant_rows_##isa, K_Q5_0)       \
    GEMV_KERNEL(ft_gemv_q5_1_##isa, ATTR, quant_rows_##isa, K_Q5_1)       \
    GEMV_KERNEL(ft_gemv_q4_K_##isa, ATTR, kquant_rows_##isa, K_Q4_K)      \
    GEMV_KERNEL(ft_gemv_q5_K_##isa, ATTR, kquant_rows_##isa, K_Q5_K)      \
    GEMV_KERNEL(ft_gemv_q6_K_##isa, ATTR, kquant_rows_##isa, K_Q6_K)

GEMV_KERNELS(avx2, AVX2)
GEMV_KERNELS(avx512, AVX512)

#else

// Not x86-64: GEMV.swift never selects these (CPU.detectedISA is baseline).
#define GEMV_KERNEL(name)                                                                             \
    void name(const void *w, long rb, long n, long k, const float *x, long m, long ldx, float *y, long ldy) { \
        (void)w; (void)rb; (void)n; (void)k; (void)x; (void)m; (void)ldx; (void)y; (void)ldy;           \
        __builtin_trap();                                                                             \
    }

GEMV_KERNEL(ft_gemv_f32_avx2)
GEMV_KERNEL(ft_gemv_bf16_avx2)
GEMV_KERNEL(ft_gemv_f16_avx2)
GEMV_KERNEL(ft_gemv_q8_0_avx2)
GEMV_KERNEL(ft_gemv_q4_0_avx2)
GEMV_KERNEL(ft_gemv_q4_1_avx2)
GEMV_KERNEL(ft_gemv_q5_0_avx2)
GEMV_KERNEL(ft_gemv_q5_1_avx2)
GEMV_KERNEL(ft_gemv_q4_K_avx2)
GEMV_KERNEL(ft_gemv_q5_K_avx2)
GEMV_KERNEL(ft_gemv_q6_K_avx2)
GEMV_KERNEL(ft_gemv_f32_avx512)
GEMV_KERNEL(ft_gemv_bf16_avx512)
GEMV_KERNEL(ft_gemv_f16_avx512)
GEMV_KERNEL(ft_gemv_q8_0_avx512)
GEMV_KERNEL(ft_gemv_q4_0_avx512)
GEMV_KERNEL(ft_gemv_q4_1_avx512)
GEMV_KERNEL(ft_gemv_q5_0_avx512)
GEMV_KERNEL(ft_gemv_q5_1_avx512)
GEMV_KERNEL(ft_gemv_q4_K_avx512)
GEMV_KERNEL(ft_gemv_q5_K_avx512)
GEMV_KERNEL(ft_gemv_q6_K_avx512)

#endif
