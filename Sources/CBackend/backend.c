// The GEMM libraries, loaded at run time so that the engine decides, from the CPU's features,
// which kernels they run: OpenBLAS picks its kernel set from a table of CPU models in its
// load-time constructor (0.3.21 runs SSE3 "Prescott" kernels on an AVX-512 Xeon it does not
// know), so it must be told before it loads; oneDNN picks from cpuid itself and takes a cap.
#define _GNU_SOURCE
#include "CBackend.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

void ft_cpu_detect(ft_cpu_t *o) {
    memset(o, 0, sizeof *o);
    unsigned int a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return;
    unsigned int maxLeaf = a;
    memcpy(o->vendor, &b, 4); memcpy(o->vendor + 4, &d, 4); memcpy(o->vendor + 8, &c, 4);
    __get_cpuid(1, &a, &b, &c, &d);
    int fam = (a >> 8) & 0xf, model = (a >> 4) & 0xf;
    if (fam == 0xf) fam += (a >> 20) & 0xff;
    if (fam == 0x6 || fam >= 0xf) model |= ((a >> 16) & 0xf) << 4;
    o->family = fam; o->model = model; o->stepping = a & 0xf;
    o->sse42 = (c >> 20) & 1;
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
    o->os_avx = (xcr0 & 0x6) == 0x6;                   // XMM and YMM state
    o->os_avx512 = o->os_avx && (xcr0 & 0xe0) == 0xe0;  // opmask, ZMM_Hi256, Hi16_ZMM
    o->os_amx = (xcr0 & 0x60000) == 0x60000;            // XTILECFG, XTILEDATA
    o->avx = avx && o->os_avx; o->fma = fma && o->os_avx; o->f16c = f16c && o->os_avx;
    if (maxLeaf >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        o->avx2 = ((b >> 5) & 1) && o->os_avx;
        if (o->os_avx512) {
            o->avx512f = (b >> 16) & 1; o->avx512dq = (b >> 17) & 1; o->avx512cd = (b >> 28) & 1;
            o->avx512bw = (b >> 30) & 1; o->avx512vl = (b >> 31) & 1;
            o->avx512_vnni = (c >> 11) & 1; o->avx512_fp16 = (d >> 23) & 1;
        }
        if (o->os_amx) { o->amx_bf16 = (d >> 22) & 1; o->amx_tile = (d >> 24) & 1; o->amx_int8 = (d >> 25) & 1; }
        __cpuid_count(7, 1, a, b, c, d);
        o->avx_vnni = ((a >> 4) & 1) && o->os_avx;
        o->avx512_bf16 = ((a >> 5) & 1) && o->os_avx512;
    }
    __get_cpuid(0x80000000, &a, &b, &c, &d);
    if (a >= 0x80000004) {
        unsigned int r[12];
        for (unsigned int i = 0; i < 3; i++) __get_cpuid(0x80000002 + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
        memcpy(o->brand, r, 48);
        o->brand[48] = 0;
    }
}
#else
void ft_cpu_detect(ft_cpu_t *o) { memset(o, 0, sizeof *o); }
#endif

// MARK: - OpenBLAS

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef void (*setthreads_fn)(int);
typedef char *(*corename_fn)(void);

static sgemm_fn ob_sgemm;
static sgemv_fn ob_sgemv;
static setthreads_fn ob_set_threads;
static corename_fn ob_corename;

enum { RowMajor = 101, NoTrans = 111, Trans = 112 };

static void *must_sym(void *h, const char *lib, const char *name, char *err, int errlen) {
    void *p = dlsym(h, name);
    if (!p && err) snprintf(err, errlen, "%s has no symbol %s", lib, name);
    return p;
}

int ft_openblas_load(const char *coretype, char *err, int errlen) {
    const char *lib = "libopenblas.so.0";
    int set = 0;
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (coretype && (!user || !*user)) { setenv("OPENBLAS_CORETYPE", coretype, 1); set = 1; }
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (set) unsetenv("OPENBLAS_CORETYPE");  // children (python, mpirun ranks) decide for themselves
    if (!h) { snprintf(err, errlen, "cannot load %s (%s): install libopenblas0 (Debian) or the openblas runtime", lib, dlerror()); return -1; }
    if (!(ob_sgemm = (sgemm_fn)must_sym(h, lib, "cblas_sgemm", err, errlen))) return -1;
    if (!(ob_sgemv = (sgemv_fn)must_sym(h, lib, "cblas_sgemv", err, errlen))) return -1;
    if (!(ob_set_threads = (setthreads_fn)must_sym(h, lib, "openblas_set_num_threads", err, errlen))) return -1;
    if (!(ob_corename = (corename_fn)must_sym(h, lib, "openblas_get_corename", err, errlen))) return -1;
    ob_set_threads(1);
    return 0;
}

const char *ft_openblas_corename(void) { return ob_corename ? ob_corename() : ""; }

static int dn_threads = 1;  // oneDNN's OpenMP team size for the next calls (ft_library_threads)

void ft_library_threads(int n) {
    if (ob_set_threads) ob_set_threads(n);
    dn_threads = n < 1 ? 1 : n;
}

// MARK: - oneDNN

typedef int (*dnnl_sgemm_fn)(char, char, int64_t, int64_t, int64_t, float, const float *, int64_t,
                             const float *, int64_t, float, float *, int64_t);
typedef int (*dnnl_isa_set_fn)(int);
typedef int (*dnnl_isa_get_fn)(void);
typedef void (*omp_threads_fn)(int);

static dnnl_sgemm_fn dn_sgemm;
static dnnl_isa_get_fn dn_isa;
static omp_threads_fn omp_set_threads;
static __thread int omp_team;  // the OpenMP team size this thread last set (0: never)

int ft_onednn_load(int max_isa, char *err, int errlen) {
    const char *lib = "libdnnl.so.2";
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) { snprintf(err, errlen, "cannot load %s (%s): install libdnnl2 (Debian) or choose --gemm openblas", lib, dlerror()); return -1; }
    dnnl_isa_set_fn set;
    if (!(dn_sgemm = (dnnl_sgemm_fn)must_sym(h, lib, "dnnl_sgemm", err, errlen))) return -1;
    if (!(set = (dnnl_isa_set_fn)must_sym(h, lib, "dnnl_set_max_cpu_isa", err, errlen))) return -1;
    if (!(dn_isa = (dnnl_isa_get_fn)must_sym(h, lib, "dnnl_get_effective_cpu_isa", err, errlen))) return -1;
    if (!(omp_set_threads = (omp_threads_fn)must_sym(h, "libgomp (oneDNN's OpenMP)", "omp_set_num_threads", err, errlen))) return -1;
    if (max_isa && set(max_isa) != 0) { snprintf(err, errlen, "oneDNN refused the ISA cap 0x%x", max_isa); return -1; }
    return 0;
}

int ft_onednn_isa(void) { return dn_isa ? dn_isa() : -1; }

// MARK: - Calls

void ft_sgemm(int backend, int transA, int transB, long m, long n, long k, float alpha,
              const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc) {
    if (backend == FT_GEMM_ONEDNN) {
        // Each engine thread calls with an OpenMP team of one: no second thread pool spinning
        // against the engine's on the same cores (a team of N only inside bench's reference).
        if (omp_team != dn_threads) { omp_set_threads(dn_threads); omp_team = dn_threads; }
        dn_sgemm(transA ? 'T' : 'N', transB ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
    ob_sgemm(RowMajor, transA ? Trans : NoTrans, transB ? Trans : NoTrans, (int)m, (int)n, (int)k,
             alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

void ft_sgemv(int trans, long m, long n, float alpha, const float *a, long lda,
              const float *x, long incx, float beta, float *y, long incy) {
    ob_sgemv(RowMajor, trans ? Trans : NoTrans, (int)m, (int)n, alpha, a, (int)lda, x, (int)incx, beta, y, (int)incy);
}
