import Foundation

/// Errors reading a model directory or config.json; each names the file and what was expected.
public enum ModelError: Error, CustomStringConvertible {
    case missingFile(path: String, what: String)
    case invalidConfig(file: String, reason: String)
    case unsupported(file: String, reason: String)
    case missingWeight(name: String, files: String)
    case shapeMismatch(name: String, expected: [Int], found: [Int], file: String)
    case invalidInput(String)

    public var description: String {
        switch self {
        case let .missingFile(p, w): return "\(p): not found (\(w))"
        case let .invalidConfig(f, r): return "\(f): \(r)"
        case let .unsupported(f, r): return "\(f): unsupported model: \(r)"
        case let .missingWeight(n, f): return "weight '\(n)' not found in \(f)"
        case let .shapeMismatch(n, e, fd, f): return "\(f): weight '\(n)' has shape \(fd), expected \(e)"
        case let .invalidInput(s): return s
        }
    }
}

/// Model families. The differences are data (ARCHITECTURE.md "Family differences are data").
public enum ModelFamily: String, Sendable {
    case llama, mistral, qwen2, qwen3

    /// Bias on q/k/v projections (Qwen2 always; Llama-style when `attention_bias` is set).
    var defaultQKVBias: Bool { self == .qwen2 }
    /// Per-head RMSNorm on q and k before RoPE.
    var hasQKNorm: Bool { self == .qwen3 }
}

/// Llama 3.1 RoPE frequency scaling (`rope_type: llama3`).
public struct Llama3RopeScaling: Sendable, Equatable {
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalMaxPositionEmbeddings: Int

    public init(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositionEmbeddings: Int) {
        self.factor = factor; self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor; self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
    }
}

