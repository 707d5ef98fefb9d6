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
// weights are exactly the widener's / dequantizer's values (`Float(q) · d`), except the additive
// per-block min of Q4_1/Q5_1/Q4_K/Q5_K, applied once to the block's Σx (as ggml does); results
// equal widen-then-sgemm up to float32 summation order (tests: 1e-5 of Σ|x·w|).
//
// On AVX2 and AVX-512 CPUs (`CPU.isa`: cpuid capped by FINETUNE_ISA) f32, bf16, f16, Q8_0, Q4_0,
// Q4_1, Q5_0 and Q5_1 go to the C kernels in CKernels instead (`ft_gemv_<dtype>_<isa>`): 8- or
// 16-lane FMA on weights widened in registers to the same exact values, x read as is (no packing).
// On the Zen 4 here (SmolLM2-135M's projections, 2 threads) f32 and bf16 were already bound by
// the weight stream (~22–28 GB/s of ~31) and stay there; f16 and the block formats, which this
// Swift code decodes at 2–10 GB/s, run 2–4× faster. The K-quants (Q4_K, Q5_K, Q6_K) still run the
// Swift code at every level.

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

    /// The C kernel for `dtype` at `level`, or nil where the Swift code runs (baseline, K-quants).
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
            default: return nil
            }
        }
    }

    /// Whether `multiply` reads this dtype (the float types and every GGML block format).
    public static func supports(_ dtype: DType) -> Bool {
        dtype == .f32 || dtype == .bf16 || dtype == .f16 || dtype.isQuantized
    }

    /// Packed-activation orders; each dtype's decoder produces one.
    enum Layout: Int, CaseIterable { case plain, pairs, quads }

    static func layout(_ dtype: DType) -> Layout {
        switch dtype {
        case .bf16, .f16: return .pairs
        case .f32: return .plain
        default: return .quads  // every GGML block format
        }
    }

    /// Bytes streamed per parallel work item (about); smaller calls stay on this thread.
    static let itemBytes = 64 << 10

    /// `y = x[m, k] · Wᵀ` for every target (all share `x`): each weight is read once per call in
    /// its stored dtype, and the output rows of all targets are split across the engine's threads
    /// (`BLAS.threads`). `k` must be a whole number of blocks for block formats.
    public static func multiply(x: UnsafePointer<Float>, rows m: Int, inFeatures k: Int, ldx: Int? = nil,
                                targets: [GEMVTarget], kernels: Kernels = .best) {
        let level = kernels.level
        precondition(level <= CPU.detectedISA, "GEMV: \(kernels) kernels need \(level); this CPU runs \(CPU.detectedISA)")
        let ldx = ldx ?? k
        precondition(m >= 0 && k >= 0 && ldx >= k, "GEMV: bad sizes m \(m), k \(k), ldx \(ldx)")
        if m == 0 || targets.isEmpty { return }
        var needed = [Bool](repeating: false, count: Layout.allCases.count)
        // Each target's C kernel (nil: the Swift code).
        var cKernels: [CKernel?] = []
        cKernels.reserveCapacity(targets.count)
        for t in targets {
            precondition(supports(t.dtype), "GEMV: unsupported weight dtype \(t.dtype.rawValue)")
            precondition(k % t.dtype.blockElements == 0, "GEMV(\(t.dtype.rawValue)): k = \(k) is not a whole number of blocks")
            precondition(m == 1 || t.ldy >= t.outFeatures, "GEMV: ldy \(t.ldy) < n \(t.outFeatures)")
            cKernels.append(cKernel(t.dtype, level))
            if cKernels.last! == nil { needed[layout(t.dtype).rawValue] = true }  // C kernels read x as is
        }
        if k == 0 {
            for t in targets { for r in 0..<m { (t.y + r * t.ldy).update(repeating: 0, count: t.outFeatures) } }
            return
        }
        let nb = k / 32, packed = m * nb * 32
        // One scratch: the packed copies each layout needs, then the block sums of x (Q4_1's
        // min term).
        var offset = [Int](repeating: 0, count: Layout.allCases.count)
        var total = 0
        for l in [Layout.pairs, .quads] where needed[l.rawValue] { offset[l.rawValue] = total; total += packed }
        let sumsOffset = total
        if needed[Layout.quads.rawValue] { total += m * nb }
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
                if needed[Layout.quads.rawValue] {
                    packQuads(xr, nb, into: s + offset[Layout.quads.rawValue] + r * nb * 32)
                    for b in 0..<nb {
                        var sum: Float = 0
                        for i in 0..<32 { sum += xr[32 * b + i] }
                        s[sumsOffset + r * nb + b] = sum
                    }
                }
            }
            let packedX = UnsafePointer(s), sums = UnsafePointer(s + sumsOffset)
            let run: (Int) -> Void = { i in
                let item = items[i], t = targets[item.t]
                if let kernel = cKernels[item.t] {
                    // F16C/AVX-512 convert f16 inf/NaN exactly, so no `hasNonFiniteF16` scan here.
                    let rowBytes = t.dtype.storageBytes(elements: k)
                    kernel(t.weights + item.lo * rowBytes, rowBytes, item.hi - item.lo, k, x, m, ldx, t.y + item.lo, t.ldy)
                    return
                }
                let l = layout(t.dtype)
                let xp = l == .plain ? x : packedX + offset[l.rawValue]
                let ldxp = l == .plain ? ldx : nb * 32
                rowRange(t, lo: item.lo, hi: item.hi, k: k, m: m, x: x, ldx: ldx, xp: xp, ldxp: ldxp, sums: sums)
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

    /// Block formats: per 32 values, vector 4h + j lane i holds value 16h + 4i + j (byte j of
    /// 32-bit lane i of a 16-byte load, or its nibble).
    static func packQuads(_ x: UnsafePointer<Float>, _ nb: Int, into o: UnsafeMutablePointer<Float>) {
        for b in 0..<nb {
            let xs = x + 32 * b, os = o + 32 * b
            for h in 0..<2 { for j in 0..<4 { for i in 0..<4 { os[16 * h + 4 * j + i] = xs[16 * h + 4 * i + j] } } }
        }
    }

    // MARK: Row ranges

    static func rowRange(_ t: GEMVTarget, lo: Int, hi: Int, k: Int, m: Int, x: UnsafePointer<Float>, ldx: Int,
                         xp: UnsafePointer<Float>, ldxp: Int, sums: UnsafePointer<Float>) {
        switch t.dtype {
        case .f32: rows(F32Block.self, t, lo, hi, k, m, x, ldx, xp, ldxp, sums)
        case .bf16: rows(BF16Block.self, t, lo, hi, k, m, x, ldx, xp, ldxp, sums)
        case .f16 where !hasNonFiniteF16(t, lo: lo, hi: hi, k: k):
            rows(F16Block.self, t, lo, hi, k, m, x, ldx, xp, ldxp, sums)
        case .q8_0: rows(Q8_0Block.self, t, lo, hi, k, m, x, ldx, xp, ldxp, sums)
        case .q4_0: rows(Q4_0Block.self, t, lo, hi, k, m, x, ldx, xp, ldxp, sums)
        case .q4_1: rows(Q4_1Block.self, t, lo, hi, k, m, x, ldx, xp, ldxp, sums)
        case .q5_0: rows(Q5_0Block.self, t, lo, hi, k, m, x, ldx, xp, ldxp, sums)
        case .q5_1: rows(Q5_1Block.self, t, lo, hi, k, m, x, ldx, xp, ldxp, sums)
        case .q4_K: rows(Q4_KBlock.self, t, lo, hi, k, m, x, ldx, xp, ldxp, sums)
        case .q5_K: rows(Q5_KBlock.self, t, lo, hi, k, m, x, ldx, xp, ldxp, sums)
        case .q6_K: rows(Q6_KBlock.self, t, lo, hi, k, m, x, ldx, xp, ldxp, sums)
        default:
            // f16 ranges holding inf/NaN: widen one row at a time into L1-resident scratch with
            // the exact scalar converter, then an f32 dot.
            precondition(t.dtype == .f16, "GEMV: no kernel for \(t.dtype.rawValue)")
            withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { tmp in
                let w = tmp.baseAddress!
                for j in lo..<hi {
                    let src = t.weights + j * 2 * k
                    for e in 0..<k { w[e] = f16ToFloatFast(src.loadUnaligned(fromByteOffset: 2 * e, as: UInt16.self)) }
                    row(F32Block.self, UnsafeRawPointer(w), j, t, k, m, x, ldx, x, ldx, sums, scratch: nil)
                }
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
                                   _ x: UnsafePointer<Float>, _ ldx: Int, _ xp: UnsafePointer<Float>, _ ldxp: Int,
                                   _ sums: UnsafePointer<Float>) {
        let rowBytes = F.rowBytes(k)
        if m == 1 || F.self == F32Block.self {
            for j in lo..<hi { row(F.self, t.weights + j * rowBytes, j, t, k, m, x, ldx, xp, ldxp, sums, scratch: nil) }
            return
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: k + k / 32) { buf in
            for j in lo..<hi { row(F.self, t.weights + j * rowBytes, j, t, k, m, x, ldx, xp, ldxp, sums, scratch: buf.baseAddress!) }
        }
    }

    /// Output `j` (weight row at `w`) for all `m` input rows. Without `scratch` (one input row,
    /// or f32 weights): decode and multiply in registers per input row. With it: decode the row
    /// once into that L1-resident scratch (`k + k/32` floats: exactly the dequantized values in
    /// packed-x order, then the block mins), then one f32 dot per input row.
    @inline(__always)
    static func row<F: GEMVBlock>(_ f: F.Type, _ w: UnsafeRawPointer, _ j: Int, _ t: GEMVTarget, _ k: Int, _ m: Int,
                                  _ x: UnsafePointer<Float>, _ ldx: Int, _ xp: UnsafePointer<Float>, _ ldxp: Int,
                                  _ sums: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>?) {
        let nb = k / 32, tail = nb * 32
        guard let dq = scratch else {
            for r in 0..<m {
                var v = dot(F.self, w, nb, xp + r * ldxp, sums + r * nb)
                if tail < k { v += tailDot(F.self, w, tail, k, x + r * ldx) }
                t.y[r * t.ldy + j] = v
            }
            return
        }
        let mins = dq + tail
        decode(F.self, w, nb, into: dq, mins: mins)
        for r in 0..<m {
            var v = dot(F32Block.self, UnsafeRawPointer(dq), nb, xp + r * ldxp, sums)
            if F.hasMin {
                let sr = sums + r * nb
                for b in 0..<nb { v += mins[b] * sr[b] }
            }
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

    /// Σ w·x over the row (`nb` 32-value sub-blocks) plus Σ_s min_s · Σx_s, for one packed-x row.
    /// Eight independent accumulators, one per vector slot: LLVM keeps this shape in vector
    /// registers (sums of several products per accumulator get scalarized on this target).
    @inline(__always)
    static func dot<F: GEMVBlock>(_ f: F.Type, _ w: UnsafeRawPointer, _ nb: Int, _ x: UnsafePointer<Float>,
                                  _ sums: UnsafePointer<Float>) -> Float {
        var a0 = SIMD4<Float>(), a1 = SIMD4<Float>(), a2 = SIMD4<Float>(), a3 = SIMD4<Float>()
        var a4 = SIMD4<Float>(), a5 = SIMD4<Float>(), a6 = SIMD4<Float>(), a7 = SIMD4<Float>()
        var accMin: Float = 0
        var p = w, sb = 0
        while sb < nb {
            for s in 0..<F.subBlocks {
                let v = F.values(p, s)
                let xb = x + 32 * (sb + s)
                a0 += v.0 * load4(xb); a1 += v.1 * load4(xb + 4)
                a2 += v.2 * load4(xb + 8); a3 += v.3 * load4(xb + 12)
                a4 += v.4 * load4(xb + 16); a5 += v.5 * load4(xb + 20)
                a6 += v.6 * load4(xb + 24); a7 += v.7 * load4(xb + 28)
                if F.hasMin { accMin += F.minimum(p, s) * sums[sb + s] }
            }
            sb += F.subBlocks
            p += F.blockBytes
        }
        return (((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))).sum() + accMin
    }

    /// The row's values (min terms excluded) into `out` in packed-x order; sub-block mins into `mins`.
    @inline(__always)
    static func decode<F: GEMVBlock>(_ f: F.Type, _ w: UnsafeRawPointer, _ nb: Int,
                                     into out: UnsafeMutablePointer<Float>, mins: UnsafeMutablePointer<Float>) {
        var p = w, sb = 0
        while sb < nb {
            for s in 0..<F.subBlocks {
                let v = F.values(p, s)
                let o = out + 32 * (sb + s)
                store4(o, v.0); store4(o + 4, v.1); store4(o + 8, v.2); store4(o + 12, v.3)
                store4(o + 16, v.4); store4(o + 20, v.5); store4(o + 24, v.6); store4(o + 28, v.7)
                if F.hasMin { mins[sb + s] = F.minimum(p, s) }
            }
            sb += F.subBlocks
            p += F.blockBytes
        }
    }
}

// MARK: - Block decoders

/// 32 decoded values as eight 4-lane vectors.
typealias Block32 = (SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>,
                     SIMD4<Float>, SIMD4<Float>, SIMD4<Float>, SIMD4<Float>)

/// One block of a stored format: `subBlocks` runs of 32 values, each decoded into the lane order
/// of its packed x with its scale applied (the value the dequantizer produces, except an additive
/// per-sub-block `minimum`, applied once to the sub-block's Σx). Element types (f32/bf16/f16)
/// treat 32 consecutive values as a block; a row's last `k % 32` values go through `scalar`.
protocol GEMVBlock {
    static var blockBytes: Int { get }
    static var subBlocks: Int { get }
    static var hasMin: Bool { get }
    /// Bytes of a row of `k` values.
    static func rowBytes(_ k: Int) -> Int
    static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32
    static func minimum(_ p: UnsafeRawPointer, _ s: Int) -> Float
    /// Value `e` of the row at `row` (element types only).
    static func scalar(_ row: UnsafeRawPointer, _ e: Int) -> Float
}

extension GEMVBlock {
    @inline(__always) static var subBlocks: Int { 1 }
    @inline(__always) static var hasMin: Bool { false }
    @inline(__always) static func rowBytes(_ k: Int) -> Int { k / (32 * subBlocks) * blockBytes }
    @inline(__always) static func minimum(_ p: UnsafeRawPointer, _ s: Int) -> Float { 0 }
    @inline(__always) static func scalar(_ row: UnsafeRawPointer, _ e: Int) -> Float { 0 }
}

@inline(__always) private func halfScale(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    f16ToFloatFast(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
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

@inline(__always) private func loadI4(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD4<Int32> {
    p.loadUnaligned(fromByteOffset: offset, as: SIMD4<Int32>.self)
}

@inline(__always) private func asFloat(_ v: SIMD4<UInt32>) -> SIMD4<Float> { unsafeBitCast(v, to: SIMD4<Float>.self) }

enum F32Block: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 128 }
    @inline(__always) static func rowBytes(_ k: Int) -> Int { 4 * k }
    @inline(__always) static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32 {
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
    @inline(__always) static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32 {
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
    @inline(__always) static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32 {
        let lo = SIMD4<UInt32>(repeating: 0xFFFF)
        let u0 = loadU4(p, 0), u1 = loadU4(p, 16), u2 = loadU4(p, 32), u3 = loadU4(p, 48)
        return (half4(u0 & lo), half4(u0 &>> 16), half4(u1 & lo), half4(u1 &>> 16),
                half4(u2 & lo), half4(u2 &>> 16), half4(u3 & lo), half4(u3 &>> 16))
    }
    @inline(__always) static func scalar(_ row: UnsafeRawPointer, _ e: Int) -> Float {
        f16ToFloatFast(row.loadUnaligned(fromByteOffset: 2 * e, as: UInt16.self))
    }
}

/// The eight quads-order vectors of 32 integer codes, each converted and scaled by `d`:
/// `code(w, shift)` extracts the code of byte j (shift 8j…) of every lane.
@inline(__always) private func scaled(_ d: Float, _ c: (SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>,
                                                       SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>)) -> Block32 {
    let s = SIMD4<Float>(repeating: d)
    return (SIMD4<Float>(c.0) * s, SIMD4<Float>(c.1) * s, SIMD4<Float>(c.2) * s, SIMD4<Float>(c.3) * s,
            SIMD4<Float>(c.4) * s, SIMD4<Float>(c.5) * s, SIMD4<Float>(c.6) * s, SIMD4<Float>(c.7) * s)
}

/// Q8_0 (d f16 | 32 × int8 at +2): byte j of lane i of the load at +2 (+18) is value 4i + j
/// (+16), sign-extended by `(lane << (24 − 8j)) >> 24`. Value = q · d.
enum Q8_0Block: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 34 }
    @inline(__always) static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32 {
        let w0 = loadI4(p, 2), w1 = loadI4(p, 18)
        return scaled(halfScale(p, 0), ((w0 &<< 24) &>> 24, (w0 &<< 16) &>> 24, (w0 &<< 8) &>> 24, w0 &>> 24,
                                        (w1 &<< 24) &>> 24, (w1 &<< 16) &>> 24, (w1 &<< 8) &>> 24, w1 &>> 24))
    }
}

/// The 32 nibble codes of 16 bytes at `q` in quads order (low nibble of byte l is value l, high
/// nibble value 16 + l), minus `bias`.
@inline(__always) private func nibbleCodes(_ q: UnsafeRawPointer, bias: Int32)
    -> (SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>) {
    let w = loadI4(q, 0)
    let m = SIMD4<Int32>(repeating: 15), b = SIMD4<Int32>(repeating: bias)
    return ((w & m) &- b, ((w &>> 8) & m) &- b, ((w &>> 16) & m) &- b, ((w &>> 24) & m) &- b,
            ((w &>> 4) & m) &- b, ((w &>> 12) & m) &- b, ((w &>> 20) & m) &- b, ((w &>> 28) & m) &- b)
}

/// Q5_0/Q5_1: `d · (codes + 16·bit)` where value l's fifth bit is bit l of `qh`. In quads
/// order lane i of vector (h, j) is value 16h + 4i + j: its bit is isolated by a per-lane mask
/// and brought to 16 by an exact per-lane float scale 2⁴⁻ᵇ (bit 31 converts to −2³¹, so its
/// scale is negative) — uniform operations only, which stay vectorized.
@inline(__always) private func withFifthBits(_ d: Float, _ qh: UInt32,
                                             _ c: (SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>,
                                                   SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>)) -> Block32 {
    let q = SIMD4<Int32>(repeating: Int32(bitPattern: qh)), ds = SIMD4<Float>(repeating: d)
    @inline(__always) func v(_ code: SIMD4<Int32>, _ b: UInt32) -> SIMD4<Float> {
        let bits = SIMD4<Int32>(Int32(bitPattern: 1 << b), Int32(bitPattern: 1 << (b + 4)),
                                Int32(bitPattern: 1 << (b + 8)), Int32(bitPattern: 1 << (b + 12)))
        let scale = SIMD4<Float>(16 / Float(bits[0]), 16 / Float(bits[1]), 16 / Float(bits[2]), 16 / Float(bits[3]))
        return (SIMD4<Float>(code) + SIMD4<Float>(q & bits) * scale) * ds
    }
    return (v(c.0, 0), v(c.1, 1), v(c.2, 2), v(c.3, 3), v(c.4, 16), v(c.5, 17), v(c.6, 18), v(c.7, 19))
}

/// Q4_0 (d f16 | 16 bytes): value = d · (nibble − 8).
enum Q4_0Block: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 18 }
    @inline(__always) static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32 {
        scaled(halfScale(p, 0), nibbleCodes(p + 2, bias: 8))
    }
}

/// Q4_1 (d f16 | m f16 | 16 bytes): value = d · nibble + m (m via the sub-block's Σx).
enum Q4_1Block: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 20 }
    @inline(__always) static var hasMin: Bool { true }
    @inline(__always) static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32 {
        scaled(halfScale(p, 0), nibbleCodes(p + 4, bias: 0))
    }
    @inline(__always) static func minimum(_ p: UnsafeRawPointer, _ s: Int) -> Float { halfScale(p, 2) }
}

/// Q5_0 (d f16 | qh u32 | 16 bytes): value = d · ((nibble | bit·16) − 16).
enum Q5_0Block: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 22 }
    @inline(__always) static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32 {
        let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        return withFifthBits(halfScale(p, 0), qh, nibbleCodes(p + 6, bias: 16))
    }
}

