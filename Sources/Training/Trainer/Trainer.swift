import Adapters
import Foundation
import LLMCore
import Tokenize
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Signals

/// Set by SIGINT/SIGTERM; the trainer finishes the current step, checkpoints and exits.
private let stopFlag: UnsafeMutablePointer<Int32> = {
    let p = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
    p.pointee = 0
    return p
}()

/// One optimizer step's numbers (a metrics.jsonl row).
public struct StepMetrics: Codable, Sendable {
    public var step: Int
    public var loss: Double
    public var lr: Double
    public var grad_norm: Double
    /// Target tokens of the step (the loss's denominator) and all real tokens processed.
    public var target_tokens: Int
    public var tokens: Int
    public var tokens_per_s: Double
    public var elapsed_s: Double
    public var epoch: Double
}

public struct ValidationMetrics: Codable, Sendable {
    public var step: Int
    public var val_loss: Double
    public var val_ppl: Double
    public var val_tokens: Int
}

/// What a finished run reports.
public struct TrainSummary: Sendable {
    public var steps: Int
    public var finalLoss: Double?
    public var valLossBefore: Double?
    public var valLossAfter: Double?
    public var bestValLoss: Double?
    public var bestStep: Int?
    public var wallSeconds: Double
    public var tokensPerSecond: Double
    public var adapterDirectory: URL
    public var stoppedEarly: Bool
}

