import Adapters
import Foundation
import LLMCore

/// A training configuration resolved before any data is read or any model is loaded
/// (`TrainConfig.resolve()`): every value checked that can be checked without them, the
/// defaults filled in, the target selection parsed and the adapter's source decided.
public struct TrainPlan: Sendable {
    /// Where the trained adapter starts.
    public enum AdapterSource: Sendable {
        /// New adapters of this spec.
        case fresh(AdapterSpec)
        /// The values of an existing adapter (`--adapter-init`); its files decide the modules,
        /// layers, rank and scaling; the α values are for files that carry none.
        case initialValues(path: String, ndlinearAlpha: Float, loraAlpha: Float)
    }

    /// The configuration with its defaults filled in (what `run.json` records; not to be
    /// resolved again: with `adapterInit` its filled-in shape fields would count as given).
    public let config: TrainConfig
    public let adapter: AdapterSource

    /// Checks what needs the model's config but neither its weights nor the data: the layers
    /// asked for exist, and a global batch has a row for every rank.
    public func check(model: ModelConfig, ranks: Int) throws {
        if case let .fresh(spec) = adapter { try spec.targets.validate(for: model) }
        guard config.globalBatch != nil || Checked.mul(config.batchSize, config.gradAccum, ranks) != nil else {
            throw TrainingError.invalidOption("--batch-size \(config.batchSize) × --grad-accum \(config.gradAccum) × \(ranks) ranks overflows a 64-bit count of rows")
        }
        let global = config.globalBatch(ranks: ranks)
        guard ranks <= 1 || global >= ranks else {
            throw TrainingError.invalidOption("a global batch of \(global) rows over \(ranks) ranks leaves rank \(global) without data: "
                + "use --global-batch ≥ \(ranks) (or a larger --batch-size/--grad-accum) or fewer ranks")
        }
    }

    /// The adapters the run trains, on `model`'s projections.
    public func makeAdapters(model: ModelConfig) throws -> AdapterSet {
        let set: AdapterSet
        switch adapter {
        case let .fresh(spec):
            // The adapter's size comes from flags (--r): refused before it is allocated when
            // it, its gradients and its AdamW moments cannot fit.
            let params = Self.trainableParameters(spec: spec, model: model)
            let need = Checked.mul(params, Self.bytesPerTrainableParameter)
            if let problem = SystemMemory.shortfall(need) {
                let flag = spec.kind != .ndlinear ? "--r \(spec.rank)" : "--target-modules \(config.targetModules ?? TrainConfig.Defaults.targetModules)"
                guard let params, need != nil else { throw TrainingError.invalidOption("\(flag): the adapter's parameter count overflows a 64-bit count") }
                throw TrainingError.invalidOption("\(flag): the adapter's \(params) parameters with their gradients "
                    + "and AdamW moments need \(SystemMemory.format(need)); \(problem)")
            }
            set = try AdapterSet.create(spec: spec, config: model, seed: config.seed)
        case let .initialValues(path, ndlinearAlpha, loraAlpha):
            set = try AdapterIO.load(URL(fileURLWithPath: path), config: model, ndlinearAlpha: ndlinearAlpha, loraAlpha: loraAlpha)
            guard set.kind == config.adapterType else {
                throw TrainingError.invalidOption("--adapter-init \(path) holds a \(set.kind?.rawValue ?? "?") adapter but --adapter-type is \(config.adapterType.rawValue)")
            }
            for a in set.adapters { a.dropout = config.dropout }
        }
        guard !set.adapters.isEmpty else {
            throw TrainingError.invalidOption("--target-modules \(config.targetModules ?? TrainConfig.Defaults.targetModules) --layers '\(config.layers ?? "")' "
                + "select no projection of the model's \(model.numLayers) layers: nothing would be trained")
        }
        set.baseModelName = config.model
        return set
    }

    // MARK: Memory

    /// f32 value, gradient and the two AdamW moments of each trainable parameter.
    public static let bytesPerTrainableParameter = 16

    /// Trainable parameters of `spec` on `model` with checked arithmetic (nil on overflow):
    /// `AdapterSet.parameterCount(spec:config:)` for ranks that come straight from a flag.
    public static func trainableParameters(spec: AdapterSpec, model: ModelConfig) -> Int? {
        var sum: Int? = 0
        for t in spec.targets.targets(for: model) {
            let (o, i) = model.shape(of: t.projection)
            switch spec.kind {
            case .lora:
                sum = Checked.add(sum, Checked.mul(spec.rank(for: t.projection.modulePath(layer: t.layer)), i + o))
            case .dora:
                sum = Checked.add(sum, Checked.add(Checked.mul(spec.rank(for: t.projection.modulePath(layer: t.layer)), i + o), o))
            case .ndlinear:
                let (a, b) = balancedFactors(i), (c, d) = balancedFactors(o)
                sum = Checked.add(sum, c * a + d * b)
            }
        }
        return sum
    }

