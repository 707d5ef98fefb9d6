import Foundation
import LLMCore

/// Adapter file formats (FORMATS.md): PEFT LoRA, PEFT LoKr (NdLinear-LoRA's interchange form)
/// and the NdLinear-LoRA reference layout.
public enum AdapterFormat: String, Sendable, CaseIterable {
    case peftLoRA = "peft-lora"
    case peftLoKr = "peft-lokr"
    case ndlinearReference = "ndlinear-reference"
}

/// Reading and writing adapter directories. Import follows what `PeftModel.from_pretrained`
/// (peft 0.21) does with the same files, so an imported adapter computes the same function;
/// anything PEFT would compute differently from us is refused by name.
public enum AdapterIO {
    static let peftPrefix = "base_model.model."
    static let ndSuffix0 = ".adapter.adapter.align_layers.0.weight"
    static let ndSuffix1 = ".adapter.adapter.align_layers.1.weight"

    // MARK: - Reading

    /// Reads any adapter the engine understands, checked against `config`:
    /// a PEFT LoRA or LoKr directory, an NdLinear-LoRA reference directory (adapter-only or a
    /// full checkpoint), or a bare `.safetensors` file of either key layout (then `loraAlpha`
    /// or `ndlinearAlpha` supplies the scale). `ndlinearAlpha` is used when the files carry no α
    /// (the reference's own checkpoints; default 1.0, the reference's default).
    ///
    /// PEFT configs are honoured as PEFT applies them: `target_modules` (a list of names or
    /// module-path suffixes, or one regex string matched against the whole module path),
    /// `exclude_modules`, `layers_to_transform` / `layers_pattern` (list targets only, as in
    /// PEFT), `rank_pattern` / `alpha_pattern` (keys are regexes matched against the end of the
    /// module path, first key in file order wins), `use_rslora` (scale `alpha/√r`). Weights of
    /// modules the config does not select are ignored with a warning, as PEFT ignores them.
    /// Features that change the computation and are not implemented (DoRA, bias training,
    /// `modules_to_save`, PiSSA/OLoRA/CorDA/LoftQ initialisations that rewrite the base, ...)
    /// are refused by name.
    public static func load(_ url: URL, config: ModelConfig, ndlinearAlpha: Float? = nil, loraAlpha: Float? = nil) throws -> AdapterSet {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw AdapterError.missingFile(url.path, what: "--adapter: an adapter directory or .safetensors file")
        }
        if !isDir.boolValue {
            let file = try SafetensorsFile(url: url)
            if file.names.contains(where: { $0.hasSuffix(ndSuffix0) }) {
                return try ndlinear(from: [file], wrapped: nil, alpha: ndlinearAlpha ?? 1, config: config, source: url.path)
            }
            if file.names.contains(where: { $0.hasSuffix(".lokr_w1") || $0.hasSuffix(".lokr_w1_a") }) {
                throw AdapterError.invalidFile(url.path, reason: "a bare LoKr file needs its adapter_config.json (r and alpha); pass the directory")
            }
            guard let alpha = loraAlpha else {
                throw AdapterError.invalidOption("\(url.path): a bare LoRA .safetensors file carries no lora_alpha; pass the adapter directory (with adapter_config.json)")
            }
            return try lora(from: file, rule: PEFTModuleRule(r: nil, alpha: Double(alpha), file: url.path),
                            rsLoRA: false, dropout: 0, config: config)
        }
        let peftConfig = url.appendingPathComponent("adapter_config.json")
        let ndConfig = url.appendingPathComponent("ndlinear_lora_config.json")
        if fm.fileExists(atPath: peftConfig.path) { return try loadPEFT(url, configFile: peftConfig, config: config) }
        if fm.fileExists(atPath: ndConfig.path) {
            let json = try readJSON(ndConfig)
            let alpha = json["lora_alpha"]?.double.map(Float.init) ?? ndlinearAlpha ?? 1
            if let bias = json["bias"]?.bool, bias {
                throw AdapterError.unsupported(ndConfig.path, feature: "bias true (NdLinear-LoRA with a trainable bias)")
            }
            let files = try weightFiles(in: url, preferred: ["adapter_model.safetensors", "model.safetensors"])
            let set = try ndlinear(from: files, wrapped: json["wrapped_modules"]?.object, alpha: alpha, config: config, source: url.path)
            set.baseModelName = json["base_model_name"]?.string
            return set
        }
        throw AdapterError.missingFile(url.appendingPathComponent("adapter_config.json").path,
                                       what: "an adapter directory holds adapter_config.json (PEFT) or ndlinear_lora_config.json (NdLinear-LoRA reference)")
    }

    static func readJSON(_ url: URL) throws -> JSONValue {
        guard let data = FileManager.default.contents(atPath: url.path) else { throw AdapterError.missingFile(url.path, what: "adapter config") }
        guard let json = try? JSONValue.parse(data), json.object != nil else {
            throw AdapterError.invalidFile(url.path, reason: "not a JSON object")
        }
        return json
    }

    /// The first existing of `preferred`, or the shards of `model.safetensors.index.json`.
    static func weightFiles(in dir: URL, preferred: [String]) throws -> [SafetensorsFile] {
        let fm = FileManager.default
        for name in preferred where fm.fileExists(atPath: dir.appendingPathComponent(name).path) {
            return [try SafetensorsFile(url: dir.appendingPathComponent(name))]
        }
        let index = dir.appendingPathComponent("model.safetensors.index.json")
        if fm.fileExists(atPath: index.path), let map = try readJSON(index)["weight_map"]?.object {
            let shards = Set(map.values.compactMap(\.string)).sorted()
            return try shards.map { try SafetensorsFile(url: dir.appendingPathComponent($0)) }
        }
        if fm.fileExists(atPath: dir.appendingPathComponent("adapter_model.bin").path) {
            throw AdapterError.unsupported(dir.appendingPathComponent("adapter_model.bin").path,
                                           feature: "PyTorch pickle weights (re-save with save_pretrained(..., safe_serialization=True))")
        }
        throw AdapterError.missingFile(dir.appendingPathComponent(preferred[0]).path, what: "adapter weights")
    }

    /// The base weight name and `[out, in]` of the projection a module path
    /// (`model.layers.0.self_attn.q_proj`) names, or throws naming the file.
    static func site(module: String, config: ModelConfig, file: String) throws -> (weightName: String, out: Int, in: Int) {
        guard let (l, p) = Projection.parse(module), l < config.numLayers, p.modulePath(layer: l) == module
        else { throw AdapterError.unknownTarget(file: file, module: module) }
        let (outF, inF) = config.shape(of: p)
        return (p.weightName(layer: l), outF, inF)
    }

    /// The projection and layer of an adapter's weight name (always one `site(module:…)`
    /// or `Projection.weightName(layer:)` wrote).
    static func projection(of weightName: String) -> Projection? { Projection.parse(weightName)?.projection }
    static func layer(of weightName: String) -> Int? { Projection.parse(weightName)?.layer }

    // MARK: PEFT

    /// Config keys that change what PEFT computes and that we do not implement. Each entry:
    /// key, a test of its value that means "in use", and the name we refuse it by.
    static let unsupportedLoRAKeys: [(key: String, inUse: (JSONValue) -> Bool, name: String)] = [
        ("use_dora", isTrue, "use_dora (DoRA)"),
        ("modules_to_save", isNonEmpty, "modules_to_save (fully trained extra modules)"),
        ("layer_replication", isNonEmpty, "layer_replication"),
        ("target_parameters", isNonEmpty, "target_parameters (LoRA on nn.Parameter)"),
        ("lora_bias", isTrue, "lora_bias (a bias on lora_B)"),
        ("use_qalora", isTrue, "use_qalora (QALoRA)"),
        ("trainable_token_indices", isNonEmpty, "trainable_token_indices (trained embedding rows)"),
        ("alora_invocation_tokens", isNonEmpty, "alora_invocation_tokens (activated LoRA)"),
        ("megatron_config", isNonEmpty, "megatron_config"),
        ("use_bdlora", isNonEmpty, "use_bdlora (block-diagonal LoRA)"),
        ("arrow_config", isNonEmpty, "arrow_config (Arrow routing)"),
        ("kasa_config", isNonEmpty, "kasa_config (KaSA)"),
        ("monteclora_config", isNonEmpty, "monteclora_config (MonteCLoRA)"),
        ("velora_config", isNonEmpty, "velora_config (VeLoRA)"),
    ]

    static let unsupportedLoKrKeys: [(key: String, inUse: (JSONValue) -> Bool, name: String)] = [
        ("modules_to_save", isNonEmpty, "modules_to_save (fully trained extra modules)"),
    ]

    static func isTrue(_ v: JSONValue) -> Bool { v.bool == true }
    static func isNonEmpty(_ v: JSONValue) -> Bool {
        switch v {
        case .null: return false
        case .bool(let b): return b
        case .array(let a): return !a.isEmpty
        case .object(let o): return !o.isEmpty
        case .string(let s): return !s.isEmpty
        default: return true
        }
    }

    static func loadPEFT(_ dir: URL, configFile: URL, config: ModelConfig) throws -> AdapterSet {
        let json = try readJSON(configFile)
        let path = configFile.path
        let peftType = json["peft_type"]?.string ?? ""
        let refused: [(key: String, inUse: (JSONValue) -> Bool, name: String)]
        switch peftType {
        case "LORA": refused = unsupportedLoRAKeys
        case "LOKR": refused = unsupportedLoKrKeys
        default: throw AdapterError.unsupported(path, feature: "peft_type '\(peftType)' (supported: LORA, LOKR)")
        }
        // Refuse what we do not implement, by name, rather than silently computing something else.
        for (key, inUse, name) in refused {
            if let v = json[key], inUse(v) { throw AdapterError.unsupported(path, feature: name) }
        }
        if peftType == "LORA" {
            if let b = json["bias"]?.string, b != "none" { throw AdapterError.unsupported(path, feature: "bias '\(b)' (bias training)") }
            // These initialisations rewrite the base weights (W_res = W − B₀A₀ or a quantised W),
            // and PEFT repeats that when it loads the adapter; the saved A/B only make sense on
            // that modified base.
            if let s = json["init_lora_weights"]?.string {
                let rewritesBase = s.hasPrefix("pissa") || ["olora", "corda", "loftq", "lora_ga"].contains(s)
                let known = ["gaussian", "eva", "orthogonal"].contains(s)
                if rewritesBase { throw AdapterError.unsupported(path, feature: "init_lora_weights '\(s)' (it rewrites the base weights; convert it to plain LoRA in PEFT first)") }
                if !known { throw AdapterError.unsupported(path, feature: "init_lora_weights '\(s)'") }
            }
            // `fan_in_fan_out` concerns Conv1D (GPT-2) weights; on nn.Linear, as every Llama/Qwen
            // projection is, PEFT warns and turns it off, so the stored A/B are the usual layout.
        }
        let files = try weightFiles(in: dir, preferred: ["adapter_model.safetensors"])
        let data = FileManager.default.contents(atPath: path) ?? Data()
        let set: AdapterSet
        switch peftType {
        case "LORA":
            guard let alpha = json["lora_alpha"]?.double else { throw AdapterError.invalidFile(path, reason: "missing number 'lora_alpha'") }
            guard let r = json["r"]?.int, r > 0 else { throw AdapterError.invalidFile(path, reason: "missing positive integer 'r'") }
            let rule = try PEFTModuleRule(json: json, rawConfig: data, r: r, alpha: alpha, file: path)
            let dropout = Float(json["lora_dropout"]?.double ?? 0)
            set = try lora(from: files[0], rule: rule, rsLoRA: json["use_rslora"]?.bool ?? false, dropout: dropout, config: config)
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

    /// Which modules a PEFT config wraps, and with which r and alpha, exactly as peft 0.21
    /// decides (`check_target_module_exists`, `get_pattern_key` in peft/tuners/tuners_utils.py
    /// and peft/utils/other.py). Module paths are relative to the `*ForCausalLM` model, e.g.
    /// `model.layers.0.self_attn.q_proj`.
    struct PEFTModuleRule {
        enum Match {
            /// Names: a module is selected when its path equals one or ends with `.name`.
            case names([String])
            /// One regex string, matched against the whole module path (`re.fullmatch`).
            case regex(NSRegularExpression)
        }
        /// nil: the config names no targets (PEFT would use its per-model default), so every
        /// module present in the weights is accepted.
        var targets: Match?
        var exclude: Match?
        /// `layers_to_transform` (nil or empty: all); PEFT applies it only with list targets.
        var layers: Set<Int>?
        var layersPattern: [String] = []
        /// `rank_pattern` / `alpha_pattern` in the file's key order (PEFT takes the first key
        /// whose regex matches).
        var rankPattern: [(key: String, regex: NSRegularExpression, value: Int)] = []
        var alphaPattern: [(key: String, regex: NSRegularExpression, value: Double)] = []
        /// Config-wide r (nil: not known, take the tensors' rank) and alpha.
        var r: Int?
        var alpha: Double
        let file: String

        init(r: Int?, alpha: Double, file: String) {
            self.r = r; self.alpha = alpha; self.file = file
        }

        init(json: JSONValue, rawConfig: Data, r: Int, alpha: Double, file: String) throws {
            self.init(r: r, alpha: alpha, file: file)
            targets = try Self.match(json["target_modules"], key: "target_modules", file: file)
            if json["target_modules"]?.string?.lowercased() == "all-linear" {
                // PEFT expands the string "all-linear" to the names of every linear layer but the
                // output layer (then list semantics, layers_to_transform included, apply).
                targets = .names(Projection.allCases.map(\.rawValue))
            }
            exclude = try Self.match(json["exclude_modules"], key: "exclude_modules", file: file)
            if let l = json["layers_to_transform"], !l.isNull {
                if let i = l.int { layers = [i] } else if let a = l.array {
                    let ints = a.compactMap(\.int)
                    guard ints.count == a.count else { throw AdapterError.invalidFile(file, reason: "layers_to_transform must be an integer or a list of integers") }
                    layers = ints.isEmpty ? nil : Set(ints)
                } else {
                    throw AdapterError.invalidFile(file, reason: "layers_to_transform must be an integer or a list of integers")
                }
            }
            if let p = json["layers_pattern"] {
                if let s = p.string, !s.isEmpty { layersPattern = [s] } else if let a = p.array { layersPattern = a.compactMap(\.string) }
            }
            let order = JSONKeyOrder.self
            if let rp = json["rank_pattern"]?.object, !rp.isEmpty {
                for key in order.memberKeys("rank_pattern", in: rawConfig, fallback: Array(rp.keys)) {
                    guard let v = rp[key]?.int, v > 0 else { throw AdapterError.invalidFile(file, reason: "rank_pattern['\(key)'] must be a positive integer") }
                    rankPattern.append((key, try Self.patternRegex(key, name: "rank_pattern", file: file), v))
                }
            }
            if let ap = json["alpha_pattern"]?.object, !ap.isEmpty {
                for key in order.memberKeys("alpha_pattern", in: rawConfig, fallback: Array(ap.keys)) {
                    guard let v = ap[key]?.double else { throw AdapterError.invalidFile(file, reason: "alpha_pattern['\(key)'] must be a number") }
                    alphaPattern.append((key, try Self.patternRegex(key, name: "alpha_pattern", file: file), v))
                }
            }
        }

        static func match(_ v: JSONValue?, key: String, file: String) throws -> Match? {
            guard let v, !v.isNull else { return nil }
            if let s = v.string {
                do { return .regex(try NSRegularExpression(pattern: "^(?:" + s + ")$")) } catch {
                    throw AdapterError.invalidFile(file, reason: "\(key) regex '\(s)' does not compile")
                }
            }
            if let a = v.array {
                let names = a.compactMap(\.string)
                guard names.count == a.count else { throw AdapterError.invalidFile(file, reason: "\(key) must be a string or a list of strings") }
                return .names(names)
            }
            throw AdapterError.invalidFile(file, reason: "\(key) must be a string or a list of strings")
        }

        /// `re.match(rf"(.*\.)?({key})$", module)`.
        static func patternRegex(_ key: String, name: String, file: String) throws -> NSRegularExpression {
            do { return try NSRegularExpression(pattern: "^(.*\\.)?(" + key + ")$") } catch {
                throw AdapterError.invalidFile(file, reason: "\(name) key '\(key)' is not a valid regex")
            }
        }

        static func matches(_ regex: NSRegularExpression, _ s: String) -> Bool {
            regex.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
        }

        static func matches(_ m: Match, _ module: String) -> Bool {
            switch m {
            case let .names(n): return n.contains { module == $0 || module.hasSuffix("." + $0) }
            case let .regex(r): return matches(r, module)
            }
        }

        /// The layer index PEFT reads from a module path: the first numbered segment
        /// (`.*?\.[^.]*\.(\d+)\.`), or the number after one of `layers_pattern`.
        func layerIndex(_ module: String) -> Int? {
            let patterns = layersPattern.isEmpty ? ["^.*?\\.[^.]*\\.(\\d+)\\."]
                : layersPattern.map { "^(?:.*?\\.)?" + $0 + "\\.(\\d+)\\." }
            for p in patterns {
                guard let re = try? NSRegularExpression(pattern: p),
                      let m = re.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)),
                      let r = Range(m.range(at: 1), in: module) else { continue }
                return Int(module[r])
            }
            return nil
        }

        /// Whether PEFT wraps `module` with this adapter.
        func selects(_ module: String) -> Bool {
            if let exclude, Self.matches(exclude, module) { return false }
            guard let targets else { return true }
            switch targets {
            case .regex: return Self.matches(targets, module)
            case let .names(n):
                if n.contains(module) { return true }
                guard Self.matches(targets, module) else { return false }
                guard let layers else { return true }
                return layerIndex(module).map(layers.contains) ?? false
            }
        }

        func rank(for module: String) -> Int? {
            rankPattern.first { Self.matches($0.regex, module) }?.value ?? r
        }

        func alpha(for module: String) -> Double {
            alphaPattern.first { Self.matches($0.regex, module) }?.value ?? alpha
        }
    }

    static func stripPEFT(_ key: String) -> String {
        var k = key
        if k.hasPrefix(peftPrefix) { k.removeFirst(peftPrefix.count) }
        return k
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

    static func lora(from file: SafetensorsFile, rule: PEFTModuleRule, rsLoRA: Bool, dropout: Float, config: ModelConfig) throws -> AdapterSet {
        let all = try modules(in: file, suffixes: ["lora_A.weight", "lora_B.weight"], what: "LoRA")
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
            adapters.append(l)
        }
        let set = AdapterSet(sortedByModel(adapters, config: config))
        set.spec = describedSpec(kind: .lora, set.adapters, config: config)
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

    /// A spec that describes a loaded set exactly: the projections and layers it covers, the
    /// most common rank/alpha, and per-module overrides keyed by full module path.
    static func describedSpec(kind: AdapterKind, _ adapters: [any LinearAdapter], config: ModelConfig) -> AdapterSpec {
        let layers = Set(adapters.compactMap { layer(of: $0.weightName) })
        let projections = Projection.allCases.filter { p in adapters.contains { projection(of: $0.weightName) == p } }
        let targets = TargetSelection(modules: projections, layers: layers == Set(0..<config.numLayers) ? nil : layers)
        switch kind {
        case .lora:
            let loras = adapters.compactMap { $0 as? LoRAAdapter }
            let r = mostCommon(loras.map(\.rank)) ?? 8, alpha = mostCommon(loras.map(\.alpha)) ?? Float(2 * r)
            var rp: [String: Int] = [:], ap: [String: Float] = [:]
            for l in loras {
                if l.rank != r { rp[l.modulePath] = l.rank }
                if l.alpha != alpha { ap[l.modulePath] = l.alpha }
            }
            return AdapterSpec(kind: .lora, targets: targets, rank: r, alpha: alpha, dropout: loras.first?.dropout ?? 0,
                               useRSLoRA: loras.first?.useRSLoRA ?? false, rankPattern: rp, alphaPattern: ap)
        case .ndlinear:
            let nds = adapters.compactMap { $0 as? NdLinearAdapter }
            let alpha = mostCommon(nds.map(\.alpha)) ?? 1
            var ap: [String: Float] = [:]
            for n in nds where n.alpha != alpha { ap[n.modulePath] = n.alpha }
            return AdapterSpec(kind: .ndlinear, targets: targets, alpha: alpha, alphaPattern: ap)
        }
    }

    /// The most frequent value, ties broken by first appearance.
    static func mostCommon<T: Hashable>(_ values: [T]) -> T? {
        var counts: [T: Int] = [:]
        for v in values { counts[v, default: 0] += 1 }
        var best: T?, bestCount = 0
        for v in values where counts[v]! > bestCount { best = v; bestCount = counts[v]! }
        return best
    }

    // MARK: NdLinear reference

    static func ndlinear(from files: [SafetensorsFile], wrapped: [String: JSONValue]?, alpha: Float,
                         config: ModelConfig, source: String) throws -> AdapterSet {
        var adapters: [any LinearAdapter] = []
        for file in files {
            for name in file.names where name.hasSuffix(ndSuffix0) {
                let module = stripPEFT(String(name.dropLast(ndSuffix0.count)))
                let (wname, outF, inF) = try site(module: module, config: config, file: file.path)
                let t0 = try file.tensor(name)
                let name1 = String(name.dropLast(ndSuffix0.count)) + ndSuffix1
                guard let t1 = files.lazy.compactMap({ $0[name1] }).first else { throw AdapterError.missingTensor(file: file.path, tensor: name1) }
                guard t0.shape.count == 2, t1.shape.count == 2 else { throw AdapterError.invalidFile(file.path, reason: "'\(name)' must be 2-D") }
                let (c, a) = (t0.shape[0], t0.shape[1]), (d, b) = (t1.shape[0], t1.shape[1])
                guard c * d == outF, a * b == inF else {
                    throw AdapterError.shapeMismatch(file: file.path, tensor: module + ".adapter.adapter.align_layers.{0,1}.weight",
                                                     expected: [outF, inF], found: [c * d, a * b])
                }
                if let w = wrapped?[module] {
                    let inf = w["in_factors"]?.array?.compactMap(\.int), outf = w["out_factors"]?.array?.compactMap(\.int)
                    if inf != [a, b] || outf != [c, d] {
                        throw AdapterError.invalidFile(source, reason: "wrapped_modules['\(module)'] factors \(inf ?? []) → \(outf ?? []) disagree with the tensors' [\(a), \(b)] → [\(c), \(d)]")
                    }
                }
                adapters.append(NdLinearAdapter(weightName: wname, w0: t0.floats(), w1: t1.floats(), inFactors: (a, b), outFactors: (c, d), alpha: alpha))
            }
        }
        if adapters.isEmpty { throw AdapterError.invalidFile(source, reason: "no '*\(ndSuffix0)' tensors") }
        let set = AdapterSet(sortedByModel(adapters, config: config))
        set.spec = describedSpec(kind: .ndlinear, set.adapters, config: config)
        return set
    }

    static func sortedByModel(_ adapters: [any LinearAdapter], config: ModelConfig) -> [any LinearAdapter] {
        func order(_ a: any LinearAdapter) -> Int { Projection.parse(a.weightName).map { $0.layer * 16 + $0.projection.index } ?? 0 }
        return adapters.sorted { order($0) < order($1) }
    }

    // MARK: - Model shapes from an adapter

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
        return try ModelConfig.parse(try JSONSerialization.data(withJSONObject: cfg), file: "\(source) (shapes inferred from the adapter)")
    }

    // MARK: - Writing

    /// Writes `set` in `format` into `dir` (created; files written atomically).
    /// `extra` keys are added to the config (PEFT ignores unknown keys). `baseModel` becomes
    /// `base_model_name_or_path` (an existing local path is made absolute so PEFT finds it from
    /// anywhere). `config`, when given, tells whether the set covers every layer of the model
    /// (else the set's spec says so); an exact `layers_to_transform` is written otherwise.
    /// Refuses a directory that already holds an adapter config of the other layout, which a
    /// reader would pick up instead of the new files.
    public static func save(_ set: AdapterSet, format: AdapterFormat, to dir: URL, baseModel: String?,
                            extra: [String: Any] = [:], config: ModelConfig? = nil) throws {
        let fm = FileManager.default
        let other = format == .ndlinearReference ? "adapter_config.json" : "ndlinear_lora_config.json"
        if fm.fileExists(atPath: dir.appendingPathComponent(other).path) {
            throw AdapterError.invalidOption("\(dir.path) already holds \(other) (an adapter in another layout, which readers would load first); write \(format.rawValue) into an empty directory")
        }
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        let base = baseModel.map(resolvedBaseModel)
        switch format {
        case .peftLoRA: try savePEFTLoRA(set, to: dir, baseModel: base, extra: extra, config: config)
        case .peftLoKr: try savePEFTLoKr(set, to: dir, baseModel: base, extra: extra, config: config)
        case .ndlinearReference: try saveNdLinearReference(set, to: dir, baseModel: base)
        }
    }

    /// The format `finetune train` writes for a set: LoRA → PEFT LoRA, NdLinear → PEFT LoKr.
    public static func defaultFormat(for set: AdapterSet) -> AdapterFormat {
        set.kind == .lora ? .peftLoRA : .peftLoKr
    }

    static func resolvedBaseModel(_ s: String) -> String {
        guard !s.isEmpty, FileManager.default.fileExists(atPath: s) else { return s }
        return URL(fileURLWithPath: s).standardizedFileURL.path
    }

    /// Writes a config as PEFT does (`json.dumps(indent=2, sort_keys=True)`).
    static func writeJSON(_ object: [String: Any], to url: URL) throws {
        try AtomicFile.write(JSONText.render(jsonValue(object)) + "\n", to: url)
    }

    /// Plain Swift values (as the config dictionaries hold them) as JSON.
    static func jsonValue(_ x: Any) -> JSONValue {
        switch x {
        case is NSNull: return .null
        case let b as Bool: return .bool(b)
        case let i as Int: return .int(i)
        case let d as Double: return .double(d)
        case let f as Float: return .double(Double("\(f)") ?? Double(f))
        case let s as String: return .string(s)
        case let a as [Any]: return .array(a.map(jsonValue))
        case let o as [String: Any]: return .object(o.mapValues(jsonValue))
        default: return .string("\(x)")
        }
    }

    /// A Float as a JSON number: an integer when integral, else the shortest decimal that reads
    /// back as the same Float (so `0.1` is written `0.1`, not `0.10000000149011612`).
    static func jsonNumber(_ x: Float) -> Any {
        if x == x.rounded(), abs(x) < 1e9 { return Int(x) }
        return Double("\(x)") ?? Double(x)
    }

    /// `target_modules` and `layers_to_transform` that make PEFT wrap exactly the set's modules:
    /// projection names (+ the layer list unless every layer is adapted) when the set is a full
    /// grid of projections × layers, else the list of full module paths (PEFT's exact-name
    /// match, which ignores `layers_to_transform`).
    static func peftTargets(_ set: AdapterSet, config: ModelConfig?) -> (targets: [String], layers: Any) {
        let names = set.adapters.map(\.weightName)
        let projections = Projection.allCases.filter { p in names.contains { projection(of: $0) == p } }.map(\.rawValue)
        let layers = Set(names.compactMap(layer(of:))).sorted()
        if projections.count * layers.count == names.count {
            let everyLayer: Bool
            if let config { everyLayer = layers == Array(0..<config.numLayers) }
            else { everyLayer = set.spec != nil && set.spec!.targets.layers == nil && layers == Array(0..<layers.count) }
            return (projections, everyLayer ? NSNull() : layers)
        }
        return (set.adapters.map(\.modulePath), NSNull())
    }

    static func savePEFTLoRA(_ set: AdapterSet, to dir: URL, baseModel: String?, extra: [String: Any], config: ModelConfig?) throws {
        let loras = try set.adapters.map { a -> LoRAAdapter in
            guard let l = a as? LoRAAdapter else { throw AdapterError.invalidOption("peft-lora export needs LoRA adapters; this set holds \(a.kind.rawValue) (use peft-lokr or ndlinear-reference)") }
            return l
        }
        guard let first = loras.first else { throw AdapterError.invalidOption("no adapters to save") }
        if loras.contains(where: { $0.useRSLoRA != first.useRSLoRA }) {
            throw AdapterError.invalidOption("mixed rsLoRA settings cannot be expressed in one PEFT config")
        }
        let r = mostCommon(loras.map(\.rank))!, alpha = mostCommon(loras.map(\.alpha))!
        var entries: [SafetensorsEntry] = []
        var rankPattern: [String: Int] = [:], alphaPattern: [String: Any] = [:]
        for l in loras {
            let key = peftPrefix + l.modulePath
            entries.append(SafetensorsEntry(name: key + ".lora_A.weight", shape: l.a.shape, floats: l.a.value.array))
            entries.append(SafetensorsEntry(name: key + ".lora_B.weight", shape: l.b.shape, floats: l.b.value.array))
            // Full module paths as pattern keys: PEFT's `(.*\.)?(key)$` then matches that module only.
            if l.rank != r { rankPattern[l.modulePath] = l.rank }
            if l.alpha != alpha { alphaPattern[l.modulePath] = jsonNumber(l.alpha) }
        }
        let (targets, layers) = peftTargets(set, config: config)
        var cfg: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": jsonNumber(alpha),
            "lora_dropout": jsonNumber(mostCommon(loras.map(\.dropout))!), "target_modules": targets, "bias": "none",
            "fan_in_fan_out": false, "use_rslora": first.useRSLoRA, "rank_pattern": rankPattern, "alpha_pattern": alphaPattern,
            "base_model_name_or_path": baseModel ?? NSNull(), "inference_mode": true, "init_lora_weights": true,
            "use_dora": false, "modules_to_save": NSNull(), "layers_to_transform": layers, "layers_pattern": NSNull(),
            "exclude_modules": NSNull(), "lora_bias": false, "revision": NSNull(),
        ]
        for (k, v) in extra { cfg[k] = v }
        try SafetensorsWriter.write(entries, metadata: ["format": "pt"], to: dir.appendingPathComponent("adapter_model.safetensors"))
        try writeJSON(cfg, to: dir.appendingPathComponent("adapter_config.json"))
    }

    static func ndAdapters(_ set: AdapterSet, format: AdapterFormat) throws -> [NdLinearAdapter] {
        let nds = try set.adapters.map { a -> NdLinearAdapter in
            guard let n = a as? NdLinearAdapter else { throw AdapterError.invalidOption("\(format.rawValue) export needs NdLinear-LoRA adapters; this set holds \(a.kind.rawValue) (use peft-lora)") }
            return n
        }
        if nds.isEmpty { throw AdapterError.invalidOption("no adapters to save") }
        return nds
    }

    /// NdLinear-LoRA as PEFT LoKr: `lokr_w1 = W0`, `lokr_w2 = W1`, `decompose_both: false`,
    /// `r` large enough that PEFT keeps w2 whole, `alpha = r·α` (so alpha/r = α).
    static func savePEFTLoKr(_ set: AdapterSet, to dir: URL, baseModel: String?, extra: [String: Any], config: ModelConfig?) throws {
        let nds = try ndAdapters(set, format: .peftLoKr)
        // PEFT builds each module's factors from `factorization(dim, -1)`, the balanced split,
        // and loading fails on any other shapes; the reference ones are the same split.
        for n in nds {
            let pin = balancedFactors(n.inFeatures), pout = balancedFactors(n.outFeatures)
            if pin != n.inFactors || pout != n.outFactors {
                throw AdapterError.invalidOption("peft-lokr: \(n.modulePath) uses factors \(n.inFactors) → \(n.outFactors) but PEFT LoKr builds \(pin) → \(pout) for [\(n.outFeatures), \(n.inFeatures)]; export ndlinear-reference instead")
            }
        }
        // PEFT (lokr/layer.py) keeps w2 whole iff r ≥ max(out_k, in_n) / 2.
        let r = max(1, nds.map { (max($0.outFactors.1, $0.inFactors.1) + 1) / 2 }.max()!)
        let alpha0 = mostCommon(nds.map(\.alpha))!
        var entries: [SafetensorsEntry] = []
        var alphaPattern: [String: Any] = [:]
        var factors: [String: Any] = [:]
        for n in nds {
            let key = peftPrefix + n.modulePath
            entries.append(SafetensorsEntry(name: key + ".lokr_w1", shape: n.w0.shape, floats: n.w0.value.array))
            entries.append(SafetensorsEntry(name: key + ".lokr_w2", shape: n.w1.shape, floats: n.w1.value.array))
            if n.alpha != alpha0 { alphaPattern[n.modulePath] = loKrAlpha(n.alpha, r: r) }
            factors[n.modulePath] = ["in_factors": [n.inFactors.0, n.inFactors.1], "out_factors": [n.outFactors.0, n.outFactors.1]]
        }
        let (targets, layers) = peftTargets(set, config: config)
        var cfg: [String: Any] = [
            "peft_type": "LOKR", "task_type": "CAUSAL_LM", "r": r, "alpha": loKrAlpha(alpha0, r: r),
            "target_modules": targets, "decompose_both": false, "decompose_factor": -1,
            "rank_dropout": 0.0, "module_dropout": 0.0, "use_effective_conv2d": false, "init_weights": true,
            "rank_pattern": [String: Int](), "alpha_pattern": alphaPattern, "base_model_name_or_path": baseModel ?? NSNull(),
            "inference_mode": true, "modules_to_save": NSNull(), "layers_to_transform": layers, "layers_pattern": NSNull(),
            "exclude_modules": NSNull(), "revision": NSNull(),
            // Our own keys (PEFT ignores unknown keys): the method and its α as the reference names it.
            "ndlinear_alpha": jsonNumber(alpha0), "ndlinear_factors": factors,
        ]
        for (k, v) in extra { cfg[k] = v }
        try SafetensorsWriter.write(entries, metadata: ["format": "pt"], to: dir.appendingPathComponent("adapter_model.safetensors"))
        try writeJSON(cfg, to: dir.appendingPathComponent("adapter_config.json"))
    }

    /// LoKr `alpha = r·α`, computed in Double from α's shortest decimal so that PEFT's
    /// `alpha / r` is the decimal α again.
    static func loKrAlpha(_ alpha: Float, r: Int) -> Any {
        let a = Double("\(alpha)") ?? Double(alpha)
        let v = a * Double(r)
        return v == v.rounded() && abs(v) < 1e15 ? Int(v) as Any : v as Any
    }

    /// The NdLinear-LoRA reference layout: adapter-only weights under the reference key names
    /// plus `ndlinear_lora_config.json` (with `lora_alpha`, as the fixtures carry it).
    static func saveNdLinearReference(_ set: AdapterSet, to dir: URL, baseModel: String?) throws {
        let nds = try ndAdapters(set, format: .ndlinearReference)
        if Set(nds.map(\.alpha)).count > 1 {
            throw AdapterError.invalidOption("ndlinear-reference holds one α; these adapters use several (export peft-lokr instead)")
        }
        var entries: [SafetensorsEntry] = []
        var wrapped: [String: Any] = [:]
        for n in nds {
            entries.append(SafetensorsEntry(name: n.modulePath + ndSuffix0, shape: n.w0.shape, floats: n.w0.value.array))
            entries.append(SafetensorsEntry(name: n.modulePath + ndSuffix1, shape: n.w1.shape, floats: n.w1.value.array))
            wrapped[n.modulePath] = ["in_features": n.inFeatures, "out_features": n.outFeatures,
                                     "in_factors": [n.inFactors.0, n.inFactors.1], "out_factors": [n.outFactors.0, n.outFactors.1]]
        }
        let cfg: [String: Any] = ["base_model_name": baseModel ?? NSNull(), "lora_alpha": jsonNumber(nds[0].alpha), "bias": false, "wrapped_modules": wrapped]
        try SafetensorsWriter.write(entries, metadata: ["format": "pt"], to: dir.appendingPathComponent("adapter_model.safetensors"))
        try writeJSON(cfg, to: dir.appendingPathComponent("ndlinear_lora_config.json"))
    }
}

