import Foundation

// A GGUF checkpoint as the engine's model: llama.cpp's tensor names and metadata mapped to the
// Hugging Face names and config.json the rest of the engine speaks. Quantized tensors stay
// quantized in the memory map and are dequantized per use, like bf16 bases.

/// The llama.cpp ↔ Hugging Face naming, both directions.
public enum GGUFNames {
    /// Architectures we map (`general.architecture`) and the HF `architectures` entry for each.
    public static let architectures: [String: String] = [
        "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
    ]

    static let global: [(gguf: String, hf: String)] = [
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ]

    static let perLayer: [(gguf: String, hf: String)] = [
        ("attn_norm.weight", "input_layernorm.weight"),
        ("ffn_norm.weight", "post_attention_layernorm.weight"),
        ("attn_q.weight", "self_attn.q_proj.weight"), ("attn_k.weight", "self_attn.k_proj.weight"),
        ("attn_v.weight", "self_attn.v_proj.weight"), ("attn_output.weight", "self_attn.o_proj.weight"),
        ("attn_q.bias", "self_attn.q_proj.bias"), ("attn_k.bias", "self_attn.k_proj.bias"),
        ("attn_v.bias", "self_attn.v_proj.bias"),
        ("attn_q_norm.weight", "self_attn.q_norm.weight"), ("attn_k_norm.weight", "self_attn.k_norm.weight"),
        ("ffn_gate.weight", "mlp.gate_proj.weight"), ("ffn_up.weight", "mlp.up_proj.weight"),
        ("ffn_down.weight", "mlp.down_proj.weight"),
    ]

    /// `blk.3.attn_q.weight` → `model.layers.3.self_attn.q_proj.weight` (nil for names we don't use).
    public static func hfName(_ gguf: String) -> String? {
        if let g = global.first(where: { $0.gguf == gguf }) { return g.hf }
        let parts = gguf.split(separator: ".", maxSplits: 2)
        guard parts.count == 3, parts[0] == "blk", let l = Int(parts[1]) else { return nil }
        return perLayer.first { $0.gguf == parts[2] }.map { "model.layers.\(l).\($0.hf)" }
    }

    /// The inverse of `hfName`.
    public static func ggufName(_ hf: String) -> String? {
        if let g = global.first(where: { $0.hf == hf }) { return g.gguf }
        guard hf.hasPrefix("model.layers.") else { return nil }
        let rest = hf.dropFirst("model.layers.".count)
        guard let dot = rest.firstIndex(of: "."), let l = Int(rest[..<dot]) else { return nil }
        let suffix = String(rest[rest.index(after: dot)...])
        return perLayer.first { $0.hf == suffix }.map { "blk.\(l).\($0.gguf)" }
    }
}

/// llama.cpp's converter reorders the rows of q_proj/k_proj of `llama`-architecture models so its
/// RoPE (adjacent pairs) matches HF's rotate-half: per head, HF row i·(d/2)+j ↔ GGUF row 2j+i.
public enum RoPEPermutation {
    /// For each HF row, the GGUF row holding it.
    public static func ggufRow(forHF r: Int, headDim d: Int) -> Int {
        let h = r / d, rem = r % d, i = rem / (d / 2), j = rem % (d / 2)
        return h * d + 2 * j + i
    }

    /// Rows of `rows × rowBytes` bytes reordered from GGUF into HF order (`toHF`) or back.
    public static func permuteRows(_ src: UnsafeRawPointer, rows: Int, rowBytes: Int, headDim: Int, toHF: Bool,
                                   into dst: UnsafeMutableRawPointer) {
        for r in 0..<rows {
            let g = ggufRow(forHF: r, headDim: headDim)
            let (from, to) = toHF ? (g, r) : (r, g)
            (dst + to * rowBytes).copyMemory(from: src + from * rowBytes, byteCount: rowBytes)
        }
    }
}

