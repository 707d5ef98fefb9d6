import Adapters
import Foundation
import LLMCore
import Tokenize

/// The training loop: data → templates → batches → forward/backward → clip → AdamW, with
/// validation, checkpoints, resume and progress (issue #5; CLI.md `train`). This file is the
/// recipe; the data (`TrainingData`), data parallelism (`DataParallel.swift`), checkpoints,
/// metrics, progress and fault injection live beside it.
public final class Trainer {
    /// The resolved configuration (every default filled in).
    public let config: TrainConfig
    let plan: TrainPlan
    public let model: TransformerModel
    public let adapters: AdapterSet
    public let tokenizer: (any Tokenizer)?
    let data: TrainingData
    let optimizer: AdamW
    public let schedule: LRSchedule
    var stream: DataStream
    var step = 0
    let outputDir: URL
    var acts: Activations
    /// Human progress lines; stderr by default.
    public var log: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
    var bestVal: (loss: Double, step: Int)?
    /// The validation loss before step 1 with the initial adapter and with the base model alone
    /// (recorded in run.json; nil without validation data or on resume).
    public internal(set) var initialValidation: InitialValidation?
    var badEvals = 0
    let fault = InjectedFault.fromEnvironment()
    /// The data-parallel job this trainer is part of (`SingleProcess` by default; issue 11).
    public let comm: any Communicator
    /// Adapter gradients + [target tokens, loss sum, tokens, stop request]: the one buffer
    /// summed over ranks per step (allocated only when distributed).
    var reduceBuffer: UnsafeMutablePointer<Double>?

    public var totalSteps: Int { schedule.totalSteps }
    /// Rows per optimizer step over all ranks.
    public var globalBatch: Int { config.globalBatch(ranks: comm.size) }
    public var trainCount: Int { data.train.count }
    public var valCount: Int { data.val.count }

    // MARK: Setup

    /// Resolves and checks `config` first (nothing is read before it passes), then reads the
    /// data, builds the adapters and the schedule.
    /// - Parameters:
    ///   - chat: the model's chat template, which `template: chat` needs.
    ///   - communicator: the job to train in (every rank builds the same Trainer); only rank 0
    ///     writes files or prints.
    public convenience init(config: TrainConfig, weights: ModelWeights, tokenizer: (any Tokenizer)?, chat: PromptTemplate.Chat? = nil,
                            communicator: any Communicator = SingleProcess()) throws {
        try self.init(plan: try config.resolve(), weights: weights, tokenizer: tokenizer, chat: chat, communicator: communicator)
    }

    /// A trainer for a resolved configuration (`TrainConfig.resolve()`, which the command line
    /// calls before it loads the model): checks it against the model, then reads the data.
    public init(plan: TrainPlan, weights: ModelWeights, tokenizer: (any Tokenizer)?, chat: PromptTemplate.Chat? = nil,
                communicator: any Communicator = SingleProcess()) throws {
        try plan.check(model: weights.config, ranks: communicator.size)
        let config = plan.config
        self.plan = plan
        self.config = config
        comm = communicator
        let quiet = !communicator.isRoot
        if quiet { log = { _ in } }
        self.tokenizer = tokenizer
        outputDir = URL(fileURLWithPath: config.output)

        data = try TrainingData(config: config, tokenizer: tokenizer, chat: chat, vocabSize: weights.config.vocabSize) { w in
            if !quiet { FileHandle.standardError.write(Data("warning: \(w)\n".utf8)) }
        }
        adapters = try plan.makeAdapters(model: weights.config)
        try adapters.bind(to: weights)   // new DoRA magnitudes start at the base's row norms
        model = TransformerModel(weights: weights, adapters: adapters)
        optimizer = AdamW(parameters: adapters.parameters, betas: (config.adamBetas[0], config.adamBetas[1]),
                          eps: config.adamEps, weightDecay: config.weightDecay)

        stream = data.stream(config)
        let total = config.steps ?? data.countSteps(stream, rowsPerStep: config.globalBatch(ranks: communicator.size))
        let warmup = config.warmupSteps ?? config.warmupRatio.map { LRSchedule.warmup(ratio: $0, totalSteps: total) } ?? 0
        schedule = LRSchedule(kind: config.schedule, baseLR: config.lr, warmupSteps: warmup, totalSteps: total)

        let seqCap = config.packing ? config.maxLength : min(config.maxLength, data.longest)
        try plan.checkMemory(model: weights.config, seqLen: seqCap, trainableParameters: adapters.parameterCount,
                             adapterOutputs: adapters.adapters.reduce(0) { $0 + ($1 is DoRAAdapter ? $1.outFeatures : 0) })
        acts = Activations(config: weights.config, batch: config.batchSize, seqLen: seqCap, checkpointing: config.checkpointing)
    }

