#include "CKernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

int ft_has_avx2_fma(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline __m256 bf16x8(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// M (1–3) input rows against every weight row: each 16-weight step is loaded and widened
/// once, then multiply-added into two accumulators per input row.
AVX2 static inline __attribute__((always_inline)) void
gemv_bf16_rows(const int M, const uint16_t *w, long n, long k, const float *x, long ldx, float *y, long ldy) {
    for (long j = 0; j < n; j++) {
        const uint16_t *wr = w + j * k;
        __m256 a0[3], a1[3];
        for (int r = 0; r < M; r++) { a0[r] = _mm256_setzero_ps(); a1[r] = _mm256_setzero_ps(); }
        long i = 0;
        for (; i + 16 <= k; i += 16) {
            __m256 w0 = bf16x8(wr + i), w1 = bf16x8(wr + i + 8);
            for (int r = 0; r < M; r++) {
                a0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + r * ldx + i), a0[r]);
                a1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + r * ldx + i + 8), a1[r]);
            }
        }
        for (int r = 0; r < M; r++) {
            float s = hsum(_mm256_add_ps(a0[r], a1[r]));
            for (long t = i; t < k; t++) {
                union { uint32_t u; float f; } c = { (uint32_t)wr[t] << 16 };
                s += x[r * ldx + t] * c.f;
            }
            y[r * ldy + j] = s;
        }
    }
}

AVX2 void ft_gemv_bf16_avx2(const uint16_t *w, long n, long k, const float *x, long m, long ldx, float *y, long ldy) {
    long r = 0;
    for (; r + 3 <= m; r += 3) gemv_bf16_rows(3, w, n, k, x + r * ldx, ldx, y + r * ldy, ldy);
    if (m - r == 2) gemv_bf16_rows(2, w, n, k, x + r * ldx, ldx, y + r * ldy, ldy);
    if (m - r == 1) gemv_bf16_rows(1, w, n, k, x + r * ldx, ldx, y + r * ldy, ldy);
}

#else

int ft_has_avx2_fma(void) { return 0; }

void ft_gemv_bf16_avx2(const uint16_t *w, long n, long k, const float *x, long m, long ldx, float *y, long ldy) {
    (void)w; (void)n; (void)k; (void)x; (void)m; (void)ldx; (void)y; (void)ldy;
    __builtin_trap();  // never called: ft_has_avx2_fma() is 0 here
}

#endif
