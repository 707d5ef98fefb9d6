import Foundation
import LLMCore
#if canImport(Glibc)
import Glibc
#endif

/// Merging adapters into the base: `W' = W + ΔW`, computed in f32 (one rounding at the end when
/// a lower-precision dtype is written).
public enum AdapterMerge {
    /// Base weights with every adapted projection replaced by its merged f32 value, plus the max
    /// absolute change per merged tensor. Untouched tensors keep their original views.
    public static func merge(_ weights: ModelWeights, _ set: AdapterSet) throws -> (weights: ModelWeights, maxChange: [String: Float]) {
        var views = weights.views
        var changes: [String: Float] = [:]
        for a in set.adapters {
            guard let base = weights.views[a.weightName] else { throw ModelError.missingWeight(name: a.weightName, files: weights.source) }
            let (w, m) = try mergedValues(base, a, source: weights.source)
            changes[a.weightName] = m
            views[a.weightName] = TensorView.owned(name: a.weightName, shape: base.shape, floats: w)
        }
        return (try ModelWeights(config: weights.config, views: views, source: weights.source + " + merged adapter"), changes)
    }

    /// `W + ΔW` in f32 for one base tensor, and `max |ΔW|` (the largest change merging makes).
    /// The merged values are always checked: a non-finite one is an error naming the tensor and
    /// whether the base (`source`) or `ΔW` holds it, never a file of NaN with "max |ΔW| 0".
    public static func mergedValues(_ base: TensorView, _ adapter: any LinearAdapter,
                                    source: String = "the base model") throws -> (values: [Float], maxChange: Float) {
        guard base.shape == [adapter.outFeatures, adapter.inFeatures] else {
            throw ModelError.shapeMismatch(name: base.name, expected: [adapter.outFeatures, adapter.inFeatures], found: base.shape,
                                           file: "the adapter for \(adapter.weightName)")
        }
        var w = base.floats()
        let d = adapter.deltaWeight(base: base)
        var m: Float = 0
        for i in w.indices { w[i] += d[i]; m = max(m, abs(d[i])) }
        if let bad = NonFiniteScan.first(in: w, tensor: base.name) {
            if let b = NonFiniteScan.first(in: base) {
                throw NonFiniteWeightsError(source: source, what: "the base model's", value: b, context: "merging would copy it into the merged model")
            }
            let delta = NonFiniteScan.first(in: d, tensor: "ΔW of \(adapter.modulePath)")
            throw NonFiniteWeightsError(source: "the \(adapter.kind.rawValue) adapter for \(base.name)", what: "merged", value: bad,
                                        context: delta.map { "\($0.description): ΔW overflows f32" } ?? "W + ΔW overflows f32")
        }
        return (w, m)
    }

    // MARK: - A merged Hugging Face model directory

    /// What merging one adapted tensor did.
    public struct TensorReport: Sendable, Encodable {
        public let name: String
        /// `max |W' − W|` in f32 (the adapter's contribution).
        public let maxChange: Float
        /// `max |round(W') − W'|`: what storing the f32 merge in the output dtype cost (0 for f32).
        public let maxRoundingError: Float

        enum CodingKeys: String, CodingKey { case name, maxChange = "max_change", maxRoundingError = "max_rounding_error" }
    }

    /// The outcome of `writeModel`.
    public struct Report: Sendable, Encodable {
        public let output: String
        /// The torch name of the written dtype (`bfloat16`, `float16`, `float32`).
        public let dtype: String
        /// Weight files written, in order (one `model.safetensors`, or `model-0000i-of-0000n`).
        public let files: [String]
        public let sharded: Bool
        /// Bytes of tensor data over all files (the index's `total_size`).
        public let totalSize: Int
        /// One entry per adapted tensor, in model order.
        public let merged: [TensorReport]
        public var maxChange: Float { merged.map(\.maxChange).max() ?? 0 }
        public var maxRoundingError: Float { merged.map(\.maxRoundingError).max() ?? 0 }

