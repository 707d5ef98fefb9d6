import Foundation
import Testing
import TestSupport
@testable import LLMCore

/// The transformer's own backward pass (every layer's kernels composed, the frozen base's input
/// gradients included), checked from LLMCore alone: a dense test delta `y += x·Dᵀ` on every
/// projection has `∂L/∂D = ∂L/∂W`, so its gradient is the base weight's gradient, compared with
/// central finite differences of the whole model's loss on a packed, padded batch.
@Suite struct TransformerBackwardTests {
    /// `ΔW = D` (dense `[out, in]`), foldable or not.
    final class DenseDelta: LinearDelta {
        let outF, inF: Int
        var d: [Float], grad: [Float]
        let folds: Bool
        init(out: Int, in inF: Int, seed: UInt64, folds: Bool) {
            outF = out; self.inF = inF; self.folds = folds
            var r = SplitMix64(seed: seed)
            d = (0..<(out * inF)).map { _ in (r.nextFloat() * 2 - 1) * 0.02 }
            grad = Array(repeating: 0, count: out * inF)
        }
        func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, training: Bool) {
            for r in 0..<rows { for o in 0..<outF {
                var s: Float = 0
                for i in 0..<inF { s += x[r * inF + i] * d[o * inF + i] }
                y[r * outF + o] += s
            } }
        }
        func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, dx: UnsafeMutablePointer<Float>) {
            backwardParameters(x: x, dy: dy, rows: rows)
            for r in 0..<rows { for o in 0..<outF { for i in 0..<inF { dx[r * inF + i] += dy[r * outF + o] * d[o * inF + i] } } }
        }
        func canFold(training: Bool) -> Bool { folds }
        func addDelta(into w: UnsafeMutablePointer<Float>, rows: Range<Int>) {
            for o in rows { for i in 0..<inF { w[o * inF + i] += d[o * inF + i] } }
        }
        func backwardParameters(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int) {
            for r in 0..<rows { for o in 0..<outF { for i in 0..<inF { grad[o * inF + i] += dy[r * outF + o] * x[r * inF + i] } } }
        }
    }

    final class Deltas: AdapterProvider {
        var table: [[DenseDelta]] = []
        func delta(layer: Int, projection: Projection) -> LinearDelta? { table[layer][projection.index] }
    }

    @Test(arguments: FixtureModel.allCases, [false, true])
    func everyProjectionsWeightGradient(_ f: FixtureModel, folded: Bool) throws {
        let w = try f.load(), c = w.config
        let deltas = Deltas()
        deltas.table = (0..<c.numLayers).map { l in
            Projection.allCases.map { p in
                let (o, i) = c.shape(of: p)
                return DenseDelta(out: o, in: i, seed: UInt64(l * 10 + p.index), folds: folded)
            }
        }
        let model = TransformerModel(weights: w, adapters: deltas)
        let (input, targets) = FixtureBatch.packedPadded
        let acts = Activations(config: c, batch: input.batch, seqLen: input.seqLen)
        func loss() throws -> Double {
            try model.forward(input, acts: acts, training: false)
            return model.loss(acts: acts, targets: targets).sum
        }
        try model.forward(input, acts: acts, training: true)
        _ = model.lossAndGradient(acts: acts, targets: targets, normalizer: 1)
        model.backward(input, acts: acts)
        // Every projection of the first layer (its gradient crosses every later layer's
        // backward) and of the last, a few coordinates each.
        for l in [0, c.numLayers - 1] {
            for p in Projection.allCases {
                let d = deltas.table[l][p.index]
                for i in [0, d.d.count / 3, d.d.count - 1] {
                    let v = d.d[i], h: Float = 1e-2
                    d.d[i] = v + h; let lp = try loss()
                    d.d[i] = v - h; let lm = try loss()
                    d.d[i] = v
                    let fd = Float((lp - lm) / Double(2 * h))
                    #expect(abs(d.grad[i] - fd) <= 5e-3 * max(abs(fd), 1e-1),
                            "\(f) layer \(l) \(p)[\(i)] folded \(folded): backward \(d.grad[i]) vs finite difference \(fd)")
                }
            }
        }
    }
}
