import Foundation
import LLMCore
import Tokenize

/// The tokenized examples of a run and how they become batches: `--data` (and `--val-data`,
/// or a seeded `--val-split` of `--data`) templated, tokenized and checked against the model's
/// vocabulary; rows by `RowPacker` over a `DataStream`; batches by `Batch.make`.
struct TrainingData {
    let train: [TokenizedExample]
    let val: [TokenizedExample]
    let padId: Int
    let packing: Bool
    let packer: RowPacker
    /// Records of --data and --val-data that --max-length cut, and that were dropped with no
    /// trained token (printed and written to run.json).
    let truncatedRecords: Int
    let droppedRecords: Int

    /// Reads and tokenizes the data; warnings (skipped records, truncations) go to `warn`.
    init(config: TrainConfig, tokenizer: (any Tokenizer)?, chat: PromptTemplate.Chat?, vocabSize: Int,
         warn: (String) -> Void) throws {
        let options = TokenizeOptions(maskPrompt: config.maskPrompt, maxLength: config.maxLength)
        var truncated = 0, dropped = 0
        // The one code path `finetune prepare` shares.
        func prepare(_ path: String) throws -> [TokenizedExample] {
            let file = try PreparedFile(path: path, template: config.template, tokenizer: tokenizer, chat: chat, options: options,
                                        strict: config.strict, vocabSize: vocabSize, warn: warn)
            truncated += file.prepared.truncated
            dropped += file.prepared.droppedNoTarget
            return file.examples
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
        if config.steps == nil, let e = config.epochs {
            // The run's length is counted in examples (epochs × examples) and, with packing,
            // counted row by row: refused when that count overflows or cannot be made.
            guard let examples = Checked.mul(e, trainSet.count) else {
                throw TrainingError.invalidOption("--epochs \(e): \(e) passes over \(trainSet.count) training examples overflow a 64-bit count of examples")
            }
            guard !config.packing || examples <= Self.maxPackedPlan else {
                throw TrainingError.invalidOption("--epochs \(e) with --packing: \(examples) examples to pack, more than the \(Self.maxPackedPlan) "
                    + "whose rows are counted to plan the schedule; give --steps instead")
            }
        }
        train = trainSet
        val = valSet
        truncatedRecords = truncated
        droppedRecords = dropped
        padId = paddingId(for: tokenizer)
        packing = config.packing
        packer = try RowPacker(lengths: trainSet.map(\.inputIds.count), packLength: config.packing ? config.maxLength : nil)
    }

    /// The longest example of either set (the activation arena's sequence length without packing).
    var longest: Int { max(train.map(\.inputIds.count).max() ?? 1, val.map(\.inputIds.count).max() ?? 1) }

    /// The training order of `config`: `epochs` passes, or endless with `steps`.
    func stream(_ config: TrainConfig) -> DataStream {
        DataStream(count: train.count, seed: config.seed, shuffle: config.shuffle, epochs: config.steps == nil ? (config.epochs ?? 1) : nil)
    }

    /// Examples handed out at most by a packed epochs-mode run: its rows are counted one by one
    /// to plan the schedule, which must end in seconds.
    static let maxPackedPlan = 1 << 32

    /// Optimizer steps in the stream's passes when each takes `rowsPerStep` rows.
    func countSteps(_ stream: DataStream, rowsPerStep: Int) -> Int {
        // One example per row without packing: the count is arithmetic, whatever --epochs is.
        if packer.packLength == nil, let limit = stream.limit {
            let remaining = limit - stream.position.consumed
            return remaining <= 0 ? 1 : (remaining - 1) / max(rowsPerStep, 1) + 1
        }
        var s = stream
        var steps = 0
        while !s.exhausted {
            _ = packer.nextRows(from: &s, count: rowsPerStep)
            steps += 1
        }
        return max(steps, 1)
    }

    /// One micro-batch of training rows as the model takes it: input, shifted targets (-100
    /// ignored) and the number of real tokens.
    func batch(_ rows: [[Int]]) throws -> (input: ModelInput, targets: [Int32], tokens: Int) {
        let b = try Batch.make(rows.map { $0.map { train[$0] } }, packed: packing, padId: padId)
        let input = ModelInput(batch: b.batchSize, seqLen: b.seqLen, tokens: b.inputIds.map(Int.init),
                               attentionMask: b.attentionMask.map(Int.init), positions: b.positionIds.map(Int.init),
                               segments: packing ? b.segmentIds.map(Int.init) : nil)
        return (input, shiftedTargets(labels: b.labels, batch: b.batchSize, seqLen: b.seqLen), b.tokenCount)
    }

    /// Target tokens of rows (the loss's denominator), computed as the batches compute them.
    func targetCount(_ rows: [[Int]]) throws -> Int {
        try rows.reduce(0) { $0 + (try batch([$1]).targets.filter { $0 >= 0 }.count) }
    }

    /// A hash of the tokenized training and validation data: every rank must train on the
    /// same examples, or the "global" batch would mean different rows on different ranks.
    var fingerprint: UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix(_ v: Int) { h = (h ^ UInt64(bitPattern: Int64(v))) &* 0x100_0000_01b3 }
        for set in [train, val] {
            mix(set.count)
            for e in set { mix(e.inputIds.count); e.inputIds.forEach(mix); e.labels.forEach(mix) }
        }
        return h
    }
}
