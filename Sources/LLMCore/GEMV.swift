import CKernels
import Foundation

// MARK: - GEMV over stored weights (decode)
//
// Decoding one token multiplies a handful of activation rows by every weight matrix once, so it
// is bound by how fast the weights stream from memory, not by FLOPs. Widening a bf16 matrix into
// f32 scratch and calling sgemm reads 2 bytes, writes 4 and reads 4 again per weight (and
// OpenBLAS packs B even for m = 1); here each weight is read once, in its stored dtype, and
// converted in registers (llama.cpp's `ggml_vec_dot_*` idea, with f32 activations).
//
// Codegen notes (the package builds for baseline x86-64: SSE2, no FMA/F16C). Swift's SIMD
// operations reach LLVM mostly as per-lane code that the SLP vectorizer re-packs; it reliably
// does so for 4-lane vectors where each accumulator takes ONE product per step, and falls back to
// scalar shuffles for trees or chains of vector adds. So every kernel here uses `SIMD4`, eight
// independent accumulators (one per vector slot of a 32-value block), and decoders made of
// uniform shifts, masks and int→float conversions (checked with `perf annotate`: packed
// `pslld/pand/cvtdq2ps/mulps/addps`, ~10 GB/s per core for bf16).
//
// A 32-value block decodes to eight `SIMD4<Float>` whose lanes are not in value order (e.g. a
// 32-bit lane holds bf16 values 2i and 2i+1); the activations are permuted ONCE per call into
// the same order ("packed x"), so the dot product is a plain lane-wise multiply-add. Decoded
// weights are exactly the widener's values; results equal widen-then-sgemm up to float32
// summation order (tests: 1e-5 of Σ|x·w|). GGML block rows at this (baseline) level are
// dequantized one row at a time by GGMLQuant's `dequantize` — the one Swift decoder of the block
// formats, bit-exact with ggml — into L1-resident scratch, then multiplied as f32.
//
// On AVX2 and AVX-512 CPUs (`CPU.isa`: cpuid capped by FINETUNE_ISA) f32, bf16, f16, Q8_0, Q4_0,
// Q4_1, Q5_0 and Q5_1 go to the C kernels in CKernels instead (`ft_gemv_<dtype>_<isa>`): 8- or
// 16-lane FMA on weights widened in registers to the same exact values, x read as is (no packing).
// On the Zen 4 here (SmolLM2-135M's projections, 2 threads) f32 and bf16 were already bound by
// the weight stream (~22–28 GB/s of ~31) and stay there; f16 and the block formats, which this
// Swift code decodes at 2–10 GB/s, run 2–4× faster. The K-quants (Q4_K, Q5_K, Q6_K) have C
// kernels of the same kind (`ft_gemv_q4_K_avx2` …), exact as well.
//
// `QuantDot.int8` (`GEMV.quantDot`, FINETUNE_QUANT_DOT) is llama.cpp's way for the GGML block
// formats instead: each activation row is quantized once per call to 8-bit blocks exactly as ggml
// does (q8_0/q8_1 for the 32-value formats, q8_K for the K-quants), and each weight block meets its
// activation block in an integer dot product (`ft_gemv_<type>_q8_<scalar|avx2|vnni>`: VNNI where
// cpuid has it at the AVX-512 level, vpmaddubsw at AVX2, portable C at baseline). Not exact: x is
// rounded to 8 bits per 32 (256) values, as in llama.cpp; f32/bf16/f16 weights are unaffected.

/// One weight matrix `[n, k]` in its stored dtype (row-major, rows `dtype.storageBytes(k)`
/// bytes apart), and where its outputs go: `y[r·ldy + j]` for input row `r`, output `j`.
public struct GEMVTarget {
    public let weights: UnsafeRawPointer
    public let dtype: DType
    public let outFeatures: Int
    public let y: UnsafeMutablePointer<Float>
    public let ldy: Int

    public init(weights: UnsafeRawPointer, dtype: DType, outFeatures: Int, y: UnsafeMutablePointer<Float>, ldy: Int? = nil) {
        self.weights = weights; self.dtype = dtype; self.outFeatures = outFeatures
        self.y = y; self.ldy = ldy ?? outFeatures
    }
}