    deinit { reduceBuffer?.deallocate() }

    /// Zeroes the adapter gradients, then runs forward + backward over every micro-batch of
    /// one optimizer step. The loss is normalised by the target count of the WHOLE accumulated
    /// batch, so accumulation equals one large batch (not a mean of micro-batch means). In a
    /// distributed run `normalizer` is the target count of the GLOBAL batch (every rank knows
    /// all its rows), so the ranks' gradients only need summing; `firstMicro` is the global
    /// index of the first micro-batch, which seeds dropout as a 1-rank run would.
    /// Returns the summed loss, the normalizer, this call's target count and real tokens.
    func accumulateGradients(_ micro: [[[Int]]], normalizer global: Int? = nil, firstMicro: Int = 0) throws
        -> (lossSum: Double, normalizer: Int, targets: Int, tokens: Int) {
        let batches = try micro.map(data.batch)
        let local = batches.reduce(0) { $0 + $1.targets.filter { $0 >= 0 }.count }
        let normalizer = global ?? local
        adapters.zeroGradients()
        var lossSum = 0.0, tokens = 0
        for (k, (input, targets, realTokens)) in batches.enumerated() {
            adapters.setDropoutSeed(config.seed &+ UInt64(step) &* 1_000_003 &+ UInt64(firstMicro + k))
            try model.forward(input, acts: acts, training: true, targets: targets)
            lossSum += model.lossAndGradient(acts: acts, targets: targets, normalizer: normalizer)
            model.backward(input, acts: acts)
            tokens += realTokens
        }
        return (lossSum, normalizer, local, tokens)
    }

    // MARK: Validation

    /// Mean token loss over the validation set (no gradients, no dropout).
    public func validationLoss() throws -> (loss: Double, tokens: Int)? {
        guard !data.val.isEmpty else { return nil }
        // Shared with `finetune eval --metric loss` (Eval/LossEvaluation.swift). Distributed:
        // each rank scores a contiguous block of the examples, then (sum, count) are summed.
        let part = Self.shard(data.val.count, rank: comm.rank, size: comm.size)
        var r = try targetLossSum(model: model, examples: Array(data.val[part]), batchSize: config.batchSize, padId: data.padId, acts: acts)
        if comm.isDistributed {
            var pair = [r.sum, Double(r.count)]
            pair.withUnsafeMutableBufferPointer { comm.allReduceSum($0.baseAddress!, count: 2) }
            r = (pair[0], Int(pair[1]))
        }
        return r.count > 0 ? (r.sum / Double(r.count), r.count) : nil
    }

    /// The validation loss of the base model alone (the adapters detached for one pass).
    func baseValidationLoss() throws -> Double {
        model.adapters = nil
        defer { model.adapters = adapters }
        return try validationLoss()?.loss ?? .nan
    }

    // MARK: The loop