extension ModelConfig {
    /// The config of a `--model` path: a model directory (its config.json), a .gguf file (its
    /// metadata) or a config.json itself.
    public static func load(modelPath path: String) throws -> ModelConfig {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ModelError.missingFile(path: path, what: "--model: a model directory, a .gguf file or a config.json")
        }
        let url = URL(fileURLWithPath: path)
        if isDir.boolValue { return try load(url.appendingPathComponent("config.json")) }
        if path.lowercased().hasSuffix(".gguf") { return try fromGGUF(try GGUFFile(path: path)) }
        return try load(url)
    }

    /// The config.json equivalent of a GGUF file's `{arch}.*` metadata.
    public static func fromGGUF(_ g: GGUFFile) throws -> ModelConfig {
        let arch = try g.string("general.architecture")
        guard let hfArch = GGUFNames.architectures[arch] else {
            throw ModelError.unsupported(file: g.path, reason: "GGUF architecture '\(arch)'; supported: \(GGUFNames.architectures.keys.sorted().joined(separator: ", "))")
        }
        if g["rope_freqs.weight"] != nil {
            throw ModelError.unsupported(file: g.path, reason: "rope_freqs.weight (Llama 3.1-style RoPE scaling stored as per-frequency factors); convert this model with gguf_to_hf.py instead")
        }
        if let t = g.metadata["\(arch).rope.scaling.type"]?.string, t != "none" {
            throw ModelError.unsupported(file: g.path, reason: "\(arch).rope.scaling.type '\(t)'")
        }
        guard let embd = g["token_embd.weight"] else {
            throw ModelError.missingWeight(name: "token_embd.weight", files: g.path)
        }
        let heads = try g.int("\(arch).attention.head_count")
        let hidden = try g.int("\(arch).embedding_length")
        // The block count sizes every per-layer table: checked against the layers whose
        // tensors the file holds before anything is built from it.
        let blocks = try g.int("\(arch).block_count")
        let present = Set(g.tensors.compactMap { t -> Int? in
            let parts = t.name.split(separator: ".", maxSplits: 2)
            return parts.count == 3 && parts[0] == "blk" ? Int(parts[1]) : nil
        })
        guard blocks == present.count, present.allSatisfy({ $0 >= 0 && $0 < blocks }) else {
            let held = present.isEmpty ? "no blk.N tensors" : "tensors for \(present.count) block\(present.count == 1 ? "" : "s") (blk.\(present.min()!) … blk.\(present.max()!))"
            throw ModelError.invalidConfig(file: g.path, reason: "metadata '\(arch).block_count' is \(blocks) but the file holds \(held)")
        }
        var obj: [String: JSONValue] = [
            "architectures": .array([.string(hfArch)]),
            "model_type": .string(arch),
            "hidden_size": .int(hidden),
            "intermediate_size": .int(try g.int("\(arch).feed_forward_length")),
            "num_hidden_layers": .int(blocks),
            "num_attention_heads": .int(heads),
            "num_key_value_heads": .int(g.metadata["\(arch).attention.head_count_kv"]?.int ?? heads),
            "rms_norm_eps": .double(try g.double("\(arch).attention.layer_norm_rms_epsilon")),
            "rope_theta": .double(g.metadata["\(arch).rope.freq_base"]?.double ?? 10000),
            "vocab_size": .int(g.metadata["\(arch).vocab_size"]?.int ?? embd.shape[0]),
            "max_position_embeddings": .int(g.metadata["\(arch).context_length"]?.int ?? 4096),
            "tie_word_embeddings": .bool(g["output.weight"] == nil),
            "hidden_act": .string("silu"),
        ]
        if let hd = g.metadata["\(arch).attention.key_length"]?.int { obj["head_dim"] = .int(hd) }
        if arch == "llama", g["blk.0.attn_q.bias"] != nil { obj["attention_bias"] = .bool(true) }
        for (key, hf) in [("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("padding_token_id", "pad_token_id")] {
            if let v = g.metadata["tokenizer.ggml.\(key)"]?.int { obj[hf] = .int(v) }
        }
        let keyNames = [
            "hidden_size": "\(arch).embedding_length", "intermediate_size": "\(arch).feed_forward_length",
            "num_hidden_layers": "\(arch).block_count", "num_attention_heads": "\(arch).attention.head_count",
            "num_key_value_heads": "\(arch).attention.head_count_kv", "head_dim": "\(arch).attention.key_length",
            "rms_norm_eps": "\(arch).attention.layer_norm_rms_epsilon", "rope_theta": "\(arch).rope.freq_base",
            "vocab_size": g.metadata["\(arch).vocab_size"] == nil ? "token_embd.weight rows" : "\(arch).vocab_size",
            "max_position_embeddings": "\(arch).context_length",
        ]
        return try ModelConfig.parse(object: obj, file: g.path, keyNames: keyNames)
    }
}

extension ModelWeights {
    /// Loads a GGUF checkpoint: config from metadata, tensors renamed to HF names, q/k rows of
    /// `llama`-architecture files put back in HF order (a copy of those two matrices per layer;
    /// everything else stays in the memory map, quantized or not).
    public static func load(gguf path: String) throws -> ModelWeights {
        let g = try GGUFFile(path: path)
        let config = try ModelConfig.fromGGUF(g)
        let permute = (try g.string("general.architecture")) == "llama"
        var views: [String: TensorView] = [:]
        for v in g.tensors {
            guard let name = GGUFNames.hfName(v.name) else { continue }
            var view = TensorView(name: name, dtype: v.dtype, shape: v.shape, data: v.data, byteCount: v.byteCount, owner: v.owner)
            if permute, name.hasSuffix("self_attn.q_proj.weight") || name.hasSuffix("self_attn.k_proj.weight") {
                guard v.shape.count == 2, v.shape[0] % config.headDim == 0 else {
                    throw ModelError.shapeMismatch(name: name, expected: [-1, config.hiddenSize], found: v.shape, file: path)
                }
                let rowBytes = v.dtype.storageBytes(elements: v.shape[1])
                let owned = OwnedBytes(byteCount: v.byteCount)
                RoPEPermutation.permuteRows(v.data, rows: v.shape[0], rowBytes: rowBytes, headDim: config.headDim, toHF: true, into: owned.pointer)
                view = TensorView(name: name, dtype: v.dtype, shape: v.shape, data: owned.pointer, byteCount: v.byteCount, owner: owned)
            }
            views[name] = view
        }
        return try ModelWeights(config: config, views: views, source: path)
    }
}
