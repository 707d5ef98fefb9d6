import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport

/// Interchange with PEFT, transformers and the NdLinear-LoRA reference, on every fixture model:
/// format round trips (logits and tensors), merged model directories (f32 logits, bf16 rounding,
/// sharding), and PEFT's config semantics (rank/alpha patterns, rsLoRA, regex targets, layer
/// selection, refused features). The numbers PEFT itself produces for these files are checked
/// by scripts/interop_check.py; here the expectations come from the fixtures and from PEFT's
/// documented matching rules.
@Suite struct InteropTests {
    enum Kind: String, CaseIterable, CustomStringConvertible { case lora, ndlinear; var description: String { rawValue } }
    static var cases: [(FixtureModel, Kind)] { FixtureModel.allCases.flatMap { f in Kind.allCases.map { (f, $0) } } }

    // MARK: - Helpers

    /// Logits of the fixture batch, and the attention mask to compare them under.
    static func logits(_ f: FixtureModel, _ weights: ModelWeights, _ set: AdapterSet?) throws -> (values: [Float], include: (Int) -> Bool) {
        let batch = try FixtureBatch(try f.expected())
        let m = TransformerModel(weights: weights, adapters: set)
        let acts = Activations(config: weights.config, batch: batch.batch, seqLen: batch.seqLen)
        try m.forward(batch.input, acts: acts, training: false)
        let V = weights.config.vocabSize, mask = batch.mask
        return (acts.logits.array, { mask[$0 / V] == 1 })
    }

    static func fixtureAdapter(_ f: FixtureModel, _ k: Kind, _ config: ModelConfig) throws -> AdapterSet {
        try AdapterIO.load(f.directory.appendingPathComponent(k.rawValue), config: config)
    }