    /// Trains to the end. Distributed: every rank calls this; set-up failures on any rank stop
    /// all ranks before the first step (`Distributed.agree`), and rank 0 alone touches the
    /// output directory.
    public func run() throws -> TrainSummary {
        let metricsURL = outputDir.appendingPathComponent("metrics.jsonl")
        let metrics: MetricsWriter? = try Distributed.agree(comm, fingerprint: comm.isDistributed ? data.fingerprint : nil, mismatch: {
            TrainingError.data("the tokenized training/validation data on this rank differ from rank 0's (\(self.data.train.count) training, "
                + "\(self.data.val.count) validation examples here): every rank must read the same --data/--val-data with the same tokenizer")
        }) {
            try checkShards()
            guard comm.isRoot else { return nil }
            // Never write over an earlier run unless told to (--resume continues it, --overwrite
            // replaces it): a failed run must not destroy a finished one.
            try prepareOutputDirectory()
            if let r = config.resume {
                try resume(from: r)
                // Rows after the checkpoint are the interrupted run's own, redone from here.
                try Checkpoints.truncateMetrics(metricsURL, afterStep: step)
            }
            try writeRunJSON()
            return try MetricsWriter(url: metricsURL)
        }
        try broadcastState()
        StopSignal.install()
        defer { StopSignal.uninstall() }

        let valBefore = step == 0 ? try validationLoss() : nil
        if let v = valBefore {
            let base = try baseValidationLoss()
            initialValidation = InitialValidation(adapter_val_loss: v.loss, base_val_loss: base)
            log(String(format: "validation loss before training: %.4f with the initial adapter, %.4f for the base model (%d tokens)", v.loss, base, v.tokens))
            if let w = initialValidation!.warning(adapterType: config.adapterType) { log("warning: " + w) }
            var row = ValidationMetrics(step: 0, loss: v.loss, tokens: v.tokens)
            row.base_val_loss = base
            try metrics?.append(row)
            if comm.isRoot { try writeRunJSON() }
        }
        log("training \(adapters.kind!.rawValue) (\(adapters.parameterCount) parameters in \(adapters.adapters.count) modules) on \(data.train.count) examples for \(totalSteps) steps" + (data.val.isEmpty ? "" : ", \(data.val.count) validation examples")
            + (comm.isDistributed ? " on \(comm.size) ranks (global batch \(globalBatch) rows)" : ""))
        let start = Date()
        let startStep = step
        var tokensSeen = 0
        var lastLoss: Double?
        var lastValLoss: Double?
        var stoppedEarly = false
        let progress = ProgressPrinter(log: log, quiet: !comm.isRoot)

        while step < totalSteps {
            let stepStart = Date()
            // Every rank draws the same global batch (the data position stays global), then
            // runs its own contiguous share of the rows.
            let rows = data.packer.nextRows(from: &stream, count: globalBatch)
            guard !rows.isEmpty else { break }
            step += 1
            let (micro, first) = myMicroBatches(rows)
            var lossSum: Double, normalizer: Int, tokens: Int, stopRequested: Bool
            if comm.isDistributed {
                let local = try accumulateGradients(micro, normalizer: try data.targetCount(rows), firstMicro: first)
                fault?.fire(.atStep, step: step, rank: comm.rank)
                (lossSum, normalizer, tokens, stopRequested) = reduceStep(lossSum: local.lossSum, targets: local.targets, tokens: local.tokens)
            } else {
                (lossSum, normalizer, _, tokens) = try accumulateGradients(micro)
                fault?.fire(.atStep, step: step, rank: comm.rank)
                stopRequested = StopSignal.requested
            }
            let loss = lossSum / Double(max(normalizer, 1))
            let norm = gradientNorm(adapters.parameters)
            guard loss.isFinite, norm.isFinite else {
                // A non-finite base weight makes the very first loss NaN: name it (bad input)
                // rather than call it divergence. One pass over the weights, only now.
                try model.weights.checkFinite(context: "found when the loss of step \(step) was \(loss)")
                throw TrainingError.diverged(step: step, what: "loss \(loss), gradient norm \(norm)" +
                    (latestCheckpoint().map { "; last good checkpoint: \($0.path)" } ?? "; no checkpoint was written"))
            }
            if config.maxGradNorm > 0 { clipGradients(adapters.parameters, maxNorm: config.maxGradNorm, norm: norm) }
            let lr = schedule.lr(step: step)
            optimizer.update(lr: lr)
            let dt = Date().timeIntervalSince(stepStart)
            tokensSeen += tokens
            lastLoss = loss
            let row = StepMetrics(step: step, loss: loss, lr: lr, grad_norm: norm, target_tokens: normalizer, tokens: tokens,
                                  tokens_per_s: Double(tokens) / max(dt, 1e-9), elapsed_s: Date().timeIntervalSince(start),
                                  epoch: Double(stream.position.consumed) / Double(data.train.count))
            try metrics?.append(row)
            progress.update(row, total: totalSteps, every: config.logEvery,
                            rate: Double(tokensSeen) / max(Date().timeIntervalSince(start), 1e-9), stepsDone: step - startStep)

            var saveNow = config.saveEvery.map { step % $0 == 0 } ?? false
            if let every = config.evalEvery, step % every == 0 || step == totalSteps, let v = try validationLoss() {
                lastValLoss = v.loss
                try metrics?.append(ValidationMetrics(step: step, loss: v.loss, tokens: v.tokens))
                progress.note(String(format: "step %d: validation loss %.4f", step, v.loss))
                if bestVal == nil || v.loss < bestVal!.loss {
                    bestVal = (v.loss, step); badEvals = 0
                    if config.saveEvery != nil || config.keepCheckpoints != nil { saveNow = true }
                } else {
                    badEvals += 1
                    if let p = config.earlyStoppingPatience, badEvals >= p {
                        progress.note("early stopping: no validation improvement in \(p) evaluations (best \(String(format: "%.4f", bestVal!.loss)) at step \(bestVal!.step))")
                        stoppedEarly = true
                    }
                }
            }
            if stopRequested || StopSignal.requested && !comm.isDistributed {
                let dir = try saveCheckpoint()
                progress.finish()
                throw TrainingError.interrupted(step: step, checkpoint: dir.path)
            }
            if saveNow { try saveCheckpoint() }
            if stoppedEarly { break }
        }
        progress.finish()
        let wall = Date().timeIntervalSince(start)
        let adapterDir = outputDir.appendingPathComponent("adapter")
        if comm.isRoot { try saveAdapter(to: adapterDir) }
        var valAfter = lastValLoss
        if !data.val.isEmpty, config.evalEvery == nil || lastValLoss == nil {
            if let v = try validationLoss() {
                valAfter = v.loss
                try metrics?.append(ValidationMetrics(step: step, loss: v.loss, tokens: v.tokens))
            }
        }
        if comm.isRoot { try? LossPlot.write(metrics: metricsURL, to: outputDir.appendingPathComponent("loss.svg")) }
        return TrainSummary(steps: step, finalLoss: lastLoss, valLossBefore: valBefore?.loss, valLossAfter: valAfter,
                            bestValLoss: bestVal?.loss, bestStep: bestVal?.step, wallSeconds: wall,
                            tokensPerSecond: Double(tokensSeen) / max(wall, 1e-9), adapterDirectory: adapterDir, stoppedEarly: stoppedEarly)
    }
}

