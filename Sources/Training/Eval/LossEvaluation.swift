import Foundation
import LLMCore
import Tokenize

// MARK: - Target loss

/// Summed cross-entropy and target count of tokenized examples under `model` (no gradients, no
/// dropout), in right-padded batches of `batchSize` in the given order: each batch is
/// `Batch.padded`, run through `TransformerModel.forward`, and scored against its shifted labels
/// (-100 ignored), as transformers computes a causal-LM loss. Used by `finetune eval --metric
/// loss` and by the trainer's validation loss, so both report the same number.
///
/// - Parameter acts: an arena to reuse when it fits the largest batch; otherwise one sized
///   `[batchSize, longest example]` is allocated.
/// - Returns: the summed loss (natural log) and the number of target tokens.
public func targetLossSum(model: TransformerModel, examples: [TokenizedExample], batchSize: Int, padId: Int,
                          acts: Activations? = nil) throws -> (sum: Double, count: Int) {
    guard batchSize >= 1 else { throw DataError.invalidArgument("batchSize must be >= 1, got \(batchSize)") }
    guard !examples.isEmpty else { return (0, 0) }
    let longest = examples.map(\.inputIds.count).max()!
    var arena = acts
    var sum = 0.0, count = 0
    var i = 0
    while i < examples.count {
        let batch = try Batch.padded(Array(examples[i..<min(examples.count, i + batchSize)]), padId: padId)
        let input = ModelInput(batch: batch.batchSize, seqLen: batch.seqLen, tokens: batch.inputIds.map(Int.init),
                               attentionMask: batch.attentionMask.map(Int.init))
        if arena == nil || !arena!.fits(input) {
            arena = Activations(config: model.config, batch: batchSize, seqLen: longest)
        }
        let targets = shiftedTargets(labels: batch.labels, batch: batch.batchSize, seqLen: batch.seqLen)
        try model.forward(input, acts: arena!, training: false, targets: targets)
        let r = model.loss(acts: arena!, targets: targets)
        sum += r.sum
        count += r.count
        i += batchSize
    }
    return (sum, count)
}

/// The outcome of `evaluateLoss`.
public struct LossReport: Sendable {
    /// Records scored (after the template/tokenization skipped or dropped any).
    public var n: Int
    /// Mean loss per target token (natural log), and `exp` of it.
    public var loss: Double
    public var perplexity: Double
    public var targetTokens: Int
    /// All tokens run through the model (prompt and target, no padding).
    public var tokens: Int
    public var skipped: Int
    public var droppedNoTarget: Int
    public var warnings: [String]
    public var seconds: Double
    public var tokensPerSecond: Double { Double(tokens) / max(seconds, 1e-9) }
}

/// Mean token loss and perplexity of the records' targets with the training template: records
/// are tokenized exactly as `finetune train` does (`prepareExamples` with the prompt masked,
/// EOS appended, truncated to `maxLength`), then scored with `targetLossSum`. `chat` is the
/// model's chat template, which the `chat` template needs.
/// - Throws: `TrainingError.data` when no record has a target token left.
public func evaluateLoss(model: TransformerModel, tokenizer: (any Tokenizer)?, examples: [Example], template: PromptTemplate,
                         maxLength: Int, batchSize: Int, strict: Bool = false, chat: PromptTemplate.Chat? = nil) throws -> LossReport {
    let start = Date()
    let prepared = try prepareExamples(examples, template: template, tokenizer: tokenizer,
                                       options: TokenizeOptions(maskPrompt: true, maxLength: maxLength), strict: strict, chat: chat)
    guard !prepared.examples.isEmpty else {
        throw TrainingError.data("no record has a target token to score (\(prepared.skipped) skipped, \(prepared.droppedNoTarget) with no target)")
    }
    let r = try targetLossSum(model: model, examples: prepared.examples, batchSize: batchSize, padId: paddingId(for: tokenizer))
    let loss = r.sum / Double(max(r.count, 1))
    return LossReport(n: prepared.examples.count, loss: loss, perplexity: exp(loss), targetTokens: r.count,
                      tokens: prepared.examples.reduce(0) { $0 + $1.inputIds.count }, skipped: prepared.skipped,
                      droppedNoTarget: prepared.droppedNoTarget, warnings: prepared.warnings,
                      seconds: Date().timeIntervalSince(start))
}
