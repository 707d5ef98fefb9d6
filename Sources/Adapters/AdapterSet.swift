import Foundation
import LLMCore

/// Errors in adapter configuration or files; each names the flag, file or tensor.
public enum AdapterError: Error, CustomStringConvertible {
    case unknownTargetModule(String, valid: [String])
    case invalidLayers(String, reason: String)
    case invalidOption(String)
    case missingFile(String, what: String)
    case invalidFile(String, reason: String)
    case unsupported(String, feature: String)
    case shapeMismatch(file: String, tensor: String, expected: [Int], found: [Int])
    case missingTensor(file: String, tensor: String)
    case unknownTarget(file: String, module: String)

    public var description: String {
        switch self {
        case let .unknownTargetModule(n, v): return "--target-modules: unknown module '\(n)'; valid: \(v.joined(separator: ", ")), all-linear"
        case let .invalidLayers(s, r): return "--layers '\(s)': \(r)"
        case let .invalidOption(s): return s
        case let .missingFile(f, w): return "\(f): not found (\(w))"
        case let .invalidFile(f, r): return "\(f): \(r)"
        case let .unsupported(f, feat): return "\(f): unsupported adapter feature: \(feat)"
        case let .shapeMismatch(f, t, e, fd): return "\(f): tensor '\(t)' has shape \(fd) but the base model needs \(e)"
        case let .missingTensor(f, t): return "\(f): missing tensor '\(t)'"
        case let .unknownTarget(f, m): return "\(f): adapter targets '\(m)', which is not a projection of this model"
        }
    }
}

/// Which projections get adapters, and an optional layer subset.
public struct TargetSelection: Sendable, Equatable {
    public var modules: [Projection]
    /// nil = every layer.
    public var layers: Set<Int>?

    public init(modules: [Projection] = Projection.allCases, layers: Set<Int>? = nil) {
        self.modules = modules; self.layers = layers
    }

    /// Parses `--target-modules` (`q_proj,v_proj` or `all-linear`) and `--layers` (`0-3,7`).
    public static func parse(modules: String?, layers: String?) throws -> TargetSelection {
        var mods = Projection.allCases
        if let m = modules?.trimmingCharacters(in: .whitespaces), !m.isEmpty, m != "all-linear", m != "all" {
            mods = []
            for raw in m.split(separator: ",") {
                let name = raw.trimmingCharacters(in: .whitespaces)
                guard let p = Projection(rawValue: name) else {
                    throw AdapterError.unknownTargetModule(name, valid: Projection.allCases.map(\.rawValue))
                }
                if !mods.contains(p) { mods.append(p) }
            }
        }
        return TargetSelection(modules: mods, layers: try layers.map(parseLayers))
    }

    static func parseLayers(_ s: String) throws -> Set<Int> {
        var out = Set<Int>()
        for part in s.split(separator: ",") {
            let p = part.trimmingCharacters(in: .whitespaces)
            let ends = p.split(separator: "-", omittingEmptySubsequences: false)
            guard (1...2).contains(ends.count), let lo = Int(ends[0]), let hi = Int(ends.last!), lo >= 0, lo <= hi else {
                throw AdapterError.invalidLayers(s, reason: "expected comma-separated layer indices or ranges like 0-3,7")
            }
            out.formUnion(lo...hi)
        }
        return out
    }

    /// Checks layer indices against a model.
    public func validate(for config: ModelConfig) throws {
        if let l = layers, let bad = l.first(where: { $0 >= config.numLayers }) {
            throw AdapterError.invalidLayers(l.sorted().map(String.init).joined(separator: ","),
                                             reason: "layer \(bad) does not exist (the model has \(config.numLayers) layers: 0-\(config.numLayers - 1))")
        }
    }

    /// (layer, projection) pairs in model order.
    public func targets(for config: ModelConfig) -> [(layer: Int, projection: Projection)] {
        var out: [(Int, Projection)] = []
        for l in 0..<config.numLayers where layers?.contains(l) ?? true {
            for p in Projection.allCases where modules.contains(p) { out.append((l, p)) }
        }
        return out
    }
}

/// Hyperparameters of a new adapter set.
public struct AdapterSpec: Sendable {
    public var kind: AdapterKind
    public var targets: TargetSelection
    /// LoRA rank.
    public var rank: Int
    /// LoRA `lora_alpha`, or NdLinear α.
    public var alpha: Float
    public var dropout: Float
    public var useRSLoRA: Bool
    public var ndlinearInit: NdLinearInit
    /// Per-module overrides of rank / alpha (PEFT `rank_pattern` / `alpha_pattern`, keyed by a
    /// module-name suffix such as `q_proj` or `model.layers.0.self_attn.q_proj`).
    public var rankPattern: [String: Int]
    public var alphaPattern: [String: Float]

    public init(kind: AdapterKind, targets: TargetSelection = TargetSelection(), rank: Int = 8, alpha: Float? = nil,
                dropout: Float = 0, useRSLoRA: Bool = false, ndlinearInit: NdLinearInit = .reference,
                rankPattern: [String: Int] = [:], alphaPattern: [String: Float] = [:]) {
        self.kind = kind; self.targets = targets; self.rank = rank
        self.alpha = alpha ?? kind.defaultAlpha(rank: rank)
        self.dropout = dropout; self.useRSLoRA = useRSLoRA; self.ndlinearInit = ndlinearInit
        self.rankPattern = rankPattern; self.alphaPattern = alphaPattern
    }

    /// PEFT matches pattern keys as a regex against the end of the module name; we match the
    /// common forms: exact suffix at a `.` boundary.
    static func lookup<T>(_ pattern: [String: T], module: String) -> T? {
        for (k, v) in pattern.sorted(by: { $0.key.count > $1.key.count }) where module == k || module.hasSuffix("." + k) {
            return v
        }
        return nil
    }