        enum CodingKeys: String, CodingKey {
            case output, dtype, files, sharded, totalSize = "total_size", merged, maxChange = "max_change", maxRoundingError = "max_rounding_error"
        }
        public func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(output, forKey: .output); try c.encode(dtype, forKey: .dtype); try c.encode(files, forKey: .files)
            try c.encode(sharded, forKey: .sharded); try c.encode(totalSize, forKey: .totalSize); try c.encode(merged, forKey: .merged)
            try c.encode(maxChange, forKey: .maxChange); try c.encode(maxRoundingError, forKey: .maxRoundingError)
        }
    }

    /// Files of a model directory that go along unchanged (tokenizer and generation settings).
    public static let companionFiles = [
        "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
        "vocab.json", "merges.txt", "tokenizer.model", "chat_template.jinja", "chat_template.json",
    ]

    /// Parses a shard size as transformers' `max_shard_size` does: a byte count, or a number with
    /// KB/MB/GB/TB (powers of 1000) or KiB/MiB/GiB/TiB (powers of 1024).
    public static func parseSize(_ s: String) -> Int? {
        let t = s.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Double)] = [("KIB", 1024), ("MIB", 1_048_576), ("GIB", 1_073_741_824), ("TIB", 1_099_511_627_776),
                                         ("KB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12), ("B", 1)]
        for (u, f) in units where t.hasSuffix(u) {
            guard let v = Double(t.dropLast(u.count).trimmingCharacters(in: .whitespaces)), v > 0 else { return nil }
            return Int(v * f)
        }
        guard let v = Int(t), v > 0 else { return nil }
        return v
    }

    /// Writes `weights` with `adapters` merged in as a Hugging Face model directory that
    /// transformers loads: `config.json` (the source's JSON with only the dtype key changed —
    /// `dtype` in the transformers-5 layout, `torch_dtype` otherwise), the tokenizer and
    /// generation files of `modelDirectory`, and the weights in `dtype` (default: the base's
    /// stored dtype), each adapted tensor merged in f32 and rounded once. Above `maxShardSize`
    /// bytes the weights are split into `model-0000i-of-0000n.safetensors` shards with a
    /// `model.safetensors.index.json`, as `save_pretrained` does. Every file is written to a
    /// temporary name and renamed; tensors are produced one at a time, so memory stays at
    /// about one f32 tensor beyond the mapped base. Weight files of the other layout left from
    /// an earlier run in `output` are removed, since readers would prefer them.
    public static func writeModel(_ weights: ModelWeights, adapters: AdapterSet, modelDirectory: URL, to output: URL,
                                  dtype: DType? = nil, maxShardSize: Int = 5_000_000_000) throws -> Report {
        let fm = FileManager.default
        // A quantized (GGUF) base has no safetensors dtype: bf16, as gguf_to_hf.py writes.
        let outDType = dtype ?? (weights.storageDType.isQuantized ? .bf16 : weights.storageDType)
        guard [.f32, .bf16, .f16].contains(outDType) else {
            throw AdapterError.invalidOption("--dtype \(outDType.rawValue): expected bf16, f16 or f32")
        }
        guard maxShardSize > 0 else { throw AdapterError.invalidOption("--max-shard-size must be positive") }
        let src = modelDirectory.resolvingSymlinksInPath().standardizedFileURL
        let dst = output.resolvingSymlinksInPath().standardizedFileURL
        if src.path == dst.path {
            throw AdapterError.invalidOption("--output \(output.path) is the model directory itself; write the merged model elsewhere")
        }
        let configURL = modelDirectory.appendingPathComponent("config.json")
        guard let configData = fm.contents(atPath: configURL.path) else {
            throw AdapterError.missingFile(configURL.path, what: "the model's config.json")
        }
        guard let configJSON = try? JSONValue.parse(configData), var raw = configJSON.object else {
            throw AdapterError.invalidFile(configURL.path, reason: "not a JSON object")
        }
        for a in adapters.adapters where weights.views[a.weightName] == nil {
            throw ModelError.missingWeight(name: a.weightName, files: weights.source)
        }
        do { try fm.createDirectory(at: output, withIntermediateDirectories: true) } catch {
            throw AdapterError.invalidOption("--output \(output.path): cannot create the directory: \(ErrorText.reason(error, path: output.path))")
        }

        // Tensor order: the model's, then anything else the checkpoint holds, by name.
        let known = weights.config.expectedTensors().map(\.name).filter { weights.views[$0] != nil }
        let knownSet = Set(known)
        let names = known + weights.views.keys.filter { !knownSet.contains($0) }.sorted()
        func outType(_ v: TensorView) -> DType { v.dtype.isFloatingPoint ? outDType : v.dtype }
        func size(_ n: String) -> Int { let v = weights.views[n]!; return v.count * outType(v).byteSize }

        var shards: [[String]] = [[]]
        var current = 0
        for n in names {
            let s = size(n)
            if !shards[shards.count - 1].isEmpty, current + s > maxShardSize { shards.append([]); current = 0 }
            shards[shards.count - 1].append(n)
            current += s
        }
        let sharded = shards.count > 1
        let fileNames = sharded
            ? (1...shards.count).map { String(format: "model-%05d-of-%05d.safetensors", $0, shards.count) }
            : ["model.safetensors"]

        var reports: [String: TensorReport] = [:]
        for (shard, file) in zip(shards, fileNames) {
            let entries = shard.sorted().map { n -> StreamedTensor in
                let v = weights.views[n]!
                return StreamedTensor(name: n, dtype: outType(v), shape: v.shape)
            }
            try StreamingSafetensors.write(entries, metadata: ["format": "pt"], to: output.appendingPathComponent(file)) { e in
                let v = weights.views[e.name]!
                if let a = adapters.adapter(for: e.name) {
                    let (merged, change) = try mergedValues(v, a, source: weights.source)
                    let (data, err) = encode(merged, as: e.dtype)
                    reports[e.name] = TensorReport(name: e.name, maxChange: change, maxRoundingError: err)
                    return data
                }
                if v.dtype == e.dtype { return Data(bytes: v.data, count: v.byteCount) }
                return encode(v.floats(), as: e.dtype).data
            }
        }
        let total = names.reduce(0) { $0 + size($1) }
        let index = output.appendingPathComponent("model.safetensors.index.json")
        if sharded {
            var map: [String: JSONValue] = [:]
            for (shard, file) in zip(shards, fileNames) { for n in shard { map[n] = .string(file) } }
            let params = names.reduce(0) { $0 + weights.views[$1]!.count }
            let indexJSON = JSONValue.object(["metadata": .object(["total_size": .int(total), "total_parameters": .int(params)]),
                                              "weight_map": .object(map)])
            try AtomicFile.write(indexJSON.serialized() + "\n", to: index)
        }
        // Readers take model.safetensors before an index: leave only what was just written.
        let keep = Set(fileNames + (sharded ? [index.lastPathComponent] : []))
        for n in (try? fm.contentsOfDirectory(atPath: output.path)) ?? [] where !keep.contains(n) {
            let stale = n == "model.safetensors" || n == "model.safetensors.index.json"
                || (n.hasPrefix("model-") && n.hasSuffix(".safetensors") && n.contains("-of-"))
            if stale { try fm.removeItem(at: output.appendingPathComponent(n)) }
        }

        // config.json: the dtype key set to what was written, every other byte as it was.
        let dtypeKeys = ["torch_dtype", "dtype"].filter { raw[$0] != nil }
        let isV5 = raw["rope_parameters"] != nil || (raw["transformers_version"]?.string?.hasPrefix("5") ?? false)
        let keys = dtypeKeys.isEmpty ? [isV5 ? "dtype" : "torch_dtype"] : dtypeKeys
        let text = configText(configData, setting: keys, to: outDType.torchName) ?? {
            for k in keys { raw[k] = .string(outDType.torchName) }
            return Data((JSONValue.object(raw).serialized() + "\n").utf8)
        }()
        try AtomicFile.write(text, to: output.appendingPathComponent("config.json"))
        for n in companionFiles {
            let u = modelDirectory.appendingPathComponent(n)
            if let d = fm.contents(atPath: u.path) { try AtomicFile.write(d, to: output.appendingPathComponent(n)) }
        }
        let merged = adapters.adapters.compactMap { reports[$0.weightName] }
        return Report(output: output.path, dtype: outDType.torchName, files: fileNames, sharded: sharded, totalSize: total, merged: merged)
    }

    /// `data` (a JSON object's text) with the top-level `keys` set to the string `value` — or
    /// the first key added after the last member when none is present — and every other byte
    /// unchanged, so numbers keep their spelling (`1000000.0` stays a float for Python).
    static func configText(_ data: Data, setting keys: [String], to value: String) -> Data? {
        guard let members = try? JSONValue.members(in: data) else { return nil }
        var bytes = [UInt8](data)
        let quoted = Array(JSONValue.quote(value).utf8)
        let hits = members.filter { keys.contains($0.key) }
        if hits.isEmpty {
            guard let last = members.last, let key = keys.first else { return nil }
            bytes.insert(contentsOf: Array((",\n  " + JSONValue.quote(key) + ": ").utf8) + quoted, at: last.range.upperBound)
        } else {
            for h in hits.sorted(by: { $0.range.lowerBound > $1.range.lowerBound }) { bytes.replaceSubrange(h.range, with: quoted) }
        }
        return Data(bytes)
    }

    /// f32 values stored as `dtype` (round to nearest even), with the largest rounding error.
    static func encode(_ values: [Float], as dtype: DType) -> (data: Data, maxError: Float) {
        switch dtype {
        case .bf16, .f16:
            var err: Float = 0
            var bits = [UInt16](repeating: 0, count: values.count)
            for i in values.indices {
                let b = dtype == .bf16 ? floatToBF16(values[i]) : floatToF16(values[i])
                bits[i] = b
                let back = dtype == .bf16 ? bf16ToFloat(b) : f16ToFloat(b)
                err = max(err, abs(back - values[i]))
            }
            return (bits.withUnsafeBytes { Data($0) }, err)
        default:
            return (values.withUnsafeBytes { Data($0) }, 0)
        }
    }
}

