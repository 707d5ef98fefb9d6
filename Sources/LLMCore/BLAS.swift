import COpenBLAS

/// The one place that talks to OpenBLAS (ARCHITECTURE.md rule 2): `Int32` conversions and
/// shape preconditions live here, callers pass `Int` sizes and raw pointers.
public enum BLAS {
    /// Sets OpenBLAS's thread count once for the process (0 or negative: leave the default).
    public static func setThreads(_ n: Int) {
        if n > 0 { openblas_set_num_threads(Int32(n)) }
    }

    /// The thread count OpenBLAS will use.
    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// Row-major `C[m,n] = alpha * op(A) * op(B) + beta * C`.
    /// `A` is `[m,k]` (or `[k,m]` when `transA`), `B` is `[k,n]` (or `[n,k]` when `transB`).
    /// `lda/ldb/ldc` default to the dense row strides.
    @inline(__always)
    public static func gemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
        b: UnsafePointer<Float>, ldb: Int? = nil,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "gemm: negative size")
        if m == 0 || n == 0 { return }
        if k == 0 {
            // BLAS leaves C scaled by beta; make that explicit so beta == 0 clears garbage.
            let ldcv = ldc ?? n
            for i in 0..<m { for j in 0..<n { c[i * ldcv + j] = beta == 0 ? 0 : beta * c[i * ldcv + j] } }
            return
        }
        let lda = lda ?? (transA ? m : k)
        let ldb = ldb ?? (transB ? k : n)
        let ldc = ldc ?? n
        cblas_sgemm(
            CblasRowMajor,
            transA ? CblasTrans : CblasNoTrans,
            transB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// `y = alpha * op(A) x + beta * y` with `A` row-major `[m,n]`.
    @inline(__always)
    public static func gemv(
        trans: Bool = false, m: Int, n: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int? = nil,
        x: UnsafePointer<Float>, beta: Float = 0, y: UnsafeMutablePointer<Float>
    ) {
        if m == 0 || n == 0 { return }
        cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), alpha, a,
                    Int32(lda ?? n), x, 1, beta, y, 1)
    }
}
