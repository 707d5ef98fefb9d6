import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport

/// Folding NdLinear-LoRA's `ΔW` into the layer's f32 weight (`LinearDelta.canFold`): the
/// kernel pieces, and a whole model with bf16 weights (widened + folded per layer) against the
/// same model running the adapter's own forward and backward.
@Suite struct FoldTests {
    static func ndlinear(dropout: Float = 0) -> NdLinearAdapter {
        var rng = SplitMix64(seed: 11)
        let a = NdLinearAdapter(weightName: "model.layers.0.mlp.gate_proj.weight", inFeatures: 12, outFeatures: 10, alpha: 1.5, rng: &rng)
        a.dropout = dropout
        return a
    }

    @Test func addDeltaOverRowRangesEqualsDenseDelta() {
        let a = Self.ndlinear()
        let base = randomFloats(a.outFeatures * a.inFeatures, seed: 2)
        var w = base
        w.withUnsafeMutableBufferPointer {
            a.addDelta(into: $0.baseAddress!, rows: 3..<10)
            a.addDelta(into: $0.baseAddress!, rows: 0..<3)
        }
        let expected = zip(base, a.deltaWeight()).map { $0 + $1 }
        #expect(maxAbsDiff(w, expected) <= 1e-6)
        // Rows outside the range are untouched.
        var part = base
        part.withUnsafeMutableBufferPointer { a.addDelta(into: $0.baseAddress!, rows: 4..<5) }
        #expect(Array(part[0..<(4 * 12)]) == Array(base[0..<(4 * 12)]))
        #expect(Array(part[(5 * 12)...]) == Array(base[(5 * 12)...]))
        #expect(maxAbsDiff(Array(part[(4 * 12)..<(5 * 12)]), Array(expected[(4 * 12)..<(5 * 12)])) <= 1e-6)
    }

    @Test func parameterOnlyBackwardGivesTheSameGradients() {
        let a = Self.ndlinear(), rows = 5
        let x = randomFloats(rows * a.inFeatures, seed: 3), dy = randomFloats(rows * a.outFeatures, seed: 4)
        var dx = [Float](repeating: 0, count: rows * a.inFeatures)
        a.zeroGradients()
        a.backward(x: x, dy: dy, rows: rows, dx: &dx)
        let full = a.parameters.map(\.grad.array)
        #expect(maxAbs(dx) > 0)
        a.zeroGradients()
        a.backwardParameters(x: x, dy: dy, rows: rows)
        #expect(a.parameters.map(\.grad.array) == full)
    }

    @Test func foldsOnlyWithoutATrainingDropoutMask() {
        #expect(Self.ndlinear().canFold(training: true))
        #expect(Self.ndlinear().canFold(training: false))
        #expect(!Self.ndlinear(dropout: 0.1).canFold(training: true))
        #expect(Self.ndlinear(dropout: 0.1).canFold(training: false))
        var rng = SplitMix64(seed: 1)
        let lora = LoRAAdapter(weightName: "model.layers.0.mlp.down_proj.weight", inFeatures: 12, outFeatures: 10, rank: 3, alpha: 6, rng: &rng)
        #expect(!lora.canFold(training: false))
    }

    /// Two models on the same bf16 weights and adapters, one folding.
    func models(_ f: FixtureModel, dropout: Float) throws -> (folded: TransformerModel, plain: TransformerModel, set: AdapterSet, batch: FixtureBatch) {
        let config = try f.load().config
        let weights = try ModelWeights.random(config: config, dtype: .bf16, seed: 7)
        let set = try AdapterSet.create(spec: AdapterSpec(kind: .ndlinear, alpha: 2, dropout: dropout), config: config, seed: 5)
        set.setDropoutSeed(99)
        let folded = TransformerModel(weights: weights, adapters: set)
        let plain = TransformerModel(weights: weights, adapters: set)
        plain.foldAdapters = false
        return (folded, plain, set, try FixtureBatch(try f.expected()))
    }

    func step(_ m: TransformerModel, _ set: AdapterSet, _ b: FixtureBatch) throws -> (logits: [Float], grads: [[Float]]) {
        let acts = Activations(config: m.config, batch: b.batch, seqLen: b.seqLen)
        try m.forward(b.input, acts: acts, training: true)
        let logits = acts.logits.array
        _ = m.lossAndGradient(acts: acts, targets: b.targets, normalizer: b.targets.filter { $0 >= 0 }.count)
        set.zeroGradients()
        m.backward(b.input, acts: acts)
        return (logits, set.parameters.map(\.grad.array))
    }

    @Test(arguments: FixtureModel.allCases, [Float(0), 0.1])
    func foldedStepEqualsAdapterForwardAndBackward(_ f: FixtureModel, _ dropout: Float) throws {
        let (folded, plain, set, batch) = try models(f, dropout: dropout)
        let a = try step(folded, set, batch), b = try step(plain, set, batch)
        #expect(maxAbsDiff(a.logits, b.logits) <= 1e-4 * max(maxAbs(b.logits), 1))
        for (g, h) in zip(a.grads, b.grads) {
            #expect(maxAbsDiff(g, h) <= 1e-4 * maxAbs(h) + 1e-7, "\(f) dropout \(dropout)")
        }
    }

    /// A folded weight belongs to one forward pass: after the parameters change (an optimizer
    /// step), the next pass must fold again even for the layer still held in scratch.
    @Test(arguments: FixtureModel.allCases)
    func foldFollowsParameterUpdates(_ f: FixtureModel) throws {
        let (folded, plain, set, batch) = try models(f, dropout: 0)
        _ = try step(folded, set, batch)
        for p in set.parameters { for i in 0..<p.count { p.value[i] -= 0.5 * p.grad[i] + 0.01 } }
        func logits(_ m: TransformerModel) throws -> [Float] {
            let acts = Activations(config: m.config, batch: batch.batch, seqLen: batch.seqLen)
            try m.forward(batch.input, acts: acts, training: false)
            return acts.logits.array
        }
        let a = try logits(folded), b = try logits(plain)
        #expect(maxAbsDiff(a, b) <= 1e-4 * max(maxAbs(b), 1), "\(f)")
        // Generation's prefill (cached forward, many rows: folded) after another update.
        for p in set.parameters { for i in 0..<p.count { p.value[i] *= 0.9 } }
        let prompt = Array(batch.input.tokens.prefix(batch.seqLen)).map(Int.init)
        func prefill(_ m: TransformerModel) throws -> [Float] {
            try m.forwardCached([CachedSequence(tokens: prompt, cache: KVCache(config: m.config, capacity: prompt.count))])[0]
        }
        let c = try prefill(folded), d = try prefill(plain)
        #expect(maxAbsDiff(c, d) <= 1e-4 * max(maxAbs(d), 1), "\(f) prefill")
    }
}
