import Adapters
import Foundation
import LLMCore

/// AdamW with PyTorch's semantics (`torch.optim.AdamW`, Loshchilov & Hutter 2019): decoupled
/// weight decay `p ← p − lr·wd·p`, then the bias-corrected Adam step
/// `p ← p − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε)`.
public final class AdamW {
    public var beta1: Double
    public var beta2: Double
    public var eps: Double
    public var weightDecay: Double
    /// Completed optimizer steps (t of the bias correction is `step` after increment).
    public private(set) var step: Int = 0
    let m: [FloatBuffer]
    let v: [FloatBuffer]
    let params: [AdapterParameter]

    public init(parameters: [AdapterParameter], betas: (Double, Double) = (0.9, 0.999), eps: Double = 1e-8, weightDecay: Double = 0.01) {
        params = parameters
        beta1 = betas.0; beta2 = betas.1; self.eps = eps; self.weightDecay = weightDecay
        m = parameters.map { FloatBuffer(count: $0.count) }
        v = parameters.map { FloatBuffer(count: $0.count) }
    }

    /// One update with learning rate `lr` from the gradients currently in the parameters.
    public func update(lr: Double) {
        step += 1
        let bc1 = 1 - pow(beta1, Double(step)), bc2 = 1 - pow(beta2, Double(step))
        let stepSize = Float(lr / bc1), bc2Sqrt = Float(bc2.squareRoot())
        let decay = Float(1 - lr * weightDecay)
        let b1 = Float(beta1), b2 = Float(beta2), e = Float(eps)
        for (i, p) in params.enumerated() {
            let w = p.value.pointer, g = p.grad.pointer, mm = m[i].pointer, vv = v[i].pointer
            for j in 0..<p.count {
                w[j] *= decay
                mm[j] = b1 * mm[j] + (1 - b1) * g[j]
                vv[j] = b2 * vv[j] + (1 - b2) * g[j] * g[j]
                w[j] -= stepSize * mm[j] / (vv[j].squareRoot() / bc2Sqrt + e)
            }
        }
    }

    /// Moments for checkpoints, in parameter order.
    public var moments: (m: [[Float]], v: [[Float]]) { (m.map(\.array), v.map(\.array)) }

    /// Restores moments and the step count from a checkpoint.
    public func restore(step: Int, m mValues: [[Float]], v vValues: [[Float]]) throws {
        guard mValues.count == m.count, vValues.count == v.count else {
            throw TrainingError.checkpoint("optimizer state has \(mValues.count) tensors, the adapter \(m.count)")
        }
        for i in m.indices {
            guard mValues[i].count == m[i].count, vValues[i].count == v[i].count else {
                throw TrainingError.checkpoint("optimizer moment \(i) has \(mValues[i].count) values, expected \(m[i].count)")
            }
            for j in 0..<m[i].count { m[i][j] = mValues[i][j]; v[i][j] = vValues[i][j] }
        }
        self.step = step
    }
}

/// Global L2 norm of all gradients (accumulated in Double).
public func gradientNorm(_ params: [AdapterParameter]) -> Double {
    var s = 0.0
    for p in params { for j in 0..<p.count { let g = Double(p.grad[j]); s += g * g } }
    return s.squareRoot()
}

/// `torch.nn.utils.clip_grad_norm_`: scales every gradient by `max / (norm + 1e-6)` when that is < 1.
public func clipGradients(_ params: [AdapterParameter], maxNorm: Double, norm: Double) {
    let coef = maxNorm / (norm + 1e-6)
    guard coef < 1 else { return }
    let c = Float(coef)
    for p in params { for j in 0..<p.count { p.grad[j] *= c } }
}

// MARK: - Learning-rate schedules

/// Learning-rate schedules of transformers' `get_*_schedule_with_warmup`. The optimizer step
/// k (1-based) uses the multiplier at scheduler step k−1, so the first warmup step has lr 0.
public enum LRScheduleKind: String, Sendable, CaseIterable {
    case constant, linear, cosine
}

public struct LRSchedule: Sendable {
    public var kind: LRScheduleKind
    public var baseLR: Double
    public var warmupSteps: Int
    public var totalSteps: Int

    public init(kind: LRScheduleKind, baseLR: Double, warmupSteps: Int, totalSteps: Int) {
        self.kind = kind; self.baseLR = baseLR; self.warmupSteps = warmupSteps; self.totalSteps = totalSteps
    }

    /// Warmup steps from a ratio, as transformers' `get_warmup_steps`: ⌈ratio · total⌉.
    public static func warmup(ratio: Double, totalSteps: Int) -> Int { Int((ratio * Double(totalSteps)).rounded(.up)) }

    /// The lr for optimizer step `k` (1-based).
    public func lr(step k: Int) -> Double {
        let s = Double(k - 1), w = Double(warmupSteps), t = Double(totalSteps)
        if k - 1 < warmupSteps { return baseLR * s / max(1, w) }
        switch kind {
        case .constant: return baseLR
        case .linear: return baseLR * max(0, (t - s) / max(1, t - w))
        case .cosine:
            let progress = (s - w) / max(1, t - w)
            return baseLR * max(0, 0.5 * (1 + cos(Double.pi * progress)))
        }
    }
}
