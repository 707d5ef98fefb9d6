import Foundation
import LLMCore
import Tokenize

// MARK: - What is being evaluated

/// How a data file is scored: the task when one is known, the name reported for it, and the
/// answer rule (`finetune eval --task`, CLI.md).
public struct EvalTarget: Sendable, Equatable {
    public var task: EvalTask?
    /// The task's name (`gsm8k`, `arc-e`, ...), or the rule (`number`, `letter`, `answer1|...`)
    /// when only the answer format could be told.
    public var name: String
    public var rule: AnswerRule

    public init(task: EvalTask?, name: String, rule: AnswerRule) {
        self.task = task
        self.name = name
        self.rule = rule
    }

    public init(task: EvalTask) {
        self.init(task: task, name: task.rawValue, rule: task.rule)
    }
}

/// Decides the task of an evaluation data file: an explicit `task` wins; else the task the
/// path names (`EvalTask.detect(path:)`, e.g. `dataset/gsm8k/test.json`); else what the records
/// say (`EvalTask.detect(examples:)`: the GSM8K and CSQA layouts, or an answer set such as
/// `true|false`); else the rule inferred from the gold answers (`AnswerRule.infer`).
/// - Throws: `ScoringError.unknownTask` naming the file when none of these works.
public func resolveEvalTarget(task: EvalTask?, path: String?, examples: [Example]) throws -> EvalTarget {
    if let task { return EvalTarget(task: task) }
    if let path, let t = EvalTask.detect(path: path) { return EvalTarget(task: t) }
    if let t = EvalTask.detect(examples: examples) { return EvalTarget(task: t) }
    // The path names no task (checked above), so this infers the rule or throws naming the file.
    let (name, rule) = try resolveScoringRule(task: nil, path: path, answers: examples.compactMap(\.answer))
    return EvalTarget(task: nil, name: name, rule: rule)
}

/// The `--max-new-tokens` default: LLM-Adapters generates 256 new tokens for the math sets
/// (`evaluate.py`, `max_new_tokens=256`) and 32 for the commonsense sets
/// (`commomsense_evaluate.py`, `max_new_tokens=32`); CommonsenseQA, whose answer is one letter
/// in the same "the correct answer is X" form, gets the commonsense budget.
public func defaultMaxNewTokens(for target: EvalTarget) -> Int {
    if target.task == .csqa { return 32 }
    if case .choice = target.rule { return 32 }
    return 256
}

// MARK: - Options and results

/// Settings of a generation evaluation.
public struct EvalOptions: Sendable, Equatable {
    /// The template whose prompt part (`PromptTemplate.evalPrompt`) the model continues; the
    /// same as training's by default (`auto`).
    public var template: PromptTemplate
    /// Maximum new tokens per item; nil means `defaultMaxNewTokens(for:)`.
    public var maxNewTokens: Int?
    /// Prompts decoded together: with greedy decoding, sequences in flight (a finished one is
    /// replaced at once); with beam search, prompts per batch (each with `numBeams` beams).
    public var batchSize: Int
    /// 1 = greedy; more = beam search (`BeamSearchOptions`; LLM-Adapters uses 4).
    public var numBeams: Int
    /// Beam search length penalty (HF `length_penalty`).
    public var lengthPenalty: Double
    /// The model's chat template, which the `chat` template needs.
    public var chat: PromptTemplate.Chat?

    public init(template: PromptTemplate = .auto, maxNewTokens: Int? = nil, batchSize: Int = 8, numBeams: Int = 1,
                lengthPenalty: Double = 1.0, chat: PromptTemplate.Chat? = nil) {
        self.template = template
        self.chat = chat
        self.maxNewTokens = maxNewTokens
        self.batchSize = batchSize
        self.numBeams = numBeams
        self.lengthPenalty = lengthPenalty
    }
}

/// Progress of a running evaluation.
public struct EvalProgress: Sendable {
    public var done: Int
    public var total: Int
    public var generatedTokens: Int
    public var elapsedSeconds: Double
}

/// The outcome of `evaluateGeneration`.
public struct EvalReport: Sendable {
    /// One scored row per item (`preds.jsonl`).
    public var rows: [PredictionRow]
    public var summary: ScoreSummary
    public var target: EvalTarget
    public var maxNewTokens: Int
    public var numBeams: Int
    /// Prompt tokens fed (the prefill).
    public var promptTokens: Int
    /// Tokens of the returned generations (the stop token that ended one included); beam search
    /// decodes `numBeams` times as many.
    public var generatedTokens: Int
    /// Time spent generating.
    public var generateSeconds: Double
    /// Time of the whole evaluation: prompts, generation, decoding and scoring.
    public var wallSeconds: Double

    /// Generated tokens per second of generation time.
    public var tokensPerSecond: Double { Double(generatedTokens) / max(generateSeconds, 1e-9) }
}

// MARK: - Generation evaluation