/// Q5_1 (d f16 | m f16 | qh u32 | 16 bytes): value = d · (nibble | bit·16) + m.
enum Q5_1Block: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 24 }
    @inline(__always) static var hasMin: Bool { true }
    @inline(__always) static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32 {
        let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        return withFifthBits(halfScale(p, 0), qh, nibbleCodes(p + 8, bias: 0))
    }
    @inline(__always) static func minimum(_ p: UnsafeRawPointer, _ s: Int) -> Float { halfScale(p, 2) }
}

/// ggml's `get_scale_min_k4`: 6-bit scale and min of sub-block `j` from the 12 bytes at `s`.
@inline(__always) private func scaleMinK4(_ j: Int, _ s: UnsafeRawPointer) -> (Float, Float) {
    @inline(__always) func b(_ i: Int) -> UInt8 { s.load(fromByteOffset: i, as: UInt8.self) }
    if j < 4 { return (Float(b(j) & 63), Float(b(j + 4) & 63)) }
    return (Float((b(j + 4) & 0x0F) | ((b(j - 4) >> 6) << 4)), Float((b(j + 4) >> 4) | ((b(j) >> 6) << 4)))
}

/// The 32 codes of Q4_K/Q5_K sub-block `s` (low nibbles of qs[32p..<32p+32] for even s, high
/// for odd, p = s/2) in quads order; lane i byte j of the two 16-byte loads is l = 16h + 4i + j.
@inline(__always) private func kNibbles(_ qs: UnsafeRawPointer, _ s: Int)
    -> (SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>, SIMD4<Int32>) {
    let w0 = loadI4(qs, 32 * (s / 2)), w1 = loadI4(qs, 32 * (s / 2) + 16)
    let m = SIMD4<Int32>(repeating: 15), sh = Int32(4 * (s & 1))
    @inline(__always) func c(_ w: SIMD4<Int32>, _ j: Int32) -> SIMD4<Int32> { (w &>> (8 * j + sh)) & m }
    return (c(w0, 0), c(w0, 1), c(w0, 2), c(w0, 3), c(w1, 0), c(w1, 1), c(w1, 2), c(w1, 3))
}

