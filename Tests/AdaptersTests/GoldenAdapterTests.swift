import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport

/// Adapters against PEFT / the NdLinear-LoRA reference on every fixture family: logits, loss,
/// greedy tokens, every adapter gradient, LoRA merged weights and merged logits.
@Suite struct GoldenAdapterTests {
    enum Kind: String, CaseIterable, CustomStringConvertible { case lora, ndlinear; var description: String { rawValue } }

    static var cases: [(FixtureModel, Kind)] { FixtureModel.allCases.flatMap { f in Kind.allCases.map { (f, $0) } } }

    func setUp(_ f: FixtureModel, _ k: Kind, checkpointing: Bool = false, fold: Bool = true) throws
        -> (TransformerModel, AdapterSet, SafetensorsFile, FixtureBatch, Activations) {
        let weights = try f.load()
        let set = try AdapterIO.load(f.directory.appendingPathComponent(k.rawValue), config: weights.config)
        let model = TransformerModel(weights: weights, adapters: set)
        model.foldAdapters = fold
        let base = try f.expected()
        let batch = try FixtureBatch(base)
        let acts = Activations(config: weights.config, batch: batch.batch, seqLen: batch.seqLen, checkpointing: checkpointing)
        return (model, set, try f.expected(k.rawValue), batch, acts)
    }

    /// Expected-file key of a parameter's gradient.
    static func gradKey(_ a: any LinearAdapter, _ p: AdapterParameter) -> String {
        switch p.role {
        case "lora_A": return "grad.base_model.model.\(a.modulePath).lora_A.weight"
        case "lora_B": return "grad.base_model.model.\(a.modulePath).lora_B.weight"
        case "w0": return "grad.\(a.modulePath).adapter.adapter.align_layers.0.weight"
        default: return "grad.\(a.modulePath).adapter.adapter.align_layers.1.weight"
        }
    }

    /// Both ways of applying an adapter: folded into the layer's f32 weight (NdLinear-LoRA,
    /// the default) and as its own forward/backward.
    @Test(arguments: cases, [true, false])
    func logitsLossAndEveryGradient(_ c: (FixtureModel, Kind), _ fold: Bool) throws {
        let (f, k) = c
        let (model, set, e, batch, acts) = try setUp(f, k, fold: fold)
        let checked = try checkLogitsLossAndGradients(model, set, e, batch, acts, label: "\(f) \(k)") { try e.tensor(Self.gradKey($0, $1)) }
        // Every gradient tensor of the fixture was compared.
        #expect(checked == Set(e.names.filter { $0.hasPrefix("grad.") }))
        #expect(checked.count == 2 * 7 * model.config.numLayers)
    }

    @Test(arguments: cases, [true, false])
    func greedyTokens(_ c: (FixtureModel, Kind), _ fold: Bool) throws {
        let (f, k) = c
        let (model, _, e, _, _) = try setUp(f, k, fold: fold)
        let base = try f.expected()
        let prompt = try base.tensor("prompt")
        let greedy = try e.tensor("greedy")
        let rows = prompt.shape[0], p = prompt.shape[1], g = greedy.shape[1]
        let prompts = (0..<rows).map { Array(prompt.ints()[($0 * p)..<(($0 + 1) * p)]) }
        let expected = (0..<rows).map { Array(greedy.ints()[($0 * g)..<(($0 + 1) * g)]) }
        #expect(try model.generate(prompts: prompts, maxNewTokens: g) == expected)
        #expect(try model.greedyUncached(prompt: prompts[1], maxNewTokens: g) == expected[1])
    }

    @Test(arguments: FixtureModel.allCases)
    func loraMergedWeightsAndLogits(_ f: FixtureModel) throws {
        let (model, set, e, batch, _) = try setUp(f, .lora)
        let (merged, changes) = try AdapterMerge.merge(model.weights, set)
        #expect(changes.count == set.adapters.count)
        for a in set.adapters {
            let expected = try e.tensor("merged.\(a.weightName)")
            let diff = maxAbsDiff(merged.view(a.weightName).floats(), expected.floats())
            #expect(diff <= 1e-5, "\(f) merged \(a.weightName): \(diff)")
        }
        let m = TransformerModel(weights: merged)
        let acts = Activations(config: merged.config, batch: batch.batch, seqLen: batch.seqLen)
        try m.forward(batch.input, acts: acts, training: false)
        let V = merged.config.vocabSize
        let diff = maxAbsDiff(acts.logits.array, try e.tensor("merged_logits").floats()) { batch.mask[$0 / V] == 1 }
        #expect(diff <= 1e-4, "\(f) merged logits: \(diff)")
    }

