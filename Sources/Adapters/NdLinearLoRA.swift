import Foundation
import LLMCore

/// The most balanced factor pair of `n`: the largest `a ≤ √n` dividing `n`, and `n / a`
/// (FORMATS.md "NdLinear-LoRA"; PEFT's `factorization(n, -1)` gives the same pair).
public func balancedFactors(_ n: Int) -> (Int, Int) {
    precondition(n > 0)
    var a = Int(Double(n).squareRoot())
    while a * a > n { a -= 1 }
    while (a + 1) * (a + 1) <= n { a += 1 }
    while n % a != 0 { a -= 1 }
    return (a, n / a)
}

/// How NdLinear-LoRA's factors start.
public enum NdLinearInit: String, Sendable, CaseIterable {
    /// Both factors U(±1/√fan_in) (PyTorch `nn.Linear` default, the reference).
    case reference
    /// W0 = 0 (adapter starts as identity of the base, like PEFT LoKr's w1), W1 as reference.
    case zero
}

/// NdLinear-LoRA: `y += α · vec(W0 · mat(drop(x)) · W1ᵀ) = α (W0 ⊗ W1) x` with `x` viewed as
/// `[a, b]` row-major, `W0 [c, a]`, `W1 [d, b]`, `out = c·d`, `in = a·b`. Computed as two small
/// GEMMs on the `[a, b]` view; the Kronecker product is only formed by `deltaWeight()`.
public final class NdLinearAdapter: LinearAdapter {
    public let kind = AdapterKind.ndlinear
    public let weightName: String
    public let inFeatures: Int
    public let outFeatures: Int
    public let inFactors: (Int, Int)
    public let outFactors: (Int, Int)
    public let alpha: Float
    public let w0: AdapterParameter
    public let w1: AdapterParameter
    public var dropout: Float = 0
    public var dropoutSeed: UInt64 = 0

    public var workspace = AdapterWorkspace()

    public var parameters: [AdapterParameter] { [w0, w1] }

    public convenience init(weightName: String, inFeatures: Int, outFeatures: Int, alpha: Float,
                initialization: NdLinearInit = .reference, rng: inout SplitMix64) {
        let (a, b) = balancedFactors(inFeatures), (c, d) = balancedFactors(outFeatures)
        let b0 = 1 / Float(a).squareRoot(), b1 = 1 / Float(b).squareRoot()
        let v0: [Float] = (0..<(c * a)).map { _ in (rng.nextFloat() * 2 - 1) * b0 }
        let v1: [Float] = (0..<(d * b)).map { _ in (rng.nextFloat() * 2 - 1) * b1 }
        self.init(weightName: weightName, w0: initialization == .zero ? [Float](repeating: 0, count: c * a) : v0, w1: v1,
                  inFactors: (a, b), outFactors: (c, d), alpha: alpha)
    }

    public init(weightName: String, w0 v0: [Float], w1 v1: [Float], inFactors: (Int, Int), outFactors: (Int, Int), alpha: Float) {
        self.weightName = weightName
        self.inFactors = inFactors; self.outFactors = outFactors
        inFeatures = inFactors.0 * inFactors.1
        outFeatures = outFactors.0 * outFactors.1
        self.alpha = alpha
        w0 = AdapterParameter(role: "w0", shape: [outFactors.0, inFactors.0], values: v0)
        w1 = AdapterParameter(role: "w1", shape: [outFactors.1, inFactors.1], values: v1)
    }

    /// `T1t [a, rows·d]`: `T1 [rows·a, d] = X [rows·a, b] · W1ᵀ` (via `tmp`), transposed.
    private func projectInput(_ xd: UnsafePointer<Float>, rows: Int, tmp: UnsafeMutablePointer<Float>, into t1t: UnsafeMutablePointer<Float>) {
        let (a, b) = inFactors, d = outFactors.1
        BLAS.gemm(transB: true, m: rows * a, n: d, k: b, a: xd, b: w1.value.pointer, c: tmp, parallel: false)
        for n in 0..<rows { for k in 0..<a { (t1t + k * rows * d + n * d).update(from: tmp + (n * a + k) * d, count: d) } }
    }

