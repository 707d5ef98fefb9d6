import Foundation
import LLMCore
import Testing
import TestSupport

/// A plain evaluation of ggml's 8-bit-activation dot products (`ggml_vec_dot_<type>_q8_*` on
/// x86), written from its definition for the tests, independent of GEMV's code:
/// - x is quantized per 32 values (Q8_0, Q4_0, Q5_0 weights: block_q8_0; Q4_1, Q5_1: block_q8_1)
///   as ggml-cpu's x86 `quantize_row_q8_0/1`: d = f16(amax/127), q = round-half-even(x·(127/amax)),
///   s = f16(amax/127 · Σq); or per 256 values (K-quants: block_q8_K, `quantize_row_q8_K_ref`):
///   max = first x of largest |x|, q = min(127, round-half-even(x·(−127/max))), d = 1/(−127/max).
/// - y = Σ over weight values of w·(d_x·q), with w the dequantizer's value (`widenToFloat`), except
///   that Q4_1/Q5_1's min m meets the activations through s: Σ_b [Σ (w − m)·d_x·q + m·s].
/// Sums in Double; the kernels may differ from this by f32 rounding and summation order only.
enum GGMLInt8Reference {
    /// One row quantized as block_q8_0/q8_1 (`blocks` 32) or block_q8_K (`blocks` 256): codes,
    /// the per-block d (f16-rounded for 32, f32 for 256) and s (32 only), and the quantization step
    /// amax/127 per block (for error bounds).
    static func quantize(_ x: ArraySlice<Float>, blockSize: Int) -> (q: [Int8], d: [Float], s: [Float], step: [Float]) {
        let xs = Array(x), nb = xs.count / blockSize
        var q = [Int8](repeating: 0, count: xs.count), d = [Float](repeating: 0, count: nb)
        var s = [Float](repeating: 0, count: nb), step = [Float](repeating: 0, count: nb)
        func code(_ v: Float) -> Int8 { v.isNaN ? 0 : Int8(max(-127, min(127, v)).rounded(.toNearestOrEven)) }
        for b in 0..<nb {
            let blk = xs[(b * blockSize)..<((b + 1) * blockSize)]
            let amax = blk.map { abs($0) }.max()!
            step[b] = amax / 127
            if blockSize == 32 {
                let id: Float = amax != 0 ? 127 / amax : 0
                var sum = 0
                for (i, v) in blk.enumerated() { q[b * 32 + i] = code(v * id); sum += Int(q[b * 32 + i]) }
                d[b] = Float(Float16(amax / 127))
                s[b] = Float(Float16(amax / 127 * Float(sum)))
            } else {
                if amax == 0 { continue }
                let mx = blk.first { abs($0) == amax }!
                let iscale = -127 / mx
                for (i, v) in blk.enumerated() { q[b * 256 + i] = min(127, code(iscale * v)) }
                d[b] = 1 / iscale
            }
        }
        return (q, d, s, step)
    }

