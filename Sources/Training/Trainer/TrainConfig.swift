import Adapters
import Foundation

/// The resolved configuration of a training run (written to `run.json`; CLI.md `train` flags).
public struct TrainConfig: Codable, Sendable, Equatable {
    public var model: String
    public var data: String
    public var valData: String?
    public var output: String
    public var adapterType: String = "ndlinear"
    public var r: Int = 8
    /// LoRA `lora_alpha` (default 2r) or NdLinear α (default 1.0, the reference's).
    public var alpha: Float?
    public var dropout: Float = 0
    public var rslora = false
    public var ndlinearInit: String = "reference"
    public var targetModules: String = "all-linear"
    public var layers: String?
    public var adapterInit: String?
    public var adapterAlpha: Float?
    public var template: String = "auto"
    public var maxLength: Int = 512
    public var maskPrompt = true
    public var packing = false
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
    public var schedule: String = "linear"
    public var warmupSteps: Int?
    public var warmupRatio: Double?
    public var maxGradNorm: Double = 1.0
    public var seed: UInt64 = 42
    public var shuffle = true
    public var valSplit: Double?
    public var checkpointing = false
    public var threads: Int?
    public var saveEvery: Int?
    public var evalEvery: Int?
    public var keepCheckpoints: Int?
    public var earlyStoppingPatience: Int?
    public var resume: String?
    public var strict = false
    public var logEvery: Int = 10
    /// Validation examples evaluated at most (all by default).
    public var valLimit: Int?

    public init(model: String, data: String, output: String) {
        self.model = model; self.data = data; self.output = output
    }

    public var kind: AdapterKind { AdapterKind(rawValue: adapterType) ?? .ndlinear }
    public var resolvedAlpha: Float { alpha ?? (kind == .lora ? Float(2 * r) : 1) }

    /// Checks values a user can get wrong, naming the flag.
    public func validate() throws {
        func bad(_ s: String) -> TrainingError { .invalidOption(s) }
        guard AdapterKind(rawValue: adapterType) != nil else { throw bad("--adapter-type '\(adapterType)': expected lora or ndlinear") }
        guard NdLinearInit(rawValue: ndlinearInit) != nil else { throw bad("--ndlinear-init '\(ndlinearInit)': expected reference or zero") }
        guard LRScheduleKind(rawValue: schedule) != nil else { throw bad("--schedule '\(schedule)': expected constant, linear or cosine") }
        guard r > 0 else { throw bad("--r \(r): must be positive") }
        guard maxLength > 1 else { throw bad("--max-length \(maxLength): must be at least 2") }
        guard batchSize > 0, gradAccum > 0 else { throw bad("--batch-size and --grad-accum must be positive") }
        if let g = globalBatch {
            guard g > 0 else { throw bad("--global-batch \(g): must be positive") }
            guard gradAccum == 1 else { throw bad("give --global-batch or --grad-accum, not both (with --global-batch the accumulation follows from --batch-size and the number of ranks)") }
        }
        guard lr >= 0, lr.isFinite else { throw bad("--lr \(lr): must be a finite number ≥ 0") }
        guard adamBetas.count == 2, adamBetas.allSatisfy({ $0 >= 0 && $0 < 1 }) else { throw bad("--adam-betas: expected two numbers in [0, 1), e.g. 0.9,0.999") }
        guard adamEps > 0 else { throw bad("--adam-eps must be positive") }
        guard dropout >= 0, dropout < 1 else { throw bad("--dropout \(dropout): expected 0 ≤ p < 1") }
        guard maxGradNorm >= 0 else { throw bad("--max-grad-norm must be ≥ 0 (0 disables clipping)") }
        if epochs != nil, steps != nil { throw bad("give --epochs or --steps, not both") }
        if let e = epochs, e <= 0 { throw bad("--epochs must be positive") }
        if let s = steps, s <= 0 { throw bad("--steps must be positive") }
        if warmupSteps != nil, warmupRatio != nil { throw bad("give --warmup-steps or --warmup-ratio, not both") }
        if let w = warmupRatio, !(0...1).contains(w) { throw bad("--warmup-ratio \(w): expected a fraction in [0, 1]") }
        if let v = valSplit, !(v > 0 && v < 1) { throw bad("--val-split \(v): expected a fraction in (0, 1)") }
        if valSplit != nil, valData != nil { throw bad("give --val-data or --val-split, not both") }
        if let k = keepCheckpoints, k < 1 { throw bad("--keep-checkpoints must be ≥ 1") }
        if let s = saveEvery, s < 1 { throw bad("--save-every must be ≥ 1") }
        if let s = evalEvery, s < 1 { throw bad("--eval-every must be ≥ 1") }
        guard logEvery >= 1 else { throw bad("--log-every must be ≥ 1") }
    }
}
