#ifndef FINETUNE_CKERNELS_H
#define FINETUNE_CKERNELS_H

#include <stdint.h>

/// Nonzero when this CPU runs AVX2 and FMA, i.e. the `_avx2` kernels below may be called.
/// The package itself builds for baseline x86-64; these kernels are compiled for AVX2+FMA
/// only (function target attributes) and chosen at run time.
int ft_has_avx2_fma(void);

/// `y[r*ldy + j] = Σ_i x[r*ldx + i] · bf16(w[j*k + i])` for `r < m`, `j < n`: each bf16 weight
/// is read once and widened in registers (exactly: bf16 is the top half of an f32).
void ft_gemv_bf16_avx2(const uint16_t *w, long n, long k, const float *x, long m, long ldx,
                       float *y, long ldy);

#endif
