import Foundation
import LLMCore

/// The NdLinear-LoRA reference layout (ensemble-core/NdLinear-LoRA, FORMATS.md): weights under
/// `{module}.adapter.adapter.align_layers.{0,1}.weight` (W0 `[c, a]`, W1 `[d, b]`) and
/// `ndlinear_lora_config.json` with `wrapped_modules`; read and written here.
extension AdapterIO {
    // MARK: - Reading

    /// A reference directory (adapter-only or a whole checkpoint). α comes from the config's
    /// `lora_alpha`, else `alpha`, else 1.0 (the reference's default).
    static func loadNdLinearReference(_ dir: URL, configFile: URL, config: ModelConfig, alpha: Float?) throws -> AdapterSet {
        let json = try readJSON(configFile)
        let alpha = json["lora_alpha"]?.double.map(Float.init) ?? alpha ?? 1
        if let bias = json["bias"]?.bool, bias {
            throw AdapterError.unsupported(configFile.path, feature: "bias true (NdLinear-LoRA with a trainable bias)")
        }
        let files = try weightFiles(in: dir, preferred: ["adapter_model.safetensors", "model.safetensors"])
        let set = try ndlinear(from: files, wrapped: json["wrapped_modules"]?.object, alpha: alpha, config: config, source: dir.path)
        set.baseModelName = json["base_model_name"]?.string
        return set
    }

    /// The adapters of reference-named tensors in `files` (a bare file, or a directory's
    /// weights), checked against `wrapped` when the config lists the modules.
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

    // MARK: - Writing

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