    public func rank(for module: String) -> Int { Self.lookup(rankPattern, module: module) ?? rank }
    public func alpha(for module: String) -> Float { Self.lookup(alphaPattern, module: module) ?? alpha }
}

/// Adapters of a model keyed by base weight name, in model order.
public final class AdapterSet: AdapterProvider {
    public private(set) var adapters: [any LinearAdapter] = []
    private var byName: [String: any LinearAdapter] = [:]
    /// `table[layer][projection.index]`: what the model's hot path reads.
    private var table: [[(any LinearAdapter)?]] = []
    /// Free-form facts written into exported configs (base model path, NdLinear init, ...).
    public var baseModelName: String?
    public var spec: AdapterSpec?
    /// Scratch shared by all the set's adapters (they run one at a time within a model).
    public let workspace = AdapterWorkspace()

    public init(_ adapters: [any LinearAdapter] = []) {
        for a in adapters { add(a) }
    }

    /// Adds an adapter; its weight name is one `Projection.weightName(layer:)` writes (the
    /// readers check names from files before they build adapters).
    public func add(_ a: any LinearAdapter) {
        precondition(byName[a.weightName] == nil, "two adapters on \(a.weightName)")
        guard let (l, p) = Projection.parse(a.weightName) else { preconditionFailure("'\(a.weightName)' is not a projection weight") }
        a.workspace = workspace
        adapters.append(a)
        byName[a.weightName] = a
        while table.count <= l { table.append(Array(repeating: nil, count: Projection.allCases.count)) }
        table[l][p.index] = a
    }

    public func delta(layer: Int, projection: Projection) -> LinearDelta? {
        layer < table.count ? table[layer][projection.index] : nil
    }
    public func adapter(for weightName: String) -> (any LinearAdapter)? { byName[weightName] }

    public var kind: AdapterKind? { adapters.first?.kind }
    public var parameterCount: Int { adapters.reduce(0) { $0 + $1.parameterCount } }
    public var parameters: [AdapterParameter] { adapters.flatMap(\.parameters) }

    public func zeroGradients() { for a in adapters { a.zeroGradients() } }

    /// Gives every adapter its base weight from `weights` (what the model does before each
    /// pass): new DoRA adapters take their magnitudes (`‖W‖` per row) from it.
    public func bind(to weights: ModelWeights) throws {
        for a in adapters {
            guard let v = weights.views[a.weightName] else { throw ModelError.missingWeight(name: a.weightName, files: weights.source) }
            guard v.shape == [a.outFeatures, a.inFeatures] else {
                throw ModelError.shapeMismatch(name: v.name, expected: [a.outFeatures, a.inFeatures], found: v.shape,
                                               file: "the adapter for \(a.weightName)")
            }
            a.bind(base: v)
        }
    }

    /// Sets every adapter's dropout mask seed for the coming step (distinct per module).
    public func setDropoutSeed(_ seed: UInt64) {
        for (i, a) in adapters.enumerated() {
            var r = SplitMix64(seed: seed &+ UInt64(i) &* 0xD1B5_4A32_D192_ED03)
            a.dropoutSeed = r.next()
        }
    }

    /// Fresh adapters for `spec` on `config`'s projections, initialised from `seed`.
    public static func create(spec: AdapterSpec, config: ModelConfig, seed: UInt64) throws -> AdapterSet {
        try spec.targets.validate(for: config)
        guard spec.dropout >= 0, spec.dropout < 1 else { throw AdapterError.invalidOption("--dropout \(spec.dropout): expected 0 ≤ p < 1") }
        var rng = SplitMix64(seed: seed)
        let set = AdapterSet()
        set.spec = spec
        for (l, p) in spec.targets.targets(for: config) {
            let name = p.weightName(layer: l), module = p.modulePath(layer: l)
            let (outF, inF) = config.shape(of: p)
            var a: any LinearAdapter
            switch spec.kind {
            case .lora:
                let r = spec.rank(for: module)
                guard r > 0 else { throw AdapterError.invalidOption("--r \(r): LoRA rank must be positive") }
                a = LoRAAdapter(weightName: name, inFeatures: inF, outFeatures: outF, rank: r,
                                alpha: spec.alpha(for: module), useRSLoRA: spec.useRSLoRA, rng: &rng)
            case .ndlinear:
                a = NdLinearAdapter(weightName: name, inFeatures: inF, outFeatures: outF, alpha: spec.alpha(for: module),
                                    initialization: spec.ndlinearInit, rng: &rng)
            case .dora:
                let r = spec.rank(for: module)
                guard r > 0 else { throw AdapterError.invalidOption("--r \(r): DoRA rank must be positive") }
                a = DoRAAdapter(weightName: name, inFeatures: inF, outFeatures: outF, rank: r,
                                alpha: spec.alpha(for: module), useRSLoRA: spec.useRSLoRA, rng: &rng)
            }
            a.dropout = spec.dropout
            set.add(a)
        }
        return set
    }

    /// Trainable parameter count for a spec, from the config alone (no allocation).
    public static func parameterCount(spec: AdapterSpec, config: ModelConfig) -> Int {
        spec.targets.targets(for: config).reduce(0) { sum, t in
            let (o, i) = config.shape(of: t.projection)
            let module = t.projection.modulePath(layer: t.layer)
            switch spec.kind {
            case .lora: return sum + spec.rank(for: module) * (i + o)
            case .dora: return sum + spec.rank(for: module) * (i + o) + o
            case .ndlinear:
                let (a, b) = balancedFactors(i), (c, d) = balancedFactors(o)
                return sum + c * a + d * b
            }
        }
    }
}
