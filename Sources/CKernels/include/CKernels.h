#ifndef FINETUNE_CKERNELS_H
#define FINETUNE_CKERNELS_H

#include <stdint.h>

/// Decode GEMV over weights in their stored dtype: for input rows `r < m` and weight rows `j < n`,
/// `y[r*ldy + j] = Σ_{i<k} x[r*ldx + i] · w_j[i]`, weight row `j` at `(const char *)w + j*row_bytes`.
/// Each weight is read once and widened in registers to exactly the f32 value the widener or
/// dequantizer gives (activations stay f32). Element types (f32, bf16, f16) take any `k`; block
/// formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) need `k` a multiple of 32.
///
/// The package builds for baseline x86-64: the `_avx2` kernels are compiled for AVX2+FMA+F16C and
/// the `_avx512` ones for AVX-512 F/BW/VL/DQ, via function target attributes. The caller chooses
/// them from the CPU's features (GEMV.swift, after `CPU.isa`); elsewhere they trap.
typedef void (*ft_gemv_fn)(const void *w, long row_bytes, long n, long k, const float *x, long m, long ldx,
                           float *y, long ldy);

#define FT_GEMV_DECL(name) \
    void name(const void *w, long row_bytes, long n, long k, const float *x, long m, long ldx, float *y, long ldy);

FT_GEMV_DECL(ft_gemv_f32_avx2)
FT_GEMV_DECL(ft_gemv_bf16_avx2)
FT_GEMV_DECL(ft_gemv_f16_avx2)
FT_GEMV_DECL(ft_gemv_q8_0_avx2)
FT_GEMV_DECL(ft_gemv_q4_0_avx2)
FT_GEMV_DECL(ft_gemv_q4_1_avx2)
FT_GEMV_DECL(ft_gemv_q5_0_avx2)
FT_GEMV_DECL(ft_gemv_q5_1_avx2)

FT_GEMV_DECL(ft_gemv_f32_avx512)
FT_GEMV_DECL(ft_gemv_bf16_avx512)
FT_GEMV_DECL(ft_gemv_f16_avx512)
FT_GEMV_DECL(ft_gemv_q8_0_avx512)
FT_GEMV_DECL(ft_gemv_q4_0_avx512)
FT_GEMV_DECL(ft_gemv_q4_1_avx512)
FT_GEMV_DECL(ft_gemv_q5_0_avx512)
FT_GEMV_DECL(ft_gemv_q5_1_avx512)

#undef FT_GEMV_DECL

#endif
