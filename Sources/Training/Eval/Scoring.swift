import Foundation
import LLMCore

// MARK: - Errors

/// Errors raised while scoring generations or reading/writing `preds.jsonl`.
public enum ScoringError: Error, CustomStringConvertible, Equatable {
    /// A row has no gold answer (e.g. the hidden CSQA test split): nothing to score against.
    case missingAnswer(RecordLocation)
    /// The gold answer does not fit the task (e.g. not a number for a numeric task).
    case badAnswer(RecordLocation, answer: String, expected: String)
    /// A preds row is not valid JSON or lacks `output`/`answer`.
    case badRow(RecordLocation, reason: String)
    /// No task given and none could be detected from the path or the answers.
    case unknownTask(file: String, reason: String)
    /// A file with no rows.
    case empty(file: String)
    /// Reading or writing a file failed.
    case io(file: String, reason: String)

    public var description: String {
        switch self {
        case let .missingAnswer(loc):
            return "\(loc): empty gold answer; records without an answer (such as the hidden CommonsenseQA test split) can be generated but not scored"
        case let .badAnswer(loc, answer, expected):
            return "\(loc): gold answer `\(answer)`: expected \(expected)"
        case let .badRow(loc, reason):
            return "\(loc): bad predictions row: \(reason)"
        case let .unknownTask(file, reason):
            return "\(file): cannot tell the task (\(reason)); pass --task"
        case let .empty(file):
            return "\(file): no rows to score"
        case let .io(file, reason):
            return "\(file): \(reason)"
        }
    }
}

// MARK: - Rows and summaries

/// One row of `preds.jsonl` (CLI.md): `index, prompt, output, prediction, answer, correct`, plus
/// our strict-rule columns `prediction_strict`, `correct_strict`. Reading needs only `output`
/// and `answer`; everything else is recomputed.
public struct PredictionRow: Sendable, Equatable {
    public var index: Int
    public var prompt: String?
    /// The generated text (after the prompt).
    public var output: String
    /// The LLM-Adapters-compatible prediction (`""` when nothing was found).
    public var prediction: String
    public var answer: String
    public var correct: Bool
    public var predictionStrict: String
    public var correctStrict: Bool
    /// Where the row was read from (not written).
    public var location: RecordLocation?

    public init(index: Int, prompt: String? = nil, output: String, answer: String,
                prediction: String = "", correct: Bool = false,
                predictionStrict: String = "", correctStrict: Bool = false, location: RecordLocation? = nil) {
        self.index = index
        self.prompt = prompt
        self.output = output
        self.prediction = prediction
        self.answer = answer
        self.correct = correct
        self.predictionStrict = predictionStrict
        self.correctStrict = correctStrict
        self.location = location
    }

    /// The row as one JSON line (keys in the documented order, no trailing newline).
    public func jsonLine() -> String {
        var parts: [String] = ["\"index\": \(index)"]
        if let prompt { parts.append("\"prompt\": " + JSONValue.quote(prompt)) }
        parts.append("\"output\": " + JSONValue.quote(output))
        parts.append("\"prediction\": " + JSONValue.quote(prediction))
        parts.append("\"answer\": " + JSONValue.quote(answer))
        parts.append("\"correct\": \(correct)")
        parts.append("\"prediction_strict\": " + JSONValue.quote(predictionStrict))
        parts.append("\"correct_strict\": \(correctStrict)")
        return "{" + parts.joined(separator: ", ") + "}"
    }
}

/// The result of scoring a set of generations (`finetune eval --json` keys:
/// `task, n, correct, accuracy, correct_strict, accuracy_strict`).
public struct ScoreSummary: Sendable, Equatable, Codable {
    /// The task name (`gsm8k`, `arc-e`, ...), or the rule (`number`, `letter`,
    /// `answer1|...`) when only the answer format could be detected.
    public var task: String
    public var n: Int
    public var correct: Int
    /// LLM-Adapters-compatible accuracy, a fraction in [0, 1].
    public var accuracy: Double
    public var correctStrict: Int
    /// Our strict-rule accuracy, a fraction in [0, 1].
    public var accuracyStrict: Double

    enum CodingKeys: String, CodingKey {
        case task, n, correct, accuracy
        case correctStrict = "correct_strict"
        case accuracyStrict = "accuracy_strict"
    }

    public init(task: String, n: Int, correct: Int, correctStrict: Int) {
        self.task = task
        self.n = n
        self.correct = correct
        self.correctStrict = correctStrict
        accuracy = n > 0 ? Double(correct) / Double(n) : 0
        accuracyStrict = n > 0 ? Double(correctStrict) / Double(n) : 0
    }
}

/// Rows plus their summary.
public struct ScoreReport: Sendable {
    public var rows: [PredictionRow]
    public var summary: ScoreSummary
    public var rule: AnswerRule
}

// MARK: - Scoring

