import Foundation
import LLMCore

/// Hands adapters back to llama.cpp: a llama.cpp LoRA adapter file (`gguf-lora`), or a GGUF
/// copy of the base with adapters merged in (NdLinear-LoRA has no llama.cpp adapter kind).
public enum GGUFExport {
    /// llama.cpp's `general.architecture` for a model family (Mistral converts as `llama`).
    public static func architecture(_ c: ModelConfig) -> String {
        switch c.family {
        case .llama, .mistral: return "llama"
        case .qwen2: return "qwen2"
        case .qwen3: return "qwen3"
        }
    }

    /// Whether llama.cpp stores this weight with RoPE rows interleaved (q/k of `llama` files).
    static func isPermuted(_ hfName: String, _ c: ModelConfig) -> Bool {
        architecture(c) == "llama" && (hfName.hasSuffix("self_attn.q_proj.weight") || hfName.hasSuffix("self_attn.k_proj.weight"))
    }

    /// `[rows, cols]` f32 values in HF row order → llama.cpp's row order for `hfName`.
    static func toGGUFOrder(_ values: [Float], rows: Int, hfName: String, config: ModelConfig) -> [Float] {
        guard isPermuted(hfName, config) else { return values }
        var out = [Float](repeating: 0, count: values.count)
        let rowBytes = values.count / rows * MemoryLayout<Float>.size
        values.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                RoPEPermutation.permuteRows(src.baseAddress!, rows: rows, rowBytes: rowBytes, headDim: config.headDim, toHF: false, into: dst.baseAddress!)
            }
        }
        return out
    }

    /// The `{arch}.*` model metadata llama.cpp needs for `config` (no tokenizer keys).
    public static func modelMetadata(_ c: ModelConfig, name: String) -> [(String, GGUFValue)] {
        let a = architecture(c)
        var m: [(String, GGUFValue)] = [
            ("general.architecture", .string(a)), ("general.type", .string("model")), ("general.name", .string(name)),
            ("\(a).block_count", .uint32(UInt32(c.numLayers))), ("\(a).context_length", .uint32(UInt32(c.maxPositionEmbeddings))),
            ("\(a).embedding_length", .uint32(UInt32(c.hiddenSize))), ("\(a).feed_forward_length", .uint32(UInt32(c.intermediateSize))),
            ("\(a).attention.head_count", .uint32(UInt32(c.numHeads))), ("\(a).attention.head_count_kv", .uint32(UInt32(c.numKVHeads))),
            ("\(a).rope.freq_base", .float32(Float(c.ropeTheta))), ("\(a).attention.layer_norm_rms_epsilon", .float32(c.rmsNormEps)),
            ("\(a).vocab_size", .uint32(UInt32(c.vocabSize))), ("\(a).rope.dimension_count", .uint32(UInt32(c.headDim))),
        ]
        if c.headDim * c.numHeads != c.hiddenSize || c.family == .qwen3 {
            m += [("\(a).attention.key_length", .uint32(UInt32(c.headDim))), ("\(a).attention.value_length", .uint32(UInt32(c.headDim)))]
        }
        return m
    }

    /// f32 values stored as `dtype` (F32, F16, BF16, or a format `canQuantize` accepts), with the
    /// largest error that storing them cost.
    static func encode(_ values: [Float], as dtype: DType) -> (data: Data, maxError: Float) {
        guard dtype.isQuantized else { return AdapterMerge.encode(values, as: dtype) }
        var data = Data(count: dtype.storageBytes(elements: values.count))
        var back = [Float](repeating: 0, count: values.count)
        data.withUnsafeMutableBytes { d in
            values.withUnsafeBufferPointer { quantize($0.baseAddress!, dtype: dtype, count: values.count, into: d.baseAddress!) }
            back.withUnsafeMutableBufferPointer { dequantize(d.baseAddress!, dtype: dtype, count: values.count, into: $0.baseAddress!) }
        }
        var err: Float = 0
        for i in values.indices { err = max(err, abs(back[i] - values[i])) }
        return (data, err)
    }

    // MARK: Merged model

    /// Writes `weights` with `adapters` merged in as one GGUF file. With `base` (the GGUF the
    /// weights came from), every metadata key (tokenizer and chat template included) and every
    /// tensor not adapted is copied byte for byte, in the base's order; adapted tensors are
    /// merged in f32 and stored as `dtype`, by default the base tensor's own type when it is
    /// F32/F16/BF16 and F16 when it is quantized: re-quantizing to 4 bits can cost more than the
    /// adapter changes (SmolLM2 Q4_1: rounding error 0.075 against max |ΔW| 0.047), so a
    /// quantized merge (Q8_0/Q4_0/Q4_1) is an explicit `dtype`. Without `base`,
    /// metadata comes from the config and every matrix is stored as `dtype` (default F32),
    /// vectors as F32.
    public static func writeMergedModel(_ weights: ModelWeights, adapters: AdapterSet?, base: GGUFFile?, dtype: DType? = nil,
                                        name: String = "finetune merged model", to url: URL) throws -> AdapterMerge.Report {
        let c = weights.config
        if let d = dtype, !(d == .f32 || d == .f16 || d == .bf16 || canQuantize(d)) {
            throw AdapterError.invalidOption("--dtype \(d.rawValue): GGUF output can be F32, F16, BF16, Q8_0, Q4_0 or Q4_1")
        }
        for a in adapters?.adapters ?? [] where weights.views[a.weightName] == nil {
            throw ModelError.missingWeight(name: a.weightName, files: weights.source)
        }
        var w = GGUFWriter()
        // (gguf name, hf name or nil, base view or nil)
        var plan: [(gguf: String, hf: String?, source: TensorView?)] = []
        if let base {
            w.metadata = base.keys.compactMap { k in k == "general.alignment" ? nil : (k, base.metadata[k]!) }
            w.alignment = base.alignment
            plan = base.tensors.map { ($0.name, GGUFNames.hfName($0.name), $0) }
        } else {
            guard c.ropeScaling == nil else {
                throw ModelError.unsupported(file: weights.source, reason: "llama3 rope scaling: writing it as GGUF (rope_freqs.weight) is not supported")
            }
            w.metadata = modelMetadata(c, name: name)
            plan = c.expectedTensors().map { t in (GGUFNames.ggufName(t.name)!, t.name, nil) }
        }
        func outType(_ hf: String?, _ src: TensorView?, rank: Int) -> DType {
            if rank == 1 { return src?.dtype ?? .f32 }
            if let d = dtype { return d }
            guard let s = src else { return .f32 }
            return s.dtype == .f32 || s.dtype == .f16 || s.dtype == .bf16 ? s.dtype : .f16
        }
        var types: [String: DType] = [:]
        for p in plan {
            let shape = p.source?.shape ?? weights.views[p.hf!]!.shape
            let adapted = p.hf.flatMap { adapters?.adapter(for: $0) } != nil
            let t: DType = adapted || p.source == nil ? outType(p.hf, p.source, rank: shape.count) : p.source!.dtype
            types[p.gguf] = t
            w.tensors.append(GGUFWriter.Tensor(name: p.gguf, dtype: t, shape: shape))
        }
        var reports: [String: AdapterMerge.TensorReport] = [:]
        let sources = Dictionary(uniqueKeysWithValues: plan.map { ($0.gguf, $0) })
        try w.write(to: url) { t in
            let p = sources[t.name]!
            if let hf = p.hf, let a = adapters?.adapter(for: hf) {
                let (merged, change) = try AdapterMerge.mergedValues(weights.view(hf), a, source: weights.source)
                let (data, err) = encode(toGGUFOrder(merged, rows: t.shape[0], hfName: hf, config: c), as: t.dtype)
                reports[hf] = AdapterMerge.TensorReport(name: hf, maxChange: change, maxRoundingError: err)
                return data
            }
            if let s = p.source, s.dtype == t.dtype { return Data(bytes: s.data, count: s.byteCount) }
            let v = weights.view(p.hf!)
            let values = v.floats()
            return encode(t.shape.count == 2 ? toGGUFOrder(values, rows: t.shape[0], hfName: p.hf!, config: c) : values, as: t.dtype).data
        }
        let merged = (adapters?.adapters ?? []).compactMap { reports[$0.weightName] }
        let size = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
        let mergedTypes = Set(merged.compactMap { GGUFNames.ggufName($0.name).flatMap { types[$0] } }).map(\.rawValue).sorted()
        return AdapterMerge.Report(output: url.path, dtype: mergedTypes.joined(separator: "+"), files: [url.lastPathComponent], sharded: false,
                                   totalSize: size, merged: merged)
    }

    // MARK: llama.cpp LoRA adapter

    /// A llama.cpp LoRA adapter (`llama-cli --lora FILE`): `general.type = adapter`,
    /// `adapter.type = lora`, `adapter.lora.alpha`, and per adapted weight
    /// `blk.N.<name>.weight.lora_a` (ne = [in, r]) and `.lora_b` (ne = [r, out]) in F32, with the
    /// rows of q/k `lora_b` put in llama.cpp's RoPE order for `llama` files. llama.cpp scales by
    /// alpha/r with one alpha for the whole file; when the modules don't share one α with the
    /// α/r convention (rsLoRA, per-module alpha), each module's own scale is folded into its
    /// `lora_b` and alpha is written as 0, which llama.cpp reads as scale 1.
    public static func writeLoRA(_ set: AdapterSet, config c: ModelConfig, baseName: String?, to url: URL) throws -> (modules: Int, alpha: Float) {
        let loras = try set.adapters.map { a -> LoRAAdapter in
            guard let l = a as? LoRAAdapter else {
                let why = a.kind == .dora ? "DoRA (llama.cpp has no DoRA adapter kind" : "\(a.kind.rawValue) (llama.cpp has no Kronecker adapter"
                throw AdapterError.invalidOption("--format gguf-lora takes a LoRA adapter; this one is \(why): use `finetune merge --format gguf` to merge it into a GGUF copy of the base)")
            }
            return l
        }
        guard let first = loras.first else { throw AdapterError.invalidOption("the adapter has no modules") }
        let uniform = loras.allSatisfy { !$0.useRSLoRA && $0.alpha == first.alpha }
        let alpha: Float = uniform ? first.alpha : 0
        var w = GGUFWriter()
        w.metadata = [("general.architecture", .string(architecture(c))), ("general.type", .string("adapter")),
                      ("general.name", .string("finetune LoRA adapter")), ("adapter.type", .string("lora")),
                      ("adapter.lora.alpha", .float32(alpha))]
        if let b = baseName { w.metadata.append(("general.base_model.0.name", .string(b))) }
        var payload: [String: [Float]] = [:]
        for l in loras {
            guard let g = GGUFNames.ggufName(l.weightName) else {
                throw AdapterError.invalidOption("\(l.weightName): no llama.cpp tensor name for this weight")
            }
            var b = toGGUFOrder(l.b.value.array, rows: l.outFeatures, hfName: l.weightName, config: c)
            if !uniform { let s = l.scale; for i in b.indices { b[i] *= s } }
            w.tensors.append(.init(name: g + ".lora_a", dtype: .f32, shape: [l.rank, l.inFeatures]))
            w.tensors.append(.init(name: g + ".lora_b", dtype: .f32, shape: [l.outFeatures, l.rank]))
            payload[g + ".lora_a"] = l.a.value.array
            payload[g + ".lora_b"] = b
        }
        // Loaded adapters are finite; folding a per-module scale into lora_b can still overflow.
        for (name, values) in payload.sorted(by: { $0.key < $1.key }) {
            if let bad = NonFiniteScan.first(in: values, tensor: name) {
                throw NonFiniteWeightsError(source: url.path, what: "the llama.cpp LoRA's", value: bad, context: "the adapter's scale overflows f32")
            }
        }
        try w.write(to: url) { t in payload[t.name]!.withUnsafeBytes { Data($0) } }
        return (loras.count, alpha)
    }
}