/// The subset of a Hugging Face config.json the engine uses, in either transformers 4 or 5 layout.
public struct ModelConfig: Sendable {
    public var family: ModelFamily
    public var architecture: String
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var vocabSize: Int
    public var rmsNormEps: Float
    public var ropeTheta: Double
    public var ropeScaling: Llama3RopeScaling?
    public var tieWordEmbeddings: Bool
    public var qkvBias: Bool
    public var maxPositionEmbeddings: Int
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]
    public var padTokenId: Int?
    /// The stored dtype named in the config (`torch_dtype` or `dtype`), if any.
    public var dtype: DType?
    /// The raw JSON, kept so `merge` can write it back with only the dtype changed.
    public var raw: [String: JSONValue]

    public var qDim: Int { numHeads * headDim }
    public var kvDim: Int { numKVHeads * headDim }
    public var hasQKNorm: Bool { family.hasQKNorm }

    public static func load(_ url: URL) throws -> ModelConfig {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ModelError.missingFile(path: url.path, what: "config.json")
        }
        return try parse(data, file: url.path)
    }

    public static func parse(_ data: Data, file: String = "config.json") throws -> ModelConfig {
        let json: JSONValue
        do { json = try JSONValue.parse(data) } catch {
            throw ModelError.invalidConfig(file: file, reason: "not valid JSON")
        }
        guard let obj = json.object else { throw ModelError.invalidConfig(file: file, reason: "config is not a JSON object") }
        return try parse(object: obj, file: file)
    }

    /// A config from config.json's top-level object. Every size is checked against
    /// `Limits` (and their products for overflow) before anything can be sized from it.
    /// - Parameter keyNames: the names to print for config.json keys (GGUF metadata keys when
    ///   the object was made from a GGUF file's metadata).
    public static func parse(object obj: [String: JSONValue], file: String, keyNames: [String: String] = [:]) throws -> ModelConfig {
        func name(_ key: String) -> String { keyNames[key] ?? key }

        func int(_ key: String, default def: Int? = nil) throws -> Int {
            if let v = obj[key], !v.isNull {
                guard let i = v.int, i >= 0 else {
                    throw ModelError.invalidConfig(file: file, reason: "'\(name(key))' must be a non-negative integer, found \(v.serialized(pretty: false))")
                }
                return i
            }
            if let def { return def }
            throw ModelError.invalidConfig(file: file, reason: "missing '\(name(key))'")
        }
        /// A size in `range` (checked before any product of sizes is formed).
        func size(_ key: String, _ range: ClosedRange<Int>, default def: Int? = nil) throws -> Int {
            let v = try int(key, default: def)
            guard range.contains(v) else {
                throw ModelError.invalidConfig(file: file, reason: "'\(name(key))' is \(v); expected \(range.lowerBound)...\(range.upperBound)")
            }
            return v
        }
        func double(_ key: String, in o: [String: JSONValue]? = nil) -> Double? { (o ?? obj)[key]?.double }

        let archs = obj["architectures"]?.array?.compactMap(\.string) ?? []
        let modelType = obj["model_type"]?.string
        let known: [String: ModelFamily] = [
            "LlamaForCausalLM": .llama, "MistralForCausalLM": .mistral,
            "Qwen2ForCausalLM": .qwen2, "Qwen3ForCausalLM": .qwen3,
        ]
        var family: ModelFamily?
        var architecture = archs.first ?? ""
        for a in archs { if let f = known[a] { family = f; architecture = a; break } }
        if family == nil, archs.isEmpty, let mt = modelType, let f = ModelFamily(rawValue: mt) {
            family = f
            architecture = f.rawValue
        }
        guard let family else {
            let what = archs.isEmpty ? "model_type '\(modelType ?? "none")'" : "architectures \(archs)"
            throw ModelError.unsupported(file: file, reason: "\(what); supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM")
        }

        typealias L = Limits
        let hidden = try size("hidden_size", 1...L.hiddenSize)
        let heads = try size("num_attention_heads", 1...L.heads)
        let kvHeads = try size("num_key_value_heads", 1...L.heads, default: heads)
        guard heads % kvHeads == 0 else {
            throw ModelError.invalidConfig(file: file, reason: "\(name("num_attention_heads")) (\(heads)) must be a multiple of \(name("num_key_value_heads")) (\(kvHeads))")
        }
        let headDim = try size("head_dim", 1...L.headDim, default: max(hidden / heads, 1))
        guard headDim % 2 == 0 else { throw ModelError.invalidConfig(file: file, reason: "\(name("head_dim")) \(headDim) must be even for RoPE") }
        guard heads * headDim <= L.projectionWidth else {
            throw ModelError.invalidConfig(file: file, reason: "\(name("num_attention_heads")) × \(name("head_dim")) = \(heads) × \(headDim) is more than \(L.projectionWidth)")
        }
        let intermediate = try size("intermediate_size", 1...L.intermediateSize)
        let layers = try size("num_hidden_layers", 1...L.layers)
        let vocab = try size("vocab_size", 1...L.vocabSize)
        let maxPositions = try size("max_position_embeddings", 1...L.positions, default: 4096)

        if let act = obj["hidden_act"]?.string, act != "silu" {
            throw ModelError.unsupported(file: file, reason: "hidden_act '\(act)' (only silu/SwiGLU)")
        }
        if obj["mlp_bias"]?.bool == true {
            throw ModelError.unsupported(file: file, reason: "mlp_bias true")
        }

        // RoPE: transformers 4 (`rope_theta`, `rope_scaling`) or 5 (`rope_parameters`).
        let ropeParams = obj["rope_parameters"]?.object
        let ropeTheta = double("rope_theta") ?? ropeParams.flatMap { double("rope_theta", in: $0) } ?? 10000
        var scaling: Llama3RopeScaling?
        let scalingObj: [String: JSONValue]? = obj["rope_scaling"]?.object ?? ropeParams
        if let s = scalingObj {
            let type = s["rope_type"]?.string ?? s["type"]?.string ?? "default"
            switch type {
            case "default":
                break
            case "llama3":
                guard let f = double("factor", in: s), let lo = double("low_freq_factor", in: s),
                      let hi = double("high_freq_factor", in: s), let om = s["original_max_position_embeddings"]?.int
                else { throw ModelError.invalidConfig(file: file, reason: "llama3 rope scaling needs factor, low_freq_factor, high_freq_factor, original_max_position_embeddings") }
                guard f.isFinite, f > 0, lo.isFinite, lo > 0, hi.isFinite, hi > lo, (1...L.positions).contains(om) else {
                    throw ModelError.invalidConfig(file: file, reason: "llama3 rope scaling: expected factor > 0, 0 < low_freq_factor < high_freq_factor "
                                                   + "and original_max_position_embeddings in 1...\(L.positions); found \(f), \(lo), \(hi), \(om)")
                }
                scaling = Llama3RopeScaling(factor: f, lowFreqFactor: lo, highFreqFactor: hi, originalMaxPositionEmbeddings: om)
            default:
                throw ModelError.unsupported(file: file, reason: "rope scaling type '\(type)' (supported: default, llama3)")
            }
        }

        if family == .qwen2 || family == .qwen3, obj["use_sliding_window"]?.bool == true {
            throw ModelError.unsupported(file: file, reason: "use_sliding_window true")
        }

        func ids(_ key: String) -> [Int] {
            if let v = obj[key] {
                if let i = v.int { return [i] }
                if let a = v.array { return a.compactMap(\.int) }
            }
            return []
        }
        let dtypeName = obj["torch_dtype"]?.string ?? obj["dtype"]?.string
        let dtype: DType? = dtypeName.flatMap { n in DType.allCases.first { $0.torchName == n } }
        let qkvBias = family.defaultQKVBias || (obj["attention_bias"]?.bool ?? false)
        let eps = double("rms_norm_eps") ?? 1e-6
        guard eps.isFinite, eps >= 0 else { throw ModelError.invalidConfig(file: file, reason: "'\(name("rms_norm_eps"))' is \(eps); expected a finite number ≥ 0") }
        guard ropeTheta.isFinite, ropeTheta > 0 else { throw ModelError.invalidConfig(file: file, reason: "'\(name("rope_theta"))' is \(ropeTheta); expected a finite number > 0") }

        let config = ModelConfig(
            family: family, architecture: architecture,
            hiddenSize: hidden, intermediateSize: intermediate,
            numLayers: layers, numHeads: heads, numKVHeads: kvHeads, headDim: headDim,
            vocabSize: vocab,
            rmsNormEps: Float(eps),
            ropeTheta: ropeTheta, ropeScaling: scaling,
            tieWordEmbeddings: obj["tie_word_embeddings"]?.bool ?? false,
            qkvBias: qkvBias,
            maxPositionEmbeddings: maxPositions,
            bosTokenId: ids("bos_token_id").first, eosTokenIds: ids("eos_token_id"),
            padTokenId: ids("pad_token_id").first, dtype: dtype, raw: obj)
        // Each size is bounded above; their products (the parameter count, and the bytes of
        // the base in the widest dtype) must still fit a 64-bit count.
        guard let params = config.checkedParameterCount, Checked.mul(params, 8) != nil else {
            throw ModelError.invalidConfig(file: file, reason: "the sizes (\(layers) layers, hidden \(hidden), MLP \(intermediate), "
                                           + "vocab \(vocab)) describe more parameters than a 64-bit count of bytes holds")
        }
        return config
    }

    // MARK: - Size limits

    /// Upper bounds on the sizes read from config.json or GGUF metadata: far above any model
    /// published (the largest dense models have hidden 16384, MLP 53248, 126 layers, 128 heads,
    /// head_dim 256, vocabularies of 256k and contexts of 10M), and low enough that no product
    /// of two of them overflows and an absurd value is refused before it sizes an allocation.
    public enum Limits {
        public static let hiddenSize = 1 << 20
        public static let intermediateSize = 1 << 22
        public static let layers = 1 << 14
        public static let heads = 1 << 14
        public static let headDim = 1 << 14
        /// `num_attention_heads × head_dim` (and so `num_key_value_heads × head_dim`).
        public static let projectionWidth = 1 << 22
        public static let vocabSize = 1 << 24
        /// `max_position_embeddings` (GGUF stores it as a u32).
        public static let positions = Int(Int32.max)
    }

    // MARK: - Parameter names and counts

    /// `[out, in]` of a projection.
    public func shape(of p: Projection) -> (out: Int, in: Int) {
        switch p {
        case .q: return (qDim, hiddenSize)
        case .k, .v: return (kvDim, hiddenSize)
        case .o: return (hiddenSize, qDim)
        case .gate, .up: return (intermediateSize, hiddenSize)
        case .down: return (hiddenSize, intermediateSize)
        }
    }

    /// Every base tensor name with its expected shape (what a checkpoint must contain).
    public func expectedTensors() -> [(name: String, shape: [Int])] {
        typealias N = TensorNames
        var out: [(String, [Int])] = [(N.embedding, [vocabSize, hiddenSize])]
        for l in 0..<numLayers {
            out.append((N.inputNorm(layer: l), [hiddenSize]))
            for proj in Projection.allCases {
                let s = shape(of: proj)
                out.append((proj.weightName(layer: l), [s.out, s.in]))
            }
            if qkvBias {
                for proj in Projection.allCases where proj.hasQKVBias { out.append((proj.biasName(layer: l), [shape(of: proj).out])) }
            }
            if hasQKNorm {
                out.append((N.qNorm(layer: l), [headDim]))
                out.append((N.kNorm(layer: l), [headDim]))
            }
            out.append((N.postAttentionNorm(layer: l), [hiddenSize]))
        }
        out.append((N.finalNorm, [hiddenSize]))
        if !tieWordEmbeddings { out.append((N.lmHead, [vocabSize, hiddenSize])) }
        return out
    }

    /// Total parameters, from the config alone (`Int.max` when the count overflows, which a
    /// parsed config never does).
    public var parameterCount: Int { checkedParameterCount ?? .max }

    /// Total parameters with checked arithmetic (nil on overflow), computed from the sizes
    /// without listing the tensors: the same sum as the shapes of `expectedTensors()`.
    public var checkedParameterCount: Int? {
        var perLayer = Checked.mul(2, hiddenSize)   // input and post-attention norms
        for p in Projection.allCases {
            let s = shape(of: p)
            perLayer = perLayer.flatMap { Checked.add($0, Checked.mul(s.out, s.in)) }
            if qkvBias, p.hasQKVBias { perLayer = perLayer.flatMap { Checked.add($0, s.out) } }
        }
        if hasQKNorm { perLayer = perLayer.flatMap { Checked.add($0, Checked.mul(2, headDim)) } }
        let embedding = Checked.mul(vocabSize, hiddenSize)
        return Checked.add(Checked.mul(numLayers, perLayer), embedding, tieWordEmbeddings ? 0 : embedding, hiddenSize)
    }

    // MARK: - Memory estimates

    /// Bytes of the activation arena of a full-sequence pass over `batch × seqLen` tokens (what
    /// `Activations(config:batch:seqLen:checkpointing:)` allocates: per-layer saved activations,
    /// the residual stream at every layer boundary, logits, RoPE tables and backward scratch),
    /// with checked arithmetic: nil when it overflows.
    public func activationBytes(batch: Int, seqLen: Int, checkpointing: Bool) -> Int? {
        guard batch >= 0, seqLen >= 0, let n = Checked.mul(batch, seqLen) else { return nil }
        let C = hiddenSize, Q = qDim, K = kvDim, I = intermediateSize
        // LayerActivations: rstd1, rstd2; h1, xMid, h2; q, att; k, v; gate, up, act; probs.
        var perLayer = Checked.add(Checked.mul(n, 2 + 3 * C + 2 * Q + 2 * K + 3 * I), Checked.mul(batch, numHeads, seqLen, seqLen))
        if hasQKNorm { perLayer = Checked.add(perLayer, Checked.mul(n, Q + K + numHeads + numKVHeads)) }
        // Residuals (L+1), rstdF, hF, logits, cos+sin, backward scratch (dResid, dH, dQ, dK, dV,
        // dAtt, dGate, dUp, dAct) and Qwen3's head-norm copy.
        var shared = Checked.add(Checked.mul(numLayers + 1, n, C), Checked.mul(n, 1 + C + headDim + 2 * C + 2 * Q + 2 * K + 3 * I),
                                 Checked.mul(n, vocabSize))
        if hasQKNorm { shared = Checked.add(shared, Checked.mul(n, max(Q, K))) }
        return Checked.mul(4, Checked.add(Checked.mul(checkpointing ? 1 : numLayers, perLayer), shared))
    }

    /// Bytes of the KV cache of one sequence of `capacity` positions (f32 keys and values of
    /// every layer), nil on overflow.
    public func kvCacheBytes(capacity: Int) -> Int? {
        guard capacity >= 0 else { return nil }
        return Checked.mul(2 * 4, numLayers, capacity, kvDim)
    }

    /// Bytes of the base weights stored as `dtype` (nil on overflow; quantized dtypes: their
    /// block size).
    public func weightBytes(dtype: DType) -> Int? {
        guard let n = checkedParameterCount else { return nil }
        return dtype.isQuantized ? Checked.mul(n / dtype.blockElements + 1, dtype.blockBytes) : Checked.mul(n, dtype.byteSize)
    }
}

