@testable import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport

/// DoRA against PEFT 0.22 (float64 goldens in `Tests/Fixtures/*/dora`): logits, loss, every
/// gradient (magnitudes included), greedy tokens, merged weights and logits; its kernel pieces
/// against finite differences with the weight norm held constant, as PEFT differentiates.
@Suite struct DoraTests {
    static func setUp(_ f: FixtureModel, checkpointing: Bool = false) throws
        -> (TransformerModel, AdapterSet, SafetensorsFile, FixtureBatch, Activations) {
        let weights = try f.load()
        let set = try AdapterIO.load(f.directory.appendingPathComponent("dora"), config: weights.config)
        let model = TransformerModel(weights: weights, adapters: set)
        let batch = try FixtureBatch(try f.expected())
        let acts = Activations(config: weights.config, batch: batch.batch, seqLen: batch.seqLen, checkpointing: checkpointing)
        return (model, set, try f.expected("dora"), batch, acts)
    }

    /// PEFT's on-disk name of a parameter, as the expected file's `grad.` keys use it.
    static func peftKey(_ a: any LinearAdapter, _ p: AdapterParameter) -> String {
        "base_model.model.\(a.modulePath)." + (p.role == "lora_magnitude_vector" ? p.role : "\(p.role).weight")
    }

    @Test(arguments: FixtureModel.allCases, [false, true])
    func logitsLossAndEveryGradient(_ f: FixtureModel, _ checkpointing: Bool) throws {
        let (model, set, e, batch, acts) = try Self.setUp(f, checkpointing: checkpointing)
        #expect(set.kind == .dora)
        let checked = try checkLogitsLossAndGradients(model, set, e, batch, acts, label: "\(f)") { try e.tensor("grad." + Self.peftKey($0, $1)) }
        // Every gradient tensor of the fixture was compared, magnitudes included.
        #expect(checked == Set(e.names.filter { $0.hasPrefix("grad.") }))
        #expect(checked.count == 3 * 7 * model.config.numLayers)
    }

    @Test(arguments: FixtureModel.allCases)
    func greedyTokens(_ f: FixtureModel) throws {
        let (model, _, e, _, _) = try Self.setUp(f)
        let prompt = try f.expected().tensor("prompt"), greedy = try e.tensor("greedy")
        let rows = prompt.shape[0], p = prompt.shape[1], g = greedy.shape[1]
        let prompts = (0..<rows).map { Array(prompt.ints()[($0 * p)..<(($0 + 1) * p)]) }
        let expected = (0..<rows).map { Array(greedy.ints()[($0 * g)..<(($0 + 1) * g)]) }
        #expect(try model.generate(prompts: prompts, maxNewTokens: g) == expected)   // cached forward
        #expect(try model.greedyUncached(prompt: prompts[1], maxNewTokens: g) == expected[1])
    }

    @Test(arguments: FixtureModel.allCases)
    func mergedWeightsAndLogits(_ f: FixtureModel) throws {
        let (model, set, e, batch, _) = try Self.setUp(f)
        let (merged, changes) = try AdapterMerge.merge(model.weights, set)
        #expect(changes.count == set.adapters.count)
        for a in set.adapters {
            let expected = try e.tensor("merged.\(a.weightName)")
            let diff = maxAbsDiff(merged.view(a.weightName).floats(), expected.floats())
            #expect(diff <= 1e-5, "\(f) merged \(a.weightName): \(diff)")
        }
        #expect(e.names.filter { $0.hasPrefix("merged.") && $0.hasSuffix(".weight") }.count == set.adapters.count)
        let m = TransformerModel(weights: merged)
        let acts = Activations(config: merged.config, batch: batch.batch, seqLen: batch.seqLen)
        try m.forward(batch.input, acts: acts, training: false)
        let V = merged.config.vocabSize
        let diff = maxAbsDiff(acts.logits.array, try e.tensor("merged_logits").floats()) { batch.mask[$0 / V] == 1 }
        #expect(diff <= 1e-4, "\(f) merged logits: \(diff)")
    }