public enum GEMV {
    /// Input rows up to which `linear` multiplies the stored weights directly; above it the
    /// weights are widened once and sgemm's compute rate (AVX2/FMA in OpenBLAS, against SSE2
    /// mul+add here) wins. Measured on one core, bf16 [1536, 576] × 60: rows 1 / 2 / 4 / 8 took
    /// 12 / 22 / 44 / 52 ms here against 44 / 43 / 33 / 35 ms widened + sgemm (with the Swift
    /// kernels; not re-measured with the C kernels, which also take up to three rows per load).
    public static let maxRows = 3

    /// Input rows up to which a dtype with a C kernel at the current level (`CPU.isa`) is
    /// multiplied in its stored dtype. The C kernels take the rows three at a time over each
    /// thread's cache-sized slice of weight rows, so the weights stream from memory once for
    /// all rows, where widen + sgemm writes and re-reads an f32 copy of every weight each step.
    public static let maxRowsCKernel = 16

    /// Input rows up to which `linear` reads this dtype's stored weights directly.
    public static func rowLimit(_ dtype: DType) -> Int {
        cKernel(dtype, CPU.isa) != nil ? maxRowsCKernel : maxRows
    }

    /// Which kernels `multiply` uses. `.best` follows `CPU.isa` (the CPU's level capped by
    /// FINETUNE_ISA), so a capped run measures what a smaller CPU would run; the explicit levels
    /// exist for tests and benchmarks, which compare every set this CPU runs
    /// (`availableKernelSets`). `.portable` is the baseline-x86-64 Swift code everywhere.
    public enum Kernels: Sendable, Hashable, CustomStringConvertible {
        case best, avx512, avx2, portable

        /// The instruction-set level these kernels run at.
        public var level: ISALevel {
            switch self {
            case .best: CPU.isa
            case .avx512: .avx512
            case .avx2: .avx2
            case .portable: .baseline
            }
        }

        public var description: String {
            switch self { case .best: "best"; case .avx512: "avx512"; case .avx2: "avx2"; case .portable: "portable" }
        }
    }

    /// How `multiply` treats the activations against GGML block weights (Q8_0, Q4_0, Q4_1, Q5_0,
    /// Q5_1, Q4_K, Q5_K, Q6_K; f32/bf16/f16 weights always take f32 activations).
    public enum QuantDot: String, CaseIterable, Sendable, CustomStringConvertible {
        /// f32 activations against weights widened in registers to their exact dequantized values.
        case exact
        /// ggml's: activations quantized to 8-bit blocks once per call, integer dot products per block.
        case int8

        public var description: String { rawValue }
    }

    /// A bad `FINETUNE_QUANT_DOT` value (bad input: exit 2, as `CPUConfigError`).
    public enum QuantDotError: Error, CustomStringConvertible, Equatable {
        case badValue(source: String, value: String)

        public var description: String {
            switch self { case .badValue(let s, let v): "\(s) '\(v)': expected \(QuantDot.allCases.map(\.rawValue).joined(separator: " or "))" }
        }
    }