// MARK: - Checked arithmetic

/// Integer arithmetic for sizes that come from files or flags: nil instead of a trap when the
/// result overflows (or an operand is already nil), so a caller can name what overflowed.
public enum Checked {
    public static func mul(_ factors: Int?...) -> Int? {
        var r = 1
        for f in factors {
            guard let f else { return nil }
            let (p, o) = r.multipliedReportingOverflow(by: f)
            if o { return nil }
            r = p
        }
        return r
    }

    public static func add(_ terms: Int?...) -> Int? {
        var r = 0
        for t in terms {
            guard let t else { return nil }
            let (s, o) = r.addingReportingOverflow(t)
            if o { return nil }
            r = s
        }
        return r
    }
}

// MARK: - Tensor names

/// The Hugging Face names of the base tensors that are not projections (the projections':
/// `Projection.weightName(layer:)`). Read once, when the model resolves its layers.
public enum TensorNames {
    public static let embedding = "model.embed_tokens.weight"
    public static let finalNorm = "model.norm.weight"
    public static let lmHead = "lm_head.weight"
    public static func inputNorm(layer l: Int) -> String { "model.layers.\(l).input_layernorm.weight" }
    public static func postAttentionNorm(layer l: Int) -> String { "model.layers.\(l).post_attention_layernorm.weight" }
    public static func qNorm(layer l: Int) -> String { "model.layers.\(l).self_attn.q_norm.weight" }
    public static func kNorm(layer l: Int) -> String { "model.layers.\(l).self_attn.k_norm.weight" }
}