    @Test(arguments: cases)
    func checkpointingGivesIdenticalGradients(_ f: FixtureModel, _ k: Kind) throws {
        func grads(_ ckpt: Bool) throws -> [[Float]] {
            let (model, set, _, batch, acts) = try setUp(f, k, checkpointing: ckpt)
            try model.forward(batch.input, acts: acts, training: true)
            _ = model.lossAndGradient(acts: acts, targets: batch.targets, normalizer: batch.targets.filter { $0 >= 0 }.count)
            set.zeroGradients()
            model.backward(batch.input, acts: acts)
            return set.parameters.map { $0.grad.array }
        }
        let plain = try grads(false), ckpt = try grads(true)
        for (a, b) in zip(plain, ckpt) {
            #expect(maxAbsDiff(a, b) <= 1e-6 * max(maxAbs(a), 1e-30))
        }
    }

    /// A PEFT LoKr directory made from the NdLinear fixture (w1 = align_layers.0, w2 =
    /// align_layers.1, alpha = r·α) gives the reference adapter's logits.
    @Test(arguments: FixtureModel.allCases)
    func lokrDirectoryFromNdLinearFixture(_ f: FixtureModel) throws {
        let weights = try f.load()
        let ndDir = f.directory.appendingPathComponent("ndlinear")
        let nd = try SafetensorsFile(url: ndDir.appendingPathComponent("adapter_model.safetensors"))
        let alpha = 2.0, r = 8
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("lokr-\(f)-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: tmp) }
        var entries: [SafetensorsEntry] = []
        for v in nd.tensors {
            let module = v.name.components(separatedBy: ".adapter.adapter.align_layers.")[0]
            let w = v.name.contains("align_layers.0") ? "lokr_w1" : "lokr_w2"
            entries.append(SafetensorsEntry(name: "base_model.model.\(module).\(w)", shape: v.shape, floats: v.floats()))
        }
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        try SafetensorsWriter.write(entries, metadata: ["format": "pt"], to: tmp.appendingPathComponent("adapter_model.safetensors"))
        let cfg = #"{"peft_type": "LOKR", "r": \#(r), "alpha": \#(Double(r) * alpha), "decompose_both": false, "target_modules": ["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]}"#
        try cfg.write(to: tmp.appendingPathComponent("adapter_config.json"), atomically: true, encoding: .utf8)
        let batch = try FixtureBatch(try f.expected())
        func logits(_ set: AdapterSet) throws -> [Float] {
            let m = TransformerModel(weights: weights, adapters: set)
            let acts = Activations(config: weights.config, batch: batch.batch, seqLen: batch.seqLen)
            try m.forward(batch.input, acts: acts, training: false)
            return acts.logits.array
        }
        let viaLoKr = try logits(try AdapterIO.load(tmp, config: weights.config))
        let expected = try f.expected("ndlinear").tensor("logits").floats()
        let V = weights.config.vocabSize
        #expect(maxAbsDiff(viaLoKr, expected) { batch.mask[$0 / V] == 1 } <= 1e-4)
    }
}

/// One training forward and backward on the fixture batch against a golden file: logits
/// (≤ 1e-4, real positions), mean loss (≤ 1e-5), and every adapter parameter's gradient
/// (≤ 1e-4·max + 1e-7) against `expected(adapter, parameter)`. Returns the names of the golden
/// tensors compared, for the caller to check that none was left out.
func checkLogitsLossAndGradients(_ model: TransformerModel, _ set: AdapterSet, _ e: SafetensorsFile, _ batch: FixtureBatch,
                                 _ acts: Activations, label: String,
                                 expected: (any LinearAdapter, AdapterParameter) throws -> TensorView) throws -> Set<String> {
    try model.forward(batch.input, acts: acts, training: true)
    let V = model.config.vocabSize
    let logitDiff = maxAbsDiff(acts.logits.array, try e.tensor("logits").floats()) { batch.mask[$0 / V] == 1 }
    #expect(logitDiff <= 1e-4, "\(label): logits off by \(logitDiff)")
    let count = batch.targets.filter { $0 >= 0 }.count
    let sum = model.lossAndGradient(acts: acts, targets: batch.targets, normalizer: count)
    #expect(abs(Float(sum / Double(count)) - (try e.tensor("loss").floats()[0])) <= 1e-5)
    set.zeroGradients()
    model.backward(batch.input, acts: acts)
    var checked = Set<String>()
    for a in set.adapters {
        for p in a.parameters {
            let want = try expected(a, p)
            #expect(want.shape == p.shape)
            let bound = 1e-4 * maxAbs(want.floats()) + 1e-7
            let diff = maxAbsDiff(p.grad.array, want.floats())
            #expect(diff <= bound, "\(label) \(want.name): |Δ| \(diff) > \(bound)")
            checked.insert(want.name)
        }
    }
    return checked
}