/// The training loop: data → templates → batches → forward/backward → clip → AdamW, with
/// validation, checkpoints, resume and progress (issue #5; CLI.md `train`).
public final class Trainer {
    public let config: TrainConfig
    public let model: TransformerModel
    public let adapters: AdapterSet
    public let tokenizer: (any Tokenizer)?
    let train: [TokenizedExample]
    let val: [TokenizedExample]
    let optimizer: AdamW
    public let schedule: LRSchedule
    let padId: Int
    var stream: DataStream
    var step = 0
    let outputDir: URL
    var acts: Activations
    /// Human progress lines; stderr by default.
    public var log: (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
    var bestVal: (loss: Double, step: Int)?
    var badEvals = 0
    /// Fault injection for the crash-safety tests (FINETUNE_FAULT=sigkill-at-step:N | sigkill-in-checkpoint:N).
    let fault: (kind: String, step: Int)?

    public var totalSteps: Int { schedule.totalSteps }
    public var trainCount: Int { train.count }
    public var valCount: Int { val.count }

    // MARK: Setup

    public init(config: TrainConfig, weights: ModelWeights, tokenizer: (any Tokenizer)?) throws {
        try config.validate()
        self.config = config
        self.tokenizer = tokenizer
        outputDir = URL(fileURLWithPath: config.output)
        let c = weights.config

        // Data.
        let template = try PromptTemplate(name: config.template)
        let options = TokenizeOptions(maskPrompt: config.maskPrompt, maxLength: config.maxLength)
        func prepare(_ path: String) throws -> [TokenizedExample] {
            let loaded = try loadExamples(from: URL(fileURLWithPath: path), strict: config.strict)
            for w in loaded.warnings { FileHandle.standardError.write(Data("warning: \(w)\n".utf8)) }
            let prepared = try prepareExamples(loaded.examples, template: template, tokenizer: tokenizer, options: options, strict: config.strict)
            for w in prepared.warnings { FileHandle.standardError.write(Data("warning: \(w)\n".utf8)) }
            if let bad = prepared.examples.lazy.flatMap(\.inputIds).first(where: { $0 < 0 || $0 >= c.vocabSize }) {
                throw TrainingError.data("\(path): token id \(bad) is outside the model's vocabulary [0, \(c.vocabSize))")
            }
            return prepared.examples
        }
        var trainSet = try prepare(config.data)
        var valSet: [TokenizedExample] = try config.valData.map(prepare) ?? []
        if let frac = config.valSplit {
            // A seeded split: the last ⌈frac·n⌉ of a shuffled order become validation data.
            let order = epochOrder(count: trainSet.count, seed: config.seed ^ 0x5EED_5EED, epoch: 0)
            let nVal = Int((frac * Double(trainSet.count)).rounded(.up))
            guard nVal < trainSet.count else { throw TrainingError.invalidOption("--val-split \(frac) leaves no training examples") }
            valSet = order.suffix(nVal).sorted().map { trainSet[$0] }
            trainSet = order.dropLast(nVal).sorted().map { trainSet[$0] }
        }
        if let lim = config.valLimit { valSet = Array(valSet.prefix(lim)) }
        guard !trainSet.isEmpty else { throw TrainingError.data("\(config.data): no usable training examples") }
        train = trainSet
        val = valSet
        padId = paddingId(for: tokenizer)

        // Adapters.
        let kind = config.kind
        let set: AdapterSet
        if let initPath = config.adapterInit {
            set = try AdapterIO.load(URL(fileURLWithPath: initPath), config: c,
                                     ndlinearAlpha: config.alpha ?? config.adapterAlpha, loraAlpha: config.alpha ?? Float(2 * config.r))
            guard set.kind == kind else {
                throw TrainingError.invalidOption("--adapter-init \(initPath) holds a \(set.kind?.rawValue ?? "?") adapter but --adapter-type is \(kind.rawValue)")
            }
            for a in set.adapters { a.dropout = config.dropout }
        } else {
            let spec = AdapterSpec(kind: kind, targets: try TargetSelection.parse(modules: config.targetModules, layers: config.layers),
                                   rank: config.r, alpha: config.resolvedAlpha, dropout: config.dropout, useRSLoRA: config.rslora,
                                   ndlinearInit: NdLinearInit(rawValue: config.ndlinearInit)!)
            set = try AdapterSet.create(spec: spec, config: c, seed: config.seed)
        }
        set.baseModelName = config.model
        adapters = set
        model = TransformerModel(weights: weights, adapters: set)
        optimizer = AdamW(parameters: set.parameters, betas: (config.adamBetas[0], config.adamBetas[1]),
                          eps: config.adamEps, weightDecay: config.weightDecay)

        // Schedule.
        stream = DataStream(count: train.count, seed: config.seed, shuffle: config.shuffle, epochs: config.steps == nil ? (config.epochs ?? 1) : nil)
        let total = config.steps ?? Self.countSteps(stream: stream, lengths: train.map(\.inputIds.count), config: config)
        let warmup = config.warmupSteps ?? config.warmupRatio.map { LRSchedule.warmup(ratio: $0, totalSteps: total) } ?? 0
        schedule = LRSchedule(kind: LRScheduleKind(rawValue: config.schedule)!, baseLR: config.lr, warmupSteps: warmup, totalSteps: total)

        let longest = max(train.map(\.inputIds.count).max() ?? 1, val.map(\.inputIds.count).max() ?? 1)
        let seqCap = config.packing ? config.maxLength : min(config.maxLength, longest)
        acts = Activations(config: c, batch: config.batchSize, seqLen: seqCap, checkpointing: config.checkpointing)

        if let f = ProcessInfo.processInfo.environment["FINETUNE_FAULT"], let colon = f.lastIndex(of: ":"), let n = Int(f[f.index(after: colon)...]) {
            fault = (String(f[..<colon]), n)
        } else {
            fault = nil
        }
    }

    /// Steps in `epochs` passes (packing changes how many examples a row holds).
    static func countSteps(stream: DataStream, lengths: [Int], config: TrainConfig) -> Int {
        var s = stream
        var steps = 0
        while !s.exhausted {
            for _ in 0..<config.gradAccum { _ = nextRows(&s, lengths: lengths, config: config) }
            steps += 1
        }
        return max(steps, 1)
    }

    /// The next micro-batch: `batchSize` rows of example indices (one per row, or several packed).
    static func nextRows(_ s: inout DataStream, lengths: [Int], config: TrainConfig) -> [[Int]] {
        var rows: [[Int]] = []
        for _ in 0..<config.batchSize {
            guard let first = s.next() else { break }
            var row = [first], used = lengths[first]
            if config.packing {
                while let i = s.peek(), used + lengths[i] <= config.maxLength {
                    row.append(i); used += lengths[i]; s.advance()
                }
            }
            rows.append(row)
        }
        return rows
    }

    func makeBatch(_ rows: [[Int]]) throws -> (ModelInput, [Int32], Int) {
        let batch = config.packing
            ? try Batch.packed(rows.map { $0.map { train[$0] } }, padId: padId)
            : try Batch.padded(rows.map { train[$0[0]] }, padId: padId)
        let input = ModelInput(batch: batch.batchSize, seqLen: batch.seqLen, tokens: batch.inputIds.map(Int.init),
                               attentionMask: batch.attentionMask.map(Int.init), positions: batch.positionIds.map(Int.init),
                               segments: config.packing ? batch.segmentIds.map(Int.init) : nil)
        let targets = shiftedTargets(labels: batch.labels, batch: batch.batchSize, seqLen: batch.seqLen)
        return (input, targets, batch.tokenCount)
    }

    /// Zeroes the adapter gradients, then runs forward + backward over every micro-batch of
    /// one optimizer step. The loss is normalised by the target count of the WHOLE accumulated
    /// batch, so accumulation equals one large batch (not a mean of micro-batch means).
    /// Returns the summed loss, that target count and the real tokens processed.
    func accumulateGradients(_ micro: [[[Int]]]) throws -> (lossSum: Double, normalizer: Int, tokens: Int) {
        let batches = try micro.map(makeBatch)
        let normalizer = batches.reduce(0) { $0 + $1.1.filter { $0 >= 0 }.count }
        adapters.zeroGradients()
        var lossSum = 0.0, tokens = 0
        for (k, (input, targets, realTokens)) in batches.enumerated() {
            adapters.setDropoutSeed(config.seed &+ UInt64(step) &* 1_000_003 &+ UInt64(k))
            try model.forward(input, acts: acts, training: true)
            lossSum += model.lossAndGradient(acts: acts, targets: targets, normalizer: normalizer)
            model.backward(input, acts: acts)
            tokens += realTokens
        }
        return (lossSum, normalizer, tokens)
    }

    // MARK: Validation

    /// Mean token loss over the validation set (no gradients, no dropout).
    public func validationLoss() throws -> (loss: Double, tokens: Int)? {
        guard !val.isEmpty else { return nil }
        // Shared with `finetune eval --metric loss` (Eval/LossEvaluation.swift).
        let r = try targetLossSum(model: model, examples: val, batchSize: config.batchSize, padId: padId, acts: acts)
        return r.count > 0 ? (r.sum / Double(r.count), r.count) : nil
    }

    // MARK: The loop

    public func run() throws -> TrainSummary {
        let fm = FileManager.default
        try fm.createDirectory(at: outputDir, withIntermediateDirectories: true)
        if let r = config.resume { try resume(from: r) }
        try writeRunJSON()
        let metricsURL = outputDir.appendingPathComponent("metrics.jsonl")
        try Checkpoints.truncateMetrics(metricsURL, afterStep: step)
        let metrics = try MetricsWriter(url: metricsURL)

        signal(SIGINT) { _ in stopFlag.pointee = 1 }
        signal(SIGTERM) { _ in stopFlag.pointee = 1 }
        defer { signal(SIGINT, SIG_DFL); signal(SIGTERM, SIG_DFL) }

        let valBefore = step == 0 ? try validationLoss() : nil
        if let v = valBefore {
            log(String(format: "validation loss before training: %.4f (%d tokens)", v.loss, v.tokens))
            try metrics.append(ValidationMetrics(step: 0, val_loss: v.loss, val_ppl: exp(v.loss), val_tokens: v.tokens))
        }
        log("training \(adapters.kind!.rawValue) (\(adapters.parameterCount) parameters in \(adapters.adapters.count) modules) on \(train.count) examples for \(totalSteps) steps" + (val.isEmpty ? "" : ", \(val.count) validation examples"))
        let lengths = train.map(\.inputIds.count)
        let start = Date()
        let startStep = step
        var tokensSeen = 0
        var lastLoss: Double?
        var lastValLoss: Double?
        var stoppedEarly = false
        let progress = Progress(total: totalSteps, log: log, every: config.logEvery)

        while step < totalSteps {
            let stepStart = Date()
            let micro = (0..<config.gradAccum).map { _ in Self.nextRows(&stream, lengths: lengths, config: config) }.filter { !$0.isEmpty }
            guard !micro.isEmpty else { break }
            step += 1
            let (lossSum, normalizer, tokens) = try accumulateGradients(micro)
            if fault?.kind == "sigkill-at-step", fault?.step == step { kill(getpid(), SIGKILL) }
            let loss = lossSum / Double(max(normalizer, 1))
            let norm = gradientNorm(adapters.parameters)
            guard loss.isFinite, norm.isFinite else {
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
                                  epoch: Double(stream.position.consumed) / Double(train.count))
            try metrics.append(row)
            progress.update(row, rate: Double(tokensSeen) / max(Date().timeIntervalSince(start), 1e-9), stepsDone: step - startStep)

            var saveNow = config.saveEvery.map { step % $0 == 0 } ?? false
            if let every = config.evalEvery, step % every == 0 || step == totalSteps, let v = try validationLoss() {
                lastValLoss = v.loss
                try metrics.append(ValidationMetrics(step: step, val_loss: v.loss, val_ppl: exp(v.loss), val_tokens: v.tokens))
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
            if stopFlag.pointee != 0 {
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
        try saveAdapter(to: adapterDir)
        var valAfter = lastValLoss
        if !val.isEmpty, config.evalEvery == nil || lastValLoss == nil {
            if let v = try validationLoss() {
                valAfter = v.loss
                try metrics.append(ValidationMetrics(step: step, val_loss: v.loss, val_ppl: exp(v.loss), val_tokens: v.tokens))
            }
        }
        try? LossPlot.write(metrics: metricsURL, to: outputDir.appendingPathComponent("loss.svg"))
        return TrainSummary(steps: step, finalLoss: lastLoss, valLossBefore: valBefore?.loss, valLossAfter: valAfter,
                            bestValLoss: bestVal?.loss, bestStep: bestVal?.step, wallSeconds: wall,
                            tokensPerSecond: Double(tokensSeen) / max(wall, 1e-9), adapterDirectory: adapterDir, stoppedEarly: stoppedEarly)
    }

    // MARK: Outputs

    func saveAdapter(to dir: URL) throws {
        var extra: [String: Any] = ["finetune_adapter_type": adapters.kind!.rawValue]
        if adapters.kind == .ndlinear { extra["ndlinear_init"] = config.adapterInit == nil ? config.ndlinearInit : "from \(config.adapterInit!)" }
        try AdapterIO.save(adapters, format: AdapterIO.defaultFormat(for: adapters), to: dir, baseModel: config.model, extra: extra)
    }

    func writeRunJSON() throws {
        struct Run: Encodable {
            let config: TrainConfig
            let resolved: Resolved
            struct Resolved: Encodable {
                let total_steps: Int, warmup_steps: Int, train_examples: Int, validation_examples: Int
                let trainable_parameters: Int, adapter_modules: Int, threads: Int, base_dtype: String
            }
        }
        let run = Run(config: config, resolved: .init(
            total_steps: totalSteps, warmup_steps: schedule.warmupSteps, train_examples: train.count, validation_examples: val.count,
            trainable_parameters: adapters.parameterCount, adapter_modules: adapters.adapters.count, threads: BLAS.threads,
            base_dtype: model.weights.storageDType.torchName))
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        enc.keyEncodingStrategy = .convertToSnakeCase
        try AtomicFile.write(try enc.encode(run), to: outputDir.appendingPathComponent("run.json"))
    }
}

// MARK: - Progress

/// A live line on a terminal, one line every `every` steps otherwise.
final class Progress {
    let total: Int
    let log: (String) -> Void
    let every: Int
    let tty = isatty(STDERR_FILENO) != 0
    var live = false
    init(total: Int, log: @escaping (String) -> Void, every: Int) { self.total = total; self.log = log; self.every = every }

    func update(_ m: StepMetrics, rate: Double, stepsDone: Int) {
        let remaining = Double(total - m.step) * m.elapsed_s / Double(max(stepsDone, 1))
        let line = String(format: "step %d/%d  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  ETA %@  RSS %.0f MB",
                          m.step, total, m.loss, m.lr, m.grad_norm, rate, Self.duration(remaining), peakRSSMegabytes())
        if tty {
            FileHandle.standardError.write(Data(("\r\u{1B}[2K" + line).utf8))
            live = true
        } else if m.step % every == 0 || m.step == total || m.step == 1 {
            log(line)
        }
    }

    func note(_ s: String) {
        if live { FileHandle.standardError.write(Data("\n".utf8)); live = false }
        log(s)
    }

    func finish() {
        if live { FileHandle.standardError.write(Data("\n".utf8)); live = false }
    }

    static func duration(_ s: Double) -> String {
        guard s.isFinite else { return "?" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%dh%02dm", t / 3600, t % 3600 / 60) : String(format: "%dm%02ds", t / 60, t % 60)
    }
}

/// Appends JSON rows to metrics.jsonl, flushed per row so a crash loses nothing written.
final class MetricsWriter {
    let handle: FileHandle
    init(url: URL) throws {
        if !FileManager.default.fileExists(atPath: url.path) { FileManager.default.createFile(atPath: url.path, contents: nil) }
        handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
    }
    deinit { try? handle.close() }
    func append<T: Encodable>(_ row: T) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        try handle.write(contentsOf: try enc.encode(row) + Data("\n".utf8))
    }
}