// MARK: - JSON key order

/// The member keys of one top-level object member, in file order. PEFT resolves
/// `rank_pattern`/`alpha_pattern` by the first matching key in dict order (the JSON order),
/// which `JSONValue`'s dictionaries do not keep.
enum JSONKeyOrder {
    /// Keys of `json[member]` in order, or `fallback` sorted when the text cannot be scanned.
    static func memberKeys(_ member: String, in data: Data, fallback: [String]) -> [String] {
        var s = Scanner(bytes: [UInt8](data))
        if let keys = s.keys(ofMember: member), Set(keys) == Set(fallback) { return keys }
        return fallback.sorted()
    }

    struct Scanner {
        let bytes: [UInt8]
        var i = 0

        init(bytes: [UInt8]) { self.bytes = bytes }

        mutating func skipSpace() {
            while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
        }

        mutating func expect(_ c: UInt8) -> Bool {
            skipSpace()
            guard i < bytes.count, bytes[i] == c else { return false }
            i += 1
            return true
        }

        mutating func string() -> String? {
            skipSpace()
            guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { return nil }
            let start = i
            i += 1
            while i < bytes.count, bytes[i] != UInt8(ascii: "\"") { i += bytes[i] == UInt8(ascii: "\\") ? 2 : 1 }
            guard i < bytes.count else { return nil }
            i += 1
            let raw = Data([UInt8(ascii: "[")] + bytes[start..<i] + [UInt8(ascii: "]")])
            return (try? JSONDecoder().decode([String].self, from: raw))?.first
        }