    /// Export as PEFT (`use_dora: true`, magnitudes) and read back: the same tensors; the
    /// llama.cpp LoRA format refuses DoRA by name and points to merging.
    @Test func exportRoundTripAndGGUFRefusal() throws {
        let f = FixtureModel.qwen2Tiny
        let (model, set, _, _, _) = try Self.setUp(f)
        let dir = try temporaryDirectory("dora-export")
        defer { try? FileManager.default.removeItem(at: dir) }
        try AdapterIO.save(set, format: AdapterIO.defaultFormat(for: set), to: dir, baseModel: nil, config: model.config)
        let cfg = try JSONValue.parse(Data(contentsOf: dir.appendingPathComponent("adapter_config.json")))
        #expect(cfg["use_dora"]?.bool == true && cfg["peft_type"]?.string == "LORA")
        let back = try AdapterIO.load(dir, config: model.config)
        #expect(back.kind == .dora && back.adapters.count == set.adapters.count)
        for (a, b) in zip(set.parameters, back.parameters) { #expect(a.role == b.role && a.value.array == b.value.array) }
        #expect(back.parameterCount == set.parameterCount)
        #expect(set.parameterCount == AdapterSet.parameterCount(spec: set.spec!, config: model.config))
        let gguf = dir.appendingPathComponent("a.gguf")
        #expect { try GGUFExport.writeLoRA(set, config: model.config, baseName: nil, to: gguf) } throws: { e in
            "\(e)".contains("DoRA") && "\(e)".contains("merge")
        }
    }

