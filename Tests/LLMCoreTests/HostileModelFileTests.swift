import Foundation
import LLMCore
import Testing
import TestSupport

/// Issue 20, class 1: sizes read from model files (config.json, GGUF metadata and tensor
/// infos) are checked against sane bounds, with checked arithmetic and against the tensors
/// present, before anything is sized from them. Every test here refuses before allocating, so
/// each finishes in milliseconds.
@Suite struct HostileModelFileTests {
    static let dir: URL = try! temporaryDirectory("hostile-model")

    /// The bundled stories260K config.json with `changes` applied.
    static func config(_ changes: [String: Any]) throws -> Data {
        let url = TestPaths.models.appendingPathComponent("stories260K/config.json")
        var obj = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        for (k, v) in changes { obj[k] = v }
        return try JSONSerialization.data(withJSONObject: obj)
    }

    static func parseError(_ changes: [String: Any]) throws -> String {
        do {
            _ = try ModelConfig.parse(try config(changes), file: "hostile/config.json")
            return "no error"
        } catch let e as ModelError {
            guard case .invalidConfig(let file, _) = e else { return "unexpected \(e)" }
            #expect(file == "hostile/config.json")
            return "\(e)"
        }
    }

    // MARK: config.json

    /// `num_hidden_layers: 0` trapped in the trainer (an adapter set with no module); 2^40
    /// hidden with head_dim 2^37 trapped `inspect` on overflow; vocab 10^12 made `generate`
    /// allocate 128 TB of random weights. Each is now an error naming the file and the key.
    @Test(arguments: [
        (["num_hidden_layers": 0], "'num_hidden_layers' is 0; expected 1...16384"),
        (["hidden_size": 1 << 40, "head_dim": 1 << 37], "'hidden_size' is 1099511627776; expected 1...1048576"),
        (["vocab_size": 1_000_000_000_000], "'vocab_size' is 1000000000000; expected 1...16777216"),
        (["num_hidden_layers": 1 << 31], "'num_hidden_layers' is 2147483648"),
        (["intermediate_size": 0], "'intermediate_size' is 0"),
        (["head_dim": 1 << 20], "'head_dim' is 1048576"),
        (["num_attention_heads": 1 << 13, "num_key_value_heads": 1 << 13, "head_dim": 1 << 12], "is more than 4194304"),
        (["max_position_embeddings": 1 << 40], "'max_position_embeddings' is 1099511627776"),
        (["num_key_value_heads": -1], "'num_key_value_heads' must be a non-negative integer, found -1"),
        (["rope_theta": -5.0], "'rope_theta' is -5.0"),
    ] as [([String: Any], String)])
    func absurdSizesAreRefusedByName(changes: [String: Any], message: String) throws {
        let e = try Self.parseError(changes)
        #expect(e.contains("hostile/config.json") && e.contains(message), "\(e)")
    }

    /// The largest sizes the bounds allow still give a correct (huge) parameter count, never
    /// an overflow trap; the count equals the sum over `expectedTensors()`.
    @Test func parameterCountIsCheckedAndExact() throws {
        let huge = try ModelConfig.parse(try Self.config([
            "hidden_size": 1 << 20, "num_attention_heads": 1 << 13, "num_key_value_heads": 1 << 13, "head_dim": 1 << 7,
            "intermediate_size": 1 << 22, "num_hidden_layers": 1 << 10, "vocab_size": 1 << 24,
        ]))
        let perLayer = 4 * (1 << 40) + 3 * (1 << 42) + 2 * (1 << 20)
        #expect(huge.parameterCount == (1 << 10) * perLayer + (1 << 44) + (1 << 20))
        #expect(huge.activationBytes(batch: 1 << 40, seqLen: 1 << 40, checkpointing: false) == nil)
        #expect(huge.kvCacheBytes(capacity: Int.max / 2) == nil)
        let dir = TestPaths.fixtures.appendingPathComponent("model-configs")
        for name in try FileManager.default.contentsOfDirectory(atPath: dir.path) {
            let c = try ModelConfig.load(dir.appendingPathComponent(name))
            #expect(c.parameterCount == c.expectedTensors().reduce(0) { $0 + $1.shape.reduce(1, *) }, "\(name)")
        }
        for f in FixtureModel.allCases {
            let c = try f.load().config
            #expect(c.parameterCount == c.expectedTensors().reduce(0) { $0 + $1.shape.reduce(1, *) }, "\(f)")
        }
        #expect(Checked.mul(1 << 32, 1 << 31) == nil && Checked.mul(1 << 31, 1 << 31) == 1 << 62)
        #expect(Checked.add(Int.max, 1) == nil && Checked.add(nil, 1) == nil && Checked.add(1, 2, 3) == 6)
    }

