import Foundation
import LLMCore
import Testing
import TestSupport

/// Every forward kernel against a naive Double reference, every backward kernel against central
/// finite differences of its forward (the loss is a random linear functional of the output).
@Suite struct KernelTests {
    // MARK: GEMM

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func gemmMatchesNaive(_ ta: Bool, _ tb: Bool) {
        let m = 5, n = 7, k = 3
        let a = randomFloats(m * k, seed: 1), b = randomFloats(k * n, seed: 2)
        var c = randomFloats(m * n, seed: 3)
        let c0 = c
        BLAS.gemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 0.5, a: a, b: b, beta: 2, c: &c)
        for i in 0..<m { for j in 0..<n {
            var s = 0.0
            for p in 0..<k { s += Double(ta ? a[p * m + i] : a[i * k + p]) * Double(tb ? b[j * k + p] : b[p * n + j]) }
            #expect(abs(Float(0.5 * s) + 2 * c0[i * n + j] - c[i * n + j]) < 1e-5)
        } }
    }

    // MARK: RMSNorm

    @Test func rmsnormForwardAndBackward() {
        let rows = 3, cols = 8, eps: Float = 1e-5
        let x = randomFloats(rows * cols, seed: 4), w = randomFloats(cols, seed: 5).map { 1 + $0 * 0.5 }
        let r = randomFloats(rows * cols, seed: 6)
        func fwd(_ x: [Float]) -> [Float] {
            var y = [Float](repeating: 0, count: rows * cols), rstd = [Float](repeating: 0, count: rows)
            rmsnormForward(out: &y, rstd: &rstd, x: x, w: w, rows: rows, cols: cols, eps: eps)
            return y
        }
        let y = fwd(x)
        for i in 0..<rows {
            let ms = (0..<cols).reduce(0.0) { $0 + Double(x[i * cols + $1]) * Double(x[i * cols + $1]) } / Double(cols)
            for j in 0..<cols { #expect(abs(Double(y[i * cols + j]) - Double(w[j]) * Double(x[i * cols + j]) / (ms + Double(eps)).squareRoot()) < 1e-5) }
        }
        var rstd = [Float](repeating: 0, count: rows), tmp = [Float](repeating: 0, count: rows * cols)
        rmsnormForward(out: &tmp, rstd: &rstd, x: x, w: w, rows: rows, cols: cols, eps: eps)
        var dx = [Float](repeating: 0.25, count: rows * cols)
        rmsnormBackward(dx: &dx, dy: r, x: x, w: w, rstd: rstd, rows: rows, cols: cols, accumulate: true)
        let fd = finiteDifference(x, h: 1e-3) { dot(fwd($0), r) }
        #expect(relativeError(dx.map { $0 - 0.25 }, fd) < 2e-3)
    }

    // MARK: RoPE

    @Test func ropeMatchesComplexRotationAndBackwardIsTranspose() {
        let rows = 4, heads = 3, D = 8
        let inv = ropeInverseFrequencies(headDim: D, theta: 10000, scaling: nil)
        let positions: [Int32] = [0, 3, 7, 100]
        var cos = [Float](repeating: 0, count: rows * D / 2), sin = cos
        ropeTables(positions: positions, invFreq: inv, cos: &cos, sin: &sin)
        let x = randomFloats(rows * heads * D, seed: 7)
        var y = x
        ropeForward(&y, cos: cos, sin: sin, rows: rows, heads: heads, headDim: D)
        for n in 0..<rows { for h in 0..<heads { for i in 0..<(D / 2) {
            let a = Double(positions[n]) / pow(10000, Double(2 * i) / Double(D))
            let base = (n * heads + h) * D
            let (x1, x2) = (Double(x[base + i]), Double(x[base + i + D / 2]))
            #expect(abs(Double(y[base + i]) - (x1 * Foundation.cos(a) - x2 * Foundation.sin(a))) < 1e-5)
            #expect(abs(Double(y[base + i + D / 2]) - (x2 * Foundation.cos(a) + x1 * Foundation.sin(a))) < 1e-5)
        } } }
        let r = randomFloats(rows * heads * D, seed: 8)
        var dx = r
        ropeBackward(&dx, cos: cos, sin: sin, rows: rows, heads: heads, headDim: D)
        let fd = finiteDifference(x, h: 1e-2) { v in
            var t = v; ropeForward(&t, cos: cos, sin: sin, rows: rows, heads: heads, headDim: D); return dot(t, r)
        }
        #expect(relativeError(dx, fd) < 1e-3)
    }

    @Test func llama3ScalingFollowsTransformers() {
        // transformers' _compute_llama3_parameters on (factor 8, low 1, high 4, original 8192), D = 128.
        let s = Llama3RopeScaling(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)
        let plain = ropeInverseFrequencies(headDim: 128, theta: 500_000, scaling: nil)
        let scaled = ropeInverseFrequencies(headDim: 128, theta: 500_000, scaling: s)
        for (f, g) in zip(plain, scaled) {
            let wavelen = 2 * Double.pi / f
            if wavelen < 8192.0 / 4 { #expect(g == f) }                 // high frequencies kept
            else if wavelen > 8192.0 / 1 { #expect(abs(g - f / 8) < 1e-18) } // low frequencies divided by factor
            else { #expect(g > f / 8 && g < f) }                          // smooth interpolation
        }
    }

    // MARK: SwiGLU

    @Test func swigluForwardAndBackward() {
        let n = 19  // two full vectors of 8 and a tail of 3
        let g = randomFloats(n, seed: 9, scale: 3), u = randomFloats(n, seed: 10, scale: 2), r = randomFloats(n, seed: 11)
        var out = [Float](repeating: 0, count: n)
        swigluForward(out: &out, gate: g, up: u, count: n)
        for i in 0..<n { #expect(abs(Double(out[i]) - Double(g[i]) / (1 + exp(-Double(g[i]))) * Double(u[i])) < 1e-5) }
        var dg = [Float](repeating: 0, count: n), du = dg
        swigluBackward(dgate: &dg, dup: &du, dout: r, gate: g, up: u, count: n)
        let fdg = finiteDifference(g, h: 1e-3) { v in var o = [Float](repeating: 0, count: n); swigluForward(out: &o, gate: v, up: u, count: n); return dot(o, r) }
        let fdu = finiteDifference(u, h: 1e-3) { v in var o = [Float](repeating: 0, count: n); swigluForward(out: &o, gate: g, up: v, count: n); return dot(o, r) }
        #expect(relativeError(dg, fdg) < 2e-3)
        #expect(relativeError(du, fdu) < 2e-3)
    }

    // MARK: Cross-entropy

    @Test func crossEntropyForwardAndGradient() {
        let rows = 4, V = 11
        let logits = randomFloats(rows * V, seed: 12, scale: 4)
        let targets: [Int32] = [3, -1, 10, 0]
        var l = logits
        let sum = crossEntropy(logits: &l, targets: targets, vocab: V, dlogits: nil, scale: 1)
        var naive = 0.0
        for (n, t) in targets.enumerated() where t >= 0 {
            let row = (0..<V).map { Double(logits[n * V + $0]) }
            naive += log(row.map(exp).reduce(0, +)) - row[Int(t)]
        }
        #expect(abs(sum - naive) < 1e-5)
        var d = logits
        d.withUnsafeMutableBufferPointer { p in
            _ = crossEntropy(logits: p.baseAddress!, targets: targets, vocab: V, dlogits: p.baseAddress!, scale: 1 / 3)
        }
        let fd = finiteDifference(logits, h: 1e-2) { v in var t = v; return crossEntropy(logits: &t, targets: targets, vocab: V, dlogits: nil, scale: 1) / 3 }
        #expect(relativeError(d, fd) < 2e-3)
        #expect(d[V..<(2 * V)].allSatisfy { $0 == 0 }, "ignored rows get no gradient")
    }

    /// A row longer than one summation block (1024) with a tail, against Double arithmetic.
    @Test func crossEntropyOverALongRow() {
        let V = 1_100
        let logits = randomFloats(2 * V, seed: 13, scale: 6)
        let targets: [Int32] = [1_099, 7]
        var d = logits
        let sum = d.withUnsafeMutableBufferPointer { p in
            crossEntropy(logits: p.baseAddress!, targets: targets, vocab: V, dlogits: p.baseAddress!, scale: 0.5)
        }
        var naive = 0.0
        for (n, t) in targets.enumerated() {
            let row = (0..<V).map { Double(logits[n * V + $0]) }
            let z = row.map(exp).reduce(0, +)
            naive += log(z) - row[Int(t)]
            for v in 0..<V {
                let expected = 0.5 * (exp(row[v]) / z - (v == Int(t) ? 1 : 0))
                #expect(abs(Double(d[n * V + v]) - expected) <= 1e-6 * max(abs(expected), 1e-3))
            }
        }
        #expect(abs(sum - naive) <= 1e-5 * abs(naive))
    }

    // MARK: Vector exp

    /// `exp8` against libm's `expf` in ulps over its whole documented range, and its edges.
    @Test func exp8IsWithinTwoUlpOfExpf() {
        var worst: Float = 0
        var x: Float = -87.6
        while x <= 88.37 {
            let xs = SIMD8<Float>((0..<8).map { x + Float($0) * 1.37e-3 })
            let y = exp8(xs)
            for i in 0..<8 where xs[i] <= 88.37 {
                let ref = expf(xs[i])
                worst = max(worst, abs(y[i] - ref) / ref.ulp)
            }
            x += 0.0173
        }
        #expect(worst <= 2, "worst error \(worst) ulp")
        let edges = exp8(SIMD8<Float>(0, -.infinity, .infinity, .nan, -90, 89, 1, -1))
        #expect(edges[0] == 1)
        #expect(edges[1] == 0 && edges[4] == 0)
        #expect(edges[2] == .infinity && edges[5] == .infinity)
        #expect(edges[3].isNaN)
        #expect(abs(edges[6] - expf(1)) <= expf(1).ulp && abs(edges[7] - expf(-1)) <= expf(-1).ulp)
    }

    /// The vector helpers' tails: every count from 0 to 20 and across the 1024 summation block.
    @Test func expShiftedAndMaxValueTails() {
        for count in Array(0...20) + [1_023, 1_024, 1_025, 2_050] {
            let x = randomFloats(count, seed: UInt64(count), scale: 5)
            let mx = x.max() ?? -.infinity
            #expect(x.withUnsafeBufferPointer { maxValue($0.baseAddress!, count: count) } == mx)
            var out = [Float](repeating: .nan, count: count + 3)
            let sum = x.withUnsafeBufferPointer { xp in
                out.withUnsafeMutableBufferPointer { expShifted(xp.baseAddress!, into: $0.baseAddress!, count: count, shift: 2) }
            }
            let ref = x.map { exp(Double($0 - 2)) }  // the argument rounded to Float, as the kernel has it
            #expect(abs(sum - ref.reduce(0, +)) <= 1e-6 * max(ref.reduce(0, +), 1e-30))
            for i in 0..<count { #expect(abs(Double(out[i]) - ref[i]) <= 2.5e-7 * ref[i]) }  // ~2 ulp
            #expect(out[count...].allSatisfy { $0.isNaN }, "nothing written past count")
        }
    }

    @Test func shiftedTargetsFollowTransformers() {
        let labels: [Int32] = [-100, 5, 6, 7, -100, -100, 9, 8]
        #expect(shiftedTargets(labels: labels, batch: 2, seqLen: 4) == [5, 6, 7, -1, -1, 9, 8, -1])
    }

    // MARK: Attention

    /// Naive masked GQA attention in Double.
    static func naiveAttention(q: [Float], k: [Float], v: [Float], mask: AttentionMask, H: Int, Hk: Int, D: Int) -> [Float] {
        let B = mask.batch, T = mask.seqLen
        var out = [Float](repeating: 0, count: B * T * H * D)
        for b in 0..<B { for h in 0..<H { for i in 0..<T {
            let g = h / (H / Hk)
            var s = [Double](repeating: -.infinity, count: T)
            for j in 0...i {
                if let p = mask.padding, p[b * T + j] == 0 { continue }
                if let sg = mask.segments, sg[b * T + i] != sg[b * T + j] { continue }
                var d = 0.0
                for e in 0..<D { d += Double(q[((b * T + i) * H + h) * D + e]) * Double(k[((b * T + j) * Hk + g) * D + e]) }
                s[j] = d / Double(D).squareRoot()
            }
            let mx = s.max()!
            guard mx > -.infinity else { continue }
            let e = s.map { exp($0 - mx) }, z = e.reduce(0, +)
            for dd in 0..<D {
                var acc = 0.0
                for j in 0..<T { acc += e[j] / z * Double(v[((b * T + j) * Hk + g) * D + dd]) }
                out[((b * T + i) * H + h) * D + dd] = Float(acc)
            }
        } } }
        return out
    }

    static let masks: [AttentionMask] = [
        AttentionMask(batch: 2, seqLen: 5),
        AttentionMask(batch: 2, seqLen: 5, padding: [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]),
        AttentionMask(batch: 2, seqLen: 5, segments: [0, 0, 1, 1, 1, 0, 1, 1, 2, 2]),
    ]

    @Test(arguments: masks)
    func attentionForwardAndBackward(_ mask: AttentionMask) {
        let H = 4, Hk = 2, D = 6, B = mask.batch, T = mask.seqLen
        let q = randomFloats(B * T * H * D, seed: 13), k = randomFloats(B * T * Hk * D, seed: 14), v = randomFloats(B * T * Hk * D, seed: 15)
        func fwd(_ q: [Float], _ k: [Float], _ v: [Float]) -> [Float] {
            var out = [Float](repeating: 0, count: B * T * H * D), probs = [Float](repeating: 0, count: B * H * T * T)
            attentionForward(out: &out, probs: &probs, q: q, k: k, v: v, mask: mask, heads: H, kvHeads: Hk, headDim: D)
            return out
        }
        #expect(maxAbsDiff(fwd(q, k, v), Self.naiveAttention(q: q, k: k, v: v, mask: mask, H: H, Hk: Hk, D: D)) < 1e-5)
        let r = randomFloats(B * T * H * D, seed: 16)
        var out = [Float](repeating: 0, count: B * T * H * D), probs = [Float](repeating: 0, count: B * H * T * T)
        attentionForward(out: &out, probs: &probs, q: q, k: k, v: v, mask: mask, heads: H, kvHeads: Hk, headDim: D)
        var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count), dv = dk
        attentionBackward(dq: &dq, dk: &dk, dv: &dv, dout: r, q: q, k: k, v: v, probs: probs, mask: mask, heads: H, kvHeads: Hk, headDim: D)
        #expect(relativeError(dq, finiteDifference(q, h: 1e-2) { dot(fwd($0, k, v), r) }) < 3e-3)
        #expect(relativeError(dk, finiteDifference(k, h: 1e-2) { dot(fwd(q, $0, v), r) }) < 3e-3)
        #expect(relativeError(dv, finiteDifference(v, h: 1e-2) { dot(fwd(q, k, $0), r) }) < 3e-3)
    }

    @Test func cachedAttentionEqualsFullAttention() {
        let H = 4, Hk = 2, D = 6, T = 7
        let q = randomFloats(T * H * D, seed: 17), k = randomFloats(T * Hk * D, seed: 18), v = randomFloats(T * Hk * D, seed: 19)
        let full = Self.naiveAttention(q: q, k: k, v: v, mask: AttentionMask(batch: 1, seqLen: T), H: H, Hk: Hk, D: D)
        // Prefill 4 rows, then 3 more against the cache.
        var out = [Float](repeating: 0, count: T * H * D), scores = [Float](repeating: 0, count: H * T * T)
        out.withUnsafeMutableBufferPointer { o in
            cachedAttention(out: o.baseAddress!, q: q, kCache: k, vCache: v, start: 0, n: 4, heads: H, kvHeads: Hk, headDim: D, scores: &scores)
            q.withUnsafeBufferPointer { qp in
                cachedAttention(out: o.baseAddress! + 4 * H * D, q: qp.baseAddress! + 4 * H * D, kCache: k, vCache: v, start: 4, n: 3,
                                heads: H, kvHeads: Hk, headDim: D, scores: &scores)
            }
        }
        #expect(maxAbsDiff(out, full) < 1e-5)
    }

    // MARK: Half precision

    @Test func bf16RoundsToNearestEven() {
        #expect(floatToBF16(1.0) == 0x3F80)
        #expect(bf16ToFloat(floatToBF16(3.140625)) == 3.140625)
        // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties go to even (1.0).
        #expect(floatToBF16(1 + 1.0 / 256) == 0x3F80)
        #expect(floatToBF16(1 + 3.0 / 256) == 0x3F82)
        #expect(f16ToFloat(floatToF16(0.333251953125)) == 0.333251953125)
    }
}

extension AttentionMask: CustomTestStringConvertible {
    public var testDescription: String {
        padding != nil ? "padding" : segments != nil ? "packed segments" : "causal"
    }
}
