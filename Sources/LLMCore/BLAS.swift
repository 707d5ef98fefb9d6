import CBackend
import Foundation

/// The one place that calls the GEMM library (ARCHITECTURE.md rule 2): shape preconditions live
/// here, callers pass `Int` sizes and raw pointers. Which library and which of its kernel sets
/// run is `CPU.plan` (cpuid features, `--gemm`, `FINETUNE_ISA`), decided before the first call.
///
/// Threading: the library itself always runs single-threaded and the engine splits large GEMMs
/// across its own threads (`threads`, all cores by default). OpenBLAS's pthread pool busy-waits
/// between calls and oversubscribes the cores as soon as anything else runs in parallel
/// (attention over heads, our elementwise kernels): measured 7× slower training on 2 cores.
public enum BLAS {
    nonisolated(unsafe) private static var width: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Sets the engine's thread count once for the process (0 or negative: all cores).
    public static func setThreads(_ n: Int) {
        width = n > 0 ? n : max(1, ProcessInfo.processInfo.activeProcessorCount)
    }

    /// The library chosen for this process (loaded on first use).
    @inline(__always) static var backend: Int32 {
        if let b = cachedBackend { return b }
        let b: Int32 = CPU.plan.backend == .onednn ? Int32(FT_GEMM_ONEDNN) : Int32(FT_GEMM_OPENBLAS)
        cachedBackend = b
        return b
    }
    nonisolated(unsafe) private static var cachedBackend: Int32?

    /// Threads the engine uses for GEMMs and kernels.
    public static var threads: Int { width }

    /// Runs `body` with the GEMM library's OWN threading at `n` threads (OpenBLAS's pool or
    /// oneDNN's OpenMP team; then back to 1): the reference rate `finetune bench --mode gemm`
    /// compares the engine with. Call `gemm` with `parallel: false` inside, so the engine's split
    /// does not also apply.
    public static func withLibraryThreads<T>(_ n: Int, _ body: () throws -> T) rethrows -> T {
        _ = backend
        ft_library_threads(Int32(max(1, n)))
        defer { ft_library_threads(1) }
        return try body()
    }

    /// Work (m·n·k) below which a GEMM stays on the calling thread.
    static let splitThreshold = 1 << 21

    /// Row-major `C[m,n] = alpha * op(A) * op(B) + beta * C`.
    /// `A` is `[m,k]` (or `[k,m]` when `transA`), `B` is `[k,n]` (or `[n,k]` when `transB`).
    /// `lda/ldb/ldc` default to the dense row strides.
    @inline(__always)
    public static func gemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
        b: UnsafePointer<Float>, ldb: Int? = nil,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil,
        parallel: Bool = true
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
        if m == 1 {
            // One output row (decode: LoRA's x·Aᵀ and t·Bᵀ, attention's q·Kᵀ and p·V over the
            // cache): sgemv streams B once, where sgemm would first pack all of it. With beta 0,
            // C may hold garbage (NaN bit patterns) that a beta-scaling y·0 would keep: clear it.
            if beta == 0 { c.update(repeating: 0, count: n) }
            _ = backend
            ft_sgemv(transB ? 0 : 1, transB ? n : k, transB ? k : n, alpha, b, ldb, a, transA ? lda : 1, beta, c, 1)
            return
        }
        let parts = parallel ? min(width, max(m, n) / 16) : 1
        if parts > 1, m * n * k >= splitThreshold {
            // Split the larger output dimension into contiguous, 16-aligned blocks.
            let splitN = n >= m
            let total = splitN ? n : m
            DispatchQueue.concurrentPerform(iterations: parts) { p in
                let lo = (total * p / parts) & ~15, hi = p == parts - 1 ? total : (total * (p + 1) / parts) & ~15
                guard hi > lo else { return }
                if splitN {
                    let bOff = transB ? lo * ldb : lo
                    sgemm(transA, transB, m, hi - lo, k, alpha, a, lda, b + bOff, ldb, beta, c + lo, ldc)
                } else {
                    let aOff = transA ? lo : lo * lda
                    sgemm(transA, transB, hi - lo, n, k, alpha, a + aOff, lda, b, ldb, beta, c + lo * ldc, ldc)
                }
            }
            return
        }
        sgemm(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    }

    @inline(__always)
    private static func sgemm(_ transA: Bool, _ transB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                              _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                              _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        ft_sgemm(backend, transA ? 1 : 0, transB ? 1 : 0, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    }

    /// `y = alpha * op(A) x + beta * y` with `A` row-major `[m,n]`.
    @inline(__always)
    public static func gemv(
        trans: Bool = false, m: Int, n: Int, alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int? = nil,
        x: UnsafePointer<Float>, beta: Float = 0, y: UnsafeMutablePointer<Float>
    ) {
        if m == 0 || n == 0 { return }
        _ = backend
        ft_sgemv(trans ? 1 : 0, m, n, alpha, a, lda ?? n, x, 1, beta, y, 1)
    }
}