// MARK: - Streaming safetensors writer

/// One tensor of a streamed file: its header entry; the bytes come from a callback.
struct StreamedTensor {
    let name: String
    let dtype: DType
    let shape: [Int]
    var byteCount: Int { shape.reduce(1, *) * dtype.byteSize }
}

/// Writes a safetensors file whose tensors are produced one at a time, so a multi-gigabyte
/// shard never sits in memory. The header is known up front (shapes and dtypes fix every
/// offset); the file is written under a temporary name, fsynced and renamed, like
/// `AtomicFile.write`.
enum StreamingSafetensors {
    static func write(_ entries: [StreamedTensor], metadata: [String: String], to url: URL,
                      bytes: (StreamedTensor) throws -> Data) throws {
        var header: [String: JSONValue] = [:]
        if !metadata.isEmpty { header["__metadata__"] = .object(metadata.mapValues { .string($0) }) }
        var offset = 0
        for e in entries {
            header[e.name] = .object(["dtype": .string(e.dtype.rawValue), "shape": .array(e.shape.map { .int($0) }),
                                      "data_offsets": .array([.int(offset), .int(offset + e.byteCount)])])
            offset += e.byteCount
        }
        var headerBytes = Data(JSONValue.object(header).serialized(pretty: false).utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }

        do {
            try AtomicFile.stream(to: url) { h in
                var n = UInt64(headerBytes.count).littleEndian
                try h.write(contentsOf: withUnsafeBytes(of: &n) { Data($0) })
                try h.write(contentsOf: headerBytes)
                for e in entries {
                    let d = try bytes(e)
                    guard d.count == e.byteCount else {
                        throw SafetensorsError.writeFailed(file: url.path, reason: "tensor '\(e.name)': \(d.count) bytes for \(e.byteCount)")
                    }
                    try h.write(contentsOf: d)
                }
            }
        } catch let e as SafetensorsError {
            throw e
        } catch let e as NonFiniteWeightsError {
            throw e   // what the tensor holds, not a write failure
        } catch {
            throw SafetensorsError.writeFailed(file: url.path, reason: ErrorText.describe(error))
        }
    }
}

// MARK: - Non-finite adapter values

extension AdapterSet {
    /// The first non-finite value of any adapter parameter, named `<module>.<role>`
    /// (`model.layers.2.self_attn.q_proj.lora_A`). Adapters are small: scanned on every load.
    public func firstNonFinite() -> NonFiniteValue? {
        for a in adapters {
            for p in a.parameters {
                let values = UnsafeBufferPointer(start: p.value.pointer, count: p.value.count)
                if let hit = NonFiniteScan.first(in: values, tensor: "\(a.modulePath).\(p.role)") { return hit }
            }
        }
        return nil
    }

    /// Throws `NonFiniteWeightsError` naming `source` and the first non-finite adapter tensor.
    public func checkFinite(source: String) throws {
        if let hit = firstNonFinite() { throw NonFiniteWeightsError(source: source, what: "the adapter's", value: hit) }
    }
}