    /// Expects `body` to throw an error whose description contains `needle`.
    static func refused<T>(_ needle: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> T) {
        let e = #expect(throws: (any Error).self, sourceLocation: sourceLocation) { _ = try body() }
        #expect(e.map { "\($0)".contains(needle) } == true, "expected an error containing \"\(needle)\", got \(e.map { "\($0)" } ?? "none")",
                sourceLocation: sourceLocation)
    }

    static func json(_ url: URL) throws -> [String: JSONValue] {
        try #require(try JSONValue.parse(Data(contentsOf: url)).object)
    }

    /// Every tensor of two sets, bit for bit.
    static func sameTensors(_ a: AdapterSet, _ b: AdapterSet) -> Bool {
        guard a.adapters.map(\.weightName) == b.adapters.map(\.weightName) else { return false }
        return zip(a.parameters, b.parameters).allSatisfy { $0.shape == $1.shape && $0.value.array == $1.value.array }
    }

    // MARK: - Format round trips

    @Test(arguments: cases)
    func fixtureAdapterDirectoriesGiveTheirLogits(_ f: FixtureModel, _ k: Kind) throws {
        let weights = try f.load()
        let (l, include) = try Self.logits(f, weights, try Self.fixtureAdapter(f, k, weights.config))
        let expected = try f.expected(k.rawValue).tensor("logits").floats()
        #expect(maxAbsDiff(l, expected, include: include) <= 1e-4)
    }

    /// NdLinear reference → PEFT LoKr → read back: same tensors and the reference logits, with a
    /// config PEFT builds the same shapes from.
    @Test(arguments: FixtureModel.allCases)
    func peftLoKrExportRoundTrip(_ f: FixtureModel) throws {
        let weights = try f.load()
        let nd = try Self.fixtureAdapter(f, .ndlinear, weights.config)
        let dir = try temporaryDirectory("lokr-\(f)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try AdapterIO.save(nd, format: .peftLoKr, to: dir, baseModel: f.directory.path, config: weights.config)

        let cfg = try Self.json(dir.appendingPathComponent("adapter_config.json"))
        #expect(cfg["peft_type"]?.string == "LOKR")
        #expect(cfg["decompose_both"]?.bool == false)
        #expect(cfg["base_model_name_or_path"]?.string == f.directory.standardizedFileURL.path)
        #expect(cfg["ndlinear_alpha"]?.double == 2)
        let r = try #require(cfg["r"]?.int)
        #expect(cfg["alpha"]?.double == Double(r) * 2)
        #expect(cfg["layers_to_transform"]?.isNull == true)
        #expect(Set(cfg["target_modules"]?.array?.compactMap(\.string) ?? []) == Set(Projection.allCases.map(\.rawValue)))
        let file = try SafetensorsFile(url: dir.appendingPathComponent("adapter_model.safetensors"))
        #expect(file.metadata == ["format": "pt"])
        for a in nd.adapters.compactMap({ $0 as? NdLinearAdapter }) {
            // PEFT keeps lokr_w2 whole only when r ≥ max(out_k, in_n)/2.
            #expect(2 * r >= max(a.outFactors.1, a.inFactors.1))
            #expect(file["base_model.model.\(a.modulePath).lokr_w1"]?.shape == [a.outFactors.0, a.inFactors.0])
            #expect(file["base_model.model.\(a.modulePath).lokr_w2"]?.shape == [a.outFactors.1, a.inFactors.1])
        }
        #expect(file.names.count == 2 * nd.adapters.count)

        let back = try AdapterIO.load(dir, config: weights.config)
        #expect(Self.sameTensors(nd, back))
        #expect(back.adapters.allSatisfy { ($0 as? NdLinearAdapter)?.alpha == 2 })
        let (l, include) = try Self.logits(f, weights, back)
        #expect(maxAbsDiff(l, try f.expected("ndlinear").tensor("logits").floats(), include: include) <= 1e-4)
    }

    /// PEFT LoKr → NdLinear reference → read back: same tensors, α and logits.
    @Test(arguments: FixtureModel.allCases)
    func ndlinearReferenceExportRoundTrip(_ f: FixtureModel) throws {
        let weights = try f.load()
        let lokrDir = try temporaryDirectory("lokr-\(f)"), refDir = try temporaryDirectory("ref-\(f)")
        defer { try? FileManager.default.removeItem(at: lokrDir); try? FileManager.default.removeItem(at: refDir) }
        let nd = try Self.fixtureAdapter(f, .ndlinear, weights.config)
        try AdapterIO.save(nd, format: .peftLoKr, to: lokrDir, baseModel: nil, config: weights.config)
        let viaLoKr = try AdapterIO.load(lokrDir, config: weights.config)
        try AdapterIO.save(viaLoKr, format: .ndlinearReference, to: refDir, baseModel: "base", config: weights.config)

        let cfg = try Self.json(refDir.appendingPathComponent("ndlinear_lora_config.json"))
        #expect(cfg["lora_alpha"]?.double == 2)
        #expect(cfg["base_model_name"]?.string == "base")
        let wrapped = try #require(cfg["wrapped_modules"]?.object)
        #expect(wrapped.count == nd.adapters.count)
        let fixtureWrapped = try Self.json(f.directory.appendingPathComponent("ndlinear/ndlinear_lora_config.json"))["wrapped_modules"]
        #expect(JSONValue.object(wrapped) == fixtureWrapped)

        let back = try AdapterIO.load(refDir, config: weights.config)
        #expect(Self.sameTensors(nd, back))
        let (l, include) = try Self.logits(f, weights, back)
        #expect(maxAbsDiff(l, try f.expected("ndlinear").tensor("logits").floats(), include: include) <= 1e-4)
    }

    /// PEFT LoRA → PEFT LoRA: identical tensors and scales, and the config PEFT wrote comes back.
    @Test(arguments: FixtureModel.allCases)
    func peftLoRAExportRoundTrip(_ f: FixtureModel) throws {
        let weights = try f.load()
        let lora = try Self.fixtureAdapter(f, .lora, weights.config)
        let dir = try temporaryDirectory("lora-\(f)")
        defer { try? FileManager.default.removeItem(at: dir) }
        try AdapterIO.save(lora, format: .peftLoRA, to: dir, baseModel: nil, config: weights.config)
        let cfg = try Self.json(dir.appendingPathComponent("adapter_config.json"))
        #expect(cfg["peft_type"]?.string == "LORA")
        #expect(cfg["r"]?.int == 4)
        #expect(cfg["lora_alpha"]?.double == 8)
        #expect(cfg["rank_pattern"]?.object?.isEmpty == true)
        #expect(cfg["alpha_pattern"]?.object?.isEmpty == true)
        #expect(cfg["layers_to_transform"]?.isNull == true)
        let original = try SafetensorsFile(url: f.directory.appendingPathComponent("lora/adapter_model.safetensors"))
        let written = try SafetensorsFile(url: dir.appendingPathComponent("adapter_model.safetensors"))
        #expect(Set(original.names) == Set(written.names))
        for t in original.tensors {
            #expect(written[t.name]?.shape == t.shape)
            #expect(written[t.name]?.floats() == t.floats(), "\(f) \(t.name)")
        }
        let back = try AdapterIO.load(dir, config: weights.config)
        #expect(Self.sameTensors(lora, back))
        #expect(zip(lora.adapters, back.adapters).allSatisfy { ($0 as! LoRAAdapter).scale == ($1 as! LoRAAdapter).scale })
    }

    /// A partial adapter (some projections of some layers) is written so PEFT wraps exactly
    /// those modules: names + layers_to_transform for a grid, full module paths otherwise.
    @Test func partialTargetsAreWrittenExactly() throws {
        let weights = try FixtureModel.llamaTiny.load()
        let config = weights.config
        let spec = AdapterSpec(kind: .lora, targets: TargetSelection(modules: [.q, .v], layers: [1]), rank: 2)
        let grid = try AdapterSet.create(spec: spec, config: config, seed: 1)
        let dir = try temporaryDirectory("grid")
        defer { try? FileManager.default.removeItem(at: dir) }
        try AdapterIO.save(grid, format: .peftLoRA, to: dir, baseModel: nil)
        var cfg = try Self.json(dir.appendingPathComponent("adapter_config.json"))
        #expect(cfg["target_modules"]?.array?.compactMap(\.string) == ["q_proj", "v_proj"])
        #expect(cfg["layers_to_transform"]?.array?.compactMap(\.int) == [1])
        #expect(try AdapterIO.load(dir, config: config).adapters.map(\.weightName) == grid.adapters.map(\.weightName))

        // q_proj in layer 0 and v_proj in layer 1: not a grid.
        let odd = AdapterSet([grid.adapters[1]])
        var rng = SplitMix64(seed: 2)
        odd.add(LoRAAdapter(weightName: "model.layers.0.self_attn.q_proj.weight", inFeatures: 64, outFeatures: 64, rank: 2, alpha: 4, rng: &rng))
        let dir2 = try temporaryDirectory("odd")
        defer { try? FileManager.default.removeItem(at: dir2) }
        try AdapterIO.save(odd, format: .peftLoRA, to: dir2, baseModel: nil, config: config)
        cfg = try Self.json(dir2.appendingPathComponent("adapter_config.json"))
        #expect(Set(cfg["target_modules"]?.array?.compactMap(\.string) ?? [])
                == ["model.layers.1.self_attn.v_proj", "model.layers.0.self_attn.q_proj"])
        #expect(cfg["layers_to_transform"]?.isNull == true)
        #expect(Set(try AdapterIO.load(dir2, config: config).adapters.map(\.weightName)) == Set(odd.adapters.map(\.weightName)))
    }

    @Test func exportRefusesWhatAFormatCannotHold() throws {
        let weights = try FixtureModel.llamaTiny.load()
        let lora = try Self.fixtureAdapter(.llamaTiny, .lora, weights.config)
        let nd = try Self.fixtureAdapter(.llamaTiny, .ndlinear, weights.config)
        let dir = try temporaryDirectory("refuse")
        defer { try? FileManager.default.removeItem(at: dir) }
        Self.refused("needs NdLinear-LoRA") { try AdapterIO.save(lora, format: .peftLoKr, to: dir, baseModel: nil) }
        Self.refused("needs LoRA") { try AdapterIO.save(nd, format: .peftLoRA, to: dir, baseModel: nil) }
        // Two α values fit PEFT LoKr (alpha_pattern) but not the reference's single lora_alpha.
        let a0 = nd.adapters[0] as! NdLinearAdapter
        let mixed = AdapterSet([NdLinearAdapter(weightName: a0.weightName, w0: a0.w0.value.array, w1: a0.w1.value.array,
                                                inFactors: a0.inFactors, outFactors: a0.outFactors, alpha: 3)]
                               + nd.adapters.dropFirst())
        Self.refused("several") { try AdapterIO.save(mixed, format: .ndlinearReference, to: dir, baseModel: nil) }
        try AdapterIO.save(mixed, format: .peftLoKr, to: dir, baseModel: nil, config: weights.config)
        let back = try AdapterIO.load(dir, config: weights.config)
        #expect(back.adapters.map { ($0 as! NdLinearAdapter).alpha } == [3] + Array(repeating: 2, count: nd.adapters.count - 1))
        // A PEFT config already there would shadow a reference export.
        Self.refused("adapter_config.json") { try AdapterIO.save(nd, format: .ndlinearReference, to: dir, baseModel: nil) }
    }

    /// Without the base model, the module shapes come from the adapter's own tensors.
    @Test(arguments: cases)
    func modelShapesInferredFromAdapter(_ f: FixtureModel, _ k: Kind) throws {
        let weights = try f.load()
        let inferred = try AdapterIO.inferModelConfig(adapterAt: f.directory.appendingPathComponent(k.rawValue))
        #expect(inferred.numLayers == weights.config.numLayers)
        for p in Projection.allCases {
            #expect(inferred.shape(of: p) == weights.config.shape(of: p), "\(f) \(k) \(p)")
        }
        let set = try AdapterIO.load(f.directory.appendingPathComponent(k.rawValue), config: inferred)
        #expect(Self.sameTensors(set, try Self.fixtureAdapter(f, k, weights.config)))
    }

    // MARK: - Merged model directories

    /// f32 merge: the merged directory loads (config, weights) and gives PEFT's merged logits
    /// (LoRA) or the adapter's logits (NdLinear); config.json keeps every other key.
    @Test(arguments: cases)
    func mergeF32GivesMergedLogits(_ f: FixtureModel, _ k: Kind) throws {
        let weights = try f.load()
        let set = try Self.fixtureAdapter(f, k, weights.config)
        let out = try temporaryDirectory("merged-\(f)-\(k)")
        defer { try? FileManager.default.removeItem(at: out) }
        let report = try AdapterMerge.writeModel(weights, adapters: set, modelDirectory: f.directory, to: out, dtype: .f32)
        #expect(report.files == ["model.safetensors"])
        #expect(report.merged.count == set.adapters.count)
        #expect(report.maxRoundingError == 0)
        for (t, a) in zip(report.merged, set.adapters) {
            #expect(t.name == a.weightName)
            #expect(t.maxChange == maxAbs(a.deltaWeight()))
        }
        let merged = try ModelWeights.load(directory: out)
        #expect(merged.storageDType == .f32)
        let (l, include) = try Self.logits(f, merged, nil)
        let expected = k == .lora ? try f.expected("lora").tensor("merged_logits") : try f.expected("ndlinear").tensor("logits")
        #expect(maxAbsDiff(l, expected.floats(), include: include) <= 1e-4, "\(f) \(k)")
        if k == .lora {
            for a in set.adapters {
                let diff = maxAbsDiff(merged.view(a.weightName).floats(), try f.expected("lora").tensor("merged.\(a.weightName)").floats())
                #expect(diff <= 1e-5, "\(f) \(a.weightName)")
            }
        }
        // config.json: only the dtype key changed.
        var source = try Self.json(f.directory.appendingPathComponent("config.json"))
        let written = try Self.json(out.appendingPathComponent("config.json"))
        let key = source["dtype"] != nil ? "dtype" : "torch_dtype"
        #expect(written[key]?.string == "float32")
        let original = source[key]?.string ?? ""
        source[key] = .string("float32")
        #expect(written == source)
        // Byte for byte apart from that value (numbers keep their spelling, e.g. 1000000.0).
        let sourceText = try String(contentsOf: f.directory.appendingPathComponent("config.json"), encoding: .utf8)
        let writtenText = try String(contentsOf: out.appendingPathComponent("config.json"), encoding: .utf8)
        #expect(writtenText == sourceText.replacingOccurrences(of: "\"\(key)\": \"\(original)\"", with: "\"\(key)\": \"float32\""))
        #expect(FileManager.default.contentsEqual(atPath: f.directory.appendingPathComponent("generation_config.json").path,
                                                  andPath: out.appendingPathComponent("generation_config.json").path))
    }

    /// bf16 merge: the stored values are exactly the f32 merge rounded once, and the report
    /// states the rounding that introduced.
    @Test(arguments: [FixtureModel.llamaTiny, .qwen2Tiny])
    func mergeBF16RoundsOnceAndReportsIt(_ f: FixtureModel) throws {
        let weights = try f.load()
        let set = try Self.fixtureAdapter(f, .lora, weights.config)
        let out = try temporaryDirectory("merged-bf16-\(f)")
        defer { try? FileManager.default.removeItem(at: out) }
        let report = try AdapterMerge.writeModel(weights, adapters: set, modelDirectory: f.directory, to: out, dtype: .bf16)
        #expect(report.dtype == "bfloat16")
        let merged = try ModelWeights.load(directory: out)
        #expect(merged.config.dtype == .bf16)
        for (t, a) in zip(report.merged, set.adapters) {
            let exact = try AdapterMerge.mergedValues(weights.view(a.weightName), a).values
            let stored = merged.view(a.weightName)
            #expect(stored.dtype == .bf16)
            let bits = stored.data.assumingMemoryBound(to: UInt16.self)
            var err: Float = 0, same = true
            for i in exact.indices {
                same = same && bits[i] == floatToBF16(exact[i])
                err = max(err, abs(bf16ToFloat(bits[i]) - exact[i]))
            }
            #expect(same, "\(f) \(a.weightName): not the f32 merge rounded once")
            #expect(t.maxRoundingError == err)
            #expect(err > 0 && err <= maxAbs(exact) * 0x1p-8)
        }
        #expect(report.maxRoundingError > 0)
        // Untouched bf16 tensors are copied bit for bit.
        if weights.storageDType == .bf16 {
            let v = weights.view("model.norm.weight"), w = merged.view("model.norm.weight")
            #expect(Data(bytes: v.data, count: v.byteCount) == Data(bytes: w.data, count: w.byteCount))
        }
    }

    /// A tiny shard size forces sharding: an index our loader reads back to the same logits,
    /// shards in transformers' naming; a later unsharded write into the same directory leaves no
    /// stale shards behind (and the other way round).
    @Test(arguments: FixtureModel.allCases)
    func forcedShardingRoundTrips(_ f: FixtureModel) throws {
        let weights = try f.load()
        let set = try Self.fixtureAdapter(f, .lora, weights.config)
        let single = try temporaryDirectory("single-\(f)"), out = try temporaryDirectory("sharded-\(f)")
        defer { try? FileManager.default.removeItem(at: single); try? FileManager.default.removeItem(at: out) }
        _ = try AdapterMerge.writeModel(weights, adapters: set, modelDirectory: f.directory, to: single, dtype: .f32)
        let report = try AdapterMerge.writeModel(weights, adapters: set, modelDirectory: f.directory, to: out, dtype: .f32, maxShardSize: 40_000)
        #expect(report.sharded)
        #expect(report.files.count > 2)
        #expect(report.files.first == String(format: "model-00001-of-%05d.safetensors", report.files.count))
        let index = try Self.json(out.appendingPathComponent("model.safetensors.index.json"))
        let map = try #require(index["weight_map"]?.object)
        #expect(Set(map.values.compactMap(\.string)) == Set(report.files))
        #expect(index["metadata"]?["total_size"]?.int == report.totalSize)
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors").path))
        for file in report.files {
            let s = try SafetensorsFile(url: out.appendingPathComponent(file))
            let bytes = s.tensors.reduce(0) { $0 + $1.byteCount }
            #expect(bytes <= 40_000 || s.tensors.count == 1, "\(file) holds \(bytes) bytes")
        }
        let a = try Self.logits(f, try ModelWeights.load(directory: single), nil)
        let b = try Self.logits(f, try ModelWeights.load(directory: out), nil)
        #expect(a.values == b.values)
        #expect(maxAbsDiff(b.values, try f.expected("lora").tensor("merged_logits").floats(), include: b.include) <= 1e-4)

        _ = try AdapterMerge.writeModel(weights, adapters: set, modelDirectory: f.directory, to: out, dtype: .f32)
        let left = try FileManager.default.contentsOfDirectory(atPath: out.path).filter { $0.contains("safetensors") }
        #expect(left == ["model.safetensors"])
        _ = try AdapterMerge.writeModel(weights, adapters: set, modelDirectory: f.directory, to: out, dtype: .f32, maxShardSize: 40_000)
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors").path))
        #expect(try ModelWeights.load(directory: out).views.count == weights.views.count)
    }

    @Test func mergeRefusesItsOwnModelDirectory() throws {
        // A copy, so that a regression could never overwrite the fixtures.
        let dir = try temporaryDirectory("own")
        defer { try? FileManager.default.removeItem(at: dir) }
        for n in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: FixtureModel.llamaTiny.directory.appendingPathComponent(n), to: dir.appendingPathComponent(n))
        }
        let weights = try ModelWeights.load(directory: dir)
        let set = try Self.fixtureAdapter(.llamaTiny, .lora, weights.config)
        Self.refused("model directory itself") {
            try AdapterMerge.writeModel(weights, adapters: set, modelDirectory: dir, to: dir.appendingPathComponent("."))
        }
    }

    /// A config without a dtype key gets one (`torch_dtype`, or `dtype` in the transformers-5
    /// layout) after its last member; the rest of the text is untouched.
    @Test(arguments: [("4.51.0", "torch_dtype"), ("5.23.0", "dtype")])
    func mergeAddsAMissingDTypeKey(_ version: String, _ key: String) throws {
        let dir = try temporaryDirectory("nodtype"), out = try temporaryDirectory("nodtype-out")
        defer { try? FileManager.default.removeItem(at: dir); try? FileManager.default.removeItem(at: out) }
        let f = FixtureModel.llamaTiny
        var text = try String(contentsOf: f.directory.appendingPathComponent("config.json"), encoding: .utf8)
        text = text.replacingOccurrences(of: "  \"torch_dtype\": \"float32\",\n", with: "")
            .replacingOccurrences(of: "\"transformers_version\": \"4.51.0\"", with: "\"transformers_version\": \"\(version)\"")
        #expect(!text.contains("torch_dtype"))
        try text.write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(at: f.directory.appendingPathComponent("model.safetensors"), to: dir.appendingPathComponent("model.safetensors"))
        let weights = try ModelWeights.load(directory: dir)
        _ = try AdapterMerge.writeModel(weights, adapters: try Self.fixtureAdapter(f, .lora, weights.config), modelDirectory: dir, to: out, dtype: .bf16)
        let written = try String(contentsOf: out.appendingPathComponent("config.json"), encoding: .utf8)
        #expect(written == text.replacingOccurrences(of: "\"vocab_size\": 320", with: "\"vocab_size\": 320,\n  \"\(key)\": \"bfloat16\""))
        #expect(try ModelWeights.load(directory: out).config.dtype == .bf16)
    }

    @Test func shardSizesParseAsTransformersDoes() {
        #expect(AdapterMerge.parseSize("5GB") == 5_000_000_000)
        #expect(AdapterMerge.parseSize("2GiB") == 2 << 30)
        #expect(AdapterMerge.parseSize("500MB") == 500_000_000)
        #expect(AdapterMerge.parseSize("10kb") == 10_000)
        #expect(AdapterMerge.parseSize("4096") == 4096)
        #expect(AdapterMerge.parseSize("lots") == nil)
        #expect(AdapterMerge.parseSize("-1") == nil)
    }

    // MARK: - PEFT config semantics

    /// A PEFT LoRA directory for llama-tiny: `configJSON` verbatim (its key order matters to
    /// PEFT's pattern lookup), random A/B with `rank(module)`.
    static func peftLoRA(_ configJSON: String, rank: (String) -> Int, extra: [SafetensorsEntry] = []) throws -> URL {
        let config = try FixtureModel.llamaTiny.load().config
        var entries = extra
        var seed: UInt64 = 10
        for l in 0..<config.numLayers {
            for p in Projection.allCases {
                let module = p.modulePath(layer: l)
                let (o, i) = config.shape(of: p), r = rank(module)
                seed += 2
                entries.append(SafetensorsEntry(name: "base_model.model.\(module).lora_A.weight", shape: [r, i], floats: randomFloats(r * i, seed: seed, scale: 0.1)))
                entries.append(SafetensorsEntry(name: "base_model.model.\(module).lora_B.weight", shape: [o, r], floats: randomFloats(o * r, seed: seed + 1, scale: 0.1)))
            }
        }
        let dir = try temporaryDirectory("peft")
        try SafetensorsWriter.write(entries, metadata: ["format": "pt"], to: dir.appendingPathComponent("adapter_model.safetensors"))
        try configJSON.write(to: dir.appendingPathComponent("adapter_config.json"), atomically: true, encoding: .utf8)
        return dir
    }

    static let allProjections = #"["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]"#

    static func loraConfig(_ fields: String, targets: String = allProjections) -> String {
        #"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": \#(targets), "bias": "none"\#(fields.isEmpty ? "" : ", " + fields)}"#
    }

    static func loras(_ dir: URL) throws -> [String: LoRAAdapter] {
        let set = try AdapterIO.load(dir, config: try FixtureModel.llamaTiny.load().config)
        return Dictionary(uniqueKeysWithValues: set.adapters.map { ($0.modulePath, $0 as! LoRAAdapter) })
    }

    /// PEFT's `get_pattern_key`: each key is a regex matched as `(.*\.)?(key)$` against the
    /// module path, and the FIRST key in the file's order wins (not the longest).
    @Test func rankAndAlphaPatternsFollowPEFTMatching() throws {
        let rank: (String) -> Int = { $0.hasSuffix("q_proj") ? ($0.contains("layers.0.") ? 2 : 6) : 4 }
        let cfg = Self.loraConfig(#"""
            "rank_pattern": {"layers.0.self_attn.q_proj": 2, "q_proj": 6},
            "alpha_pattern": {"layers\\.[01]\\.self_attn\\.v_proj": 5, "model.layers.1.mlp.down_proj": 3.5, "proj": 99}
            """#)
        let dir = try Self.peftLoRA(cfg, rank: rank)
        defer { try? FileManager.default.removeItem(at: dir) }
        let m = try Self.loras(dir)
        #expect(m.count == 14)
        for (module, a) in m {
            #expect(a.rank == rank(module), "\(module)")
            let alpha: Float = module.hasSuffix("v_proj") ? 5 : module == "model.layers.1.mlp.down_proj" ? 3.5 : 8
            #expect(a.alpha == alpha, "\(module)")   // "proj" matches no module: `(.*\.)?proj$` needs a '.' before it
            #expect(a.scale == alpha / Float(a.rank))
        }

        // The first matching key wins: "q_proj" before the layer-0 key gives every q_proj rank 6,
        // so layer 0's rank-2 tensors are refused as PEFT would fail to load them.
        let swapped = Self.loraConfig(#""rank_pattern": {"q_proj": 6, "layers.0.self_attn.q_proj": 2}"#)
        let dir2 = try Self.peftLoRA(swapped, rank: rank)
        defer { try? FileManager.default.removeItem(at: dir2) }
        Self.refused("model.layers.0.self_attn.q_proj.lora_A.weight' has rank 2 but the config (r / rank_pattern) gives 6") { try Self.loras(dir2) }
        let dir3 = try Self.peftLoRA(swapped, rank: { $0.hasSuffix("q_proj") ? 6 : 4 })
        defer { try? FileManager.default.removeItem(at: dir3) }
        #expect(try Self.loras(dir3).values.allSatisfy { $0.rank == ($0.weightName.contains("q_proj") ? 6 : 4) })
    }

    /// rsLoRA: scale alpha/√r, so lora_alpha 8 at r 4 acts as plain LoRA with lora_alpha 16.
    @Test func rsLoRAScalesByRootRank() throws {
        let weights = try FixtureModel.llamaTiny.load()
        let rs = try Self.peftLoRA(Self.loraConfig(#""use_rslora": true"#), rank: { _ in 4 })
        let plain = try Self.peftLoRA(#"{"peft_type": "LORA", "r": 4, "lora_alpha": 16, "target_modules": \#(Self.allProjections)}"#, rank: { _ in 4 })
        let eight = try Self.peftLoRA(Self.loraConfig(""), rank: { _ in 4 })
        defer { for d in [rs, plain, eight] { try? FileManager.default.removeItem(at: d) } }
        let a = try AdapterIO.load(rs, config: weights.config), b = try AdapterIO.load(plain, config: weights.config)
        #expect(a.adapters.allSatisfy { ($0 as! LoRAAdapter).scale == 4 })
        let la = try Self.logits(.llamaTiny, weights, a), lb = try Self.logits(.llamaTiny, weights, b)
        #expect(maxAbsDiff(la.values, lb.values) <= 1e-6)
        #expect(maxAbsDiff(la.values, try Self.logits(.llamaTiny, weights, try AdapterIO.load(eight, config: weights.config)).values) > 1e-3)
    }

    /// `target_modules` as a string is one regex that must match the WHOLE module path; modules
    /// it does not select are ignored like PEFT ignores their weights.
    @Test func regexTargetModulesAreFullMatches() throws {
        let weights = try FixtureModel.llamaTiny.load()
        let fixture = try Self.fixtureAdapter(.llamaTiny, .lora, weights.config)
        func load(_ fields: [String: Any]) throws -> AdapterSet {
            let dir = try temporaryDirectory("regex")
            defer { try? FileManager.default.removeItem(at: dir) }
            try FileManager.default.copyItem(at: FixtureModel.llamaTiny.directory.appendingPathComponent("lora/adapter_model.safetensors"),
                                             to: dir.appendingPathComponent("adapter_model.safetensors"))
            var cfg = try JSONSerialization.jsonObject(with: Data(contentsOf: FixtureModel.llamaTiny.directory.appendingPathComponent("lora/adapter_config.json"))) as! [String: Any]
            for (k, v) in fields { cfg[k] = v }
            try JSONSerialization.data(withJSONObject: cfg).write(to: dir.appendingPathComponent("adapter_config.json"))
            return try AdapterIO.load(dir, config: weights.config)
        }
        let picked = try load(["target_modules": #"model\.layers\.0\.self_attn\.(q|v)_proj"#])
        #expect(picked.adapters.map(\.weightName) == ["model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight"])
        let subset = AdapterSet(fixture.adapters.filter { picked.adapter(for: $0.weightName) != nil })
        #expect(maxAbsDiff(try Self.logits(.llamaTiny, weights, picked).values, try Self.logits(.llamaTiny, weights, subset).values) <= 1e-6)
        // A bare name as a regex string matches nothing (it is not a suffix match).
        Self.refused("select none") { try load(["target_modules": "q_proj"]) }
        // With a regex string PEFT ignores layers_to_transform.
        #expect(try load(["target_modules": #".*\.(q|v)_proj"#, "layers_to_transform": [1]]).adapters.count == 4)
    }

    /// `layers_to_transform` (with `layers_pattern`) and `exclude_modules` as PEFT applies them.
    @Test func layerAndExclusionFilters() throws {
        func modules(_ fields: String) throws -> [String] {
            let dir = try Self.peftLoRA(Self.loraConfig(fields), rank: { _ in 4 })
            defer { try? FileManager.default.removeItem(at: dir) }
            return try Self.loras(dir).keys.sorted()
        }
        #expect(try modules(#""layers_to_transform": [1]"#).allSatisfy { $0.hasPrefix("model.layers.1.") })
        #expect(try modules(#""layers_to_transform": 0"#).count == 7)
        #expect(try modules(#""layers_to_transform": [0], "layers_pattern": "layers""#).allSatisfy { $0.hasPrefix("model.layers.0.") })
        #expect(try modules(#""layers_to_transform": []"#).count == 14)
        Self.refused("select none") { try modules(#""layers_to_transform": [0], "layers_pattern": "h""#) }
        #expect(try modules(#""exclude_modules": ["down_proj"]"#).count == 12)
        #expect(try modules(#""exclude_modules": "model\\.layers\\.1\\..*""#).count == 7)
        #expect(try modules(#""target_modules": "all-linear""#).count == 14)
    }

    /// Features that change what PEFT computes and that we do not implement are refused by name.
    @Test(arguments: [
        (#""bias": "all""#, "bias 'all'"),
        (#""bias": "lora_only""#, "bias 'lora_only'"),
        (#""modules_to_save": ["lm_head"]"#, "modules_to_save"),
        (#""init_lora_weights": "pissa""#, "init_lora_weights 'pissa'"),
        (#""init_lora_weights": "olora""#, "init_lora_weights 'olora'"),
        (#""init_lora_weights": "loftq""#, "init_lora_weights 'loftq'"),
        (#""layer_replication": [[0, 2], [1, 2]]"#, "layer_replication"),
        (#""lora_bias": true"#, "lora_bias"),
        (#""trainable_token_indices": [1, 2]"#, "trainable_token_indices"),
        (#""alora_invocation_tokens": [5]"#, "alora_invocation_tokens"),
        (#""use_qalora": true"#, "use_qalora"),
        (#""target_parameters": ["mlp.experts.down_proj"]"#, "target_parameters"),
    ])
    func unsupportedPEFTFeaturesAreRefusedByName(_ field: String, _ name: String) throws {
        let cfg = Self.loraConfig(field).replacingOccurrences(of: #""bias": "none", "bias""#, with: #""bias""#)
        let dir = try Self.peftLoRA(cfg, rank: { _ in 4 })
        defer { try? FileManager.default.removeItem(at: dir) }
        Self.refused("adapter_config.json: unsupported adapter feature: \(name)") { try Self.loras(dir) }
    }

    @Test func unknownTensorsAndPEFTTypesAreRefusedByName() throws {
        let dora = try Self.peftLoRA(Self.loraConfig(""), rank: { _ in 4 }, extra: [
            SafetensorsEntry(name: "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", shape: [64], floats: .init(repeating: 1, count: 64)),
        ])
        defer { try? FileManager.default.removeItem(at: dora) }
        Self.refused("tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector'") { try Self.loras(dora) }
        let ia3 = try Self.peftLoRA(#"{"peft_type": "IA3", "target_modules": ["k_proj"]}"#, rank: { _ in 4 })
        defer { try? FileManager.default.removeItem(at: ia3) }
        Self.refused("peft_type 'IA3'") { try Self.loras(ia3) }
        // fan_in_fan_out is a no-op on nn.Linear in PEFT (it warns and turns it off).
        let fifo = try Self.peftLoRA(Self.loraConfig(#""fan_in_fan_out": true"#), rank: { _ in 4 })
        defer { try? FileManager.default.removeItem(at: fifo) }
        #expect(try Self.loras(fifo).count == 14)
    }
}