    /// A PEFT DoRA directory whose config says `use_dora: false` is refused naming the tensor;
    /// one missing a magnitude names it.
    @Test func refusesInconsistentDirectories() throws {
        let f = FixtureModel.llamaTiny
        let config = try f.load().config
        let src = f.directory.appendingPathComponent("dora")
        let dir = try temporaryDirectory("dora-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        try FileManager.default.copyItem(at: src.appendingPathComponent("adapter_model.safetensors"), to: dir.appendingPathComponent("adapter_model.safetensors"))
        var cfg = try String(contentsOf: src.appendingPathComponent("adapter_config.json"), encoding: .utf8)
        cfg = cfg.replacingOccurrences(of: "\"use_dora\": true", with: "\"use_dora\": false")
        try cfg.write(to: dir.appendingPathComponent("adapter_config.json"), atomically: true, encoding: .utf8)
        #expect { try AdapterIO.load(dir, config: config) } throws: { "\($0)".contains("lora_magnitude_vector") }
        let file = try SafetensorsFile(url: src.appendingPathComponent("adapter_model.safetensors"))
        let kept = file.tensors.filter { !$0.name.hasSuffix("layers.1.mlp.up_proj.lora_magnitude_vector") }
        try SafetensorsWriter.write(kept.map { SafetensorsEntry(name: $0.name, shape: $0.shape, floats: $0.floats()) }, metadata: ["format": "pt"],
                                    to: dir.appendingPathComponent("adapter_model.safetensors"))
        try cfg.replacingOccurrences(of: "\"use_dora\": false", with: "\"use_dora\": true")
            .write(to: dir.appendingPathComponent("adapter_config.json"), atomically: true, encoding: .utf8)
        #expect { try AdapterIO.load(dir, config: config) } throws: { "\($0)".contains("layers.1.mlp.up_proj.lora_magnitude_vector") }
    }

    /// A new DoRA adapter is the base model: B = 0 and m = ‖W‖ per row, so g = 1 exactly.
    @Test(arguments: FixtureModel.allCases)
    func freshAdapterIsTheBase(_ f: FixtureModel) throws {
        let w = try f.load()
        let set = try AdapterSet.create(spec: AdapterSpec(kind: .dora, rank: 4), config: w.config, seed: 3)
        try set.bind(to: w)
        let d = try #require(set.adapters.first as? DoRAAdapter)
        let W = w.view(d.weightName).floats(), inF = d.inFeatures
        for j in [0, d.outFeatures - 1] {
            let norm = Float((0..<inF).reduce(0.0) { $0 + Double(W[j * inF + $1]) * Double(W[j * inF + $1]) }.squareRoot())
            #expect(d.magnitude.value[j] == norm)
        }
        let batch = try FixtureBatch(try f.expected())
        func logits(_ s: AdapterSet?) throws -> [Float] {
            let acts = Activations(config: w.config, batch: batch.batch, seqLen: batch.seqLen)
            try TransformerModel(weights: w, adapters: s).forward(batch.input, acts: acts, training: false)
            return acts.logits.array
        }
        #expect(try logits(set) == (try logits(nil)))
    }

    // MARK: Kernel pieces

    /// A DoRA adapter on a random `[10, 12]` base with random A, B and m.
    static func kernelCase(dtype: DType = .f32) -> (DoRAAdapter, TensorView, [Float]) {
        let out = 10, inF = 12, r = 3
        let wv = randomFloats(out * inF, seed: 21, scale: 0.5)
        let base = TensorView.owned(name: "model.layers.0.mlp.up_proj.weight", shape: [out, inF], floats: wv)
        let lora = LoRAAdapter(weightName: base.name, a: randomFloats(r * inF, seed: 22, scale: 0.4), b: randomFloats(out * r, seed: 23, scale: 0.4),
                               inFeatures: inF, outFeatures: out, rank: r, alpha: 6)
        let d = DoRAAdapter(lora: lora, magnitude: randomFloats(out, seed: 24).map { 1 + 0.5 * $0 })
        d.bind(base: base)
        return (d, base, wv)
    }

    /// The adapted product `g ⊙ (x·Wᵀ + Δ(x))` as the model forms it (no bias).
    static func adapted(_ d: DoRAAdapter, w: [Float], x: [Float], rows: Int, training: Bool = true) -> [Float] {
        let out = d.outFeatures, inF = d.inFeatures
        var y = [Float](repeating: 0, count: rows * out)
        for r in 0..<rows { for o in 0..<out { y[r * out + o] = (0..<inF).reduce(0) { $0 + x[r * inF + $1] * w[o * inF + $1] } } }
        d.forward(x: x, rows: rows, y: &y, training: training)
        return y
    }

    /// The forward against the definition in Double, and the merged `W'` against it.
    @Test func forwardMatchesDefinition() {
        let (d, base, w) = Self.kernelCase()
        let rows = 4, out = d.outFeatures, inF = d.inFeatures, x = randomFloats(rows * inF, seed: 25)
        let y = Self.adapted(d, w: w, x: x, rows: rows, training: false)
        let ba = d.lora.deltaWeight()
        var wPrime = [Double](repeating: 0, count: out * inF)
        for o in 0..<out {
            let v = (0..<inF).map { Double(w[o * inF + $0]) + Double(ba[o * inF + $0]) }
            let n = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            for i in 0..<inF { wPrime[o * inF + i] = Double(d.magnitude.value[o]) / n * v[i] }
        }
        var ref = [Float](repeating: 0, count: rows * out)
        for r in 0..<rows { for o in 0..<out { ref[r * out + o] = Float((0..<inF).reduce(0.0) { $0 + wPrime[o * inF + $1] * Double(x[r * inF + $1]) }) } }
        #expect(maxAbsDiff(y, ref) < 1e-5)
        let merged = zip(w, d.deltaWeight(base: base)).map { $0 + $1 }
        #expect(maxAbsDiff(merged, wPrime.map(Float.init)) < 1e-6)
    }

    /// Backward (parameters and the input gradient, base part included) against central
    /// differences of the adapted product with `‖V‖` held at its value.
    @Test func backwardMatchesFiniteDifferencesWithTheNormHeld() {
        let (d, _, w) = Self.kernelCase()
        let rows = 3, out = d.outFeatures, inF = d.inFeatures
        let x = randomFloats(rows * inF, seed: 26), r = randomFloats(rows * out, seed: 27)
        _ = Self.adapted(d, w: w, x: x, rows: rows)
        d.zeroGradients()
        var dx = [Float](repeating: 0, count: x.count)
        let gdy = Array(UnsafeBufferPointer(start: d.baseOutputGradient(dy: r, rows: rows), count: rows * out))
        for n in 0..<rows { for i in 0..<inF { dx[n * inF + i] = (0..<out).reduce(0) { $0 + gdy[n * out + $1] * w[$1 * inF + i] } } }
        d.backward(x: x, dy: r, rows: rows, dx: &dx)
        d.holdsNorm = true
        defer { d.holdsNorm = false }
        #expect(relativeError(dx, finiteDifference(x) { dot(Self.adapted(d, w: w, x: $0, rows: rows, training: false), r) }) < 2e-3, "dx")
        for p in d.parameters {
            let v0 = p.value.array
            let fd = finiteDifference(v0) { v in
                for i in v.indices { p.value[i] = v[i] }
                defer { for i in v0.indices { p.value[i] = v0[i] } }
                return dot(Self.adapted(d, w: w, x: x, rows: rows, training: false), r)
            }
            #expect(relativeError(p.grad.array, fd) < 2e-3, "\(p.role)")
        }
    }

    /// The norm is formed once per parameter change: not per forward, backward or token, and
    /// again after an update of A or B (an optimizer step) — with the new value.
    @Test func normIsCachedUntilTheParametersChange() {
        let (d, base, w) = Self.kernelCase()
        let rows = 2, x = randomFloats(rows * d.inFeatures, seed: 28), dy = randomFloats(rows * d.outFeatures, seed: 29)
        let before = d.normComputations
        _ = Self.adapted(d, w: w, x: x, rows: rows)
        let first = d.normComputations
        #expect(first == before + 1)
        var dx = [Float](repeating: 0, count: x.count)
        d.backward(x: x, dy: dy, rows: rows, dx: &dx)
        for _ in 0..<3 { _ = Self.adapted(d, w: w, x: Array(x.prefix(d.inFeatures)), rows: 1, training: false) }
        #expect(d.normComputations == first)
        d.magnitude.value[0] *= 2   // m is not in the norm
        _ = Self.adapted(d, w: w, x: x, rows: rows)
        #expect(d.normComputations == first)
        d.lora.b.value[3] += 0.25   // an optimizer step on B
        let after = Self.adapted(d, w: w, x: x, rows: rows, training: false)
        #expect(d.normComputations == first + 1)
        let fresh = DoRAAdapter(lora: LoRAAdapter(weightName: d.weightName, a: d.lora.a.value.array, b: d.lora.b.value.array, inFeatures: d.inFeatures,
                                                  outFeatures: d.outFeatures, rank: d.rank, alpha: d.alpha), magnitude: d.magnitude.value.array)
        fresh.bind(base: base)
        #expect(after == Self.adapted(fresh, w: w, x: x, rows: rows, training: false))
    }

    /// The whole model's magnitude, A and B gradients against central differences of its loss
    /// with every adapter's norm held (every kernel's backward composed), on a packed batch.
    @Test(arguments: FixtureModel.allCases)
    func wholeModelGradient(_ f: FixtureModel) throws {
        let w = try f.load()
        let set = try AdapterIO.load(f.directory.appendingPathComponent("dora"), config: w.config)
        let doras = set.adapters.compactMap { $0 as? DoRAAdapter }
        try checkWholeModelGradients(w, set, probe: [doras[0], doras[5], doras.last!], label: "\(f)",
                                     holdFixed: { for d in doras { d.holdsNorm = true } },
                                     release: { for d in doras { d.holdsNorm = false } })
    }
}