// MARK: - Projections

/// The seven adaptable projections of a decoder layer, in the order they run. The raw value is
/// the module name in Hugging Face checkpoints and PEFT's `target_modules`.
public enum Projection: String, CaseIterable, Sendable, Codable, CustomStringConvertible {
    case q = "q_proj", k = "k_proj", v = "v_proj", o = "o_proj"
    case gate = "gate_proj", up = "up_proj", down = "down_proj"

    public var description: String { rawValue }
    /// Position in `allCases` (the run order), for per-layer tables.
    public var index: Int {
        switch self { case .q: 0; case .k: 1; case .v: 2; case .o: 3; case .gate: 4; case .up: 5; case .down: 6 }
    }
    /// The attention projections q/k/v/o (`self_attn`), else the MLP's (`mlp`).
    public var isAttention: Bool { index < 4 }
    /// Whether Qwen2-style checkpoints (`qkvBias`) carry a bias on it.
    public var hasQKVBias: Bool { index < 3 }
    /// `model.layers.{l}.self_attn.q_proj` (PEFT's module name).
    public func modulePath(layer l: Int) -> String { "model.layers.\(l).\(isAttention ? "self_attn" : "mlp").\(rawValue)" }
    /// `model.layers.{l}.self_attn.q_proj.weight`.
    public func weightName(layer l: Int) -> String { modulePath(layer: l) + ".weight" }
    /// `model.layers.{l}.self_attn.q_proj.bias`.
    public func biasName(layer l: Int) -> String { modulePath(layer: l) + ".bias" }

    /// The layer and projection of a module path or weight name written exactly as
    /// `modulePath(layer:)` / `weightName(layer:)` write them, else nil.
    public static func parse(_ name: String) -> (layer: Int, projection: Projection)? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 5 || (parts.count == 6 && parts[5] == "weight"),
              parts[0] == "model", parts[1] == "layers", let l = Int(parts[2]), l >= 0,
              let p = Projection(rawValue: String(parts[4])) else { return nil }
        return p.modulePath(layer: l) == parts.prefix(5).joined(separator: ".") ? (l, p) : nil
    }
}
