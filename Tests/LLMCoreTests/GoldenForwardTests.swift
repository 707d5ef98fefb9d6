import Foundation
import LLMCore
import Testing
import TestSupport

/// Logits, loss and greedy tokens of the base models against transformers (float64 reference).
/// Tolerances from Tests/Fixtures/README.md: logits 1e-4, loss 1e-5, greedy identical.
@Suite struct GoldenForwardTests {
    @Test(arguments: FixtureModel.allCases)
    func logitsAndLoss(_ fixture: FixtureModel) throws {
        let model = TransformerModel(weights: try fixture.load())
        let e = try fixture.expected()
        let fb = try FixtureBatch(e)
        let acts = Activations(config: model.config, batch: fb.batch, seqLen: fb.seqLen)
        try model.forward(fb.input, acts: acts, training: false)
        let V = model.config.vocabSize
        let expected = try e.tensor("logits").floats()
        let diff = maxAbsDiff(acts.logits.array, expected) { fb.mask[$0 / V] == 1 }
        #expect(diff <= 1e-4, "\(fixture): max |Δlogit| = \(diff)")
        let (sum, count) = model.loss(acts: acts, targets: fb.targets)
        let loss = try e.tensor("loss").floats()[0]
        #expect(abs(Float(sum / Double(count)) - loss) <= 1e-5, "\(fixture): loss \(sum / Double(count)) vs \(loss)")
    }

    @Test(arguments: FixtureModel.allCases)
    func greedyWithAndWithoutCache(_ fixture: FixtureModel) throws {
        let model = TransformerModel(weights: try fixture.load())
        let e = try fixture.expected()
        let prompt = try e.tensor("prompt"), greedy = try e.tensor("greedy")
        let rows = prompt.shape[0], p = prompt.shape[1], g = greedy.shape[1]
        let prompts = (0..<rows).map { Array(prompt.ints()[($0 * p)..<(($0 + 1) * p)]) }
        let expected = (0..<rows).map { Array(greedy.ints()[($0 * g)..<(($0 + 1) * g)]) }
        // Batched, KV-cached.
        let cached = try model.generate(prompts: prompts, maxNewTokens: g)
        #expect(cached == expected, "\(fixture): cached batched greedy")
        // One at a time, KV-cached.
        for r in 0..<rows {
            #expect(try model.generate(prompts: [prompts[r]], maxNewTokens: g)[0] == expected[r])
        }
        // Without a cache.
        #expect(try model.greedyUncached(prompt: prompts[0], maxNewTokens: g) == expected[0], "\(fixture): uncached greedy")
    }

    @Test func allStorageDtypesLoad() throws {
        let dtypes = try FixtureModel.allCases.map { try $0.load().storageDType }
        #expect(Set(dtypes) == [.f32, .bf16, .f16])
        // qwen3-tiny is the 8-shard checkpoint.
        let w = try FixtureModel.qwen3Tiny.load()
        #expect(w.source.hasSuffix("model.safetensors.index.json"))
    }
}

/// The bundled real model (Karpathy's stories260K in HF layout).
@Suite struct Stories260KTests {
    struct Reference: Decodable {
        let greedy_token_ids: [Int]
        let logits_input_ids: [Int]
        let logits_first8_positions: [[Float]]
    }

    static let dir = TestPaths.models.appendingPathComponent("stories260K")

    func reference() throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: Self.dir.appendingPathComponent("reference_greedy.json")))
    }

    @Test func greedyFromBOSReproducesLlama2c() throws {
        let model = TransformerModel(weights: try ModelWeights.load(directory: Self.dir))
        let ref = try reference()
        let out = try model.generate(prompts: [[1]], maxNewTokens: ref.greedy_token_ids.count)[0]
        #expect(out == ref.greedy_token_ids)
    }

    @Test func firstEightLogits() throws {
        let model = TransformerModel(weights: try ModelWeights.load(directory: Self.dir))
        let ref = try reference()
        let ids = ref.logits_input_ids
        let input = ModelInput(batch: 1, seqLen: ids.count, tokens: ids)
        let acts = Activations(config: model.config, batch: 1, seqLen: ids.count)
        try model.forward(input, acts: acts, training: false)
        let got = acts.logits.array
        let expected = ref.logits_first8_positions.flatMap { $0 }
        #expect(got.count == expected.count)
        // The reference stores 5 decimals, so allow that rounding on top of 1e-4.
        #expect(maxAbsDiff(got, expected) <= 1e-4 + 5e-6)
    }
}
