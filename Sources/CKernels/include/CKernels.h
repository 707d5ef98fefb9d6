#ifndef FINETUNE_CKERNELS_H
#define FINETUNE_CKERNELS_H

#include <stdint.h>

/// Decode GEMV over weights in their stored dtype: for input rows `r < m` and weight rows `j < n`,
/// `y[r*ldy + j] = Σ_{i<k} x[r*ldx + i] · w_j[i]`, weight row `j` at `(const char *)w + j*row_bytes`.
/// Each weight is read once and widened in registers to exactly the f32 value the widener or
/// dequantizer gives (activations stay f32). Element types (f32, bf16, f16) take any `k`; block
/// formats (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) need `k` a multiple of 32, K-quants (Q4_K, Q5_K, Q6_K)
/// a multiple of 256.
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
FT_GEMV_DECL(ft_gemv_q4_K_avx2)
FT_GEMV_DECL(ft_gemv_q5_K_avx2)
FT_GEMV_DECL(ft_gemv_q6_K_avx2)

FT_GEMV_DECL(ft_gemv_f32_avx512)
FT_GEMV_DECL(ft_gemv_bf16_avx512)
FT_GEMV_DECL(ft_gemv_f16_avx512)
FT_GEMV_DECL(ft_gemv_q8_0_avx512)
FT_GEMV_DECL(ft_gemv_q4_0_avx512)
FT_GEMV_DECL(ft_gemv_q4_1_avx512)
FT_GEMV_DECL(ft_gemv_q5_0_avx512)
FT_GEMV_DECL(ft_gemv_q5_1_avx512)
FT_GEMV_DECL(ft_gemv_q4_K_avx512)
FT_GEMV_DECL(ft_gemv_q5_K_avx512)
FT_GEMV_DECL(ft_gemv_q6_K_avx512)

#undef FT_GEMV_DECL

/// Decode GEMV with 8-bit activations (llama.cpp's `ggml_vec_dot_<type>_q8_*`): each input row is
/// quantized once per call (`ft_quantize_q8`), then every weight block meets the activation block
/// under it in an exact integer dot product, scaled once per block in f32.
///
/// Quantized activation rows (`ft_q8_row_bytes(k, superblock)` bytes each, a multiple of 64):
///   superblock 0 (32-value blocks; ggml's block_q8_0, and block_q8_1's s, for Q8_0, Q4_0, Q5_0,
///   Q4_1, Q5_1 weights): int8 qs[k] | float d[k/32] | float s[k/32] | int32 z[k/32][2][8]
///     d = f16(amax/127), q = round-half-even(x · (127/amax)) (0 where amax is 0), s = f16(amax/127 · Σq):
///     ggml-cpu's x86 `quantize_row_q8_0` / `quantize_row_q8_1` (the f16 values are stored as f32);
///     z[b][0][l] = −8·(q[32b+4l] + … + q[32b+4l+3]), z[b][1][l] = twice that (the AVX kernels'
///     per-lane start for Q4_0's and Q5_0's code bias).
///   superblock 1 (256-value blocks, ggml's block_q8_K, for Q4_K, Q5_K, Q6_K weights):
///   int8 qs[k] | float d[k/256] | int16 bsums[k/16] | int16 pairs32[k/2]
///     max = the first x of largest |x|, iscale = −127/max, q = min(127, round-half-even(iscale·x)),
///     d = 1/iscale, bsums = Σq per 16 values; all zero where max is 0 (`quantize_row_q8_K_ref`);
///     pairs32[i] = 32·(q[2i] + q[2i+1]) (Q6_K's −32 per 16-bit pair sum, as ggml's AVX2 code).
/// Values of x·id outside ±127 (only for non-finite or subnormal-amax input) clamp to ±127, NaN → 0.
long ft_q8_row_bytes(long k, int superblock);
/// Quantizes one row of `k` values (a multiple of 32, or of 256 for `superblock`) into `out`
/// (`ft_q8_row_bytes` bytes). The `_avx2` variant (AVX2 only; same results) is for AVX2 CPUs.
void ft_quantize_q8(const float *x, long k, int superblock, void *out);
void ft_quantize_q8_avx2(const float *x, long k, int superblock, void *out);

/// `y[r*ldy + j] = Σ_blocks` of weight row `j` (at `w + j*row_bytes`) against quantized input row
/// `r` (at `(const char *)xq + r*ldxq`), for r < m, j < n, with ggml's per-block arithmetic:
///   Q8_0/Q4_0/Q5_0: (d_w·d_x)·Σ q_w q_x          (q_w signed: Q4_0 nibble − 8, Q5_0 5-bit − 16)
///   Q4_1/Q5_1:      (d_w·d_x)·Σ q_w q_x + m_w·s_x
///   Q4_K/Q5_K:      (d_w·d_x)·Σ_s sc_s Σ q_w q_x − (dmin_w·d_x)·Σ_s m_s Σ q_x   (per 256 values)
///   Q6_K:           (d_w·d_x)·Σ_g sc_g Σ (q_w − 32) q_x
/// Integer sums are exact; only the f32 accumulation order differs from ggml's.
/// `_scalar`: portable C (any CPU); `_avx2`: AVX2+FMA+F16C (`vpmaddubsw` + `vpmaddwd`);
/// `_vnni`: AVX-512 F/BW/VL/DQ + VNNI (`vpdpbusd`, `vpdpwssd` on 256-bit vectors).
typedef void (*ft_gemv_q8_fn)(const void *w, long row_bytes, long n, long k, const void *xq, long m, long ldxq,
                              float *y, long ldy);

#define FT_GEMV_Q8_DECL(name) \
    void name(const void *w, long row_bytes, long n, long k, const void *xq, long m, long ldxq, float *y, long ldy);
#define FT_GEMV_Q8_DECLS(type) \
    FT_GEMV_Q8_DECL(ft_gemv_##type##_q8_scalar) FT_GEMV_Q8_DECL(ft_gemv_##type##_q8_avx2) FT_GEMV_Q8_DECL(ft_gemv_##type##_q8_vnni)

FT_GEMV_Q8_DECLS(q8_0)
FT_GEMV_Q8_DECLS(q4_0)
FT_GEMV_Q8_DECLS(q4_1)
FT_GEMV_Q8_DECLS(q5_0)
FT_GEMV_Q8_DECLS(q5_1)
FT_GEMV_Q8_DECLS(q4_K)
FT_GEMV_Q8_DECLS(q5_K)
FT_GEMV_Q8_DECLS(q6_K)

#undef FT_GEMV_Q8_DECLS
#undef FT_GEMV_Q8_DECL

#endif
