#ifndef FINETUNE_CBACKEND_H
#define FINETUNE_CBACKEND_H

#include <stdint.h>

/// What cpuid (and XGETBV: what the OS saves on a context switch) says this CPU can run.
/// A feature counts only when the OS also enables its register state, so a guest whose
/// hypervisor hides the AVX-512 state reports no AVX-512 even if the CPU has it.
typedef struct {
    char vendor[13];
    char brand[49];
    int family, model, stepping;
    int sse42, avx, avx2, fma, f16c;
    int avx512f, avx512dq, avx512bw, avx512vl, avx512cd;
    int avx512_bf16, avx512_vnni, avx512_fp16, avx_vnni;
    int amx_tile, amx_bf16, amx_int8;
    int os_avx, os_avx512, os_amx;
} ft_cpu_t;

/// Fills `out` from cpuid (x86-64); zeroes it elsewhere.
void ft_cpu_detect(ft_cpu_t *out);

/// Loads OpenBLAS (libopenblas.so.0) with `coretype` forced (OpenBLAS reads OPENBLAS_CORETYPE
/// once, in its load-time constructor; NULL leaves its own choice). A user's own
/// OPENBLAS_CORETYPE wins. Returns 0, or -1 with a message in `err`. Call once.
int ft_openblas_load(const char *coretype, char *err, int errlen);
/// The kernel set OpenBLAS runs ("Haswell", "SkylakeX", …); "" before loading.
const char *ft_openblas_corename(void);
/// The library's OWN thread count for later `ft_sgemm` calls (OpenBLAS's pool, or oneDNN's
/// OpenMP team): 1 except while `bench --mode gemm` measures the library's own threading.
void ft_library_threads(int n);

/// Loads oneDNN (libdnnl.so.2) and caps its kernels at `max_isa` (a dnnl_cpu_isa_t value;
/// 0 = all the CPU has). Returns 0, or -1 with a message in `err`. Call once.
int ft_onednn_load(int max_isa, char *err, int errlen);
/// oneDNN's effective ISA (dnnl_cpu_isa_t), or -1 before loading.
int ft_onednn_isa(void);

enum { FT_GEMM_OPENBLAS = 0, FT_GEMM_ONEDNN = 1 };

/// Row-major C[m,n] = alpha·op(A)·op(B) + beta·C on one thread of the caller's, with the
/// backend's own threading off (the engine splits large GEMMs over its threads).
void ft_sgemm(int backend, int transA, int transB, long m, long n, long k, float alpha,
              const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc);

/// Row-major y = alpha·op(A)·x + beta·y (OpenBLAS), A is [m,n].
void ft_sgemv(int trans, long m, long n, float alpha, const float *a, long lda,
              const float *x, long incx, float beta, float *y, long incy);

#endif