    /// What the environment asks for: `FINETUNE_QUANT_DOT` (nil when unset or empty).
    public static func environmentQuantDot(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> QuantDot? {
        guard let v = env["FINETUNE_QUANT_DOT"], !v.isEmpty else { return nil }
        guard let q = QuantDot(rawValue: v.lowercased()) else { throw QuantDotError.badValue(source: "FINETUNE_QUANT_DOT", value: v) }
        return q
    }

    private static let quantDotLock = NSLock()
    nonisolated(unsafe) private static var quantDotSetting: QuantDot?

    /// The activation precision `multiply` uses for GGML block weights when the call does not
    /// name one: set once at startup (before decoding starts), else `FINETUNE_QUANT_DOT`, else
    /// `.exact`. A bad environment value stops the process with its message on first use (a
    /// command line should validate it first with `environmentQuantDot`).
    public static var quantDot: QuantDot {
        get {
            quantDotLock.lock(); defer { quantDotLock.unlock() }
            if let q = quantDotSetting { return q }
            let q: QuantDot
            do { q = try environmentQuantDot() ?? .exact } catch { fatalError("\(error)") }
            quantDotSetting = q
            return q
        }
        set {
            quantDotLock.lock(); defer { quantDotLock.unlock() }
            quantDotSetting = newValue
        }
    }

    /// The explicit kernel sets this CPU runs, widest first (`.portable` always).
    public static var availableKernelSets: [Kernels] {
        var sets: [Kernels] = []
        if CPU.detectedISA >= .avx512 { sets.append(.avx512) }
        if CPU.detectedISA >= .avx2 { sets.append(.avx2) }
        sets.append(.portable)
        return sets
    }

    /// A C kernel (the `ft_gemv_fn` contract in CKernels.h).
    typealias CKernel = @convention(c) (UnsafeRawPointer?, Int, Int, Int, UnsafePointer<Float>?, Int, Int,
                                        UnsafeMutablePointer<Float>?, Int) -> Void

    /// The C kernels are compiled with F16C (f16 weights, block scales) next to AVX2/AVX-512;
    /// every such CPU has it, but a hypervisor could hide it.
    static let hasF16C = CPU.features.f16c != 0

    /// The C kernel for `dtype` at `level`, or nil where the Swift code runs (baseline).
    static func cKernel(_ dtype: DType, _ level: ISALevel) -> CKernel? {
        guard hasF16C else { return nil }
        switch level {
        case .baseline: return nil
        case .avx2:
            switch dtype {
            case .f32: return ft_gemv_f32_avx2
            case .bf16: return ft_gemv_bf16_avx2
            case .f16: return ft_gemv_f16_avx2
            case .q8_0: return ft_gemv_q8_0_avx2
            case .q4_0: return ft_gemv_q4_0_avx2
            case .q4_1: return ft_gemv_q4_1_avx2
            case .q5_0: return ft_gemv_q5_0_avx2
            case .q5_1: return ft_gemv_q5_1_avx2
            case .q4_K: return ft_gemv_q4_K_avx2
            case .q5_K: return ft_gemv_q5_K_avx2
            case .q6_K: return ft_gemv_q6_K_avx2
            default: return nil
            }
        case .avx512:
            switch dtype {
            case .f32: return ft_gemv_f32_avx512
            case .bf16: return ft_gemv_bf16_avx512
            case .f16: return ft_gemv_f16_avx512
            case .q8_0: return ft_gemv_q8_0_avx512
            case .q4_0: return ft_gemv_q4_0_avx512
            case .q4_1: return ft_gemv_q4_1_avx512
            case .q5_0: return ft_gemv_q5_0_avx512
            case .q5_1: return ft_gemv_q5_1_avx512
            case .q4_K: return ft_gemv_q4_K_avx512
            case .q5_K: return ft_gemv_q5_K_avx512
            case .q6_K: return ft_gemv_q6_K_avx512
            default: return nil
            }
        }
    }

    /// An 8-bit-activation kernel (the `ft_gemv_q8_fn` contract in CKernels.h).
    typealias Q8Kernel = @convention(c) (UnsafeRawPointer?, Int, Int, Int, UnsafeRawPointer?, Int, Int,
                                         UnsafeMutablePointer<Float>?, Int) -> Void

    /// Whether the AVX-512 level runs the VNNI kernels (`vpdpbusd`/`vpdpwssd` on 256-bit vectors:
    /// AVX512-VNNI with AVX512VL, which the level implies); otherwise it runs the AVX2 ones.
    static let hasVNNI = CPU.features.avx512_vnni != 0

    /// The 8-bit-activation kernel for a GGML block dtype at `level` (nil for other dtypes):
    /// VNNI at AVX-512 where cpuid has it, vpmaddubsw at AVX2 (and at AVX-512 without VNNI),
    /// portable C at baseline or where F16C is hidden.
    static func int8Kernel(_ dtype: DType, _ level: ISALevel) -> Q8Kernel? {
        let set = level >= .avx2 && hasF16C ? (level == .avx512 && hasVNNI ? 2 : 1) : 0
        func pick(_ k: (Q8Kernel, Q8Kernel, Q8Kernel)) -> Q8Kernel { set == 2 ? k.2 : (set == 1 ? k.1 : k.0) }
        switch dtype {
        case .q8_0: return pick((ft_gemv_q8_0_q8_scalar, ft_gemv_q8_0_q8_avx2, ft_gemv_q8_0_q8_vnni))
        case .q4_0: return pick((ft_gemv_q4_0_q8_scalar, ft_gemv_q4_0_q8_avx2, ft_gemv_q4_0_q8_vnni))
        case .q4_1: return pick((ft_gemv_q4_1_q8_scalar, ft_gemv_q4_1_q8_avx2, ft_gemv_q4_1_q8_vnni))
        case .q5_0: return pick((ft_gemv_q5_0_q8_scalar, ft_gemv_q5_0_q8_avx2, ft_gemv_q5_0_q8_vnni))
        case .q5_1: return pick((ft_gemv_q5_1_q8_scalar, ft_gemv_q5_1_q8_avx2, ft_gemv_q5_1_q8_vnni))
        case .q4_K: return pick((ft_gemv_q4_K_q8_scalar, ft_gemv_q4_K_q8_avx2, ft_gemv_q4_K_q8_vnni))
        case .q5_K: return pick((ft_gemv_q5_K_q8_scalar, ft_gemv_q5_K_q8_avx2, ft_gemv_q5_K_q8_vnni))
        case .q6_K: return pick((ft_gemv_q6_K_q8_scalar, ft_gemv_q6_K_q8_avx2, ft_gemv_q6_K_q8_vnni))
        default: return nil
        }
    }

    /// Which 8-bit activation blocks a dtype's int8 kernel reads: 32 values (q8_0/q8_1) or 256 (q8_K).
    enum Q8Format: Int, CaseIterable { case blocks32, superblocks }

    static func q8Format(_ dtype: DType) -> Q8Format { dtype.blockElements == 256 ? .superblocks : .blocks32 }

    /// Whether `multiply` reads this dtype (the float types and every GGML block format).
    public static func supports(_ dtype: DType) -> Bool {
        dtype == .f32 || dtype == .bf16 || dtype == .f16 || dtype.isQuantized
    }

    /// Packed-activation orders; each dtype's Swift decoder produces one (GGML block rows are
    /// dequantized to f32 first, so they read x as is).
    enum Layout: Int, CaseIterable { case plain, pairs }

    static func layout(_ dtype: DType) -> Layout {
        switch dtype {
        case .bf16, .f16: return .pairs
        default: return .plain
        }
    }

    /// Bytes streamed per parallel work item (about); smaller calls stay on this thread.
    static let itemBytes = 64 << 10

    /// `y = x[m, k] · Wᵀ` for every target (all share `x`): each weight is read once per call in
    /// its stored dtype, and the output rows of all targets are split across the engine's threads
    /// (`BLAS.threads`). `k` must be a whole number of blocks for block formats. `quantDot` (nil:
    /// `GEMV.quantDot`) chooses f32 or 8-bit activations against GGML block weights; with `.int8`
    /// each row of x is quantized once here, for all targets.
    public static func multiply(x: UnsafePointer<Float>, rows m: Int, inFeatures k: Int, ldx: Int? = nil,
                                targets: [GEMVTarget], kernels: Kernels = .best, quantDot: QuantDot? = nil) {
        let level = kernels.level
        let int8 = (quantDot ?? Self.quantDot) == .int8
        precondition(level <= CPU.detectedISA, "GEMV: \(kernels) kernels need \(level); this CPU runs \(CPU.detectedISA)")
        let ldx = ldx ?? k
        precondition(m >= 0 && k >= 0 && ldx >= k, "GEMV: bad sizes m \(m), k \(k), ldx \(ldx)")
        if m == 0 || targets.isEmpty { return }
        var needed = [Bool](repeating: false, count: Layout.allCases.count)
        // Each target's C kernel (nil: the Swift code).
        var cKernels: [CKernel?] = []
        cKernels.reserveCapacity(targets.count)
        // Each target's 8-bit-activation kernel (int8 mode, block dtypes), and the q8 rows they read.
        var q8Kernels: [Q8Kernel?] = []
        q8Kernels.reserveCapacity(targets.count)
        var q8Needed = [Bool](repeating: false, count: Q8Format.allCases.count)
        for t in targets {
            precondition(supports(t.dtype), "GEMV: unsupported weight dtype \(t.dtype.rawValue)")
            precondition(k % t.dtype.blockElements == 0, "GEMV(\(t.dtype.rawValue)): k = \(k) is not a whole number of blocks")
            precondition(m == 1 || t.ldy >= t.outFeatures, "GEMV: ldy \(t.ldy) < n \(t.outFeatures)")
            let q8 = int8 ? int8Kernel(t.dtype, level) : nil
            q8Kernels.append(q8)
            if q8 != nil { q8Needed[q8Format(t.dtype).rawValue] = true; cKernels.append(nil); continue }
            cKernels.append(cKernel(t.dtype, level))
            if cKernels.last! == nil { needed[layout(t.dtype).rawValue] = true }  // C kernels read x as is
        }
        if k == 0 {
            for t in targets { for r in 0..<m { (t.y + r * t.ldy).update(repeating: 0, count: t.outFeatures) } }
            return
        }
        let nb = k / 32, packed = m * nb * 32
        // One scratch: the packed copy of x the bf16/f16 Swift decoders read.
        var offset = [Int](repeating: 0, count: Layout.allCases.count)
        var total = 0
        if needed[Layout.pairs.rawValue] { offset[Layout.pairs.rawValue] = total; total += packed }
        // Then the quantized rows (int8 mode), 64-byte aligned, `q8RowBytes` apart.
        var q8RowBytes = [Int](repeating: 0, count: Q8Format.allCases.count)
        var q8Offset = [Int](repeating: 0, count: Q8Format.allCases.count)  // bytes from the aligned base
        var q8Bytes = 0
        for f in Q8Format.allCases where q8Needed[f.rawValue] {
            q8RowBytes[f.rawValue] = ft_q8_row_bytes(k, Int32(f.rawValue))
            q8Offset[f.rawValue] = q8Bytes
            q8Bytes += m * q8RowBytes[f.rawValue]
        }
        let q8Base = total
        if q8Bytes > 0 { total += (q8Bytes + 63) / 4 + 16 }
        // Work items: contiguous output-row ranges of about `itemBytes` each, taken dynamically.
        var totalBytes = 0
        for t in targets { totalBytes += t.outFeatures * t.dtype.storageBytes(elements: k) }
        let threads = BLAS.threads
        let parallel = threads > 1 && totalBytes >= 2 * itemBytes
        let chunk = parallel ? max(itemBytes, totalBytes / (threads * 8)) : Int.max
        var items: [(t: Int, lo: Int, hi: Int)] = []
        for (i, t) in targets.enumerated() where t.outFeatures > 0 {
            let bytes = t.outFeatures * t.dtype.storageBytes(elements: k)
            let parts = parallel ? max(1, min(t.outFeatures, (bytes + chunk / 2) / chunk)) : 1
            for p in 0..<parts { items.append((i, t.outFeatures * p / parts, t.outFeatures * (p + 1) / parts)) }
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: max(total, 1)) { scratch in
            let s = scratch.baseAddress!
            for r in 0..<m {
                let xr = x + r * ldx
                if needed[Layout.pairs.rawValue] { packPairs(xr, nb, into: s + offset[Layout.pairs.rawValue] + r * nb * 32) }
            }
            // Quantize each row of x once for all targets (AVX2 build of the same C where it runs).
            let q8 = UnsafeMutableRawPointer(s + q8Base).alignedUp(toMultipleOf: 64)
            let avx2Quantizer = level >= .avx2
            for f in Q8Format.allCases where q8Needed[f.rawValue] {
                for r in 0..<m {
                    let out = q8 + q8Offset[f.rawValue] + r * q8RowBytes[f.rawValue]
                    if avx2Quantizer { ft_quantize_q8_avx2(x + r * ldx, k, Int32(f.rawValue), out) }
                    else { ft_quantize_q8(x + r * ldx, k, Int32(f.rawValue), out) }
                }
            }
            let packedX = UnsafePointer(s)
            let run: (Int) -> Void = { i in
                let item = items[i], t = targets[item.t]
                if let kernel = q8Kernels[item.t] {
                    let rowBytes = t.dtype.storageBytes(elements: k), f = q8Format(t.dtype).rawValue
                    kernel(t.weights + item.lo * rowBytes, rowBytes, item.hi - item.lo, k,
                           UnsafeRawPointer(q8 + q8Offset[f]), m, q8RowBytes[f], t.y + item.lo, t.ldy)
                    return
                }
                if let kernel = cKernels[item.t] {
                    // F16C/AVX-512 convert f16 inf/NaN exactly, so no `hasNonFiniteF16` scan here.
                    let rowBytes = t.dtype.storageBytes(elements: k)
                    kernel(t.weights + item.lo * rowBytes, rowBytes, item.hi - item.lo, k, x, m, ldx, t.y + item.lo, t.ldy)
                    return
                }
                let l = layout(t.dtype)
                let xp = l == .plain ? x : packedX + offset[l.rawValue]
                let ldxp = l == .plain ? ldx : nb * 32
                rowRange(t, lo: item.lo, hi: item.hi, k: k, m: m, x: x, ldx: ldx, xp: xp, ldxp: ldxp)
            }
            if items.count == 1 { run(0) } else { DispatchQueue.concurrentPerform(iterations: items.count, execute: run) }
        }
    }

    // MARK: Activation packing (the lane order each decoder produces)

    /// bf16: per 8 values, the 4 even then the 4 odd ones.
    static func packPairs(_ x: UnsafePointer<Float>, _ nb: Int, into o: UnsafeMutablePointer<Float>) {
        for g in 0..<(4 * nb) {
            let xs = x + 8 * g, os = o + 8 * g
            for i in 0..<4 { os[i] = xs[2 * i]; os[4 + i] = xs[2 * i + 1] }
        }
    }

    // MARK: Row ranges

    static func rowRange(_ t: GEMVTarget, lo: Int, hi: Int, k: Int, m: Int, x: UnsafePointer<Float>, ldx: Int,
                         xp: UnsafePointer<Float>, ldxp: Int) {
        switch t.dtype {
        case .f32: rows(F32Block.self, t, lo, hi, k, m, x, ldx, xp, ldxp)
        case .bf16: rows(BF16Block.self, t, lo, hi, k, m, x, ldx, xp, ldxp)
        case .f16 where !hasNonFiniteF16(t, lo: lo, hi: hi, k: k):
            rows(F16Block.self, t, lo, hi, k, m, x, ldx, xp, ldxp)
        case .f16:
            // f16 ranges holding inf/NaN: the exact scalar converter, then an f32 dot.
            widenedRows(t, lo: lo, hi: hi, k: k, m: m, x: x, ldx: ldx) { src, n, out in
                for e in 0..<n { out[e] = f16ToFloatFast(src.loadUnaligned(fromByteOffset: 2 * e, as: UInt16.self)) }
            }
        default:
            // GGML blocks (the C kernels take them above the baseline level): the one GGML block
            // decoder (GGMLQuant's `dequantize`, bit-exact with ggml), then an f32 dot.
            precondition(t.dtype.isQuantized, "GEMV: no kernel for \(t.dtype.rawValue)")
            widenedRows(t, lo: lo, hi: hi, k: k, m: m, x: x, ldx: ldx) { src, n, out in
                dequantize(src, dtype: t.dtype, count: n, into: out)
            }
        }
    }

    /// Output rows `lo..<hi` of one target, each weight row widened by `widen(row, k, out)` into
    /// L1-resident scratch and dotted with every input row.
    static func widenedRows(_ t: GEMVTarget, lo: Int, hi: Int, k: Int, m: Int, x: UnsafePointer<Float>, ldx: Int,
                            widen: (UnsafeRawPointer, Int, UnsafeMutablePointer<Float>) -> Void) {
        let rowBytes = t.dtype.storageBytes(elements: k)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { tmp in
            let w = tmp.baseAddress!
            for j in lo..<hi {
                widen(t.weights + j * rowBytes, k, w)
                row(F32Block.self, UnsafeRawPointer(w), j, t, k, m, x, ldx, x, ldx, scratch: nil)
            }
        }
    }

    /// Whether f16 rows `lo..<hi` hold an inf or NaN, which the vector converter does not
    /// reproduce (those ranges take the exact scalar path).
    static func hasNonFiniteF16(_ t: GEMVTarget, lo: Int, hi: Int, k: Int) -> Bool {
        containsNonFiniteF16(t.weights + lo * 2 * k, count: (hi - lo) * k)
    }

    /// Output rows `lo..<hi` of one target for all `m` input rows.
    @inline(__always)
    static func rows<F: GEMVBlock>(_ f: F.Type, _ t: GEMVTarget, _ lo: Int, _ hi: Int, _ k: Int, _ m: Int,
                                   _ x: UnsafePointer<Float>, _ ldx: Int, _ xp: UnsafePointer<Float>, _ ldxp: Int) {
        let rowBytes = F.rowBytes(k)
        if m == 1 || F.self == F32Block.self {
            for j in lo..<hi { row(F.self, t.weights + j * rowBytes, j, t, k, m, x, ldx, xp, ldxp, scratch: nil) }
            return
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { buf in
            for j in lo..<hi { row(F.self, t.weights + j * rowBytes, j, t, k, m, x, ldx, xp, ldxp, scratch: buf.baseAddress!) }
        }
    }

    /// Output `j` (weight row at `w`) for all `m` input rows. Without `scratch` (one input row,
    /// or f32 weights): decode and multiply in registers per input row. With it: decode the row
    /// once into that L1-resident scratch (`k` floats: exactly the widened values in packed-x
    /// order), then one f32 dot per input row.
    @inline(__always)
    static func row<F: GEMVBlock>(_ f: F.Type, _ w: UnsafeRawPointer, _ j: Int, _ t: GEMVTarget, _ k: Int, _ m: Int,
                                  _ x: UnsafePointer<Float>, _ ldx: Int, _ xp: UnsafePointer<Float>, _ ldxp: Int,
                                  scratch: UnsafeMutablePointer<Float>?) {
        let nb = k / 32, tail = nb * 32
        guard let dq = scratch else {
            for r in 0..<m {
                var v = dot(F.self, w, nb, xp + r * ldxp)
                if tail < k { v += tailDot(F.self, w, tail, k, x + r * ldx) }
                t.y[r * t.ldy + j] = v
            }
            return
        }
        decode(F.self, w, nb, into: dq)
        for r in 0..<m {
            var v = dot(F32Block.self, UnsafeRawPointer(dq), nb, xp + r * ldxp)
            if tail < k { v += tailDot(F.self, w, tail, k, x + r * ldx) }
            t.y[r * t.ldy + j] = v
        }
    }

    /// Element types only (k not a multiple of 32): the last `k − tail` products.
    @inline(never)
    static func tailDot<F: GEMVBlock>(_ f: F.Type, _ w: UnsafeRawPointer, _ tail: Int, _ k: Int, _ x: UnsafePointer<Float>) -> Float {
        var v: Float = 0
        for e in tail..<k { v += F.scalar(w, e) * x[e] }
        return v
    }

    @inline(__always)
    static func load4(_ p: UnsafePointer<Float>) -> SIMD4<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self)
    }