    /// ggml's int8 result for `n × k` weights of `dtype` at `w` and `m × k` activations; its scale
    /// Σ|w·x_q| (+ |m·s|); and a loose bound on |int8 − exact| from the 8-bit rounding of x (each
    /// value off by at most one quantization step, Q4_1/Q5_1's s by its f16 rounding as well).
    static func evaluate(_ w: UnsafeRawPointer, _ dtype: DType, n: Int, k: Int, x: [Float], m: Int)
        -> (y: [Float], scale: [Float], bound: [Float]) {
        var wf = [Float](repeating: 0, count: n * k)
        wf.withUnsafeMutableBufferPointer { widenToFloat(w, dtype: dtype, count: n * k, into: $0.baseAddress!) }
        let bsize = dtype.blockElements == 256 ? 256 : 32
        let hasMin = dtype == .q4_1 || dtype == .q5_1
        let nb = k / 32, rowBytes = dtype.storageBytes(elements: k)
        var y = [Float](repeating: 0, count: m * n), scale = y, bound = y
        for r in 0..<m {
            let xq = quantize(x[(r * k)..<((r + 1) * k)], blockSize: bsize)
            for j in 0..<n {
                var acc = 0.0, sc = 0.0, bd = 0.0
                for b in 0..<(hasMin ? nb : 1) {
                    let (lo, hi) = hasMin ? (32 * b, 32 * b + 32) : (0, k)
                    let mw: Double = hasMin
                        ? Double(Float(Float16(bitPattern: w.loadUnaligned(fromByteOffset: j * rowBytes + b * dtype.blockBytes + 2, as: UInt16.self))))
                        : 0
                    for i in lo..<hi {
                        let blk = i / bsize
                        let xd = Double(xq.d[blk]) * Double(xq.q[i]), wv = Double(wf[j * k + i])
                        acc += (wv - mw) * xd
                        sc += abs(wv * xd)
                        bd += (abs(wv) + abs(mw)) * Double(xq.step[blk])
                    }
                    if hasMin {
                        acc += mw * Double(xq.s[b])
                        sc += abs(mw * Double(xq.s[b]))
                        bd += abs(mw) * (32 * Double(xq.step[b]) + abs(Double(xq.s[b])) / 1024)
                    }
                }
                y[r * n + j] = Float(acc); scale[r * n + j] = Float(sc); bound[r * n + j] = Float(bd)
            }
        }
        return (y, scale, bound)
    }
}

