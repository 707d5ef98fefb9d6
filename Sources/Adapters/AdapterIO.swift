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
///
/// This file holds the entry points and what the formats share; PEFTConfig.swift (config
/// rules, module selection), PEFTReaders.swift, PEFTWriters.swift, NdLinearReference.swift
/// (reader and writer) and ShapeInference.swift (`inferModelConfig`) extend `AdapterIO`.
public enum AdapterIO {
    static let peftPrefix = "base_model.model."
    static let ndSuffix0 = ".adapter.adapter.align_layers.0.weight"
    static let ndSuffix1 = ".adapter.adapter.align_layers.1.weight"
    /// DoRA's magnitude tensor suffix in PEFT files (no `.weight`).
    static let doraMagnitude = "lora_magnitude_vector"

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
    /// are refused by name. Every value is checked to be finite (adapters are small): a NaN or
    /// Inf is an error naming the file and tensor.
    public static func load(_ url: URL, config: ModelConfig, ndlinearAlpha: Float? = nil, loraAlpha: Float? = nil) throws -> AdapterSet {
        let set = try read(url, config: config, ndlinearAlpha: ndlinearAlpha, loraAlpha: loraAlpha)
        try set.checkFinite(source: url.path)
        return set
    }

    static func read(_ url: URL, config: ModelConfig, ndlinearAlpha: Float?, loraAlpha: Float?) throws -> AdapterSet {
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
            return try lora(from: file, rule: PEFTModuleRule(r: nil, alpha: Double(alpha), file: url.path), rsLoRA: false, dropout: 0,
                            dora: file.names.contains { $0.hasSuffix("." + doraMagnitude) }, config: config)
        }
        let peftConfig = url.appendingPathComponent("adapter_config.json")
        let ndConfig = url.appendingPathComponent("ndlinear_lora_config.json")
        if fm.fileExists(atPath: peftConfig.path) { return try loadPEFT(url, configFile: peftConfig, config: config) }
        if fm.fileExists(atPath: ndConfig.path) {
            return try loadNdLinearReference(url, configFile: ndConfig, config: config, alpha: ndlinearAlpha)
        }
        throw AdapterError.missingFile(url.appendingPathComponent("adapter_config.json").path,
                                       what: "an adapter directory holds adapter_config.json (PEFT) or ndlinear_lora_config.json (NdLinear-LoRA reference)")
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

    /// The format `finetune train` writes for a set: LoRA and DoRA → PEFT LoRA (DoRA with
    /// `use_dora: true`), NdLinear → PEFT LoKr.
    public static func defaultFormat(for set: AdapterSet) -> AdapterFormat {
        set.kind == .ndlinear ? .peftLoKr : .peftLoRA
    }

    // MARK: - Shared by the readers and writers

    /// A JSON config file that must hold an object.
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

    /// A tensor or module name without PEFT's `base_model.model.` prefix.
    static func stripPEFT(_ key: String) -> String {
        var k = key
        if k.hasPrefix(peftPrefix) { k.removeFirst(peftPrefix.count) }
        return k
    }

    /// Adapters in model order: by layer, then projection (q, k, v, o, gate, up, down).
    static func sortedByModel(_ adapters: [any LinearAdapter], config: ModelConfig) -> [any LinearAdapter] {
        func order(_ a: any LinearAdapter) -> Int { Projection.parse(a.weightName).map { $0.layer * 16 + $0.projection.index } ?? 0 }
        return adapters.sorted { order($0) < order($1) }
    }

    /// A spec that describes a loaded set exactly: the projections and layers it covers, the
    /// most common rank/alpha, and per-module overrides keyed by full module path.
    static func describedSpec(kind: AdapterKind, _ adapters: [any LinearAdapter], config: ModelConfig) -> AdapterSpec {
        let layers = Set(adapters.compactMap { layer(of: $0.weightName) })
        let projections = Projection.allCases.filter { p in adapters.contains { projection(of: $0.weightName) == p } }
        let targets = TargetSelection(modules: projections, layers: layers == Set(0..<config.numLayers) ? nil : layers)
        switch kind {
        case .lora, .dora:
            let loras = adapters.compactMap { ($0 as? LoRAAdapter) ?? ($0 as? DoRAAdapter)?.lora }
            let r = mostCommon(loras.map(\.rank)) ?? 8, alpha = mostCommon(loras.map(\.alpha)) ?? AdapterKind.lora.defaultAlpha(rank: r)
            var rp: [String: Int] = [:], ap: [String: Float] = [:]
            for l in loras {
                if l.rank != r { rp[l.modulePath] = l.rank }
                if l.alpha != alpha { ap[l.modulePath] = l.alpha }
            }
            return AdapterSpec(kind: kind, targets: targets, rank: r, alpha: alpha, dropout: loras.first?.dropout ?? 0,
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

    /// An existing local path made absolute; a hub id unchanged.
    static func resolvedBaseModel(_ s: String) -> String {
        guard !s.isEmpty, FileManager.default.fileExists(atPath: s) else { return s }
        return URL(fileURLWithPath: s).standardizedFileURL.path
    }

    /// Writes a config as PEFT does (`json.dumps(indent=2, sort_keys=True)`).
    static func writeJSON(_ object: [String: Any], to url: URL) throws {
        try AtomicFile.write(jsonValue(object).serialized() + "\n", to: url)
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
}
