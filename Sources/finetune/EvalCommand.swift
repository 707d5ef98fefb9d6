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
    @Option(help: "Threads for GEMMs and kernels (default: all cores).") var threads: Int?
    @Option(help: ArgumentHelp(gemmHelp)) var gemm: String = "auto"
    @OptionGroup var adapter: AdapterOptions
    @Option(help: "Test data: JSON array or JSONL (instruction/input/output/answer, GSM8K question/answer, CSQA).") var data: String?
    @Option(help: "auto, or one of: \(EvalTask.allCases.map(\.rawValue).joined(separator: ", ")).") var task: String = "auto"
    @Option(help: "ndlinear, alpaca, llm-adapters, raw, chat (the model's own chat template) or auto (as for training).") var template: String = "auto"
    @Option(help: "Maximum new tokens per item (default 256 for math tasks, 32 for commonsense ones, as LLM-Adapters).") var maxNewTokens: Int?
    @Option(help: "Prompts decoded together (greedy: sequences in flight; beam search: prompts per batch).") var batchSize: Int = 8
    @Option(help: "Beams per prompt (1 = greedy; LLM-Adapters uses 4).") var numBeams: Int = 1
    @Option(help: "Beam search length penalty (HF length_penalty).") var lengthPenalty: Double = 1.0
    @Option(help: "Evaluate only the first N records.") var limit: Int?
    @Option(help: "Write per-item predictions to this JSONL file.") var output: String?
    @Option(help: "Re-score a saved preds.jsonl instead of generating (no model needed).") var score: String?
    @Option(help: "accuracy (generate and score) or loss (target loss and perplexity).") var metric: String = "accuracy"
    @Option(help: "--metric loss: truncate records to this many tokens, as training does.") var maxLength: Int = 512
    @Flag(help: "A malformed data record is fatal (default: skipped and counted).") var strict = false
    @Flag(help: "Print one JSON object on stdout (human text goes to stderr).") var json = false
    @Option(help: "Append the JSON summary (plus model, adapter and data) as one line to this results file.") var appendResults: String?

    // MARK: Summary rows

    /// The `--json` object and the `--append-results` line.
    struct Summary: Encodable {
        var metric: String
        var task: String?
        var n: Int
        var accuracy: Double?
        var accuracy_strict: Double?
        var correct: Int?
        var correct_strict: Int?
        var loss: Double?
        var perplexity: Double?
        var target_tokens: Int?
        var tokens: Int?
        var prompt_tokens: Int?
        var generated_tokens: Int?
        var tokens_per_s: Double?
        var generate_s: Double?
        var wall_s: Double
        var num_beams: Int?
        var batch_size: Int?
        var max_new_tokens: Int?
        var template: String?
        var model: String?
        var adapter: String?
        var data: String?
        var preds: String?
        var output: String?
        var limit: Int?
        var timestamp: String?
    }

    func run() throws {
        try reportingErrors {
            let start = Date()
            let evalTask = try parseTask()
            var summary: Summary
            if let score {
                summary = try rescore(score, task: evalTask, start: start)
            } else {
                guard let model else { throw InputError("--model is required (unless --score re-scores a preds file)") }
                guard let data else { throw InputError("--data is required (unless --score re-scores a preds file)") }
                switch metric {
                case "accuracy": summary = try generate(model: model, data: data, task: evalTask, start: start)
                case "loss": summary = try lossMetric(model: model, data: data, task: evalTask, start: start)
                default: throw InputError("--metric '\(metric)': expected accuracy or loss")
                }
            }
            if json { try printJSON(summary) }
            if let appendResults {
                var row = summary
                row.timestamp = ISO8601DateFormatter().string(from: Date())
                try appendLine(row, to: appendResults)
            }
        }
    }

    // MARK: Modes

    func parseTask() throws -> EvalTask? {
        if task.lowercased() == "auto" { return nil }
        guard let t = EvalTask(name: task) else {
            throw InputError("--task '\(task)': unknown task; expected auto or one of \(EvalTask.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return t
    }

    func parseTemplate() throws -> PromptTemplate {
        do { return try PromptTemplate(name: template) } catch { throw InputError("--template: \(error)") }
    }

    /// `--score`: re-score a saved predictions file.
    func rescore(_ path: String, task: EvalTask?, start: Date) throws -> Summary {
        if data != nil { throw InputError("--score re-scores saved generations and takes no --data") }
        if metric != "accuracy" { throw InputError("--metric \(metric) cannot be used with --score") }
        let report = try scorePredictionsFile(at: URL(fileURLWithPath: path), task: task)
        if let output { try writePredictions(report.rows, to: URL(fileURLWithPath: output)) }
        let s = report.summary
        let wall = Date().timeIntervalSince(start)
        say(String(format: "%@: accuracy %.4f (%d/%d), strict %.4f (%d/%d); re-scored %@ in %.2f s",
                   s.task, s.accuracy, s.correct, s.n, s.accuracyStrict, s.correctStrict, s.n, path, wall))
        return Summary(metric: "accuracy", task: s.task, n: s.n, accuracy: s.accuracy, accuracy_strict: s.accuracyStrict,
                       correct: s.correct, correct_strict: s.correctStrict, wall_s: wall, preds: path, output: output)
    }

    /// Loads the model, tokenizer, chat template (for `--template chat`) and adapter, and the
    /// data (with `--limit`).
    func load(model path: String, data: String) throws -> (TransformerModel, (any Tokenizer)?, PromptTemplate.Chat?, [Example]) {
        var args = ["--model", path]
        if let threads { args += ["--threads", String(threads)] }
        args += ["--gemm", gemm]
        let options = try ModelOptions.parse(args)
        if let limit, limit < 1 { throw InputError("--limit must be ≥ 1, got \(limit)") }
        let loaded = try loadExamples(from: URL(fileURLWithPath: data), strict: strict)
        for w in loaded.warnings { note("warning: \(w)") }
        let examples = limit.map { Array(loaded.examples.prefix($0)) } ?? loaded.examples
        let weights = try options.load()
        note(CPU.summary)
        let tokenizer = try options.tokenizer()
        let chat = try options.chat(template: template, tokenizer: tokenizer)
        let adapters = try adapter.load(config: weights.config)
        return (TransformerModel(weights: weights, adapters: adapters), tokenizer, chat, examples)
    }

    /// Generate and score.
    func generate(model path: String, data: String, task: EvalTask?, start: Date) throws -> Summary {
        guard batchSize >= 1 else { throw InputError("--batch-size must be ≥ 1, got \(batchSize)") }
        guard numBeams >= 1 else { throw InputError("--num-beams must be ≥ 1, got \(numBeams)") }
        if let m = maxNewTokens, m < 1 { throw InputError("--max-new-tokens must be ≥ 1, got \(m)") }
        let template = try parseTemplate()
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
        let meter = ProgressMeter()
        let report = try evaluateGeneration(model: model, tokenizer: tokenizer, examples: examples, target: target,
                                            options: options, progress: meter.update)
        meter.finish()
        if let output { try writePredictions(report.rows, to: URL(fileURLWithPath: output)) }
        let s = report.summary
        let wall = Date().timeIntervalSince(start)
        say(String(format: "%@: accuracy %.4f (%d/%d), strict %.4f (%d/%d); %d tokens generated in %.1f s (%.1f tokens/s); wall %.1f s",
                   s.task, s.accuracy, s.correct, s.n, s.accuracyStrict, s.correctStrict, s.n,
                   report.generatedTokens, report.generateSeconds, report.tokensPerSecond, wall))
        if let output { note("predictions: \(output)") }
        return Summary(metric: "accuracy", task: s.task, n: s.n, accuracy: s.accuracy, accuracy_strict: s.accuracyStrict,
                       correct: s.correct, correct_strict: s.correctStrict, prompt_tokens: report.promptTokens,
                       generated_tokens: report.generatedTokens, tokens_per_s: report.tokensPerSecond,
                       generate_s: report.generateSeconds, wall_s: wall, num_beams: numBeams, batch_size: batchSize,
                       max_new_tokens: report.maxNewTokens, template: template.rawValue, model: path, adapter: adapter.adapter,
                       data: data, output: output, limit: limit)
    }

    /// Target loss and perplexity.
    func lossMetric(model path: String, data: String, task: EvalTask?, start: Date) throws -> Summary {
        guard batchSize >= 1 else { throw InputError("--batch-size must be ≥ 1, got \(batchSize)") }
        guard maxLength >= 1 else { throw InputError("--max-length must be ≥ 1, got \(maxLength)") }
        if numBeams != 1 || output != nil { throw InputError("--metric loss generates nothing: --num-beams and --output do not apply") }
        let template = try parseTemplate()
        let (model, tokenizer, chat, examples) = try load(model: path, data: data)
        let r = try evaluateLoss(model: model, tokenizer: tokenizer, examples: examples, template: template,
                                 maxLength: maxLength, batchSize: batchSize, strict: strict, chat: chat)
        for w in r.warnings { note("warning: \(w)") }
        let name = task?.rawValue ?? EvalTask.detect(path: data)?.rawValue
        let wall = Date().timeIntervalSince(start)
        say(String(format: "%@loss %.4f, perplexity %.3f over %d target tokens of %d records; %.1f tokens/s; wall %.1f s",
                   name.map { "\($0): " } ?? "", r.loss, r.perplexity, r.targetTokens, r.n, r.tokensPerSecond, wall))
        return Summary(metric: "loss", task: name, n: r.n, loss: r.loss, perplexity: r.perplexity, target_tokens: r.targetTokens,
                       tokens: r.tokens, tokens_per_s: r.tokensPerSecond, wall_s: wall, batch_size: batchSize,
                       template: template.rawValue, model: path, adapter: adapter.adapter, data: data, limit: limit)
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

/// Evaluation progress on stderr: a live line on a terminal, otherwise a line every 10% of the
/// items (or 30 s).
final class ProgressMeter {
    let tty = isatty(STDERR_FILENO) != 0
    var lastPrinted = Date.distantPast
    var lastDone = 0

    func update(_ p: EvalProgress) {
        let rate = Double(p.generatedTokens) / max(p.elapsedSeconds, 1e-9)
        let eta = p.done > 0 ? p.elapsedSeconds * Double(p.total - p.done) / Double(p.done) : .nan
        let line = String(format: "%d/%d items, %d tokens, %.1f tokens/s, ETA %@", p.done, p.total, p.generatedTokens, rate,
                          eta.isFinite ? String(format: "%.0f s", eta) : "?")
        if tty {
            FileHandle.standardError.write(Data(("\r\u{1B}[2K" + line).utf8))
        } else {
            let step = max(1, p.total / 10)
            if p.done / step > lastDone / step || Date().timeIntervalSince(lastPrinted) > 30 || p.done == p.total {
                note(line)
                lastPrinted = Date()
            }
        }
        lastDone = p.done
    }

    func finish() {
        if tty { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