    /// Refuses a run whose step would not fit in memory, before its activation arena is
    /// allocated: the arena for `batchSize × seqLen` tokens (`seqLen`: the packing length, or
    /// the longest example) plus the adapter with its gradients and AdamW moments, against
    /// `SystemMemory` (the base weights are memory-mapped and not counted). `adapterOutputs`:
    /// floats per token the adapters keep between forward and backward beyond the arena (DoRA
    /// keeps each adapted projection's output).
    public func checkMemory(model: ModelConfig, seqLen: Int, trainableParameters: Int, adapterOutputs: Int = 0) throws {
        let kept = Checked.mul(config.batchSize, seqLen, adapterOutputs, 4)
        let acts = Checked.add(model.activationBytes(batch: config.batchSize, seqLen: seqLen, checkpointing: config.checkpointing), kept)
        let adapterBytes = Checked.mul(trainableParameters, Self.bytesPerTrainableParameter)
        let total = Checked.add(acts, adapterBytes)
        guard let problem = SystemMemory.shortfall(total) else { return }
        let rows = config.packing ? "--batch-size \(config.batchSize) × --max-length \(config.maxLength) (packed rows)"
            : "--batch-size \(config.batchSize) × \(seqLen) tokens (the longest example; --max-length \(config.maxLength))"
        var hint = ""
        if !config.checkpointing, let c = Checked.add(model.activationBytes(batch: config.batchSize, seqLen: seqLen, checkpointing: true), kept, adapterBytes),
           SystemMemory.shortfall(c) == nil {
            hint = "; with --checkpointing it needs \(SystemMemory.format(c))"
        }
        throw TrainingError.invalidOption("\(rows): a training step needs \(SystemMemory.format(total)) (activations \(SystemMemory.format(acts)), "
            + "adapter with gradients and AdamW moments \(SystemMemory.format(adapterBytes))); \(problem)\(hint)")
    }
}

extension TrainConfig {
    /// Checks everything that can be checked before the data are read and the model is loaded,
    /// each error naming its flag (bad input), and fills in the defaults. With `adapterInit`,
    /// the adapter-shape flags its files override are refused when given (`--target-modules`,
    /// `--layers`, `--ndlinear-init`, `--rslora`, and `--r` unless the adapter is a bare
    /// `.safetensors` file, whose LoRA α defaults to 2·r).
    public func resolve() throws -> TrainPlan {
        try checkValues()
        var c = self
        c.r = r ?? Defaults.rank
        c.targetModules = targetModules ?? Defaults.targetModules
        c.ndlinearInit = ndlinearInit ?? Defaults.ndlinearInit
        let rank = c.r!
        let adapter: TrainPlan.AdapterSource
        if let path = adapterInit {
            try checkOverridden(by: path)
            adapter = .initialValues(path: path, ndlinearAlpha: alpha ?? adapterAlpha ?? AdapterKind.ndlinear.defaultAlpha(rank: rank),
                                     loraAlpha: alpha ?? AdapterKind.lora.defaultAlpha(rank: rank))
        } else {
            let targets = try TargetSelection.parse(modules: c.targetModules, layers: layers)
            adapter = .fresh(AdapterSpec(kind: adapterType, targets: targets, rank: rank, alpha: alpha ?? adapterType.defaultAlpha(rank: rank),
                                         dropout: dropout, useRSLoRA: rslora, ndlinearInit: c.ndlinearInit!))
        }
        try checkInputsExist()
        return TrainPlan(config: c, adapter: adapter)
    }