        mutating func skipValue() -> Bool {
            skipSpace()
            guard i < bytes.count else { return false }
            switch bytes[i] {
            case UInt8(ascii: "\""): return string() != nil
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                var depth = 0
                while i < bytes.count {
                    let c = bytes[i]
                    if c == UInt8(ascii: "\"") { if string() == nil { return false }; continue }
                    if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") { depth += 1 }
                    if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") { depth -= 1 }
                    i += 1
                    if depth == 0 { return true }
                }
                return false
            default:
                while i < bytes.count, ![UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]")].contains(bytes[i]) { i += 1 }
                return true
            }
        }

        /// The top-level object's members with the byte range of each value, in file order.
        mutating func topLevelMembers() -> [(key: String, value: Range<Int>)]? {
            guard expect(UInt8(ascii: "{")) else { return nil }
            var out: [(String, Range<Int>)] = []
            if expect(UInt8(ascii: "}")) { return out }
            while true {
                guard let key = string(), expect(UInt8(ascii: ":")) else { return nil }
                skipSpace()
                let start = i
                guard skipValue() else { return nil }
                var end = i
                while end > start, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[end - 1]) { end -= 1 }
                out.append((key, start..<end))
                if expect(UInt8(ascii: ",")) { continue }
                return expect(UInt8(ascii: "}")) ? out : nil
            }
        }

        /// Walks the top-level object to `member` and lists its keys.
        mutating func keys(ofMember member: String) -> [String]? {
            guard expect(UInt8(ascii: "{")) else { return nil }
            while true {
                guard let key = string(), expect(UInt8(ascii: ":")) else { return nil }
                if key == member {
                    guard expect(UInt8(ascii: "{")) else { return nil }
                    var keys: [String] = []
                    if expect(UInt8(ascii: "}")) { return keys }
                    while true {
                        guard let k = string(), expect(UInt8(ascii: ":")), skipValue() else { return nil }
                        keys.append(k)
                        if expect(UInt8(ascii: ",")) { continue }
                        return expect(UInt8(ascii: "}")) ? keys : nil
                    }
                }
                guard skipValue() else { return nil }
                if expect(UInt8(ascii: ",")) { continue }
                return nil
            }
        }
    }
}
