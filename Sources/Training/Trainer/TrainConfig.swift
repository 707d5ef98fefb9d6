import Adapters
import Foundation

/// The configuration of a training run (CLI.md `train` flags). `resolve()` checks it and fills
/// in the defaults; `run.json` records the resolved one. The adapter-shape fields that
/// `--adapter-init` overrides are optional, so that a value given can be told from a default.
public struct TrainConfig: Codable, Sendable, Equatable {
    /// The defaults of the optional fields, filled in by `resolve()`. (The other fields carry
    /// their defaults below; the default α is `AdapterKind.defaultAlpha(rank:)`.)
    public enum Defaults {
        public static let rank = 8
        public static let targetModules = "all-linear"
        /// `zero` (W0 = 0: the adapter starts as the base model, like PEFT LoKr's w1), not the
        /// reference's random factors, which on some models (Qwen2.5-0.5B: validation loss 0.90
        /// → 12.5) wreck the base before the first step; `reference` reproduces the published
        /// script.
        public static let ndlinearInit = NdLinearInit.zero
    }

    /// Every default in one value (the command line shows these in its help).
    public static let defaults = TrainConfig(model: "", data: "", output: "")

    public var model: String
    public var data: String
    public var valData: String?
    public var output: String

    // MARK: Adapter

    public var adapterType: AdapterKind = .ndlinear
    /// LoRA rank (nil: `Defaults.rank`).
    public var r: Int?
    /// LoRA `lora_alpha` or NdLinear α (nil: `AdapterKind.defaultAlpha(rank:)`); with
    /// `adapterInit`, the α of adapter files that carry none.
    public var alpha: Float?
    public var dropout: Float = 0
    public var rslora = false
    /// nil: `Defaults.ndlinearInit`.
    public var ndlinearInit: NdLinearInit?
    /// `q_proj,v_proj` or `all-linear` (nil: `Defaults.targetModules`).
    public var targetModules: String?
    /// `0-3,7` (nil: every layer).
    public var layers: String?
    /// Start from this adapter's values; its files decide the modules, layers, rank and scaling.
    public var adapterInit: String?
    /// NdLinear α for `adapterInit` files that carry none (when `alpha` is not given).
    public var adapterAlpha: Float?

    // MARK: Data

    public var template: PromptTemplate = .auto
    public var maxLength: Int = 512
    public var maskPrompt = true
    public var packing = false

    // MARK: Optimisation

    public var epochs: Int?
    public var steps: Int?
    public var batchSize: Int = 1
    public var gradAccum: Int = 1
    /// Rows per optimizer step over all ranks (default `batchSize · gradAccum · ranks`); each
    /// rank runs its share in micro-batches of at most `batchSize` rows (issue 11).
    public var globalBatch: Int?
    public var lr: Double = 1e-4
    public var weightDecay: Double = 0
    public var adamBetas: [Double] = [0.9, 0.999]
    public var adamEps: Double = 1e-8
    public var schedule: LRScheduleKind = .linear
    public var warmupSteps: Int?
    public var warmupRatio: Double?
    public var maxGradNorm: Double = 1.0
    public var seed: UInt64 = 42
    public var shuffle = true

    // MARK: Validation, checkpoints, output

    public var valSplit: Double?
    public var checkpointing = false
    public var threads: Int?
    public var saveEvery: Int?
    public var evalEvery: Int?
    public var keepCheckpoints: Int?
    public var earlyStoppingPatience: Int?
    public var resume: String?
    /// Write into a non-empty `output` (replacing an earlier run's files there); without it,
    /// and without `resume`, such a directory is refused.
    public var overwrite = false
    public var strict = false
    public var logEvery: Int = 10
    /// Validation examples evaluated at most (all by default).
    public var valLimit: Int?

    public init(model: String, data: String, output: String) {
        self.model = model; self.data = data; self.output = output
    }

    /// Rows per optimizer step over `ranks` processes.
    public func globalBatch(ranks: Int) -> Int { globalBatch ?? batchSize * gradAccum * ranks }
}