    /// Values a user can get wrong, naming the flag.
    func checkValues() throws {
        func bad(_ s: String) -> TrainingError { .invalidOption(s) }
        if let r, r <= 0 { throw bad("--r \(r): must be positive") }
        guard maxLength > 1 else { throw bad("--max-length \(maxLength): must be at least 2") }
        guard batchSize > 0, gradAccum > 0 else { throw bad("--batch-size and --grad-accum must be positive") }
        guard Checked.mul(batchSize, gradAccum) != nil else { throw bad("--batch-size \(batchSize) × --grad-accum \(gradAccum) overflows a 64-bit count of rows") }
        if let g = globalBatch {
            guard g > 0 else { throw bad("--global-batch \(g): must be positive") }
            guard gradAccum == 1 else { throw bad("give --global-batch or --grad-accum, not both (with --global-batch the accumulation follows from --batch-size and the number of ranks)") }
        }
        guard lr >= 0, lr.isFinite else { throw bad("--lr \(lr): must be a finite number ≥ 0") }
        guard adamBetas.count == 2, adamBetas.allSatisfy({ $0 >= 0 && $0 < 1 }) else { throw bad("--adam-betas: expected two numbers in [0, 1), e.g. 0.9,0.999") }
        guard adamEps > 0, adamEps.isFinite else { throw bad("--adam-eps \(adamEps): must be a finite number > 0") }
        guard weightDecay >= 0, weightDecay.isFinite else { throw bad("--weight-decay \(weightDecay): must be a finite number ≥ 0") }
        if let a = alpha, !a.isFinite { throw bad("--alpha \(a): must be a finite number") }
        if let a = adapterAlpha, !a.isFinite { throw bad("--adapter-alpha \(a): must be a finite number") }
        guard dropout >= 0, dropout < 1 else { throw bad("--dropout \(dropout): expected 0 ≤ p < 1") }
        // PEFT's DoRA with dropout multiplies the base weight by the dropped-out input a second
        // time (a different function from the one without); not implemented.
        guard adapterType != .dora || dropout == 0 else { throw bad("--dropout \(dropout) with --adapter-type dora: DoRA trains without dropout here (use --dropout 0)") }
        guard maxGradNorm >= 0 else { throw bad("--max-grad-norm must be ≥ 0 (0 disables clipping)") }
        if epochs != nil, steps != nil { throw bad("give --epochs or --steps, not both") }
        if let e = epochs, e <= 0 { throw bad("--epochs must be positive") }
        if let s = steps, s <= 0 { throw bad("--steps must be positive") }
        if warmupSteps != nil, warmupRatio != nil { throw bad("give --warmup-steps or --warmup-ratio, not both") }
        if let w = warmupSteps, w < 0 { throw bad("--warmup-steps must be ≥ 0") }
        if let w = warmupRatio, !(0...1).contains(w) { throw bad("--warmup-ratio \(w): expected a fraction in [0, 1]") }
        if let v = valSplit, !(v > 0 && v < 1) { throw bad("--val-split \(v): expected a fraction in (0, 1)") }
        if valSplit != nil, valData != nil { throw bad("give --val-data or --val-split, not both") }
        if let v = valLimit, v < 1 { throw bad("--val-limit must be ≥ 1") }
        if let k = keepCheckpoints, k < 1 { throw bad("--keep-checkpoints must be ≥ 1") }
        if let s = saveEvery, s < 1 { throw bad("--save-every must be ≥ 1") }
        if let s = evalEvery, s < 1 { throw bad("--eval-every must be ≥ 1") }
        if let p = earlyStoppingPatience, p < 1 { throw bad("--early-stopping-patience must be ≥ 1") }
        guard logEvery >= 1 else { throw bad("--log-every must be ≥ 1") }
    }

    /// With `--adapter-init`, the flags its files override: refused when given, rather than
    /// silently ignored. (`--adapter-type` is checked against the files; `--alpha` and
    /// `--adapter-alpha` are the α of files that carry none; `--dropout` applies.)
    func checkOverridden(by path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw TrainingError.invalidOption("--adapter-init \(path): no such adapter directory or .safetensors file")
        }
        var given: [String] = []
        if targetModules != nil { given.append("--target-modules") }
        if layers != nil { given.append("--layers") }
        if ndlinearInit != nil { given.append("--ndlinear-init") }
        if rslora { given.append("--rslora") }
        if r != nil, isDir.boolValue { given.append("--r") }
        guard given.isEmpty else {
            throw TrainingError.invalidOption("\(given.joined(separator: ", ")) cannot be given with --adapter-init \(path): "
                + "its files decide the adapted modules, layers, rank and scaling")
        }
    }

    /// The input files exist (read later, after the model is loaded).
    func checkInputsExist() throws {
        for (flag, path) in [("--data", data), ("--val-data", valData)] {
            guard let path else { continue }
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
                throw TrainingError.invalidOption("\(flag) \(path): no such file")
            }
            guard !isDir.boolValue else {
                throw TrainingError.invalidOption("\(flag) \(path): is a directory; expected a JSON or JSONL data file")
            }
        }
    }
}