/// Q4_K (256 values, 144 B): d | dmin | 12 scale bytes | qs[128]; sub-block s value =
/// (d·sc_s)·q − dmin·m_s.
enum Q4_KBlock: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 144 }
    @inline(__always) static var subBlocks: Int { 8 }
    @inline(__always) static var hasMin: Bool { true }
    @inline(__always) static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32 {
        scaled(halfScale(p, 0) * scaleMinK4(s, p + 4).0, kNibbles(p + 16, s))
    }
    @inline(__always) static func minimum(_ p: UnsafeRawPointer, _ s: Int) -> Float {
        -(halfScale(p, 2) * scaleMinK4(s, p + 4).1)
    }
}

/// Q5_K (256 values, 176 B): d | dmin | 12 scale bytes | qh[32] | qs[128]; the fifth bit of
/// sub-block s value l is bit s of qh[l].
enum Q5_KBlock: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 176 }
    @inline(__always) static var subBlocks: Int { 8 }
    @inline(__always) static var hasMin: Bool { true }
    @inline(__always) static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32 {
        let q = kNibbles(p + 48, s)
        let h0 = loadI4(p, 16), h1 = loadI4(p, 32), one = SIMD4<Int32>(repeating: 1)
        @inline(__always) func h(_ w: SIMD4<Int32>, _ j: Int32) -> SIMD4<Int32> { ((w &>> (8 * j + Int32(s))) & one) &<< 4 }
        return scaled(halfScale(p, 0) * scaleMinK4(s, p + 4).0,
                      (q.0 | h(h0, 0), q.1 | h(h0, 1), q.2 | h(h0, 2), q.3 | h(h0, 3),
                       q.4 | h(h1, 0), q.5 | h(h1, 1), q.6 | h(h1, 2), q.7 | h(h1, 3)))
    }
    @inline(__always) static func minimum(_ p: UnsafeRawPointer, _ s: Int) -> Float {
        -(halfScale(p, 2) * scaleMinK4(s, p + 4).1)
    }
}