/// Generates an answer for every record and scores it (FORMATS.md "Scoring"): the prompt is the
/// template's eval prompt tokenized as the reference eval scripts do (`evalPromptIds`: default
/// special tokens, so BOS where the tokenizer adds one; none for `chat`, whose text has them);
/// decoding is greedy, or HF-style beam search with `options.numBeams > 1`; a sequence stops at
/// EOS (the model config's and the tokenizer's, plus the chat template's end-of-turn token for
/// `chat`: `<|im_end|>`, `<|eot_id|>`), at the template's next-section marker
/// (`PromptTemplate.stopStrings`, the text from it on is dropped) or after `maxNewTokens`. The
/// output is the generated ids decoded with special tokens skipped; rows are scored by
/// `scoreRow` under both rules.
///
/// Gold answers are checked before anything is generated, so a record without an answer (or a
/// non-numeric answer on a numeric task) fails fast, naming its file and line.
///
/// - Throws: `ScoringError` (answers), `DataError` (templates), `ModelError` (token ids).
public func evaluateGeneration(model: TransformerModel, tokenizer: any Tokenizer, examples: [Example],
                               target: EvalTarget, options: EvalOptions = EvalOptions(),
                               progress: ((EvalProgress) -> Void)? = nil) throws -> EvalReport {
    let start = Date()
    guard options.batchSize >= 1 else { throw TrainingError.invalidOption("--batch-size must be ≥ 1, got \(options.batchSize)") }
    guard options.numBeams >= 1 else { throw TrainingError.invalidOption("--num-beams must be ≥ 1, got \(options.numBeams)") }
    let maxNew = options.maxNewTokens ?? defaultMaxNewTokens(for: target)
    guard maxNew >= 1 else { throw TrainingError.invalidOption("--max-new-tokens must be ≥ 1, got \(maxNew)") }
    guard !examples.isEmpty else { throw TrainingError.data("no records to evaluate") }

    // Gold answers first: nothing is generated for a set that cannot be scored.
    var answers: [String] = []
    answers.reserveCapacity(examples.count)
    for e in examples {
        guard let a = e.answer, !PyText.strip(a).isEmpty else { throw ScoringError.missingAnswer(e.location) }
        _ = try AnswerExtractor.isCorrect(prediction: "", answer: a, rule: target.rule, at: e.location)
        answers.append(a)
    }

    // Prompts and stop conditions.
    var promptTexts: [String] = [], prompts: [[Int]] = [], stops: [[String]] = []
    for e in examples {
        let text = try options.template.evalPrompt(for: e, chat: options.chat)
        promptTexts.append(text)
        prompts.append(try tokenizer.encode(text, addSpecialTokens: !options.template.mode(for: e).textHasSpecialTokens))
        stops.append(options.template.stopStrings(for: e))
    }
    var matcherFor: [[String]: StopStringMatcher] = [:]
    let matchers = stops.map { s in
        if let m = matcherFor[s] { return m }
        let m = StopStringMatcher(tokenizer: tokenizer, stopStrings: s)
        matcherFor[s] = m
        return m
    }
    var stopTokens = Set(model.config.eosTokenIds + tokenizer.eosTokenIds)
    if options.template == .chat, let endOfTurn = options.chat?.endOfTurnTokenId(tokenizer: tokenizer) { stopTokens.insert(endOfTurn) }

    // Generation.
    let genStart = Date()
    var done = 0, generated = 0
    func report(_ count: Int, _ tokens: Int) {
        done += count
        generated += tokens
        progress?(EvalProgress(done: done, total: examples.count, generatedTokens: generated,
                               elapsedSeconds: Date().timeIntervalSince(genStart)))
    }
    var outputs: [[Int]]
    if options.numBeams == 1 {
        outputs = try model.generateGreedy(prompts: prompts, maxNewTokens: maxNew, maxBatch: options.batchSize,
                                           stopTokens: stopTokens, shouldStop: { matchers[$0].matches($1) },
                                           onFinish: { _, ids in report(1, ids.count) })
    } else {
        outputs = []
        outputs.reserveCapacity(prompts.count)
        let beam = BeamSearchOptions(numBeams: options.numBeams, maxNewTokens: maxNew, lengthPenalty: options.lengthPenalty)
        var s = 0
        while s < prompts.count {
            let chunk = Array(prompts[s..<min(s + options.batchSize, prompts.count)])
            let base = s
            let best = try model.beamSearch(prompts: chunk, options: beam, stopTokens: stopTokens,
                                            shouldStop: { matchers[base + $0].matches($1) })
            outputs += best.map(\.tokens)
            report(best.count, best.reduce(0) { $0 + $1.tokens.count })
            s += options.batchSize
        }
    }
    let genSeconds = Date().timeIntervalSince(genStart)

    // Decoding and scoring.
    var rows: [PredictionRow] = []
    rows.reserveCapacity(examples.count)
    for (i, e) in examples.enumerated() {
        let text = StopStringMatcher.truncate(tokenizer.decode(outputs[i], skipSpecialTokens: true), at: stops[i])
        let row = PredictionRow(index: i, prompt: promptTexts[i], output: text, answer: answers[i], location: e.location)
        rows.append(try scoreRow(row, rule: target.rule))
    }
    let summary = ScoreSummary(task: target.name, n: rows.count,
                               correct: rows.reduce(0) { $0 + ($1.correct ? 1 : 0) },
                               correctStrict: rows.reduce(0) { $0 + ($1.correctStrict ? 1 : 0) })
    return EvalReport(rows: rows, summary: summary, target: target, maxNewTokens: maxNew, numBeams: options.numBeams,
                      promptTokens: prompts.reduce(0) { $0 + $1.count },
                      generatedTokens: outputs.reduce(0) { $0 + $1.count },
                      generateSeconds: genSeconds, wallSeconds: Date().timeIntervalSince(start))
}