    @inline(__always)
    static func store4(_ p: UnsafeMutablePointer<Float>, _ v: SIMD4<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD4<Float>.self)
    }

    /// Σ w·x over the row (`nb` 32-value blocks), for one packed-x row.
    /// Eight independent accumulators, one per vector slot: LLVM keeps this shape in vector
    /// registers (sums of several products per accumulator get scalarized on this target).
    @inline(__always)
    static func dot<F: GEMVBlock>(_ f: F.Type, _ w: UnsafeRawPointer, _ nb: Int, _ x: UnsafePointer<Float>) -> Float {
        var a0 = SIMD4<Float>(), a1 = SIMD4<Float>(), a2 = SIMD4<Float>(), a3 = SIMD4<Float>()
        var a4 = SIMD4<Float>(), a5 = SIMD4<Float>(), a6 = SIMD4<Float>(), a7 = SIMD4<Float>()
        var p = w
        for b in 0..<nb {
            let v = F.values(p)
            let xb = x + 32 * b
            a0 += v.0 * load4(xb); a1 += v.1 * load4(xb + 4)
            a2 += v.2 * load4(xb + 8); a3 += v.3 * load4(xb + 12)
            a4 += v.4 * load4(xb + 16); a5 += v.5 * load4(xb + 20)
            a6 += v.6 * load4(xb + 24); a7 += v.7 * load4(xb + 28)
            p += F.blockBytes
        }
        return (((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))).sum()
    }

    /// The row's values into `out` in packed-x order.
    @inline(__always)
    static func decode<F: GEMVBlock>(_ f: F.Type, _ w: UnsafeRawPointer, _ nb: Int, into out: UnsafeMutablePointer<Float>) {
        var p = w
        for b in 0..<nb {
            let v = F.values(p)
            let o = out + 32 * b
            store4(o, v.0); store4(o + 4, v.1); store4(o + 8, v.2); store4(o + 12, v.3)
            store4(o + 16, v.4); store4(o + 20, v.5); store4(o + 24, v.6); store4(o + 28, v.7)
            p += F.blockBytes
        }
    }
}

