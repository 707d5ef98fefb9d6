import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport

/// A forward given targets computes logits only for the rows that have one (prompt-masked and
/// padded positions skip the lm_head): the loss and every adapter gradient must equal the
/// all-rows computation, and the fixtures' PyTorch values.
@Suite struct PackedLogitsTests {
    func run(_ f: FixtureModel, _ kind: String, targets: (FixtureBatch) -> [Int32], packed: Bool)
        throws -> (loss: Double, grads: [[Float]], evalLoss: Double, rows: [Int]?) {
        let weights = try f.load()
        let set = try AdapterIO.load(f.directory.appendingPathComponent(kind), config: weights.config)
        let model = TransformerModel(weights: weights, adapters: set)
        let batch = try FixtureBatch(try f.expected())
        let t = targets(batch)
        let count = t.filter { $0 >= 0 }.count
        let acts = Activations(config: weights.config, batch: batch.batch, seqLen: batch.seqLen)
        try model.forward(batch.input, acts: acts, training: false, targets: packed ? t : nil)
        let evalLoss = model.loss(acts: acts, targets: t).sum
        try model.forward(batch.input, acts: acts, training: true, targets: packed ? t : nil)
        let rows = acts.logitRows
        let loss = model.lossAndGradient(acts: acts, targets: t, normalizer: max(count, 1))
        set.zeroGradients()
        model.backward(batch.input, acts: acts)
        return (loss, set.parameters.map(\.grad.array), evalLoss, rows)
    }

    /// The fixture batch (padding and the last position have no target) against PyTorch.
    @Test(arguments: FixtureModel.allCases, ["lora", "ndlinear"])
    func packedRowsMatchTheFixture(_ f: FixtureModel, _ kind: String) throws {
        let r = try run(f, kind, targets: \.targets, packed: true)
        let batch = try FixtureBatch(try f.expected())
        #expect(r.rows == batch.targets.indices.filter { batch.targets[$0] >= 0 })
        let e = try f.expected(kind)
        let count = batch.targets.filter { $0 >= 0 }.count
        #expect(abs(Float(r.loss / Double(count)) - (try e.tensor("loss").floats()[0])) <= 1e-5)
        #expect(abs(r.evalLoss - r.loss) <= 1e-9 * abs(r.loss))
        let set = try AdapterIO.load(f.directory.appendingPathComponent(kind), config: try f.load().config)
        var i = 0
        for a in set.adapters {
            for p in a.parameters {
                let expected = try e.tensor(GoldenAdapterTests.gradKey(a, p)).floats()
                #expect(maxAbsDiff(r.grads[i], expected) <= 1e-4 * maxAbs(expected) + 1e-7, "\(f) \(kind) \(a.modulePath) \(p.role)")
                i += 1
            }
        }
        #expect(i == r.grads.count)
    }

    /// Most positions masked (a long prompt), and none at all: packed equals all rows.
    @Test(arguments: FixtureModel.allCases, [0.7, 1.0])
    func maskedPromptsEqualAllRows(_ f: FixtureModel, _ masked: Double) throws {
        let mask: (FixtureBatch) -> [Int32] = { b in
            b.targets.enumerated().map { i, t in Double(i % b.seqLen) < masked * Double(b.seqLen) ? -1 : t }
        }
        let packed = try run(f, "lora", targets: mask, packed: true)
        let full = try run(f, "lora", targets: mask, packed: false)
        #expect(packed.rows != nil)
        #expect(abs(packed.loss - full.loss) <= 1e-6 * max(abs(full.loss), 1e-12))
        #expect(abs(packed.evalLoss - full.evalLoss) <= 1e-6 * max(abs(full.evalLoss), 1e-12))
        for (a, b) in zip(packed.grads, full.grads) {
            #expect(maxAbsDiff(a, b) <= 1e-5 * maxAbs(b) + 1e-12, "\(f) masked \(masked)")
        }
        if masked == 1 { #expect(packed.grads.allSatisfy { $0.allSatisfy { $0 == 0 } }) }
    }
}
