import Foundation
import LLMCore

/// Adapter file formats (FORMATS.md): PEFT LoRA, PEFT LoKr (NdLinear-LoRA's interchange form)
/// and the NdLinear-LoRA reference layout.
public enum AdapterFormat: String, Sendable, CaseIterable {
    case peftLoRA = "peft-lora"
    case peftLoKr = "peft-lokr"
    case ndlinearReference = "ndlinear-reference"
}

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
            if file.names.contains(where: { $0.hasSuffix(".lokr_w1") }) {
                throw AdapterError.invalidFile(url.path, reason: "a bare LoKr file needs its adapter_config.json (r and alpha); pass the directory")
            }
            return try lora(from: file, alpha: loraAlpha, rank: nil, rsLoRA: false, patterns: ([:], [:]), filter: nil, config: config)
        }
        let peftConfig = url.appendingPathComponent("adapter_config.json")
        let ndConfig = url.appendingPathComponent("ndlinear_lora_config.json")
        if fm.fileExists(atPath: peftConfig.path) { return try loadPEFT(url, configFile: peftConfig, config: config) }
        if fm.fileExists(atPath: ndConfig.path) {
            let json = try readJSON(ndConfig)
            let alpha = json["lora_alpha"]?.double.map(Float.init) ?? ndlinearAlpha ?? 1
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
        throw AdapterError.missingFile(dir.appendingPathComponent(preferred[0]).path, what: "adapter weights")
    }

    /// Maps a module path (`model.layers.0.self_attn.q_proj`) to its base weight name, or throws.
    static func weightName(module: String, config: ModelConfig, file: String) throws -> String {
        let name = module + ".weight"
        let parts = module.split(separator: ".")
        guard parts.count == 5, parts[0] == "model", parts[1] == "layers", let l = Int(parts[2]), l < config.numLayers,
              ModelConfig.projections.contains(String(parts[4])),
              ModelConfig.weightName(layer: l, projection: String(parts[4])) == name
        else { throw AdapterError.unknownTarget(file: file, module: module) }
        return name
    }

    static func projection(of weightName: String) -> String { String(weightName.split(separator: ".")[4]) }

    // MARK: PEFT

    static func loadPEFT(_ dir: URL, configFile: URL, config: ModelConfig) throws -> AdapterSet {
        let json = try readJSON(configFile)
        let path = configFile.path
        // Refuse what we do not implement, by name, rather than silently ignoring it.
        if json["use_dora"]?.bool == true { throw AdapterError.unsupported(path, feature: "use_dora (DoRA)") }
        if let b = json["bias"]?.string, b != "none" { throw AdapterError.unsupported(path, feature: "bias '\(b)' (bias training)") }
        if let m = json["modules_to_save"]?.array, !m.isEmpty { throw AdapterError.unsupported(path, feature: "modules_to_save \(m.compactMap(\.string))") }
        if json["fan_in_fan_out"]?.bool == true { throw AdapterError.unsupported(path, feature: "fan_in_fan_out") }
        if let lr = json["layer_replication"], !lr.isNull { throw AdapterError.unsupported(path, feature: "layer_replication") }
        if let tp = json["target_parameters"]?.array, !tp.isEmpty { throw AdapterError.unsupported(path, feature: "target_parameters") }
        if json["lora_bias"]?.bool == true { throw AdapterError.unsupported(path, feature: "lora_bias") }
        if json["use_qalora"]?.bool == true { throw AdapterError.unsupported(path, feature: "use_qalora") }
        let files = try weightFiles(in: dir, preferred: ["adapter_model.safetensors"])
        let filter = try ModuleFilter(json: json, file: path)
        let rankPattern = (json["rank_pattern"]?.object ?? [:]).compactMapValues(\.int)
        let alphaPattern = (json["alpha_pattern"]?.object ?? [:]).compactMapValues { $0.double.map(Float.init) }
        let peftType = json["peft_type"]?.string ?? ""
        let set: AdapterSet
        switch peftType {
        case "LORA":
            guard let alpha = json["lora_alpha"]?.double else { throw AdapterError.invalidFile(path, reason: "missing 'lora_alpha'") }
            set = try lora(from: files[0], alpha: Float(alpha), rank: json["r"]?.int, rsLoRA: json["use_rslora"]?.bool ?? false,
                           patterns: (rankPattern, alphaPattern), filter: filter, config: config)
        case "LOKR":
            guard let r = json["r"]?.int, r > 0, let alpha = json["alpha"]?.double else {
                throw AdapterError.invalidFile(path, reason: "LoKr config needs positive 'r' and 'alpha'")
            }
            set = try lokr(from: files[0], r: r, alpha: Float(alpha), patterns: (rankPattern, alphaPattern), filter: filter, config: config)
        default:
            throw AdapterError.unsupported(path, feature: "peft_type '\(peftType)' (supported: LORA, LOKR)")
        }
        set.baseModelName = json["base_model_name_or_path"]?.string
        return set
    }

    /// PEFT's `target_modules` (a list of name suffixes or one regex string) and `layers_to_transform`.
    struct ModuleFilter {
        var names: [String]?
        var regex: NSRegularExpression?
        var layers: Set<Int>?
        let file: String

        init(json: JSONValue, file: String) throws {
            self.file = file
            if let s = json["target_modules"]?.string {
                do { regex = try NSRegularExpression(pattern: "^(?:" + s + ")$") } catch {
                    throw AdapterError.invalidFile(file, reason: "target_modules regex '\(s)' does not compile")
                }
            } else if let a = json["target_modules"]?.array {
                names = a.compactMap(\.string)
            }
            if let l = json["layers_to_transform"] {
                if let i = l.int { layers = [i] } else if let a = l.array { layers = Set(a.compactMap(\.int)) }
            }
        }

        func check(module: String) throws {
            var ok = true
            if let names, !names.contains("all-linear") {
                ok = names.contains { module == $0 || module.hasSuffix("." + $0) }
            }
            if let regex {
                ok = regex.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil
            }
            if let layers, let l = Int(module.split(separator: ".")[2]), !layers.contains(l) { ok = false }
            if !ok {
                throw AdapterError.invalidFile(file, reason: "adapter weights for '\(module)', which target_modules/layers_to_transform do not select")
            }
        }
    }

    static func stripPEFT(_ key: String) -> String {
        var k = key
        if k.hasPrefix(peftPrefix) { k.removeFirst(peftPrefix.count) }
        return k
    }

    static func lora(from file: SafetensorsFile, alpha: Float?, rank: Int?, rsLoRA: Bool,
                     patterns: ([String: Int], [String: Float]), filter: ModuleFilter?, config: ModelConfig) throws -> AdapterSet {
        var modules: [String] = []
        for name in file.names where name.hasSuffix(".lora_A.weight") {
            modules.append(String(stripPEFT(name).dropLast(".lora_A.weight".count)))
        }
        if modules.isEmpty { throw AdapterError.invalidFile(file.path, reason: "no '*.lora_A.weight' tensors") }
        let spec = AdapterSpec(kind: .lora, rank: rank ?? 8, alpha: alpha, useRSLoRA: rsLoRA, rankPattern: patterns.0, alphaPattern: patterns.1)
        var adapters: [any LinearAdapter] = []
        for module in modules {
            try filter?.check(module: module)
            let wname = try weightName(module: module, config: config, file: file.path)
            let (outF, inF) = config.projectionShape(projection(of: wname))
            let prefix = file.names.contains(peftPrefix + module + ".lora_A.weight") ? peftPrefix + module : module
            let a = try file.tensor(prefix + ".lora_A.weight"), b = try file.tensor(prefix + ".lora_B.weight")
            let r = a.shape.first ?? 0
            guard a.shape == [r, inF] else { throw AdapterError.shapeMismatch(file: file.path, tensor: a.name, expected: [r, inF], found: a.shape) }
            guard b.shape == [outF, r] else { throw AdapterError.shapeMismatch(file: file.path, tensor: b.name, expected: [outF, r], found: b.shape) }
            if rank != nil, r != spec.rank(for: module) {
                throw AdapterError.invalidFile(file.path, reason: "'\(a.name)' has rank \(r) but the config says \(spec.rank(for: module))")
            }
            guard alpha != nil else { throw AdapterError.invalidOption("\(file.path): LoRA alpha unknown; pass --alpha") }
            let al = spec.alpha(for: module)
            adapters.append(LoRAAdapter(weightName: wname, a: a.floats(), b: b.floats(), inFeatures: inF, outFeatures: outF,
                                        rank: r, alpha: al, useRSLoRA: rsLoRA))
        }
        let set = AdapterSet(sortedByModel(adapters, config: config))
        set.spec = spec
        return set
    }

    static func lokr(from file: SafetensorsFile, r: Int, alpha: Float, patterns: ([String: Int], [String: Float]),
                     filter: ModuleFilter, config: ModelConfig) throws -> AdapterSet {
        var modules = Set<String>()
        for name in file.names {
            for suffix in [".lokr_w1", ".lokr_w1_a"] where name.hasSuffix(suffix) {
                modules.insert(String(stripPEFT(name).dropLast(suffix.count)))
            }
        }
        if modules.isEmpty { throw AdapterError.invalidFile(file.path, reason: "no '*.lokr_w1' tensors") }
        let spec = AdapterSpec(kind: .ndlinear, rank: r, alpha: alpha, rankPattern: patterns.0, alphaPattern: patterns.1)
        var adapters: [any LinearAdapter] = []
        for module in modules {
            try filter.check(module: module)
            let wname = try weightName(module: module, config: config, file: file.path)
            let (outF, inF) = config.projectionShape(projection(of: wname))
            let prefix = file.names.contains(peftPrefix + module + ".lokr_w1") || file.names.contains(peftPrefix + module + ".lokr_w1_a")
                ? peftPrefix + module : module
            let w1 = try factor(file, prefix, "w1"), w2 = try factor(file, prefix, "w2")
            let (c, a) = (w1.shape[0], w1.shape[1]), (d, b) = (w2.shape[0], w2.shape[1])
            guard c * d == outF, a * b == inF else {
                throw AdapterError.shapeMismatch(file: file.path, tensor: prefix + ".lokr_w1/w2",
                                                 expected: [outF, inF], found: [c * d, a * b])
            }
            // PEFT LoKr: ΔW = (alpha / r) · kron(w1, w2).
            let scale = spec.alpha(for: module) / Float(spec.rank(for: module))
            adapters.append(NdLinearAdapter(weightName: wname, w0: w1.values, w1: w2.values, inFactors: (a, b), outFactors: (c, d), alpha: scale))
        }
        let set = AdapterSet(sortedByModel(adapters, config: config))
        set.spec = AdapterSpec(kind: .ndlinear, alpha: alpha / Float(r))
        return set
    }

    /// A LoKr factor, whole (`lokr_w1`) or as a low-rank product (`lokr_w1_a · lokr_w1_b`).
    static func factor(_ file: SafetensorsFile, _ prefix: String, _ w: String) throws -> (shape: [Int], values: [Float]) {
        if let whole = file[prefix + ".lokr_" + w] {
            guard whole.shape.count == 2 else { throw AdapterError.invalidFile(file.path, reason: "'\(whole.name)' must be 2-D") }
            return (whole.shape, whole.floats())
        }
        guard let fa = file[prefix + ".lokr_\(w)_a"], let fb = file[prefix + ".lokr_\(w)_b"] else {
            throw AdapterError.missingTensor(file: file.path, tensor: prefix + ".lokr_\(w) (or _a/_b)")
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

    // MARK: NdLinear reference

    static func ndlinear(from files: [SafetensorsFile], wrapped: [String: JSONValue]?, alpha: Float,
                         config: ModelConfig, source: String) throws -> AdapterSet {
        var adapters: [any LinearAdapter] = []
        for file in files {
            for name in file.names where name.hasSuffix(ndSuffix0) {
                let module = stripPEFT(String(name.dropLast(ndSuffix0.count)))
                let wname = try weightName(module: module, config: config, file: file.path)
                let (outF, inF) = config.projectionShape(projection(of: wname))
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
        set.spec = AdapterSpec(kind: .ndlinear, alpha: alpha)
        return set
    }

    static func sortedByModel(_ adapters: [any LinearAdapter], config: ModelConfig) -> [any LinearAdapter] {
        var order: [String: Int] = [:]
        for l in 0..<config.numLayers { for (i, p) in ModelConfig.projections.enumerated() {
            order[ModelConfig.weightName(layer: l, projection: p)] = l * 16 + i
        } }
        return adapters.sorted { order[$0.weightName, default: 0] < order[$1.weightName, default: 0] }
    }

    // MARK: - Writing

    /// Writes `set` in `format` into `dir` (created; files written atomically).
    /// `extra` keys are added to the config (PEFT ignores unknown keys).
    public static func save(_ set: AdapterSet, format: AdapterFormat, to dir: URL, baseModel: String?, extra: [String: Any] = [:]) throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        switch format {
        case .peftLoRA: try savePEFTLoRA(set, to: dir, baseModel: baseModel, extra: extra)
        case .peftLoKr: try savePEFTLoKr(set, to: dir, baseModel: baseModel, extra: extra)
        case .ndlinearReference: try saveNdLinearReference(set, to: dir, baseModel: baseModel)
        }
    }

    /// The format `finetune train` writes for a set: LoRA → PEFT LoRA, NdLinear → PEFT LoKr.
    public static func defaultFormat(for set: AdapterSet) -> AdapterFormat {
        set.kind == .lora ? .peftLoRA : .peftLoKr
    }

    static func writeJSON(_ object: Any, to url: URL) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(data, to: url)
    }

    static func targetModuleNames(_ set: AdapterSet) -> [String] {
        var seen: [String] = []
        for a in set.adapters {
            let p = projection(of: a.weightName)
            if !seen.contains(p) { seen.append(p) }
        }
        return seen
    }

    static func layersToTransform(_ set: AdapterSet, config: ModelConfig?) -> Any {
        let layers = Set(set.adapters.compactMap { Int($0.weightName.split(separator: ".")[2]) })
        if let c = config, layers.count == c.numLayers { return NSNull() }
        return layers.sorted()
    }

    static func savePEFTLoRA(_ set: AdapterSet, to dir: URL, baseModel: String?, extra: [String: Any]) throws {
        let loras = try set.adapters.map { a -> LoRAAdapter in
            guard let l = a as? LoRAAdapter else { throw AdapterError.invalidOption("peft-lora export needs LoRA adapters; this set holds \(a.kind.rawValue) (use peft-lokr or ndlinear-reference)") }
            return l
        }
        guard let first = loras.first else { throw AdapterError.invalidOption("no adapters to save") }
        var entries: [SafetensorsEntry] = []
        var rankPattern: [String: Int] = [:], alphaPattern: [String: Float] = [:]
        for l in loras {
            let key = peftPrefix + l.modulePath
            entries.append(SafetensorsEntry(name: key + ".lora_A.weight", shape: l.a.shape, floats: l.a.value.array))
            entries.append(SafetensorsEntry(name: key + ".lora_B.weight", shape: l.b.shape, floats: l.b.value.array))
            if l.rank != first.rank { rankPattern[l.modulePath] = l.rank }
            if l.alpha != first.alpha { alphaPattern[l.modulePath] = l.alpha }
            if l.useRSLoRA != first.useRSLoRA { throw AdapterError.invalidOption("mixed rsLoRA settings cannot be expressed in one PEFT config") }
        }
        var cfg: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": first.rank, "lora_alpha": first.alpha,
            "lora_dropout": first.dropout, "target_modules": targetModuleNames(set), "bias": "none",
            "fan_in_fan_out": false, "use_rslora": first.useRSLoRA, "rank_pattern": rankPattern, "alpha_pattern": alphaPattern,
            "base_model_name_or_path": baseModel ?? NSNull(), "inference_mode": true, "init_lora_weights": true,
            "use_dora": false, "modules_to_save": NSNull(), "layers_to_transform": NSNull(), "layers_pattern": NSNull(),
            "revision": NSNull(),
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
    static func savePEFTLoKr(_ set: AdapterSet, to dir: URL, baseModel: String?, extra: [String: Any]) throws {
        let nds = try ndAdapters(set, format: .peftLoKr)
        // PEFT stores w2 whole when r ≥ max(out_k, in_n) / 2.
        let r = max(1, nds.map { (max($0.outFactors.1, $0.inFactors.1) + 1) / 2 }.max()!)
        var entries: [SafetensorsEntry] = []
        var alphaPattern: [String: Float] = [:]
        let alpha0 = nds[0].alpha
        for n in nds {
            let key = peftPrefix + n.modulePath
            entries.append(SafetensorsEntry(name: key + ".lokr_w1", shape: n.w0.shape, floats: n.w0.value.array))
            entries.append(SafetensorsEntry(name: key + ".lokr_w2", shape: n.w1.shape, floats: n.w1.value.array))
            if n.alpha != alpha0 { alphaPattern[n.modulePath] = Float(r) * n.alpha }
        }
        var factors: [String: Any] = [:]
        for n in nds {
            factors[n.modulePath] = ["in_factors": [n.inFactors.0, n.inFactors.1], "out_factors": [n.outFactors.0, n.outFactors.1]]
        }
        var cfg: [String: Any] = [
            "peft_type": "LOKR", "task_type": "CAUSAL_LM", "r": r, "alpha": Float(r) * alpha0,
            "target_modules": targetModuleNames(set), "decompose_both": false, "decompose_factor": -1,
            "rank_dropout": 0.0, "module_dropout": 0.0, "use_effective_conv2d": false, "init_weights": true,
            "rank_pattern": [String: Int](), "alpha_pattern": alphaPattern, "base_model_name_or_path": baseModel ?? NSNull(),
            "inference_mode": true, "modules_to_save": NSNull(), "layers_to_transform": NSNull(), "layers_pattern": NSNull(),
            "revision": NSNull(),
            // Our own keys (PEFT ignores unknown keys): the method and its α as the reference names it.
            "ndlinear_alpha": alpha0, "ndlinear_factors": factors,
        ]
        for (k, v) in extra { cfg[k] = v }
        try SafetensorsWriter.write(entries, metadata: ["format": "pt"], to: dir.appendingPathComponent("adapter_model.safetensors"))
        try writeJSON(cfg, to: dir.appendingPathComponent("adapter_config.json"))
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
        let cfg: [String: Any] = ["base_model_name": baseModel ?? NSNull(), "lora_alpha": nds[0].alpha, "bias": false, "wrapped_modules": wrapped]
        try SafetensorsWriter.write(entries, metadata: ["format": "pt"], to: dir.appendingPathComponent("adapter_model.safetensors"))
        try writeJSON(cfg, to: dir.appendingPathComponent("ndlinear_lora_config.json"))
    }
}