/// Q6_K (256 values, 210 B): ql[128] | qh[64] | 16 int8 scales | d. Sub-block s = 4H + g is
/// values 128H + 32g + l (l < 32): low (g even) or high (g odd) nibbles of ql[64H + 32(g&1)·… ],
/// two bits of qh[32H + l] at 2g, minus 32; values l < 16 and l ≥ 16 have their own scale.
enum Q6_KBlock: GEMVBlock {
    @inline(__always) static var blockBytes: Int { 210 }
    @inline(__always) static var subBlocks: Int { 8 }
    @inline(__always) static func values(_ p: UnsafeRawPointer, _ s: Int) -> Block32 {
        let half = s / 4, g = s % 4
        // ggml: q1 (g 0) low nibbles of ql[l], q2 (g 1) low of ql[l+32], q3 (g 2) high of ql[l],
        // q4 (g 3) high of ql[l+32]; qh bits 2g..2g+1.
        let ql = p + 64 * half + 32 * (g & 1), qh = p + 128 + 32 * half
        let a0 = loadI4(ql, 0), a1 = loadI4(ql, 16), h0 = loadI4(qh, 0), h1 = loadI4(qh, 16)
        let m15 = SIMD4<Int32>(repeating: 15), m3 = SIMD4<Int32>(repeating: 3), b = SIMD4<Int32>(repeating: 32)
        let ns = Int32(4 * (g / 2)), hs = Int32(2 * g)
        @inline(__always) func c(_ a: SIMD4<Int32>, _ h: SIMD4<Int32>, _ j: Int32) -> SIMD4<Int32> {
            (((a &>> (8 * j + ns)) & m15) | (((h &>> (8 * j + hs)) & m3) &<< 4)) &- b
        }
        let d = halfScale(p, 208)
        let sc = p + 192 + 8 * half + 2 * g  // scales of values l < 16 and l ≥ 16
        let lo = SIMD4<Float>(repeating: d * Float(sc.load(as: Int8.self)))
        let hi = SIMD4<Float>(repeating: d * Float(sc.load(fromByteOffset: 1, as: Int8.self)))
        return (SIMD4<Float>(c(a0, h0, 0)) * lo, SIMD4<Float>(c(a0, h0, 1)) * lo,
                SIMD4<Float>(c(a0, h0, 2)) * lo, SIMD4<Float>(c(a0, h0, 3)) * lo,
                SIMD4<Float>(c(a1, h1, 0)) * hi, SIMD4<Float>(c(a1, h1, 1)) * hi,
                SIMD4<Float>(c(a1, h1, 2)) * hi, SIMD4<Float>(c(a1, h1, 3)) * hi)
    }
}