// MARK: - Block decoders

/// 32 decoded values as eight 4-lane vectors.
typealias Block32 = (SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>,
                     SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>)

/// 32 consecutive values of a float row (f32/bf16/f16), decoded into the lane order of their
/// packed x; a row's last `k % 32` values go through `scalar`.
protocol GEMVBlock {
    static var blockBytes: Int { get }
    /// Bytes of a row of `k` values.
    static func rowBytes(_ k: Int) -> Int
    static func values(_ p: UnsafeRawPointer) -> Block32
    /// Value `e` of the row at `row`.
    static func scalar(_ row: UnsafeRawPointer, _ e: Int) -> Float
}

/// IEEE half → f32 with integer operations (exact: subnormals, inf and NaN included), a few
/// instructions instead of the library call `Float(Float16)` becomes without F16C.
@inline(__always) func f16ToFloatFast(_ h: UInt16) -> Float {
    let em = UInt32(h & 0x7FFF), sign = UInt32(h & 0x8000) << 16
    let bits: UInt32
    if em < 0x0400 { bits = (Float(em) * 0x1p-24).bitPattern }          // zero / subnormal: em · 2⁻²⁴
    else if em >= 0x7C00 { bits = (em << 13) | 0x7F80_0000 }           // inf / NaN
    else { bits = (em << 13) &+ 0x3800_0000 }                          // normal: rebias 15 → 127
    return Float(bitPattern: bits | sign)
}

