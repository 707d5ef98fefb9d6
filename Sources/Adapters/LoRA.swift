import Foundation
import LLMCore

/// Classic LoRA (Hu et al. 2021) as PEFT computes it: `y += s · B(A·drop(x))` with
/// `A [r, in]`, `B [out, r]`, `s = alpha/r` (or `alpha/√r` with rsLoRA).
public final class LoRAAdapter: LinearAdapter {
    public let kind = AdapterKind.lora
    public let weightName: String
    public let inFeatures: Int
    public let outFeatures: Int
    public let rank: Int
    public let alpha: Float
    public let useRSLoRA: Bool
    public let a: AdapterParameter
    public let b: AdapterParameter
    public var dropout: Float = 0
    public var dropoutSeed: UInt64 = 0

    public var workspace = AdapterWorkspace()

    /// `x·Aᵀ` from the last training forward, `[rows, r]` (small: kept rather than recomputed).
    private var saved: FloatBuffer?

    public var scale: Float { useRSLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank) }
    public var parameters: [AdapterParameter] { [a, b] }

    /// PEFT's default init: A ~ kaiming_uniform(a=√5) = U(±1/√in), B = 0.
    public init(weightName: String, inFeatures: Int, outFeatures: Int, rank: Int, alpha: Float,
                useRSLoRA: Bool = false, rng: inout SplitMix64) {
        let bound = 1 / Float(inFeatures).squareRoot()
        let aValues = (0..<(rank * inFeatures)).map { _ in (rng.nextFloat() * 2 - 1) * bound }
        self.weightName = weightName; self.inFeatures = inFeatures; self.outFeatures = outFeatures
        self.rank = rank; self.alpha = alpha; self.useRSLoRA = useRSLoRA
        a = AdapterParameter(role: "lora_A", shape: [rank, inFeatures], values: aValues)
        b = AdapterParameter(role: "lora_B", shape: [outFeatures, rank])
    }

    /// An adapter with given values (read from files).
    public init(weightName: String, a aValues: [Float], b bValues: [Float], inFeatures: Int, outFeatures: Int,
                rank: Int, alpha: Float, useRSLoRA: Bool = false) {
        self.weightName = weightName; self.inFeatures = inFeatures; self.outFeatures = outFeatures
        self.rank = rank; self.alpha = alpha; self.useRSLoRA = useRSLoRA
        a = AdapterParameter(role: "lora_A", shape: [rank, inFeatures], values: aValues)
        b = AdapterParameter(role: "lora_B", shape: [outFeatures, rank], values: bValues)
    }

    public func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, training: Bool) {
        let xd = AdapterDropout.apply(x: x, count: rows * inFeatures, p: dropout, seed: dropoutSeed, training: training,
                                      workspace: workspace)
        let t: UnsafeMutablePointer<Float>
        if training {
            if saved == nil || saved!.count < rows * rank { saved = FloatBuffer(count: rows * rank, zeroed: false) }
            t = saved!.pointer
        } else {
            t = workspace.slot(1, rows * rank)
        }
        BLAS.gemm(transB: true, m: rows, n: rank, k: inFeatures, a: xd, b: a.value.pointer, c: t)
        BLAS.gemm(transB: true, m: rows, n: outFeatures, k: rank, alpha: scale, a: t, b: b.value.pointer, beta: 1, c: y)
    }

    public func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, dx: UnsafeMutablePointer<Float>) {
        let t = saved!.pointer
        // dB += s · dyᵀ t
        BLAS.gemm(transA: true, m: outFeatures, n: rank, k: rows, alpha: scale, a: dy, b: t, beta: 1, c: b.grad.pointer)
        // dt = s · dy B
        let dt = workspace.slot(1, rows * rank)
        BLAS.gemm(m: rows, n: rank, k: outFeatures, alpha: scale, a: dy, b: b.value.pointer, c: dt)
        // dA += dtᵀ · drop(x)
        let xd = AdapterDropout.apply(x: x, count: rows * inFeatures, p: dropout, seed: dropoutSeed, training: true,
                                      workspace: workspace)
        BLAS.gemm(transA: true, m: rank, n: inFeatures, k: rows, a: dt, b: xd, beta: 1, c: a.grad.pointer)
        // dx += mask ⊙ (dt A)
        if dropout > 0 {
            let tmp = workspace.slot(2, rows * inFeatures)
            BLAS.gemm(m: rows, n: inFeatures, k: rank, a: dt, b: a.value.pointer, c: tmp)
            AdapterDropout.backward(tmp, count: rows * inFeatures, p: dropout, seed: dropoutSeed)
            addInPlace(dx, tmp, count: rows * inFeatures)
        } else {
            BLAS.gemm(m: rows, n: inFeatures, k: rank, a: dt, b: a.value.pointer, beta: 1, c: dx)
        }
    }

    /// `ΔW = s · B·A`, `[out, in]`.
    public func deltaWeight() -> [Float] {
        var out = [Float](repeating: 0, count: outFeatures * inFeatures)
        out.withUnsafeMutableBufferPointer {
            BLAS.gemm(m: outFeatures, n: inFeatures, k: rank, alpha: scale, a: b.value.pointer, b: a.value.pointer, c: $0.baseAddress!)
        }
        return out
    }
}
