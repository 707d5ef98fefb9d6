import Foundation
import LLMCore

/// Reading PEFT adapter directories (LoRA, DoRA and LoKr) as `PeftModel.from_pretrained` (peft 0.21)
/// would apply them; the config's rules are in PEFTConfig.swift.
extension AdapterIO {
    /// A PEFT directory: `adapter_config.json` checked and turned into a module rule, then the
    /// LoRA or LoKr tensors of `adapter_model.safetensors` it selects.
    static func loadPEFT(_ dir: URL, configFile: URL, config: ModelConfig) throws -> AdapterSet {
        let json = try readJSON(configFile)
        let path = configFile.path
        let peftType = try checkSupported(json, path: path)
        let files = try weightFiles(in: dir, preferred: ["adapter_model.safetensors"])
        let data = FileManager.default.contents(atPath: path) ?? Data()
        let set: AdapterSet
        switch peftType {
        case "LORA":
            guard let alpha = json["lora_alpha"]?.double else { throw AdapterError.invalidFile(path, reason: "missing number 'lora_alpha'") }
            guard let r = json["r"]?.int, r > 0 else { throw AdapterError.invalidFile(path, reason: "missing positive integer 'r'") }
            let rule = try PEFTModuleRule(json: json, rawConfig: data, r: r, alpha: alpha, file: path)
            let dropout = Float(json["lora_dropout"]?.double ?? 0)
            set = try lora(from: files[0], rule: rule, rsLoRA: json["use_rslora"]?.bool ?? false, dropout: dropout,
                           dora: json["use_dora"]?.bool ?? false, config: config)
        default:
            guard let r = json["r"]?.int, r > 0, let alpha = json["alpha"]?.double else {
                throw AdapterError.invalidFile(path, reason: "LoKr config needs a positive integer 'r' and a number 'alpha'")
            }
            let rule = try PEFTModuleRule(json: json, rawConfig: data, r: r, alpha: alpha, file: path)
            set = try lokr(from: files[0], rule: rule, config: config)
        }
        set.baseModelName = json["base_model_name_or_path"]?.string
        return set
    }

    /// Splits tensor names into modules by known suffixes; refuses tensors with any other suffix
    /// (DoRA magnitudes, embedding LoRA, biases, conv factors ...) by name.
    static func modules(in file: SafetensorsFile, suffixes: [String], what: String) throws -> [String: [String: TensorView]] {
        var out: [String: [String: TensorView]] = [:]
        for t in file.tensors {
            guard let s = suffixes.first(where: { t.name.hasSuffix("." + $0) }) else {
                throw AdapterError.unsupported(file.path, feature: "tensor '\(t.name)' (a \(what) adapter holds only \(suffixes.map { "*." + $0 }.joined(separator: ", ")))")
            }
            let module = stripPEFT(String(t.name.dropLast(s.count + 1)))
            out[module, default: [:]][s] = t
        }
        return out
    }

    /// Drops the modules `rule` does not select (PEFT never wraps them, and warns that their
    /// weights are unexpected keys), with the same warning on stderr.
    static func selected(_ modules: [String: [String: TensorView]], rule: PEFTModuleRule) throws -> [String: [String: TensorView]] {
        let kept = modules.filter { rule.selects($0.key) }
        let dropped = modules.keys.filter { kept[$0] == nil }.sorted()
        if kept.isEmpty {
            throw AdapterError.invalidFile(rule.file, reason: "target_modules/exclude_modules/layers_to_transform select none of the adapter's \(modules.count) modules (e.g. '\(dropped.first ?? "")')")
        }
        if !dropped.isEmpty {
            let list = dropped.prefix(3).joined(separator: ", ") + (dropped.count > 3 ? ", ..." : "")
            FileHandle.standardError.write(Data("warning: \(rule.file): ignoring the weights of \(dropped.count) module(s) that target_modules/exclude_modules/layers_to_transform do not select, as PEFT does: \(list)\n".utf8))
        }
        return kept
    }