@inline(__always) private func loadU4(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD4<UInt32> {
    p.loadUnaligned(fromByteOffset: offset, as: SIMD4<UInt32>.self)
}

@inline(__always) private func asFloat(_ v: SIMD4<UInt32>) -> SIMD4<Float> { unsafeBitCast(v, to: SIMD4<Float>.self) }

enum F32Block: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 128 }
    @inline(__always) static func rowBytes(_ k: Int) -> Int { 4 * k }
    @inline(__always) static func values(_ p: UnsafeRawPointer) -> Block32 {
        (asFloat(loadU4(p, 0)), asFloat(loadU4(p, 16)), asFloat(loadU4(p, 32)), asFloat(loadU4(p, 48)),
         asFloat(loadU4(p, 64)), asFloat(loadU4(p, 80)), asFloat(loadU4(p, 96)), asFloat(loadU4(p, 112)))
    }
    @inline(__always) static func scalar(_ row: UnsafeRawPointer, _ e: Int) -> Float {
        row.loadUnaligned(fromByteOffset: 4 * e, as: Float.self)
    }
}

/// bf16: a 32-bit lane holds values 2i (low half) and 2i+1 (high half); bf16 → f32 is the bits
/// moved to the top half, so even = lane << 16 and odd = lane & 0xFFFF0000 (exact).
enum BF16Block: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 64 }
    @inline(__always) static func rowBytes(_ k: Int) -> Int { 2 * k }
    @inline(__always) static func values(_ p: UnsafeRawPointer) -> Block32 {
        let hi = SIMD4<UInt32>(repeating: 0xFFFF_0000)
        let u0 = loadU4(p, 0), u1 = loadU4(p, 16), u2 = loadU4(p, 32), u3 = loadU4(p, 48)
        return (asFloat(u0 &<< 16), asFloat(u0 & hi), asFloat(u1 &<< 16), asFloat(u1 & hi),
                asFloat(u2 &<< 16), asFloat(u2 & hi), asFloat(u3 &<< 16), asFloat(u3 & hi))
    }
    @inline(__always) static func scalar(_ row: UnsafeRawPointer, _ e: Int) -> Float {
        bf16ToFloat(row.loadUnaligned(fromByteOffset: 2 * e, as: UInt16.self))
    }
}

