import Foundation
import LLMCore

/// Writing PEFT adapter directories (FORMATS.md): LoRA as `LORA`, DoRA as `LORA` with
/// `use_dora: true` and `lora_magnitude_vector` tensors, NdLinear-LoRA as `LOKR`, each
/// `adapter_config.json` + `adapter_model.safetensors` that `PeftModel.from_pretrained` loads.
extension AdapterIO {
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
            guard let l = (a as? LoRAAdapter) ?? (a as? DoRAAdapter)?.lora else {
                throw AdapterError.invalidOption("peft-lora export needs LoRA or DoRA adapters; this set holds \(a.kind.rawValue) (use peft-lokr or ndlinear-reference)")
            }
            return l
        }
        let doras = set.adapters.compactMap { $0 as? DoRAAdapter }
        if !doras.isEmpty, doras.count != loras.count {
            throw AdapterError.invalidOption("peft-lora export: a set mixing LoRA and DoRA adapters cannot be expressed in one PEFT config")
        }
        if let d = doras.first(where: \.magnitudeNeedsInit) {
            throw AdapterError.invalidOption("peft-lora export: \(d.modulePath) is a new DoRA adapter whose magnitudes were never set from the base weights")
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
            if let d = set.adapter(for: l.weightName) as? DoRAAdapter {
                entries.append(SafetensorsEntry(name: key + "." + doraMagnitude, shape: d.magnitude.shape, floats: d.magnitude.value.array))
            }
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
            "use_dora": !doras.isEmpty, "modules_to_save": NSNull(), "layers_to_transform": layers, "layers_pattern": NSNull(),
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
}