/// Scores one generation under both rules.
/// - Returns: the row with `prediction`, `correct`, `predictionStrict`, `correctStrict` filled in.
/// - Throws: `ScoringError` when the gold answer is empty or does not fit the rule.
public func scoreRow(_ row: PredictionRow, rule: AnswerRule) throws -> PredictionRow {
    var r = row
    let loc = row.location ?? RecordLocation(file: "<memory>", index: row.index)
    r.prediction = AnswerExtractor.compatible(row.output, rule: rule)
    r.correct = try AnswerExtractor.isCorrect(prediction: r.prediction, answer: row.answer, rule: rule, at: loc)
    r.predictionStrict = AnswerExtractor.strict(row.output, rule: rule)
    r.correctStrict = try AnswerExtractor.isCorrect(prediction: r.predictionStrict, answer: row.answer, rule: rule, at: loc)
    return r
}

/// Decides how to score: an explicit task wins; else the task named by `path`; else the rule
/// inferred from the gold answers (`AnswerRule.infer`).
public func resolveScoringRule(task: EvalTask?, path: String?, answers: [String]) throws -> (name: String, rule: AnswerRule) {
    if let task { return (task.rawValue, task.rule) }
    if let path, let t = EvalTask.detect(path: path) { return (t.rawValue, t.rule) }
    if let rule = AnswerRule.infer(answers: answers) { return (rule.description, rule) }
    throw ScoringError.unknownTask(file: path ?? "<memory>",
                                   reason: "the path names no task and the answers are neither all numbers, all letters A-E, nor one commonsense answer set")
}

/// Re-scores rows (`finetune eval --score`): recomputes prediction and correctness under both
/// rules and summarises. `task` nil means detect from `path` or the answers.
public func scorePredictions(_ rows: [PredictionRow], task: EvalTask?, path: String? = nil) throws -> ScoreReport {
    guard !rows.isEmpty else { throw ScoringError.empty(file: path ?? "<memory>") }
    let (name, rule) = try resolveScoringRule(task: task, path: path, answers: rows.map(\.answer))
    let scored = try rows.map { try scoreRow($0, rule: rule) }
    let summary = ScoreSummary(task: name, n: scored.count,
                               correct: scored.reduce(0) { $0 + ($1.correct ? 1 : 0) },
                               correctStrict: scored.reduce(0) { $0 + ($1.correctStrict ? 1 : 0) })
    return ScoreReport(rows: scored, summary: summary, rule: rule)
}

/// Reads `preds.jsonl` and re-scores it.
public func scorePredictionsFile(at url: URL, task: EvalTask? = nil) throws -> ScoreReport {
    try scorePredictions(readPredictions(from: url), task: task, path: url.path)
}

// MARK: - preds.jsonl

/// Reads `preds.jsonl`: one JSON object per non-blank line, with at least `output` (string)
/// and `answer` (string or number); `index` defaults to the row's position, `prompt` is kept
/// when present, other columns are ignored (they are recomputed).
public func readPredictions(from url: URL) throws -> [PredictionRow] {
    let file = url.path
    let data: Data
    do { data = try Data(contentsOf: url) } catch {
        throw ScoringError.io(file: file, reason: "cannot read: \(ErrorText.reason(error, path: file))")
    }
    var rows: [PredictionRow] = []
    for raw in JSONRecordSplitter.splitLines([UInt8](data), file: file) {
        let loc = raw.location
        let value: Any
        do { value = try JSONRecordSplitter.parse(raw) } catch {
            throw ScoringError.badRow(loc, reason: "not valid JSON")
        }
        guard let obj = value as? [String: Any] else { throw ScoringError.badRow(loc, reason: "expected a JSON object") }
        guard let output = obj["output"] as? String else {
            throw ScoringError.badRow(loc, reason: "field `output`: expected a string")
        }
        guard let answerValue = obj["answer"], let answer = PyText.str(answerValue) else {
            throw ScoringError.badRow(loc, reason: "field `answer`: expected a string or number")
        }
        var index = rows.count
        if let i = obj["index"] as? NSNumber, !(obj["index"] is String) { index = i.intValue }
        rows.append(PredictionRow(index: index, prompt: obj["prompt"] as? String, output: output, answer: answer,
                                  location: RecordLocation(file: file, line: loc.line)))
    }
    if rows.isEmpty { throw ScoringError.empty(file: file) }
    return rows
}

/// Writes rows as `preds.jsonl` atomically: the bytes go to a temporary file in the same
/// directory which is then renamed over `url` (rename(2) is atomic within a file system), so a
/// reader never sees a half-written file.
public func writePredictions(_ rows: [PredictionRow], to url: URL) throws {
    var text = ""
    for r in rows {
        text += r.jsonLine()
        text += "\n"
    }
    let tmp = url.deletingLastPathComponent()
        .appendingPathComponent(".\(url.lastPathComponent).tmp-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString)")
    do {
        try Data(text.utf8).write(to: tmp)
    } catch {
        throw ScoringError.io(file: url.path, reason: "cannot write: \(ErrorText.reason(error, path: tmp.path))")
    }
    if rename(tmp.path, url.path) != 0 {
        let reason = String(cString: strerror(errno))
        try? FileManager.default.removeItem(at: tmp)
        throw ScoringError.io(file: url.path, reason: "cannot rename the temporary file into place: \(reason)")
    }
}