/// f16: the same lanes as bf16 (value 2i in the low half, 2i+1 in the high half), converted
/// with integer masks and two exact multiplies: |h| bits << 13 read as f32 times 2¹¹² rebiases
/// the exponent (subnormal halves included), times ±1 for the sign. Inf/NaN rows never get
/// here (`hasNonFiniteF16`).
enum F16Block: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 64 }
    @inline(__always) static func rowBytes(_ k: Int) -> Int { 2 * k }
    @inline(__always) static func half4(_ h: SIMD4<UInt32>) -> SIMD4<Float> {
        let magnitude = asFloat((h & 0x7FFF) &<< 13) * 0x1p112
        let sign = asFloat(((h & 0x8000) &<< 16) | 0x3F80_0000)
        return magnitude * sign
    }
    @inline(__always) static func values(_ p: UnsafeRawPointer) -> Block32 {
        let lo = SIMD4<UInt32>(repeating: 0xFFFF)
        let u0 = loadU4(p, 0), u1 = loadU4(p, 16), u2 = loadU4(p, 32), u3 = loadU4(p, 48)
        return (half4(u0 & lo), half4(u0 &>> 16), half4(u1 & lo), half4(u1 &>> 16),
                half4(u2 & lo), half4(u2 &>> 16), half4(u3 & lo), half4(u3 &>> 16))
    }
    @inline(__always) static func scalar(_ row: UnsafeRawPointer, _ e: Int) -> Float {
        f16ToFloatFast(row.loadUnaligned(fromByteOffset: 2 * e, as: UInt16.self))
    }
}
