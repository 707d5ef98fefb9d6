import Foundation
import Testing
import TestSupport
@testable import Training

/// Scores each LLM-Adapters test set's own `output` field as if it were a generation, under the
/// LLM-Adapters-compatible rule. The expected counts are what LLM-Adapters' `evaluate.py` /
/// `commomsense_evaluate.py` extraction gives on those fields (e.g. a GSM8K `output` whose last
/// number is not the gold answer counts as wrong): the commonsense sets are all correct, the
/// math sets are not (their `output`s are model-written rationales).
@Suite("Scoring acceptance: LLM-Adapters test sets")
struct ScoringAcceptanceTests {
    @Test(.requires(Assets.shared), arguments: [
        ("boolq", 3270, 3270), ("piqa", 1838, 1838), ("social_i_qa", 1954, 1954),
        ("ARC-Easy", 2376, 2376), ("ARC-Challenge", 1172, 1172), ("openbookqa", 500, 500),
        ("winogrande", 1267, 1267),
        ("gsm8k", 771, 1319), ("SVAMP", 803, 1000), ("AddSub", 370, 395), ("MultiArith", 560, 600),
        ("SingleEq", 484, 508), ("AQuA", 109, 254),
    ])
    func ownOutputsScoreAsPublished(dataset: String, correct: Int, total: Int) throws {
        let url = TestPaths.shared("data/datasets/llm-adapters/dataset/\(dataset)/test.json")
        let task = try #require(EvalTask.detect(path: url.path))
        #expect(EvalTask(name: dataset) == task)
        let loaded = try loadExamples(from: url, strict: true)
        let rows = loaded.examples.enumerated().map { i, e in
            PredictionRow(index: i, output: e.output, answer: e.answer ?? "", location: e.location)
        }
        let report = try scorePredictions(rows, task: task)
        #expect(report.summary.task == task.rawValue)
        #expect(report.summary.n == total)
        #expect(report.summary.correct == correct)
        #expect(abs(report.summary.accuracy - Double(correct) / Double(total)) < 1e-12)
        print("\(dataset): compatible \(report.summary.correct)/\(total), strict \(report.summary.correctStrict)/\(total)")
    }

    /// mathqa and mawps ship with empty `output`s: nothing can be extracted, so every item is wrong.
    @Test(.requires(Assets.shared), arguments: [("mathqa", 2985), ("mawps", 238)])
    func emptyOutputsScoreZero(dataset: String, total: Int) throws {
        let url = TestPaths.shared("data/datasets/llm-adapters/dataset/\(dataset)/test.json")
        let task = try #require(EvalTask.detect(path: url.path))
        let loaded = try loadExamples(from: url, strict: true)
        #expect(loaded.examples.allSatisfy { $0.output.isEmpty })
        let rows = loaded.examples.enumerated().map { PredictionRow(index: $0, output: $1.output, answer: $1.answer ?? "") }
        let report = try scorePredictions(rows, task: task)
        #expect(report.summary.n == total && report.summary.correct == 0)
        // Scoring the gold answers themselves as generations gives 100%: the rule and the
        // answers' format agree.
        let gold = try scorePredictions(rows.map { var r = $0; r.output = "The answer is \(r.answer)."; return r }, task: task)
        #expect(gold.summary.correct == total)
    }

    /// The same outputs from a preds.jsonl file give the same count (file round trip, path detection).
    /// AQuA's test.json is small enough to live in Tests/Fixtures/data (a byte-for-byte copy).
    @Test func predsFileRoundTrip() throws {
        let url = TestPaths.fixtures.appendingPathComponent("data/AQuA/test.json")
        let loaded = try loadExamples(from: url, strict: true)
        let rows = loaded.examples.enumerated().map { PredictionRow(index: $0, output: $1.output, answer: $1.answer ?? "") }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("acc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let preds = dir.appendingPathComponent("AQuA-preds.jsonl")
        try writePredictions(rows, to: preds)
        let report = try scorePredictionsFile(at: preds)
        #expect(report.summary.task == "aqua")
        #expect(report.summary.correct == 109 && report.summary.n == 254)
    }
}
