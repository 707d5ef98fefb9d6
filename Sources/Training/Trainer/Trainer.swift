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
    /// Fault injection for the crash-safety tests: FINETUNE_FAULT=sigkill-at-step:N or
    /// sigkill-in-checkpoint:N, optionally `@R` to fire on rank R only (default: every rank).
    let fault: (kind: String, step: Int, rank: Int?)?
    /// The data-parallel job this trainer is part of (`SingleProcess` by default; issue 11).
    public let comm: any Communicator
    /// Adapter gradients + [target tokens, loss sum, tokens, stop request]: the one buffer
    /// summed over ranks per step (allocated only when distributed).
    private var reduceBuffer: UnsafeMutablePointer<Double>?

    public var totalSteps: Int { schedule.totalSteps }
    /// Rows per optimizer step over all ranks.
    public var globalBatch: Int { Self.globalBatch(config, ranks: comm.size) }
    static func globalBatch(_ c: TrainConfig, ranks: Int) -> Int { c.globalBatch ?? c.batchSize * c.gradAccum * ranks }
    public var trainCount: Int { train.count }
    public var valCount: Int { val.count }

    // MARK: Setup

    /// - Parameters:
    ///   - chat: the model's chat template, which `template: chat` needs.
    ///   - communicator: the job to train in (every rank builds the same Trainer); only rank 0
    ///     writes files or prints.
    public init(config: TrainConfig, weights: ModelWeights, tokenizer: (any Tokenizer)?, chat: PromptTemplate.Chat? = nil,
                communicator: any Communicator = SingleProcess()) throws {
        try config.validate()
        self.config = config
        comm = communicator
        let quiet = !communicator.isRoot
        if quiet { log = { _ in } }
        self.tokenizer = tokenizer
        outputDir = URL(fileURLWithPath: config.output)
        let c = weights.config

        // Data.
        let template = try PromptTemplate(name: config.template)
        let options = TokenizeOptions(maskPrompt: config.maskPrompt, maxLength: config.maxLength)
        func prepare(_ path: String) throws -> [TokenizedExample] {
            let loaded = try loadExamples(from: URL(fileURLWithPath: path), strict: config.strict)
            for w in loaded.warnings where !quiet { FileHandle.standardError.write(Data("warning: \(w)\n".utf8)) }
            let prepared = try prepareExamples(loaded.examples, template: template, tokenizer: tokenizer, options: options,
                                               strict: config.strict, chat: chat)
            for w in prepared.warnings where !quiet { FileHandle.standardError.write(Data("warning: \(w)\n".utf8)) }
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
        let total = config.steps ?? Self.countSteps(stream: stream, lengths: train.map(\.inputIds.count), config: config,
                                                    rowsPerStep: Self.globalBatch(config, ranks: communicator.size))
        let warmup = config.warmupSteps ?? config.warmupRatio.map { LRSchedule.warmup(ratio: $0, totalSteps: total) } ?? 0
        schedule = LRSchedule(kind: LRScheduleKind(rawValue: config.schedule)!, baseLR: config.lr, warmupSteps: warmup, totalSteps: total)

        let longest = max(train.map(\.inputIds.count).max() ?? 1, val.map(\.inputIds.count).max() ?? 1)
        let seqCap = config.packing ? config.maxLength : min(config.maxLength, longest)
        acts = Activations(config: c, batch: config.batchSize, seqLen: seqCap, checkpointing: config.checkpointing)

        if var f = ProcessInfo.processInfo.environment["FINETUNE_FAULT"] {
            var rank: Int?
            if let at = f.lastIndex(of: "@") { rank = Int(f[f.index(after: at)...]); f = String(f[..<at]) }
            if let colon = f.lastIndex(of: ":"), let n = Int(f[f.index(after: colon)...]) { fault = (String(f[..<colon]), n, rank) } else { fault = nil }
        } else {
            fault = nil
        }
    }

    deinit { reduceBuffer?.deallocate() }

    /// Whether the injected fault `kind` fires now on this rank.
    func faultFires(_ kind: String) -> Bool {
        guard let f = fault, f.kind == kind, f.step == step else { return false }
        return f.rank == nil || f.rank == comm.rank
    }

    /// Steps in `epochs` passes (packing changes how many examples a row holds).
    static func countSteps(stream: DataStream, lengths: [Int], config: TrainConfig, rowsPerStep: Int? = nil) -> Int {
        var s = stream
        var steps = 0
        let rows = rowsPerStep ?? config.batchSize * config.gradAccum
        while !s.exhausted {
            _ = nextRows(&s, lengths: lengths, config: config, count: rows)
            steps += 1
        }
        return max(steps, 1)
    }

    /// The next `count` rows (default `batchSize`) of example indices (one per row, or several
    /// packed). Rows do not depend on how they are grouped into batches, so one call for a
    /// global batch gives the same rows as one call per micro-batch.
    static func nextRows(_ s: inout DataStream, lengths: [Int], config: TrainConfig, count: Int? = nil) -> [[Int]] {
        var rows: [[Int]] = []
        for _ in 0..<(count ?? config.batchSize) {
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
    /// batch, so accumulation equals one large batch (not a mean of micro-batch means). In a
    /// distributed run `normalizer` is the target count of the GLOBAL batch (every rank knows
    /// all its rows), so the ranks' gradients only need summing; `firstMicro` is the global
    /// index of the first micro-batch, which seeds dropout as a 1-rank run would.
    /// Returns the summed loss, the normalizer, this call's target count and real tokens.
    func accumulateGradients(_ micro: [[[Int]]], normalizer global: Int? = nil, firstMicro: Int = 0) throws
        -> (lossSum: Double, normalizer: Int, targets: Int, tokens: Int) {
        let batches = try micro.map(makeBatch)
        let local = batches.reduce(0) { $0 + $1.1.filter { $0 >= 0 }.count }
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

    // MARK: Data parallelism

    /// Rank `rank`'s contiguous share of `n` rows: near-equal blocks, the first `n % size`
    /// ranks one row more. Contiguous blocks cut into micro-batches of `batchSize` are exactly
    /// the micro-batches a 1-rank run with the same global batch makes (same dropout seeds).
    static func shard(_ n: Int, rank: Int, size: Int) -> Range<Int> {
        let base = n / size, extra = n % size
        let lo = rank * base + min(rank, extra)
        return lo..<(lo + base + (rank < extra ? 1 : 0))
    }

    /// This rank's micro-batches of a global batch, and the global index of the first.
    func myMicroBatches(_ rows: [[Int]]) -> (micro: [[[Int]]], first: Int) {
        let b = config.batchSize
        var first = 0
        for r in 0..<comm.rank { first += (Self.shard(rows.count, rank: r, size: comm.size).count + b - 1) / b }
        let mine = Self.shard(rows.count, rank: comm.rank, size: comm.size)
        let micro = stride(from: mine.lowerBound, to: mine.upperBound, by: b).map { Array(rows[$0..<min($0 + b, mine.upperBound)]) }
        return (micro, first)
    }

    /// Target tokens of rows (the loss's denominator), computed as the batches compute them.
    func targetCount(_ rows: [[Int]]) throws -> Int {
        try rows.reduce(0) { $0 + (try makeBatch([$1]).1.filter { $0 >= 0 }.count) }
    }

    /// Sums gradients, target count, loss and tokens over ranks in one collective and writes
    /// the summed gradients back; returns the global numbers and whether any rank was asked to
    /// stop (so that all stop after the same step).
    func reduceStep(lossSum: Double, targets: Int, tokens: Int) -> (lossSum: Double, targets: Int, tokens: Int, stop: Bool) {
        let params = adapters.parameters
        let n = adapters.parameterCount
        if reduceBuffer == nil { reduceBuffer = .allocate(capacity: n + 4) }
        let buf = reduceBuffer!
        var o = 0
        for p in params { let g = p.grad.pointer; for j in 0..<p.count { buf[o + j] = Double(g[j]) }; o += p.count }
        buf[n] = Double(targets); buf[n + 1] = lossSum; buf[n + 2] = Double(tokens); buf[n + 3] = stopFlag.pointee != 0 ? 1 : 0
        comm.allReduceSum(buf, count: n + 4)
        o = 0
        for p in params { let g = p.grad.pointer; for j in 0..<p.count { g[j] = Float(buf[o + j]) }; o += p.count }
        return (buf[n + 1], Int(buf[n]), Int(buf[n + 2]), buf[n + 3] > 0)
    }

    /// A hash of the tokenized training and validation data: every rank must train on the
    /// same examples, or the "global" batch would mean different rows on different ranks.
    var dataFingerprint: UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ v: Int) { h = (h ^ UInt64(bitPattern: Int64(v))) &* 0x100_0000_01b3 }
        for set in [train, val] {
            mix(set.count)
            for e in set { mix(e.inputIds.count); e.inputIds.forEach(mix); e.labels.forEach(mix) }
        }
        return h
    }

    /// Checks, identical on every rank, that no rank is left without rows.
    func checkShards() throws {
        guard comm.isDistributed else { return }
        guard globalBatch >= comm.size else {
            throw TrainingError.invalidOption("a global batch of \(globalBatch) rows over \(comm.size) ranks leaves rank \(globalBatch) without data: "
                + "use --global-batch ≥ \(comm.size) (or a larger --batch-size/--grad-accum) or fewer ranks")
        }
        var s = DataStream(count: train.count, seed: config.seed, shuffle: config.shuffle, epochs: config.steps == nil ? (config.epochs ?? 1) : nil)
        let first = Self.nextRows(&s, lengths: train.map(\.inputIds.count), config: config, count: globalBatch)
        guard first.count >= comm.size else {
            throw TrainingError.data("\(config.data): \(first.count) training rows for \(comm.size) ranks leaves rank \(first.count) without data; use fewer ranks")
        }
    }

    /// Gives every rank rank 0's adapter, optimizer moments, step, data position and
    /// early-stopping state (rank 0 alone reads `--resume`, so only its filesystem needs the
    /// checkpoints; this also makes the starting adapter identical everywhere).
    func broadcastState() {
        guard comm.isDistributed else { return }
        let params = adapters.parameters
        let n = adapters.parameterCount
        let count = 8 + 3 * n
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: count)
        defer { buf.deallocate() }
        buf.initialize(repeating: 0, count: count)
        if comm.isRoot {
            let (m, v) = optimizer.moments
            buf[0] = Double(step); buf[1] = Double(optimizer.step)
            buf[2] = Double(stream.position.epoch); buf[3] = Double(stream.position.offset); buf[4] = Double(stream.position.consumed)
            buf[5] = bestVal?.loss ?? .nan; buf[6] = Double(bestVal?.step ?? -1); buf[7] = Double(badEvals)
            var o = 8
            for (i, p) in params.enumerated() {
                for j in 0..<p.count { buf[o + j] = Double(p.value[j]); buf[o + n + j] = Double(m[i][j]); buf[o + 2 * n + j] = Double(v[i][j]) }
                o += p.count
            }
        }
        comm.broadcast(buf, count: count, root: 0)
        guard !comm.isRoot else { return }
        step = Int(buf[0])
        stream.position.epoch = Int(buf[2]); stream.position.offset = Int(buf[3]); stream.position.consumed = Int(buf[4])
        bestVal = buf[5].isNaN ? nil : (buf[5], Int(buf[6]))
        badEvals = Int(buf[7])
        var o = 8
        var m: [[Float]] = [], v: [[Float]] = []
        for p in params {
            for j in 0..<p.count { p.value[j] = Float(buf[o + j]) }
            m.append((0..<p.count).map { Float(buf[o + n + $0]) }); v.append((0..<p.count).map { Float(buf[o + 2 * n + $0]) })
            o += p.count
        }
        try! optimizer.restore(step: Int(buf[1]), m: m, v: v)   // shapes are ours by construction
    }

    // MARK: Validation

    /// Mean token loss over the validation set (no gradients, no dropout).
    public func validationLoss() throws -> (loss: Double, tokens: Int)? {
        guard !val.isEmpty else { return nil }
        // Shared with `finetune eval --metric loss` (Eval/LossEvaluation.swift). Distributed:
        // each rank scores a contiguous block of the examples, then (sum, count) are summed.
        let part = Self.shard(val.count, rank: comm.rank, size: comm.size)
        var r = try targetLossSum(model: model, examples: Array(val[part]), batchSize: config.batchSize, padId: padId, acts: acts)
        if comm.isDistributed {
            var pair = [r.sum, Double(r.count)]
            pair.withUnsafeMutableBufferPointer { comm.allReduceSum($0.baseAddress!, count: 2) }
            r = (pair[0], Int(pair[1]))
        }
        return r.count > 0 ? (r.sum / Double(r.count), r.count) : nil
    }

    // MARK: The loop

    /// Trains to the end. Distributed: every rank calls this; set-up failures on any rank stop
    /// all ranks before the first step (`Distributed.agree`), and rank 0 alone touches the
    /// output directory.
    public func run() throws -> TrainSummary {
        let metricsURL = outputDir.appendingPathComponent("metrics.jsonl")
        let metrics: MetricsWriter? = try Distributed.agree(comm, fingerprint: comm.isDistributed ? dataFingerprint : nil, mismatch: {
            TrainingError.data("the tokenized training/validation data on this rank differ from rank 0's (\(self.train.count) training, "
                + "\(self.val.count) validation examples here): every rank must read the same --data/--val-data with the same tokenizer")
        }) {
            try checkShards()
            guard comm.isRoot else { return nil }
            try FileManager.default.createDirectory(at: outputDir, withIntermediateDirectories: true)
            if let r = config.resume { try resume(from: r) }
            try writeRunJSON()
            try Checkpoints.truncateMetrics(metricsURL, afterStep: step)
            return try MetricsWriter(url: metricsURL)
        }
        broadcastState()

        // A parent that spawned us from a thread with SIGINT/SIGTERM blocked (Foundation's
        // Process from a GCD thread does) passes that mask on; unblock so the handlers run.
        var unblock = sigset_t()
        sigemptyset(&unblock); sigaddset(&unblock, SIGINT); sigaddset(&unblock, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        signal(SIGINT) { _ in stopFlag.pointee = 1 }
        signal(SIGTERM) { _ in stopFlag.pointee = 1 }
        defer { signal(SIGINT, SIG_DFL); signal(SIGTERM, SIG_DFL) }

        let valBefore = step == 0 ? try validationLoss() : nil
        if let v = valBefore {
            log(String(format: "validation loss before training: %.4f (%d tokens)", v.loss, v.tokens))
            try metrics?.append(ValidationMetrics(step: 0, val_loss: v.loss, val_ppl: exp(v.loss), val_tokens: v.tokens))
        }
        log("training \(adapters.kind!.rawValue) (\(adapters.parameterCount) parameters in \(adapters.adapters.count) modules) on \(train.count) examples for \(totalSteps) steps" + (val.isEmpty ? "" : ", \(val.count) validation examples")
            + (comm.isDistributed ? " on \(comm.size) ranks (global batch \(globalBatch) rows)" : ""))
        let lengths = train.map(\.inputIds.count)
        let start = Date()
        let startStep = step
        var tokensSeen = 0
        var lastLoss: Double?
        var lastValLoss: Double?
        var stoppedEarly = false
        let progress = Progress(total: totalSteps, log: log, every: config.logEvery, quiet: !comm.isRoot)

        while step < totalSteps {
            let stepStart = Date()
            // Every rank draws the same global batch (the data position stays global), then
            // runs its own contiguous share of the rows.
            let rows = Self.nextRows(&stream, lengths: lengths, config: config, count: globalBatch)
            guard !rows.isEmpty else { break }
            step += 1
            var lossSum: Double, normalizer: Int, tokens: Int, stopRequested = false
            if comm.isDistributed {
                let (micro, first) = myMicroBatches(rows)
                let local = try accumulateGradients(micro, normalizer: try targetCount(rows), firstMicro: first)
                if faultFires("sigkill-at-step") { kill(getpid(), SIGKILL) }
                (lossSum, normalizer, tokens, stopRequested) = reduceStep(lossSum: local.lossSum, targets: local.targets, tokens: local.tokens)
            } else {
                let micro = stride(from: 0, to: rows.count, by: config.batchSize).map { Array(rows[$0..<min($0 + config.batchSize, rows.count)]) }
                (lossSum, normalizer, _, tokens) = try accumulateGradients(micro)
                if faultFires("sigkill-at-step") { kill(getpid(), SIGKILL) }
                stopRequested = stopFlag.pointee != 0
            }
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
            try metrics?.append(row)
            progress.update(row, rate: Double(tokensSeen) / max(Date().timeIntervalSince(start), 1e-9), stepsDone: step - startStep)

            var saveNow = config.saveEvery.map { step % $0 == 0 } ?? false
            if let every = config.evalEvery, step % every == 0 || step == totalSteps, let v = try validationLoss() {
                lastValLoss = v.loss
                try metrics?.append(ValidationMetrics(step: step, val_loss: v.loss, val_ppl: exp(v.loss), val_tokens: v.tokens))
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
            if stopRequested || stopFlag.pointee != 0 && !comm.isDistributed {
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
        if !val.isEmpty, config.evalEvery == nil || lastValLoss == nil {
            if let v = try validationLoss() {
                valAfter = v.loss
                try metrics?.append(ValidationMetrics(step: step, val_loss: v.loss, val_ppl: exp(v.loss), val_tokens: v.tokens))
            }
        }
        if comm.isRoot { try? LossPlot.write(metrics: metricsURL, to: outputDir.appendingPathComponent("loss.svg")) }
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
                let ranks: Int, global_batch: Int
                /// The CPU, the ISA level and the GEMM library this run used.
                let cpu: CPUReport
            }
        }
        let run = Run(config: config, resolved: .init(
            total_steps: totalSteps, warmup_steps: schedule.warmupSteps, train_examples: train.count, validation_examples: val.count,
            trainable_parameters: adapters.parameterCount, adapter_modules: adapters.adapters.count, threads: BLAS.threads,
            base_dtype: model.weights.storageDType.torchName, ranks: comm.size, global_batch: globalBatch,
            cpu: CPU.report))
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
    /// Ranks other than 0 print nothing.
    let quiet: Bool
    init(total: Int, log: @escaping (String) -> Void, every: Int, quiet: Bool = false) {
        self.total = total; self.log = log; self.every = every; self.quiet = quiet
    }

    func update(_ m: StepMetrics, rate: Double, stepsDone: Int) {
        guard !quiet else { return }
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
        guard !quiet else { return }
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
