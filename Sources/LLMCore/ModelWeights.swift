import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The frozen base weights of a model, in their file dtype (memory-mapped safetensors or owned
/// memory for random weights). Small tensors (norms, biases) are widened once at load; big
/// matrices are widened on use into scratch (see `TransformerModel`).
public final class ModelWeights: @unchecked Sendable {
    public let config: ModelConfig
    public let views: [String: TensorView]
    /// Where the weights came from (a directory, a file, or "random").
    public let source: String
    /// f32 copies of 1-D tensors (norm weights, biases).
    private var small: [String: [Float]] = [:]

    public init(config: ModelConfig, views: [String: TensorView], source: String) throws {
        self.config = config
        self.views = views
        self.source = source
        // Layers the weights hold beyond the config's count would be silently ignored: the
        // config and the tensors disagree about the model (checked before listing the tensors).
        let layerPrefix = "model.layers."
        if let extra = views.keys.lazy.compactMap({ name -> Int? in
            guard name.hasPrefix(layerPrefix) else { return nil }
            let rest = name.dropFirst(layerPrefix.count)
            return rest.firstIndex(of: ".").flatMap { Int(rest[..<$0]) }
        }).filter({ $0 >= config.numLayers || $0 < 0 }).max() {
            throw ModelError.invalidConfig(file: source, reason: "the weights hold layer \(extra) but the config says \(config.numLayers) layer\(config.numLayers == 1 ? "" : "s") (num_hidden_layers)")
        }
        for (name, shape) in config.expectedTensors() {
            guard let v = views[name] else { throw ModelError.missingWeight(name: name, files: source) }
            guard v.shape == shape else { throw ModelError.shapeMismatch(name: name, expected: shape, found: v.shape, file: source) }
            guard v.dtype.isFloatingPoint else {
                throw ModelError.invalidConfig(file: source, reason: "weight '\(name)' has dtype \(v.dtype.rawValue), expected a floating-point type")
            }
            if shape.count == 1 { small[name] = v.floats() }
        }
    }

    public func view(_ name: String) -> TensorView { views[name]! }
    public func vector(_ name: String) -> [Float] { small[name]! }

    /// The dtype of the big matrices (the first projection's).
    public var storageDType: DType { views[Projection.q.weightName(layer: 0)]?.dtype ?? .f32 }

    // MARK: - Loading

    /// Loads `dir/config.json` and `dir/model.safetensors`, or the shards named by
    /// `dir/model.safetensors.index.json` (never every `*.safetensors` present).
    public static func load(directory dir: URL) throws -> ModelWeights {
        let config = try ModelConfig.load(dir.appendingPathComponent("config.json"))
        let fm = FileManager.default
        let single = dir.appendingPathComponent("model.safetensors")
        let index = dir.appendingPathComponent("model.safetensors.index.json")
        var views: [String: TensorView] = [:]
        if fm.fileExists(atPath: single.path) {
            for v in try SafetensorsFile(url: single).tensors { views[v.name] = v }
            return try ModelWeights(config: config, views: views, source: single.path)
        }
        guard fm.fileExists(atPath: index.path) else {
            throw ModelError.missingFile(path: dir.path, what: "expected model.safetensors or model.safetensors.index.json in the model directory")
        }
        guard let data = fm.contents(atPath: index.path), let json = try? JSONValue.parse(data),
              let map = json["weight_map"]?.object else {
            throw ModelError.invalidConfig(file: index.path, reason: "expected a JSON object with a 'weight_map' of tensor name → file")
        }
        var files: [String: SafetensorsFile] = [:]
        for (name, fileValue) in map {
            guard let file = fileValue.string, !file.hasPrefix("/"), !file.split(separator: "/").contains("..") else {
                throw ModelError.invalidConfig(file: index.path, reason: "weight_map['\(name)'] must be a file name inside the model directory")
            }
            if files[file] == nil {
                let url = dir.appendingPathComponent(file)
                guard fm.fileExists(atPath: url.path) else {
                    throw ModelError.missingFile(path: url.path, what: "shard named in \(index.lastPathComponent) for '\(name)'")
                }
                files[file] = try SafetensorsFile(url: url)
            }
            guard let v = files[file]![name] else {
                throw ModelError.missingWeight(name: name, files: dir.appendingPathComponent(file).path)
            }
            views[name] = v
        }
        return try ModelWeights(config: config, views: views, source: index.path)
    }

    /// Random weights for a bare config (inspection, benchmarks): normal(0, 0.02)-like values
    /// from a seeded generator, norms at 1, stored as `dtype`.
    /// Refused (before anything is allocated) when they would not fit in the memory this
    /// process can use (`SystemMemory`); `file` names the config in that error.
    public static func random(config: ModelConfig, dtype: DType = .bf16, seed: UInt64 = 0, file: String = "config.json") throws -> ModelWeights {
        guard dtype == .f32 || dtype == .bf16 || dtype == .f16 else {
            throw ModelError.invalidInput("random weights can be f32, bf16 or f16, not \(dtype.rawValue)")
        }
        let need = config.weightBytes(dtype: dtype)
        if let problem = SystemMemory.shortfall(need) {
            throw ModelError.invalidInput("\(file): random \(dtype.torchName) weights for this config (\(config.parameterCount) parameters) "
                                          + "need \(SystemMemory.format(need)); \(problem)")
        }
        var views: [String: TensorView] = [:]
        var rng = SplitMix64(seed: seed)
        for (name, shape) in config.expectedTensors() {
            let n = shape.reduce(1, *)
            let bytes = OwnedBytes(byteCount: n * dtype.byteSize)
            let isNorm = shape.count == 1 && !name.hasSuffix(".bias")
            // Uniform(-a, a) with a = 0.02·√3 has std 0.02; cheap and deterministic.
            let a: Float = 0.02 * 1.7320508
            switch dtype {
            case .f32:
                let p = bytes.pointer.assumingMemoryBound(to: Float.self)
                for i in 0..<n { p[i] = isNorm ? 1 : (rng.nextFloat() * 2 - 1) * a }
            case .bf16:
                let p = bytes.pointer.assumingMemoryBound(to: UInt16.self)
                for i in 0..<n { p[i] = floatToBF16(isNorm ? 1 : (rng.nextFloat() * 2 - 1) * a) }
            case .f16:
                let p = bytes.pointer.assumingMemoryBound(to: UInt16.self)
                for i in 0..<n { p[i] = floatToF16(isNorm ? 1 : (rng.nextFloat() * 2 - 1) * a) }
            default:
                preconditionFailure("checked above")
            }
            views[name] = TensorView(name: name, dtype: dtype, shape: shape, data: bytes.pointer, byteCount: bytes.byteCount, owner: bytes)
        }
        return try ModelWeights(config: config, views: views, source: "random (\(dtype.torchName), seed \(seed))")
    }

    /// A model directory, or a bare config.json (random weights of `randomDType`).
    public static func load(path: String, randomDType: DType = .bf16) throws -> ModelWeights {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw ModelError.missingFile(path: path, what: "--model: a model directory, a .gguf file or a config.json")
        }
        if isDir.boolValue { return try load(directory: URL(fileURLWithPath: path)) }
        if path.lowercased().hasSuffix(".gguf") { return try load(gguf: path) }
        let config = try ModelConfig.load(URL(fileURLWithPath: path))
        return try random(config: config, dtype: randomDType, file: path)
    }
}

