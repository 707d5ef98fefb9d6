import Adapters
import ArgumentParser
import Foundation
import LLMCore
import Tokenize
import Training
#if canImport(Glibc)
import Glibc
#endif

/// `finetune eval`: generate answers for a test set and score them (LLM-Adapters-compatible and
/// strict accuracy), re-score saved generations (`--score`), or measure the target loss.
struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score a model (and adapter) on a test set: generation accuracy, or target loss.",
        discussion: """
        Generation (default): each record's prompt is the template's prompt part, the model \
        continues it (greedy, or beam search with --num-beams), stopping at EOS (with --template chat \
        also at the chat template's end-of-turn token), at the template's \
        next-section marker or after --max-new-tokens, and the answer is extracted and scored as \
        LLM-Adapters does (accuracy) and by our stricter rule (accuracy_strict). --output writes \
        preds.jsonl (index, prompt, output, prediction, answer, correct, ...).
        Re-scoring: --score preds.jsonl recomputes predictions and accuracy from each row's output \
        and answer; no model is needed.
        Loss: --metric loss reports the mean target-token loss and perplexity with the training \
        template (prompt masked, EOS appended, truncated to --max-length).
        """)

    @Option(help: "A Hugging Face model directory (not needed with --score).") var model: String?
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var adapter: AdapterOptions
    @Option(help: "Test data: JSON array or JSONL (instruction/input/output/answer, GSM8K question/answer, CSQA).") var data: String?
    @Option(help: "auto, or one of: \(EvalTask.allCases.map(\.rawValue).joined(separator: ", ")).") var task: String = "auto"
    @OptionGroup var templateOptions: TemplateOptions
    @OptionGroup var chatTemplateOptions: ChatTemplateOptions
    @Option(help: "Maximum new tokens per item (default 256 for math tasks, 32 for commonsense ones, as LLM-Adapters).") var maxNewTokens: Int?
    @Option(help: "Prompts decoded together (greedy: sequences in flight; beam search: prompts per batch).") var batchSize: Int = 8
    @Option(help: "Beams per prompt (1 = greedy; LLM-Adapters uses 4).") var numBeams: Int = 1
    @Option(help: "Beam search length penalty (HF length_penalty).") var lengthPenalty: Double = 1.0
    @Option(help: "Evaluate only the first N records.") var limit: Int?
    @Option(help: "Write per-item predictions to this JSONL file.") var output: String?
    @Option(help: "Re-score a saved preds.jsonl instead of generating (no model needed).") var score: String?
    @Option(help: "accuracy (generate and score) or loss (target loss and perplexity).") var metric: String = "accuracy"
    @Flag(help: "Print one JSON object on stdout (human text goes to stderr).") var json = false
    @Option(help: "Append the JSON summary (plus model, adapter and data) as one line to this results file.") var appendResults: String?

    var template: PromptTemplate { templateOptions.template }

    // MARK: Summary rows

    /// The `--json` object and the `--append-results` line: one flat JSON object, written from
    /// the groups that apply (absent values are left out).
    struct Summary: Encodable {
        struct Head: Encodable {
            var metric: String, task: String?, n: Int, wall_s: Double
            var timestamp: String? = nil
        }
        /// Generation accuracy by the LLM-Adapters rule and by ours.
        struct Accuracy: Encodable { var accuracy: Double, accuracy_strict: Double, correct: Int, correct_strict: Int }
        /// Mean target loss (`--metric loss`).
        struct Loss: Encodable { var loss: Double, perplexity: Double, target_tokens: Int, tokens: Int }
        struct Speed: Encodable { var tokens_per_s: Double, prompt_tokens: Int? = nil, generated_tokens: Int? = nil, generate_s: Double? = nil }
        /// What was evaluated, and how.
        struct Inputs: Encodable {
            var model: String? = nil, adapter: String? = nil, data: String? = nil, preds: String? = nil, output: String? = nil
            var template: String? = nil, limit: Int? = nil, batch_size: Int? = nil, num_beams: Int? = nil, max_new_tokens: Int? = nil
        }
        var head: Head
        var accuracy: Accuracy?
        var loss: Loss?
        var speed: Speed?
        var inputs: Inputs

        func encode(to encoder: Encoder) throws {
            try head.encode(to: encoder)
            try accuracy?.encode(to: encoder)
            try loss?.encode(to: encoder)
            try speed?.encode(to: encoder)
            try inputs.encode(to: encoder)
        }
    }

    func run() throws {
        try reportingErrors {
            let start = Date()
            let evalTask = try parseTask()
            var summary: Summary
            switch try mode() {
            case let .rescore(preds): summary = try rescore(preds, task: evalTask, start: start)
            case let .accuracy(model, data): summary = try generate(model: model, data: data, task: evalTask, start: start)
            case let .loss(model, data): summary = try lossMetric(model: model, data: data, task: evalTask, start: start)
            }
            if json { try printJSON(summary) }
            if let appendResults {
                var row = summary
                row.head.timestamp = ISO8601DateFormatter().string(from: Date())
                try appendLine(row, to: appendResults)
            }
        }
    }

    // MARK: Modes

    enum Mode {
        case rescore(preds: String)
        case accuracy(model: String, data: String)
        case loss(model: String, data: String)
    }

    /// What to do, with every flag checked for it before anything is read or loaded.
    func mode() throws -> Mode {
        if let score {
            if data != nil { throw InputError("--score re-scores saved generations and takes no --data") }
            if metric != "accuracy" { throw InputError("--metric \(metric) cannot be used with --score") }
            return .rescore(preds: score)
        }
        guard let model else { throw InputError("--model is required (unless --score re-scores a preds file)") }
        guard let data else { throw InputError("--data is required (unless --score re-scores a preds file)") }
        guard metric == "accuracy" || metric == "loss" else { throw InputError("--metric '\(metric)': expected accuracy or loss") }
        guard batchSize >= 1 else { throw InputError("--batch-size must be ≥ 1, got \(batchSize)") }
        if let limit, limit < 1 { throw InputError("--limit must be ≥ 1, got \(limit)") }
        if metric == "loss" {
            guard templateOptions.maxLength >= 1 else { throw InputError("--max-length must be ≥ 1, got \(templateOptions.maxLength)") }
            if numBeams != 1 || output != nil { throw InputError("--metric loss generates nothing: --num-beams and --output do not apply") }
            return .loss(model: model, data: data)
        }
        guard numBeams >= 1 else { throw InputError("--num-beams must be ≥ 1, got \(numBeams)") }
        if let m = maxNewTokens, m < 1 { throw InputError("--max-new-tokens must be ≥ 1, got \(m)") }
        return .accuracy(model: model, data: data)
    }

    func parseTask() throws -> EvalTask? {
        if task.lowercased() == "auto" { return nil }
        guard let t = EvalTask(name: task) else {
            throw InputError("--task '\(task)': unknown task; expected auto or one of \(EvalTask.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return t
    }

    /// `--score`: re-score a saved predictions file.
    func rescore(_ path: String, task: EvalTask?, start: Date) throws -> Summary {
        let report = try scorePredictionsFile(at: URL(fileURLWithPath: path), task: task)
        if let output { try writePredictions(report.rows, to: URL(fileURLWithPath: output)) }
        let s = report.summary
        let wall = Date().timeIntervalSince(start)
        say(String(format: "%@: accuracy %.4f (%d/%d), strict %.4f (%d/%d); re-scored %@ in %.2f s",
                   s.task, s.accuracy, s.correct, s.n, s.accuracyStrict, s.correctStrict, s.n, path, wall))
        return Summary(head: .init(metric: "accuracy", task: s.task, n: s.n, wall_s: wall), accuracy: Summary.Accuracy(s),
                       inputs: .init(preds: path, output: output))
    }

    /// Loads the model, tokenizer, chat template (for `--template chat`) and adapter, and the
    /// data (with `--limit`).
    func load(model path: String, data: String) throws -> (TransformerModel, (any Tokenizer)?, PromptTemplate.Chat?, [Example]) {
        let source = ModelPath(path)
        let loaded = try loadExamples(from: URL(fileURLWithPath: data), strict: templateOptions.strict)
        for w in loaded.warnings { note("warning: \(w)") }
        let examples = limit.map { Array(loaded.examples.prefix($0)) } ?? loaded.examples
        let weights = try source.load(runtime: runtime)
        note(CPU.summary)
        let tokenizer = try source.tokenizer()
        let chat = try chatTemplateOptions.chat(template: template, source: path, tokenizer: tokenizer)
        let adapters = try adapter.load(config: weights.config)
        return (TransformerModel(weights: weights, adapters: adapters), tokenizer, chat, examples)
    }

    /// Generate and score.
    func generate(model path: String, data: String, task: EvalTask?, start: Date) throws -> Summary {
        let (model, tokenizer, chat, examples) = try load(model: path, data: data)
        guard let tokenizer else {
            throw InputError("--model \(path): no tokenizer files (tokenizer.json, vocab.json + merges.txt or tokenizer.model); eval builds text prompts and needs one")
        }
        let target = try resolveEvalTarget(task: task, path: data, examples: examples)
        let options = EvalOptions(template: template, maxNewTokens: maxNewTokens, batchSize: batchSize,
                                  numBeams: numBeams, lengthPenalty: lengthPenalty, chat: chat)
        note("eval \(target.name) (\(target.rule)): \(examples.count) items, template \(template.rawValue), "
             + (numBeams > 1 ? "beam search with \(numBeams) beams" : "greedy")
             + ", batch \(batchSize), max \(options.maxNewTokens ?? defaultMaxNewTokens(for: target)) new tokens")
        let progress = ProgressPrinter()
        let report = try evaluateGeneration(model: model, tokenizer: tokenizer, examples: examples, target: target,
                                            options: options, progress: progress.update)
        progress.finish()
        if let output { try writePredictions(report.rows, to: URL(fileURLWithPath: output)) }
        let s = report.summary
        let wall = Date().timeIntervalSince(start)
        say(String(format: "%@: accuracy %.4f (%d/%d), strict %.4f (%d/%d); %d tokens generated in %.1f s (%.1f tokens/s); wall %.1f s",
                   s.task, s.accuracy, s.correct, s.n, s.accuracyStrict, s.correctStrict, s.n,
                   report.generatedTokens, report.generateSeconds, report.tokensPerSecond, wall))
        if let output { note("predictions: \(output)") }
        return Summary(head: .init(metric: "accuracy", task: s.task, n: s.n, wall_s: wall), accuracy: Summary.Accuracy(s),
                       speed: Summary.Speed(tokens_per_s: report.tokensPerSecond, prompt_tokens: report.promptTokens,
                                    generated_tokens: report.generatedTokens, generate_s: report.generateSeconds),
                       inputs: .init(model: path, adapter: adapter.adapter, data: data, output: output, template: template.rawValue,
                                     limit: limit, batch_size: batchSize, num_beams: numBeams, max_new_tokens: report.maxNewTokens))
    }

    /// Target loss and perplexity.
    func lossMetric(model path: String, data: String, task: EvalTask?, start: Date) throws -> Summary {
        let maxLength = templateOptions.maxLength
        let (model, tokenizer, chat, examples) = try load(model: path, data: data)
        let r = try evaluateLoss(model: model, tokenizer: tokenizer, examples: examples, template: template,
                                 maxLength: maxLength, batchSize: batchSize, strict: templateOptions.strict, chat: chat)
        for w in r.warnings { note("warning: \(w)") }
        if !r.loss.isFinite {
            // A NaN/Inf base weight makes every loss NaN: name it (one pass over the weights, only now).
            try model.weights.checkFinite(context: "found because the loss was \(r.loss)")
            throw InputError("\(path): the target loss is \(r.loss) although every base weight is finite: the adapter or the activations overflowed")
        }
        let name = task?.rawValue ?? EvalTask.detect(path: data)?.rawValue
        let wall = Date().timeIntervalSince(start)
        say(String(format: "%@loss %.4f, perplexity %.3f over %d target tokens of %d records; %.1f tokens/s; wall %.1f s",
                   name.map { "\($0): " } ?? "", r.loss, r.perplexity, r.targetTokens, r.n, r.tokensPerSecond, wall))
        return Summary(head: .init(metric: "loss", task: name, n: r.n, wall_s: wall),
                       loss: Summary.Loss(loss: r.loss, perplexity: r.perplexity, target_tokens: r.targetTokens, tokens: r.tokens),
                       speed: Summary.Speed(tokens_per_s: r.tokensPerSecond),
                       inputs: .init(model: path, adapter: adapter.adapter, data: data, template: template.rawValue, limit: limit,
                                     batch_size: batchSize))
    }

    // MARK: Output

    /// The human summary: stdout, or stderr when stdout carries `--json`.
    func say(_ s: String) {
        if json { note(s) } else { print(s) }
    }

    /// Appends one JSON line with a single `write(2)` on an `O_APPEND` descriptor, so concurrent
    /// runs appending to the same results file never interleave within a line.
    func appendLine(_ row: Summary, to path: String) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        let bytes = [UInt8](try enc.encode(row)) + [UInt8(ascii: "\n")]
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard fd >= 0 else { throw InputError("--append-results \(path): cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else {
            throw InputError("--append-results \(path): write failed: \(written < 0 ? String(cString: strerror(errno)) : "short write")")
        }
    }
}

extension EvalCommand.Summary.Accuracy {
    init(_ s: ScoreSummary) {
        self.init(accuracy: s.accuracy, accuracy_strict: s.accuracyStrict, correct: s.correct, correct_strict: s.correctStrict)
    }
}
