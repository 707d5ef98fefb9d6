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

    /// A config from config.json's top-level object.
    public static func parse(object obj: [String: JSONValue], file: String) throws -> ModelConfig {

        func int(_ key: String, default def: Int? = nil) throws -> Int {
            if let v = obj[key], !v.isNull {
                guard let i = v.int, i >= 0 else { throw ModelError.invalidConfig(file: file, reason: "'\(key)' must be a non-negative integer") }
                return i
            }
            if let def { return def }
            throw ModelError.invalidConfig(file: file, reason: "missing '\(key)'")
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

        let hidden = try int("hidden_size")
        let heads = try int("num_attention_heads")
        let kvHeads = try int("num_key_value_heads", default: heads)
        guard heads > 0, hidden > 0 else { throw ModelError.invalidConfig(file: file, reason: "hidden_size and num_attention_heads must be positive") }
        guard kvHeads > 0, heads % kvHeads == 0 else {
            throw ModelError.invalidConfig(file: file, reason: "num_attention_heads (\(heads)) must be a multiple of num_key_value_heads (\(kvHeads))")
        }
        let headDim = try int("head_dim", default: hidden / heads)
        guard headDim > 0, headDim % 2 == 0 else { throw ModelError.invalidConfig(file: file, reason: "head_dim \(headDim) must be positive and even for RoPE") }

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

        return ModelConfig(
            family: family, architecture: architecture,
            hiddenSize: hidden, intermediateSize: try int("intermediate_size"),
            numLayers: try int("num_hidden_layers"), numHeads: heads, numKVHeads: kvHeads, headDim: headDim,
            vocabSize: try int("vocab_size"),
            rmsNormEps: Float(double("rms_norm_eps") ?? 1e-6),
            ropeTheta: ropeTheta, ropeScaling: scaling,
            tieWordEmbeddings: obj["tie_word_embeddings"]?.bool ?? false,
            qkvBias: qkvBias,
            maxPositionEmbeddings: try int("max_position_embeddings", default: 4096),
            bosTokenId: ids("bos_token_id").first, eosTokenIds: ids("eos_token_id"),
            padTokenId: ids("pad_token_id").first, dtype: dtype, raw: obj)
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

    /// Total parameters, from the config alone.
    public var parameterCount: Int { expectedTensors().reduce(0) { $0 + $1.shape.reduce(1, *) } }
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