    /// The rows are processed in blocks small enough that a block's temporaries (about
    /// `rows·max(a·d, c·d)` floats each) stay in cache: the transposes between the two small
    /// GEMMs cost as much as the GEMMs themselves when they go to memory. Blocks are spread over
    /// the engine's threads; the result does not depend on the thread count. This is the
    /// per-buffer budget in floats (128 KiB); tests shrink it to force many blocks.
    public var blockFloats = 1 << 15

    private func blocking(rows: Int, extra: Int = 0) -> (rowsPerBlock: Int, blocks: Int, parts: Int, floats: Int) {
        let (a, _) = inFactors, (c, d) = outFactors
        let perRow = max(a * d, c * d, extra)
        let most = max(1, min(rows, blockFloats / perRow))
        // As many blocks as the budget needs, rounded up to a multiple of the threads so that
        // every thread gets the same number of rows.
        let parts = min(BLAS.threads, rows)
        var blocks = (rows + most - 1) / most
        blocks = (blocks + parts - 1) / parts * parts
        let r = (rows + blocks - 1) / blocks
        return (r, (rows + r - 1) / r, parts, r * perRow)
    }

    public func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, training: Bool) {
        let (a, _) = inFactors, (c, d) = outFactors
        let inF = inFeatures, outF = outFeatures
        let xd = AdapterDropout.apply(x: x, count: rows * inF, p: dropout, seed: dropoutSeed, training: training,
                                      workspace: workspace)
        let (rb, blocks, parts, floats) = blocking(rows: rows)
        let bufs = (0..<parts).map { p in (workspace.slot(2 + 3 * p, floats), workspace.slot(3 + 3 * p, floats)) }
        let w0p = w0.value.pointer, alpha = alpha
        DispatchQueue.concurrentPerform(iterations: parts) { p in
            let (s0, s1) = bufs[p]
            for blk in stride(from: p, to: blocks, by: parts) {
                let r0 = blk * rb, n = min(rb, rows - r0)
                self.projectInput(xd + r0 * inF, rows: n, tmp: s0, into: s1)
                // Y' [c, n·d] = α · W0 [c, a] · T1t, added to y viewed [n, c, d].
                BLAS.gemm(m: c, n: n * d, k: a, alpha: alpha, a: w0p, b: s1, c: s0, parallel: false)
                for r in 0..<n {
                    let yr = y + (r0 + r) * outF
                    for i in 0..<c {
                        let src = s0 + i * n * d + r * d, dst = yr + i * d
                        for j in 0..<d { dst[j] += src[j] }
                    }
                }
            }
        }
    }

    /// Nothing is kept from the forward: `T1` is recomputed from `x` (one small GEMM, about a
    /// sixth of the adapter's forward+backward FLOPs) instead of holding `rows·a·d` floats per
    /// adapted projection until the backward pass reaches it. Each block writes its own
    /// parameter-gradient partial; they are summed in block order (deterministic).
    public func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, dx: UnsafeMutablePointer<Float>) {
        backward(x: x, dy: dy, rows: rows, inputGradient: dx)
    }

    /// Folded passes (`canFold`): the input gradient came from the GEMM on `W + ΔW`.
    public func backwardParameters(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int) {
        backward(x: x, dy: dy, rows: rows, inputGradient: nil)
    }

    private func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, inputGradient dx: UnsafeMutablePointer<Float>?) {
        let (a, b) = inFactors, (c, d) = outFactors
        let inF = inFeatures, outF = outFeatures
        let xd = AdapterDropout.apply(x: x, count: rows * inF, p: dropout, seed: dropoutSeed, training: true,
                                      workspace: workspace)
        let (rb, blocks, parts, floats) = blocking(rows: rows, extra: dropout > 0 ? inF : 0)
        let g0 = c * a, g1 = d * b
        let partials = workspace.slot(1, blocks * (g0 + g1))
        let bufs = (0..<parts).map { p in (workspace.slot(2 + 3 * p, floats), workspace.slot(3 + 3 * p, floats),
                                           workspace.slot(4 + 3 * p, floats)) }
        let w0p = w0.value.pointer, w1p = w1.value.pointer, alpha = alpha
        let dropout = dropout, seed = dropoutSeed
        DispatchQueue.concurrentPerform(iterations: parts) { p in
            let (gt, s1, s2) = bufs[p]
            for blk in stride(from: p, to: blocks, by: parts) {
                let r0 = blk * rb, n = min(rb, rows - r0)
                let xb = xd + r0 * inF, dW0 = partials + blk * (g0 + g1), dW1 = dW0 + g0
                // Gt [c, n·d] = α · dy viewed [n, c, d], transposed.
                for r in 0..<n {
                    for i in 0..<c {
                        let src = dy + (r0 + r) * outF + i * d, dst = gt + i * n * d + r * d
                        for j in 0..<d { dst[j] = alpha * src[j] }
                    }
                }
                self.projectInput(xb, rows: n, tmp: s1, into: s2)
                // dW0 = Gt · T1tᵀ
                BLAS.gemm(transB: true, m: c, n: a, k: n * d, a: gt, b: s2, c: dW0, parallel: false)
                // dT1t [a, n·d] = W0ᵀ · Gt, then back to dT1 [n·a, d]
                BLAS.gemm(transA: true, m: a, n: n * d, k: c, a: w0p, b: gt, c: s1, parallel: false)
                let dt1 = s2
                for r in 0..<n { for k in 0..<a { (dt1 + (r * a + k) * d).update(from: s1 + k * n * d + r * d, count: d) } }
                // dW1 = dT1ᵀ · X
                BLAS.gemm(transA: true, m: d, n: b, k: n * a, a: dt1, b: xb, c: dW1, parallel: false)
                // dX [n·a, b] += dT1 · W1 (through the dropout mask)
                guard let dx else { continue }
                if dropout > 0 {
                    BLAS.gemm(m: n * a, n: b, k: d, a: dt1, b: w1p, c: gt, parallel: false)
                    AdapterDropout.backward(gt, count: n * inF, p: dropout, seed: seed, offset: r0 * inF)
                    addInPlace(dx + r0 * inF, gt, count: n * inF)
                } else {
                    BLAS.gemm(m: n * a, n: b, k: d, a: dt1, b: w1p, beta: 1, c: dx + r0 * inF, parallel: false)
                }
            }
        }
        for blk in 0..<blocks {
            addInPlace(w0.grad.pointer, partials + blk * (g0 + g1), count: g0)
            addInPlace(w1.grad.pointer, partials + blk * (g0 + g1) + g0, count: g1)
        }
    }

    /// `ΔW` costs out·in multiply-adds to form, far less than a GEMM over many rows; folding
    /// is exact only when the adapter sees the layer's input, i.e. no dropout while training.
    public func canFold(training: Bool) -> Bool { !training || dropout == 0 }

    /// Rows `rows` of `w[out, in] += α · kron(W0, W1)`: row `(i, j)` gets `α·W0[i, k] · W1[j, :]`
    /// in each of its `a` column blocks of `b`.
    public func addDelta(into w: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        let (a, b) = inFactors, d = outFactors.1
        let inF = inFeatures, alpha = alpha
        let p0 = w0.value.pointer, p1 = w1.value.pointer
        for row in rows {
            let i = row / d, j = row % d
            let dst = w + row * inF, w1r = p1 + j * b
            for k in 0..<a {
                let s = alpha * p0[i * a + k], blk = dst + k * b
                for l in 0..<b { blk[l] += s * w1r[l] }
            }
        }
    }

    /// `ΔW = α · kron(W0, W1)`, `[out, in]`.
    public func deltaWeight() -> [Float] {
        let (a, b) = inFactors, (c, d) = outFactors
        var out = [Float](repeating: 0, count: outFeatures * inFeatures)
        let p0 = w0.value.pointer, p1 = w1.value.pointer
        for i in 0..<c { for j in 0..<d { for k in 0..<a { for l in 0..<b {
            out[(i * d + j) * inFeatures + k * b + l] = alpha * p0[i * a + k] * p1[j * b + l]
        } } } }
        return out
    }
}
