import Foundation
import LLMCore

/// What a PEFT `adapter_config.json` says and how PEFT acts on it: the settings we refuse by
/// name, and which modules the config wraps with which r and alpha.
extension AdapterIO {
    // MARK: - Refused settings

    /// Config keys that change what PEFT computes and that we do not implement. Each entry:
    /// key, a test of its value that means "in use", and the name we refuse it by.
    static let unsupportedLoRAKeys: [(key: String, inUse: (JSONValue) -> Bool, name: String)] = [
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

    /// The config's `peft_type` (LORA or LOKR), after refusing by name every setting that would
    /// make PEFT compute something we do not.
    static func checkSupported(_ json: JSONValue, path: String) throws -> String {
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
        return peftType
    }

    // MARK: - Module selection

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
            if let rp = json["rank_pattern"]?.object, !rp.isEmpty {
                for key in Self.keyOrder("rank_pattern", in: rawConfig, fallback: rp) {
                    guard let v = rp[key]?.int, v > 0 else { throw AdapterError.invalidFile(file, reason: "rank_pattern['\(key)'] must be a positive integer") }
                    rankPattern.append((key, try Self.patternRegex(key, name: "rank_pattern", file: file), v))
                }
            }
            if let ap = json["alpha_pattern"]?.object, !ap.isEmpty {
                for key in Self.keyOrder("alpha_pattern", in: rawConfig, fallback: ap) {
                    guard let v = ap[key]?.double else { throw AdapterError.invalidFile(file, reason: "alpha_pattern['\(key)'] must be a number") }
                    alphaPattern.append((key, try Self.patternRegex(key, name: "alpha_pattern", file: file), v))
                }
            }
        }

        /// The keys of the top-level `member` object in file order, as PEFT's dict has them
        /// (sorted if the text cannot be read again, which the parsed `fallback` came from).
        static func keyOrder(_ member: String, in text: Data, fallback: [String: JSONValue]) -> [String] {
            guard let keys = try? JSONValue.keys(in: text, at: [member]), Set(keys) == Set(fallback.keys) else { return fallback.keys.sorted() }
            return keys
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
}