    /// LoRA, or with `dora` DoRA (each module also holds `lora_magnitude_vector [out]`).
    static func lora(from file: SafetensorsFile, rule: PEFTModuleRule, rsLoRA: Bool, dropout: Float, dora: Bool = false,
                     config: ModelConfig) throws -> AdapterSet {
        let all = try modules(in: file, suffixes: ["lora_A.weight", "lora_B.weight"] + (dora ? [doraMagnitude] : []),
                              what: dora ? "DoRA" : "LoRA")
        if all.isEmpty { throw AdapterError.invalidFile(file.path, reason: "no '*.lora_A.weight' tensors") }
        var adapters: [any LinearAdapter] = []
        for (module, parts) in try selected(all, rule: rule) {
            let (wname, outF, inF) = try site(module: module, config: config, file: file.path)
            guard let a = parts["lora_A.weight"] else { throw AdapterError.missingTensor(file: file.path, tensor: peftPrefix + module + ".lora_A.weight") }
            guard let b = parts["lora_B.weight"] else { throw AdapterError.missingTensor(file: file.path, tensor: peftPrefix + module + ".lora_B.weight") }
            let r = a.shape.first ?? 0
            guard a.shape.count == 2, r > 0, a.shape[1] == inF else {
                throw AdapterError.shapeMismatch(file: file.path, tensor: a.name, expected: [rule.rank(for: module) ?? max(r, 1), inF], found: a.shape)
            }
            guard b.shape == [outF, r] else { throw AdapterError.shapeMismatch(file: file.path, tensor: b.name, expected: [outF, r], found: b.shape) }
            if let expected = rule.rank(for: module), expected != r {
                throw AdapterError.invalidFile(file.path, reason: "'\(a.name)' has rank \(r) but the config (r / rank_pattern) gives \(expected)")
            }
            let l = LoRAAdapter(weightName: wname, a: a.floats(), b: b.floats(), inFeatures: inF, outFeatures: outF,
                                rank: r, alpha: Float(rule.alpha(for: module)), useRSLoRA: rsLoRA)
            l.dropout = dropout
            guard dora else { adapters.append(l); continue }
            guard let m = parts[doraMagnitude] else { throw AdapterError.missingTensor(file: file.path, tensor: peftPrefix + module + "." + doraMagnitude) }
            guard m.shape == [outF] else { throw AdapterError.shapeMismatch(file: file.path, tensor: m.name, expected: [outF], found: m.shape) }
            adapters.append(DoRAAdapter(lora: l, magnitude: m.floats()))
        }
        let set = AdapterSet(sortedByModel(adapters, config: config))
        set.spec = describedSpec(kind: dora ? .dora : .lora, set.adapters, config: config)
        return set
    }

    static func lokr(from file: SafetensorsFile, rule: PEFTModuleRule, config: ModelConfig) throws -> AdapterSet {
        let suffixes = ["lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b"]
        if let t2 = file.names.first(where: { $0.hasSuffix(".lokr_t2") }) {
            throw AdapterError.unsupported(file.path, feature: "tensor '\(t2)' (LoKr's CP-decomposed convolution factor)")
        }
        let all = try modules(in: file, suffixes: suffixes, what: "LoKr")
        if all.isEmpty { throw AdapterError.invalidFile(file.path, reason: "no '*.lokr_w1' tensors") }
        var adapters: [any LinearAdapter] = []
        for (module, parts) in try selected(all, rule: rule) {
            let (wname, outF, inF) = try site(module: module, config: config, file: file.path)
            let w1 = try factor(parts, file: file, module: module, "w1"), w2 = try factor(parts, file: file, module: module, "w2")
            let (c, a) = (w1.shape[0], w1.shape[1]), (d, b) = (w2.shape[0], w2.shape[1])
            guard c * d == outF, a * b == inF else {
                throw AdapterError.shapeMismatch(file: file.path, tensor: peftPrefix + module + ".lokr_w1 ⊗ lokr_w2",
                                                 expected: [outF, inF], found: [c * d, a * b])
            }
            // PEFT LoKr: ΔW = (alpha / r) · kron(w1, w2), the scale a Python float that torch
            // applies in the weights' f32.
            guard let r = rule.rank(for: module) else { throw AdapterError.invalidFile(rule.file, reason: "missing 'r'") }
            let scale = Float(rule.alpha(for: module) / Double(r))
            adapters.append(NdLinearAdapter(weightName: wname, w0: w1.values, w1: w2.values, inFactors: (a, b), outFactors: (c, d), alpha: scale))
        }
        let set = AdapterSet(sortedByModel(adapters, config: config))
        set.spec = describedSpec(kind: .ndlinear, set.adapters, config: config)
        return set
    }

    /// A LoKr factor, whole (`lokr_w1`) or as a low-rank product (`lokr_w1_a · lokr_w1_b`).
    static func factor(_ parts: [String: TensorView], file: SafetensorsFile, module: String, _ w: String) throws -> (shape: [Int], values: [Float]) {
        let prefix = peftPrefix + module
        if let whole = parts["lokr_" + w] {
            guard whole.shape.count == 2 else { throw AdapterError.invalidFile(file.path, reason: "'\(whole.name)' must be 2-D, found \(whole.shape)") }
            return (whole.shape, whole.floats())
        }
        guard let fa = parts["lokr_\(w)_a"], let fb = parts["lokr_\(w)_b"] else {
            throw AdapterError.missingTensor(file: file.path, tensor: prefix + ".lokr_\(w) (or lokr_\(w)_a and lokr_\(w)_b)")
        }
        guard fa.shape.count == 2, fb.shape.count == 2, fa.shape[1] == fb.shape[0] else {
            throw AdapterError.invalidFile(file.path, reason: "'\(fa.name)' \(fa.shape) and '\(fb.name)' \(fb.shape) do not multiply")
        }
        let (m, k, n) = (fa.shape[0], fa.shape[1], fb.shape[1])
        var out = [Float](repeating: 0, count: m * n)
        let av = fa.floats(), bv = fb.floats()
        out.withUnsafeMutableBufferPointer { o in
            av.withUnsafeBufferPointer { ap in bv.withUnsafeBufferPointer { bp in
                BLAS.gemm(m: m, n: n, k: k, a: ap.baseAddress!, b: bp.baseAddress!, c: o.baseAddress!)
            } }
        }
        return ([m, n], out)
    }
}