// MARK: - The output directory

extension Trainer {
    /// What a run writes into its output directory (and `--overwrite` removes).
    static let runArtifacts = ["metrics.jsonl", "run.json", "loss.svg", "adapter", "checkpoints"]

    /// Whether `resume` (a run directory or one of its checkpoints) lies in `output`.
    static func resumes(_ resume: String, into output: String) -> Bool {
        func canonical(_ p: String) -> String { URL(fileURLWithPath: p).resolvingSymlinksInPath().standardizedFileURL.path }
        let r = canonical(resume), o = canonical(output)
        return r == o || r.hasPrefix(o.hasSuffix("/") ? o : o + "/")
    }

    /// Checks `--output` before anything is written (the command line calls it before the model
    /// is loaded, `run` again before the first write): it must be a directory that can be
    /// created, or an empty one, or the run `--resume` continues; anything else (a finished
    /// or failed earlier run, unrelated files) is refused unless `--overwrite` is given.
    /// - Throws: `TrainingError.invalidOption` naming `--output` and what it holds.
    public static func checkOutputDirectory(_ config: TrainConfig) throws {
        let path = config.output
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else {
            if let file = ErrorText.fileInPath(path) {
                throw TrainingError.invalidOption("--output \(path): cannot create the directory: \(file) is a file, not a directory")
            }
            return
        }
        guard isDir.boolValue else {
            throw TrainingError.invalidOption("--output \(path) is a file; expected a directory (a new or empty one, or the run to --resume)")
        }
        let entries: [String]
        do { entries = try fm.contentsOfDirectory(atPath: path).sorted() } catch {
            throw TrainingError.invalidOption("--output \(path): cannot list the directory: \(ErrorText.reason(error, path: path))")
        }
        guard !entries.isEmpty, !config.overwrite else { return }
        if let r = config.resume, resumes(r, into: path) { return }
        let shown = entries.prefix(4).joined(separator: ", ") + (entries.count > 4 ? ", … (\(entries.count) entries)" : "")
        let earlier = entries.contains { runArtifacts.contains($0) } ? "an earlier run" : "files"
        let hint = config.resume.map { "it is not the run --resume \($0) continues; " } ?? ""
        throw TrainingError.invalidOption("--output \(path) already holds \(earlier) (\(shown)); \(hint)refusing to write over it. "
            + "Continue that run with --resume \(path), replace it with --overwrite, or choose a new directory")
    }

    /// `checkOutputDirectory`, then with `--overwrite` (and not resuming from inside it) removes
    /// what an earlier run wrote there — other files stay — and creates the directory.
    func prepareOutputDirectory() throws {
        try Self.checkOutputDirectory(config)
        let fm = FileManager.default
        if config.overwrite, !(config.resume.map { Self.resumes($0, into: config.output) } ?? false) {
            for name in Self.runArtifacts {
                let u = outputDir.appendingPathComponent(name)
                guard fm.fileExists(atPath: u.path) else { continue }
                do { try fm.removeItem(at: u) } catch {
                    throw TrainingError.system("--overwrite: cannot remove \(u.path): \(ErrorText.reason(error, path: u.path))")
                }
            }
        }
        do { try fm.createDirectory(at: outputDir, withIntermediateDirectories: true) } catch {
            throw TrainingError.invalidOption("--output \(config.output): cannot create the directory: \(ErrorText.reason(error, path: outputDir.path))")
        }
    }
}