// MARK: - Memory this process can use

/// The memory a run may plan for: the smallest of the machine's physical memory, the
/// cgroup's limit (a container's `memory.max`) and the address-space limit (`ulimit -v`).
/// Sizes that come from files or flags are checked against it before they are allocated, so
/// that a run which cannot fit is refused with the estimate instead of dying in the allocator.
public enum SystemMemory {
    /// Bytes and what limits them, e.g. `(25_275_662_336, "physical memory")`.
    public static var available: (bytes: Int, source: String) {
        var best = (bytes: Int.max, source: "no limit known")
        func consider(_ b: Int?, _ source: String) { if let b, b > 0, b < best.bytes { best = (b, source) } }
        let pages = sysconf(Int32(_SC_PHYS_PAGES)), pageSize = sysconf(Int32(_SC_PAGESIZE))
        if pages > 0, pageSize > 0 { consider(Checked.mul(pages, pageSize), "physical memory") }
        for (path, name) in [("/sys/fs/cgroup/memory.max", "the cgroup's memory.max"),
                             ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "the cgroup's memory limit")] {
            if let text = try? String(contentsOfFile: path, encoding: .utf8),
               let v = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) { consider(v, name) }
        }
        var lim = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &lim) == 0, lim.rlim_cur < rlim_t(Int.max) {
            consider(Int(lim.rlim_cur), "the address-space limit (ulimit -v)")
        }
        return best
    }

    /// nil when `bytes` fits in what is available, else why not ("this process can use 24.7 GB
    /// (physical memory)"; an overflowing estimate — nil `bytes` — never fits).
    public static func shortfall(_ bytes: Int?) -> String? {
        let a = available
        guard let bytes else { return "no process can allocate that" }
        return bytes <= a.bytes ? nil : "this process can use \(format(a.bytes)) (\(a.source))"
    }

    /// `25.60 GB` (decimal units, as `inspect` prints them); "an overflowing number of bytes" for nil.
    public static func format(_ bytes: Int?) -> String {
        guard let bytes else { return "more bytes than a 64-bit count holds" }
        let b = Double(bytes)
        if b >= 1e12 { return String(format: "%.2f TB", b / 1e12) }
        if b >= 1e9 { return String(format: "%.2f GB", b / 1e9) }
        return String(format: "%.1f MB", b / 1e6)
    }
}

// MARK: - Deterministic RNG

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and its whole state is one UInt64,
/// so checkpoints can store it exactly.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 24 random bits.
    public mutating func nextFloat() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }
    public mutating func nextDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }
}