/// `GEMV.QuantDot`: both activation precisions for every GGML block dtype, every kernel set this
/// CPU runs, several row counts and widths (one block, several, SmolLM2's 576 and 1536), weights
/// with zero blocks and extreme (huge, subnormal) f16 scales, activations with a zero block and an
/// outlier block. `.exact` must equal widen-then-sgemm and `.int8` ggml's semantics
/// (`GGMLInt8Reference`), each within 1e-5 of Σ|x·w|; the two references differ by far more than
/// that on every case, so running one mode's kernels in the other's place fails.
@Suite struct GEMVQuantDotTests {
    static let blockDtypes: [DType] = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K]

    /// Offsets of a block's f16 scale fields (d, and m / dmin where the format has one).
    static func scaleFields(_ dtype: DType) -> [Int] {
        switch dtype {
        case .q6_K: [208]
        case .q4_1, .q5_1, .q4_K, .q5_K: [0, 2]
        default: [0]
        }
    }

    /// `GEMVTests.weightBytes` with some blocks patched: every 5th (from 1) all zero, every 5th
    /// (from 3) with huge scales (±65504, ±30000), every 5th (from 4) with subnormal ones.
    static func extremeWeights(_ dtype: DType, n: Int, k: Int, seed: UInt64) -> [UInt8] {
        var bytes = GEMVTests.weightBytes(dtype, n: n, k: k, seed: seed)
        let blocks = n * k / dtype.blockElements, bb = dtype.blockBytes
        bytes.withUnsafeMutableBytes { raw in
            for b in 0..<blocks {
                switch b % 5 {
                case 1:
                    for i in 0..<bb { raw[b * bb + i] = 0 }
                case 3:
                    for (f, v) in zip(scaleFields(dtype), [UInt16(0x7BFF), 0xF753]) {  // 65504, −30000
                        raw.storeBytes(of: v, toByteOffset: b * bb + f, as: UInt16.self)
                    }
                case 4:
                    for (f, v) in zip(scaleFields(dtype), [UInt16(0x0001), 0x83FF]) {  // 2⁻²⁴, −(2⁻¹⁴ − 2⁻²⁴)
                        raw.storeBytes(of: v, toByteOffset: b * bb + f, as: UInt16.self)
                    }
                default: break
                }
            }
        }
        return bytes
    }

    /// Random activations; in row 0 block 1 (when there is one) all zero and, in the last block of
    /// the last row, one outlier 1000× the rest. Row 0 block 0's largest value is 127·(1 + 3·2⁻¹¹),
    /// so its d = amax/127 lies exactly halfway between two f16 values (ties go to the even one).
    static func activations(m: Int, k: Int, block: Int, seed: UInt64) -> [Float] {
        var x = randomFloats(m * k, seed: seed)
        x[3] = 127 * (1 + 3 * 0x1p-11)
        if k >= 2 * block { for i in block..<(2 * block) { x[i] = 0 } }
        x[m * k - block / 2] = 1000
        return x
    }

    static func widths(_ dtype: DType) -> [Int] {
        dtype.blockElements == 256 ? [256, 768, 1536] : [32, 96, 576, 1536]
    }

    @Test(arguments: blockDtypes, GEMVTests.kernelSets)
    func bothModesMatchTheirReferences(_ dtype: DType, _ kernels: GEMV.Kernels) {
        let n = 37
        for k in Self.widths(dtype) {
            let bytes = Self.extremeWeights(dtype, n: n, k: k, seed: UInt64(k) &+ 17)
            for m in [1, 2, 3, 5, 16] {
                let x = Self.activations(m: m, k: k, block: dtype.blockElements == 256 ? 256 : 32, seed: UInt64(300 + m))
                var ys: [GEMV.QuantDot: [Float]] = [:]
                for mode in GEMV.QuantDot.allCases {
                    var y = [Float](repeating: .nan, count: m * n)
                    bytes.withUnsafeBytes { w in
                        y.withUnsafeMutableBufferPointer { yp in
                            GEMV.multiply(x: x, rows: m, inFeatures: k,
                                          targets: [GEMVTarget(weights: w.baseAddress!, dtype: dtype, outFeatures: n, y: yp.baseAddress!)],
                                          kernels: kernels, quantDot: mode)
                        }
                    }
                    ys[mode] = y
                }
                let exact = bytes.withUnsafeBytes { GEMVTests.reference($0.baseAddress!, dtype, n: n, k: k, x: x, m: m) }
                let int8 = bytes.withUnsafeBytes { GGMLInt8Reference.evaluate($0.baseAddress!, dtype, n: n, k: k, x: x, m: m) }
                let label = "\(dtype.rawValue) \(kernels) k \(k) m \(m)"
                let errExact = GEMVTests.worst(ys[.exact]!, exact.y, exact.scale)
                #expect(errExact <= 1e-5, "\(label) exact: relative error \(errExact)")
                let errInt8 = GEMVTests.worst(ys[.int8]!, int8.y, int8.scale)
                #expect(errInt8 <= 1e-5, "\(label) int8: relative error \(errInt8) against ggml's semantics")
                // The modes are told apart: the references differ by far more than the tolerance.
                let apart = GEMVTests.worst(int8.y, exact.y, exact.scale)
                #expect(apart > 1e-4, "\(label): int8 and exact references only \(apart) apart")
                // And int8 stays within the 8-bit rounding of x of the exact result.
                var over = 0, first = ""
                for i in 0..<(m * n) where abs(ys[.int8]![i] - exact.y[i]) > int8.bound[i] + 1e-5 * exact.scale[i] {
                    over += 1
                    if first.isEmpty { first = "output \(i): int8 \(ys[.int8]![i]) exact \(exact.y[i]) bound \(int8.bound[i])" }
                }
                #expect(over == 0, "\(label): \(over) outputs beyond the 8-bit rounding bound, first \(first)")
            }
        }
    }

    /// Weights whose every code is the format's bias (Q4_0 nibble 8, Q5_0 16, Q6_K 32) under a huge
    /// scale are all zero: both precisions must give exactly 0 whatever x is. (Integer lanes that
    /// carry the bias separately from the products would cancel only after f32 rounding.)
    @Test(arguments: [DType.q4_0, .q5_0, .q6_K], GEMVTests.kernelSets)
    func biasCodesGiveZero(_ dtype: DType, _ kernels: GEMV.Kernels) {
        let n = 5, k = 512, m = 4
        let blocks = n * k / dtype.blockElements, bb = dtype.blockBytes
        var bytes = [UInt8](repeating: 0, count: blocks * bb)
        var r = SplitMix64(seed: 41)
        for b in 0..<blocks {
            let p = b * bb
            switch dtype {
            case .q4_0:
                for i in 2..<18 { bytes[p + i] = 0x88 }
                bytes[p] = 0xFF; bytes[p + 1] = 0x7B
            case .q5_0:
                for i in 2..<6 { bytes[p + i] = 0xFF }  // every fifth bit set, nibbles 0: code 16
                bytes[p] = 0xFF; bytes[p + 1] = 0x7B
            default:  // Q6_K: low nibbles 0, high bit pairs 0b10: code 32; random scales
                for i in 128..<192 { bytes[p + i] = 0xAA }
                for i in 192..<208 { bytes[p + i] = UInt8(truncatingIfNeeded: r.next()) }
                bytes[p + 208] = 0xFF; bytes[p + 209] = 0x7B
            }
        }
        var x = randomFloats(m * k, seed: 42, scale: 100)
        x[7] = 3000
        for mode in GEMV.QuantDot.allCases {
            var y = [Float](repeating: .nan, count: m * n)
            bytes.withUnsafeBytes { w in
                y.withUnsafeMutableBufferPointer { yp in
                    GEMV.multiply(x: x, rows: m, inFeatures: k,
                                  targets: [GEMVTarget(weights: w.baseAddress!, dtype: dtype, outFeatures: n, y: yp.baseAddress!)],
                                  kernels: kernels, quantDot: mode)
                }
            }
            #expect(y.allSatisfy { $0 == 0 }, "\(dtype.rawValue) \(kernels) \(mode): \(y.prefix(5))")
        }
    }

    /// The process-wide default: the environment parser accepts exact/int8 (any case), rejects
    /// anything else with the variable's name, and leaves an unset or empty variable to the default.
    @Test func environmentSetting() throws {
        #expect(try GEMV.environmentQuantDot([:]) == nil)
        #expect(try GEMV.environmentQuantDot(["FINETUNE_QUANT_DOT": ""]) == nil)
        #expect(try GEMV.environmentQuantDot(["FINETUNE_QUANT_DOT": "int8"]) == .int8)
        #expect(try GEMV.environmentQuantDot(["FINETUNE_QUANT_DOT": "EXACT"]) == .exact)
        #expect(throws: GEMV.QuantDotError.badValue(source: "FINETUNE_QUANT_DOT", value: "q8")) {
            try GEMV.environmentQuantDot(["FINETUNE_QUANT_DOT": "q8"])
        }
        #expect("\(GEMV.QuantDotError.badValue(source: "FINETUNE_QUANT_DOT", value: "q8"))" == "FINETUNE_QUANT_DOT 'q8': expected exact or int8")
    }

    /// f32/bf16/f16 weights ignore the setting: the same bits either way.
    @Test(arguments: [DType.f32, .bf16, .f16], GEMVTests.kernelSets)
    func floatWeightsIgnoreTheSetting(_ dtype: DType, _ kernels: GEMV.Kernels) {
        let n = 19, k = 96, m = 2
        let bytes = GEMVTests.weightBytes(dtype, n: n, k: k, seed: 5)
        let x = randomFloats(m * k, seed: 6)
        let ys = GEMV.QuantDot.allCases.map { mode -> [Float] in
            var y = [Float](repeating: .nan, count: m * n)
            bytes.withUnsafeBytes { w in
                y.withUnsafeMutableBufferPointer { yp in
                    GEMV.multiply(x: x, rows: m, inFeatures: k,
                                  targets: [GEMVTarget(weights: w.baseAddress!, dtype: dtype, outFeatures: n, y: yp.baseAddress!)],
                                  kernels: kernels, quantDot: mode)
                }
            }
            return y
        }
        #expect(ys[0].map(\.bitPattern) == ys[1].map(\.bitPattern), "\(dtype.rawValue) \(kernels)")
    }
}
