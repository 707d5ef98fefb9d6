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
        BLAS.gemm(transB: true, m: rows * a, n: d, k: b, a: xd, b: w1.value.pointer, c: tmp)
        for n in 0..<rows { for k in 0..<a { (t1t + k * rows * d + n * d).update(from: tmp + (n * a + k) * d, count: d) } }
    }

    public func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, training: Bool) {
        let (a, _) = inFactors, (c, d) = outFactors
        let xd = AdapterDropout.apply(x: x, count: rows * inFeatures, p: dropout, seed: dropoutSeed, training: training,
                                      workspace: workspace)
        let t1t = workspace.slot(2, a * rows * d)
        projectInput(xd, rows: rows, tmp: workspace.slot(1, rows * a * d), into: t1t)
        // Y' [c, rows·d] = α · W0 [c, a] · T1t
        let yt = workspace.slot(1, c * rows * d)
        BLAS.gemm(m: c, n: rows * d, k: a, alpha: alpha, a: w0.value.pointer, b: t1t, c: yt)
        for n in 0..<rows {
            let yr = y + n * outFeatures
            for i in 0..<c {
                let src = yt + i * rows * d + n * d, dst = yr + i * d
                for j in 0..<d { dst[j] += src[j] }
            }
        }
    }

    /// Nothing is kept from the forward: `T1` is recomputed from `x` (one small GEMM, about a
    /// sixth of the adapter's forward+backward FLOPs) instead of holding `rows·a·d` floats per
    /// adapted projection until the backward pass reaches it.
    public func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, dx: UnsafeMutablePointer<Float>) {
        let (a, b) = inFactors, (c, d) = outFactors
        // Gt [c, rows·d] = α · dy viewed [rows, c, d], transposed.
        let gt = workspace.slot(1, max(c * rows * d, dropout > 0 ? rows * inFeatures : 0))
        for n in 0..<rows {
            for i in 0..<c {
                let src = dy + n * outFeatures + i * d, dst = gt + i * rows * d + n * d
                for j in 0..<d { dst[j] = alpha * src[j] }
            }
        }
        let xd = AdapterDropout.apply(x: x, count: rows * inFeatures, p: dropout, seed: dropoutSeed, training: true,
                                      workspace: workspace)
        let t1t = workspace.slot(3, a * rows * d)
        projectInput(xd, rows: rows, tmp: workspace.slot(2, rows * a * d), into: t1t)
        // dW0 += Gt · T1tᵀ
        BLAS.gemm(transB: true, m: c, n: a, k: rows * d, a: gt, b: t1t, beta: 1, c: w0.grad.pointer)
        // dT1t [a, rows·d] = W0ᵀ · Gt, then back to dT1 [rows·a, d] (T1t's slot is free now)
        let dt1t = workspace.slot(2, a * rows * d)
        BLAS.gemm(transA: true, m: a, n: rows * d, k: c, a: w0.value.pointer, b: gt, c: dt1t)
        let dt1 = t1t
        for n in 0..<rows { for k in 0..<a { (dt1 + (n * a + k) * d).update(from: dt1t + k * rows * d + n * d, count: d) } }
        // dW1 += dT1ᵀ · X
        BLAS.gemm(transA: true, m: d, n: b, k: rows * a, a: dt1, b: xd, beta: 1, c: w1.grad.pointer)
        // dX [rows·a, b] = dT1 · W1 (Gt's slot is free now)
        if dropout > 0 {
            let tmp = gt
            BLAS.gemm(m: rows * a, n: b, k: d, a: dt1, b: w1.value.pointer, c: tmp)
            AdapterDropout.backward(tmp, count: rows * inFeatures, p: dropout, seed: dropoutSeed)
            addInPlace(dx, tmp, count: rows * inFeatures)
        } else {
            BLAS.gemm(m: rows * a, n: b, k: d, a: dt1, b: w1.value.pointer, beta: 1, c: dx)
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
