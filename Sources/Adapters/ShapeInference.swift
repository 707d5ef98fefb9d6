import Foundation
import LLMCore

// MARK: - Model shapes from an adapter

extension AdapterIO {
    /// A model config with the projection shapes and layer count an adapter implies, for
    /// converting an adapter without its base model (`finetune export` without `--model`).
    /// Only what the adapter touches is real: hidden size, q/kv widths and the MLP width come
    /// from the adapter's own tensors; heads are the coarsest split consistent with them; the
    /// layer count is the highest adapted layer + 1. Throws, saying `--model` is needed, when
    /// the tensors do not pin the shapes down.
    public static func inferModelConfig(adapterAt url: URL) throws -> ModelConfig {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw AdapterError.missingFile(url.path, what: "--adapter: an adapter directory or .safetensors file")
        }
        let files: [SafetensorsFile]
        if isDir.boolValue {
            // A reference checkpoint saved by transformers carries its model's config.
            let cfg = url.appendingPathComponent("config.json")
            if fm.fileExists(atPath: cfg.path) { return try ModelConfig.load(cfg) }
            files = try weightFiles(in: url, preferred: ["adapter_model.safetensors", "model.safetensors"])
        } else {
            files = [try SafetensorsFile(url: url)]
        }
        var outs: [String: Int] = [:], ins: [String: Int] = [:]
        var maxLayer = -1
        let source = url.path
        func need(_ why: String) -> AdapterError {
            AdapterError.invalidOption("\(source): cannot infer the model's shapes from the adapter (\(why)); pass --model (a model directory or its config.json)")
        }
        func record(_ module: String, out: Int?, in inF: Int?) throws {
            guard let (l, projection) = Projection.parse(module) else { throw need("'\(module)' is not a Llama/Qwen projection") }
            let p = projection.rawValue
            maxLayer = max(maxLayer, l)
            for (value, side, label) in [(out, "out", "out_features"), (inF, "in", "in_features")] {
                guard let v = value else { continue }
                let old = side == "out" ? outs[p] : ins[p]
                if let old, old != v { throw need("\(p) has \(label) \(old) and \(v) in different layers") }
                if side == "out" { outs[p] = v } else { ins[p] = v }
            }
        }
        let tensors = Dictionary(files.flatMap(\.tensors).map { (stripPEFT($0.name), $0) }, uniquingKeysWith: { a, _ in a })
        /// A LoKr / NdLinear factor's shape: whole, or the product of its `_a`/`_b` pair.
        func factorShape(_ whole: String, _ a: String, _ b: String) -> (Int, Int)? {
            if let t = tensors[whole], t.shape.count == 2 { return (t.shape[0], t.shape[1]) }
            if let ta = tensors[a], let tb = tensors[b], ta.shape.count == 2, tb.shape.count == 2 { return (ta.shape[0], tb.shape[1]) }
            return nil
        }
        for (name, t) in tensors.sorted(by: { $0.key < $1.key }) where t.shape.count == 2 {
            if name.hasSuffix(".lora_A.weight") { try record(String(name.dropLast(".lora_A.weight".count)), out: nil, in: t.shape[1]); continue }
            if name.hasSuffix(".lora_B.weight") { try record(String(name.dropLast(".lora_B.weight".count)), out: t.shape[0], in: nil); continue }
            var module: String?, w1: (Int, Int)?, w2: (Int, Int)?
            if name.hasSuffix(ndSuffix0) {
                let m = String(name.dropLast(ndSuffix0.count))
                module = m; w1 = (t.shape[0], t.shape[1]); w2 = factorShape(m + ndSuffix1, "", "")
            } else if name.hasSuffix(".lokr_w1") || name.hasSuffix(".lokr_w1_a") {
                let m = String(name.dropLast(name.hasSuffix("_a") ? ".lokr_w1_a".count : ".lokr_w1".count))
                module = m
                w1 = factorShape(m + ".lokr_w1", m + ".lokr_w1_a", m + ".lokr_w1_b")
                w2 = factorShape(m + ".lokr_w2", m + ".lokr_w2_a", m + ".lokr_w2_b")
            }
            guard let module else { continue }
            guard let f1 = w1, let f2 = w2 else { throw need("'\(module)' lacks one of its two factors") }
            try record(module, out: f1.0 * f2.0, in: f1.1 * f2.1)
        }
        guard maxLayer >= 0 else { throw need("no LoRA, LoKr or NdLinear-LoRA tensors") }
        guard let hidden = ins["q_proj"] ?? ins["k_proj"] ?? ins["v_proj"] ?? ins["gate_proj"] ?? ins["up_proj"]
                ?? outs["o_proj"] ?? outs["down_proj"] else { throw need("no tensor gives the hidden size") }
        let qDim = outs["q_proj"] ?? ins["o_proj"] ?? hidden
        let kvDim = outs["k_proj"] ?? outs["v_proj"] ?? qDim
        let inter = outs["gate_proj"] ?? outs["up_proj"] ?? ins["down_proj"] ?? hidden
        func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }
        let headDim = gcd(qDim, kvDim)
        guard qDim % kvDim == 0, headDim % 2 == 0 else { throw need("q width \(qDim) and k/v width \(kvDim) fit no head layout") }
        let cfg: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
            "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": maxLayer + 1,
            "num_attention_heads": qDim / headDim, "num_key_value_heads": kvDim / headDim, "head_dim": headDim,
            "vocab_size": 1, "max_position_embeddings": 1, "tie_word_embeddings": true,
        ]
        return try ModelConfig.parse(object: jsonValue(cfg).object ?? [:], file: "\(source) (shapes inferred from the adapter)")
    }
}