    /// Random weights for a config within the bounds but beyond any machine are refused with
    /// the estimate and what is available, before anything is allocated. (The CLI test of the
    /// same runs `generate` in a child process under an address-space limit.)
    @Test func randomWeightsBeyondMemoryAreRefused() throws {
        let c = try ModelConfig.parse(try Self.config(["vocab_size": 1 << 24, "hidden_size": 1 << 20, "head_dim": 8]))
        #expect(try #require(c.weightBytes(dtype: .bf16)) > 1 << 45)
        #expect(SystemMemory.shortfall(c.weightBytes(dtype: .bf16)) != nil, "\(SystemMemory.available)")
        #expect(SystemMemory.shortfall(1 << 20) == nil)
        #expect(SystemMemory.shortfall(nil) != nil)
    }

    /// A safetensors model whose config names fewer layers than its weights hold is refused
    /// (the extra layers would be silently ignored).
    @Test func configWithFewerLayersThanTheWeightsIsRefused() throws {
        let f = FixtureModel.llamaTiny
        let weights = try f.load()
        var c = weights.config
        c.numLayers = 1
        #expect { try ModelWeights(config: c, views: weights.views, source: "tiny") } throws: { e in
            "\(e)".contains("the weights hold layer 1 but the config says 1 layer")
        }
    }

    // MARK: GGUF

    /// The llama-tiny fixture as a GGUF file with `blockCount` in its metadata and the
    /// tensors of its first `blocks` layers.
    static func tinyGGUF(_ name: String, blockCount: UInt64, blocks: Int = 2) throws -> URL {
        let weights = try FixtureModel.llamaTiny.load()
        let c = weights.config
        var w = GGUFWriter()
        w.metadata = [
            ("general.architecture", .string("llama")), ("llama.block_count", .uint64(blockCount)),
            ("llama.embedding_length", .uint32(UInt32(c.hiddenSize))), ("llama.feed_forward_length", .uint32(UInt32(c.intermediateSize))),
            ("llama.attention.head_count", .uint32(UInt32(c.numHeads))), ("llama.attention.head_count_kv", .uint32(UInt32(c.numKVHeads))),
            ("llama.attention.key_length", .uint32(UInt32(c.headDim))),
            ("llama.attention.layer_norm_rms_epsilon", .float32(c.rmsNormEps)), ("llama.context_length", .uint32(128)),
        ]
        var views: [String: TensorView] = [:]
        for (hf, v) in weights.views {
            let parts = hf.split(separator: ".")
            if hf.hasPrefix("model.layers."), let l = Int(parts[2]), l >= blocks { continue }
            guard let g = GGUFNames.ggufName(hf) else { continue }
            views[g] = v
            w.tensors.append(.init(name: g, dtype: .f32, shape: v.shape))
        }
        let url = dir.appendingPathComponent(name)
        try w.write(to: url) { t in Data(views[t.name]!.floats().withUnsafeBytes { Array($0) }) }
        return url
    }

    /// `llama.block_count` = 2^31 allocated GBs of per-layer tables before any tensor was
    /// checked; now the block count is checked against the blocks whose tensors the file holds.
    @Test(arguments: [UInt64(1) << 31, 3, 1])
    func ggufBlockCountMustMatchTheTensors(blockCount: UInt64) throws {
        let url = try Self.tinyGGUF("blocks-\(blockCount).gguf", blockCount: blockCount)
        #expect { try ModelConfig.load(modelPath: url.path) } throws: { e in
            "\(e)".contains("metadata 'llama.block_count' is \(blockCount) but the file holds tensors for 2 blocks (blk.0 … blk.1)")
        }
        #expect(throws: ModelError.self) { try ModelWeights.load(gguf: url.path) }
        // The same file with the right count loads.
        let good = try Self.tinyGGUF("blocks-good.gguf", blockCount: 2)
        #expect(try ModelWeights.load(gguf: good.path).config.numLayers == 2)
    }

    /// A GGUF size out of bounds is named by its GGUF key, not the config.json key it maps to.
    @Test func ggufSizesAreNamedByTheirKeys() throws {
        let url = try Self.tinyGGUF("one-block.gguf", blockCount: 1, blocks: 1)
        var data = try Data(contentsOf: url)
        let key = Data("llama.embedding_length".utf8)
        let at = try #require(data.range(of: key)).upperBound + 4   // after the u32 type
        data.replaceSubrange(at..<(at + 4), with: [0, 0, 0, 0])
        let bad = Self.dir.appendingPathComponent("zero-hidden.gguf")
        try data.write(to: bad)
        #expect { try ModelConfig.load(modelPath: bad.path) } throws: { e in
            "\(e)".contains("'llama.embedding_length' is 0; expected 1...1048576")
        }
    }

    /// Raw GGUF headers with lying counts: tensor dimensions whose product overflows, and an
    /// array claiming more elements than the file holds, are errors (no trap, no reservation).
    @Test func ggufLyingCountsAreErrors() throws {
        func header(kv: [(String, UInt32, Data)], tensors: [(String, [UInt64])]) -> Data {
            var d = Data("GGUF".utf8)
            func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
            func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
            func str(_ s: String) { u64(UInt64(s.utf8.count)); d.append(contentsOf: Array(s.utf8)) }
            u32(3); u64(UInt64(tensors.count)); u64(UInt64(kv.count))
            for (k, t, v) in kv { str(k); u32(t); d.append(v) }
            for (n, ne) in tensors { str(n); u32(UInt32(ne.count)); ne.forEach(u64); u32(0); u64(0) }
            d.append(Data(count: 64))
            return d
        }
        let overflow = Self.dir.appendingPathComponent("overflow.gguf")
        try header(kv: [], tensors: [("t", [1 << 39, 1 << 39, 1 << 39, 1 << 39])]).write(to: overflow)
        #expect { try GGUFFile(path: overflow.path) } throws: { e in
            guard case let .invalidTensor(_, tensor, reason)? = e as? GGUFError else { return false }
            return tensor == "t" && reason.contains("more elements than the file")
        }
        // An array of 2^40 u8 elements in a file of ~100 bytes.
        var arr = Data()
        withUnsafeBytes(of: UInt32(0).littleEndian) { arr.append(contentsOf: $0) }
        withUnsafeBytes(of: (UInt64(1) << 40).littleEndian) { arr.append(contentsOf: $0) }
        let lying = Self.dir.appendingPathComponent("lying-array.gguf")
        try header(kv: [("a", 9, arr)], tensors: []).write(to: lying)
        #expect { try GGUFFile(path: lying.path) } throws: { e in
            guard case .truncated? = e as? GGUFError else { return false }
            return true
        }
    }

    // MARK: Token ids at the model

    /// A target id ≥ vocab read (and wrote) past the logits in cross-entropy; the model now
    /// refuses it, as it refuses such an input id.
    @Test func targetsOutsideTheVocabularyAreRefused() throws {
        let weights = try FixtureModel.llamaTiny.load()
        let model = TransformerModel(weights: weights)
        let input = ModelInput(batch: 1, seqLen: 3, tokens: [1, 5, 6])
        let acts = Activations(config: weights.config, batch: 1, seqLen: 3)
        #expect { try model.forward(input, acts: acts, training: false, targets: [5, 100_000, -100]) } throws: { e in
            "\(e)" == "target id 100000 is outside the vocabulary [0, 320)"
        }
        try model.forward(input, acts: acts, training: false, targets: [5, 6, -100])
    }
}
