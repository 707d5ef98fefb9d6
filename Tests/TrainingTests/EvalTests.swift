import Foundation
import LLMCore
import Testing
import TestSupport
import Tokenize
@testable import Training

/// `finetune eval`: generation evaluation on stories260K, re-scoring, loss, stop strings, and
/// the one-line errors for bad input.
@Suite struct EvalTests {
    static let storiesDir = TestPaths.models.appendingPathComponent("stories260K")
    static let gsm8k20 = dataFixture("gsm8k_test_20.jsonl")

    static func stories() throws -> (TransformerModel, any Tokenizer) {
        (TransformerModel(weights: try ModelWeights.load(directory: storiesDir)), try loadTokenizer(from: storiesDir))
    }

    static func rows(_ url: URL) throws -> [[String: Any]] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any]
        }
    }

    static func json(_ s: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(s.utf8)) as! [String: Any]
    }

    // MARK: End to end

    /// The acceptance run: 20 GSM8K test items with the bundled model, preds.jsonl written, and
    /// `--score` reproducing the same accuracy and the same per-row predictions.
    @Test func gsm8kSliceEndToEnd() throws {
        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let dir = try temporaryDirectory("eval-e2e")
        defer { try? FileManager.default.removeItem(at: dir) }
        let preds = dir.appendingPathComponent("preds.jsonl"), results = dir.appendingPathComponent("results.jsonl")
        let run = try runProcess(exe, ["eval", "--model", Self.storiesDir.path, "--data", Self.gsm8k20.path, "--max-new-tokens", "64",
                                       "--batch-size", "6", "--output", preds.path, "--json", "--append-results", results.path])
        #expect(run.status == 0, "stderr: \(run.err)")
        let summary = try Self.json(run.out)
        #expect(summary["task"] as? String == "gsm8k")
        #expect(summary["n"] as? Int == 20)
        #expect(summary["max_new_tokens"] as? Int == 64)
        let generated = try #require(summary["generated_tokens"] as? Int)
        #expect(generated > 0 && generated <= 20 * 64)
        #expect((summary["tokens_per_s"] as? Double ?? 0) > 0 && (summary["wall_s"] as? Double ?? 0) > 0)
        #expect(run.err.contains("gsm8k: accuracy"), "the summary line goes to stderr with --json")

        // preds.jsonl: one row per item, in file order, gold answers from the data, predictions
        // that the scoring rules give for each output.
        let rows = try Self.rows(preds)
        let data = try loadExamples(from: Self.gsm8k20).examples
        #expect(rows.count == 20)
        var correct = 0
        for (i, r) in rows.enumerated() {
            #expect(r["index"] as? Int == i)
            #expect(r["answer"] as? String == data[i].answer)
            #expect(r["prompt"] as? String == (try PromptTemplate.auto.evalPrompt(for: data[i])))
            let output = try #require(r["output"] as? String)
            #expect(!output.contains("### Instruction") && !output.contains("### Solution"))
            #expect(r["prediction"] as? String == AnswerExtractor.compatible(output, rule: .number))
            #expect(r["prediction_strict"] as? String == AnswerExtractor.strict(output, rule: .number))
            if r["correct"] as? Bool == true { correct += 1 }
        }
        #expect(summary["correct"] as? Int == correct)
        #expect(abs((summary["accuracy"] as? Double ?? -1) - Double(correct) / 20) < 1e-12)

        // Re-scoring without a model reproduces the numbers and every row.
        let rescored = dir.appendingPathComponent("rescored.jsonl")
        let score = try runProcess(exe, ["eval", "--score", preds.path, "--task", "gsm8k", "--output", rescored.path, "--json"])
        #expect(score.status == 0, "stderr: \(score.err)")
        let s2 = try Self.json(score.out)
        for key in ["task", "n", "correct", "correct_strict"] {
            #expect("\(s2[key]!)" == "\(summary[key]!)", "\(key)")
        }
        #expect(s2["accuracy"] as? Double == summary["accuracy"] as? Double)
        #expect(s2["accuracy_strict"] as? Double == summary["accuracy_strict"] as? Double)
        let rows2 = try Self.rows(rescored)
        #expect(rows2.count == rows.count)
        for (a, b) in zip(rows, rows2) {
            for key in ["index", "prompt", "output", "prediction", "answer", "correct", "prediction_strict", "correct_strict"] {
                #expect("\(a[key]!)" == "\(b[key]!)", "\(key)")
            }
        }
        // Without --task the path names none: the rule is inferred from the answers, same counts.
        let inferred = try Self.json(try runProcess(exe, ["eval", "--score", preds.path, "--json"]).out)
        #expect(inferred["task"] as? String == "number" && inferred["correct"] as? Int == correct)

        // --append-results: one JSON line with the model/data fields.
        let lines = try String(contentsOf: results, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 1)
        let appended = try Self.json(String(lines[0]))
        #expect(appended["model"] as? String == Self.storiesDir.path && appended["data"] as? String == Self.gsm8k20.path)
        #expect(appended["accuracy"] as? Double == summary["accuracy"] as? Double && appended["timestamp"] != nil)
    }

    /// Bad input: a one-line error naming the flag, file or line, and a non-zero exit.
    @Test func badInputGivesOneLineErrors() throws {
        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let dir = try temporaryDirectory("eval-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let malformed = dir.appendingPathComponent("preds.jsonl")
        try "{\"output\": \"42\", \"answer\": \"42\"}\n{\"output\": \"7\", \"answer\": [1]}\n".write(to: malformed, atomically: true, encoding: .utf8)
        let notJSON = dir.appendingPathComponent("broken.jsonl")
        try "{\"output\": \"42\", \"answer\": \"42\"}\n\n{\"output\": \"7\", \n".write(to: notJSON, atomically: true, encoding: .utf8)
        let cases: [([String], String)] = [
            (["eval", "--model", Self.storiesDir.path, "--data", Self.gsm8k20.path, "--task", "gsm9k"], "--task 'gsm9k'"),
            (["eval", "--score", malformed.path, "--task", "nope"], "--task 'nope'"),
            (["eval", "--model", Self.storiesDir.path, "--data", dir.appendingPathComponent("missing.jsonl").path], "missing.jsonl"),
            (["eval", "--score", dir.appendingPathComponent("gone.jsonl").path], "gone.jsonl"),
            (["eval", "--score", malformed.path], "preds.jsonl:2"),
            (["eval", "--score", notJSON.path], "broken.jsonl:3"),
            (["eval", "--data", Self.gsm8k20.path], "--model"),
            (["eval", "--model", Self.storiesDir.path, "--data", Self.gsm8k20.path, "--metric", "bleu"], "--metric"),
            (["eval", "--model", Self.storiesDir.path, "--data", Self.gsm8k20.path, "--num-beams", "0"], "--num-beams"),
        ]
        for (args, mention) in cases {
            let r = try runProcess(exe, args)
            #expect(r.status != 0, "\(args) should fail")
            let err = r.err.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(!err.contains("\n"), "\(args): more than one line: \(err)")
            #expect(err.hasPrefix("error: ") && err.contains(mention), "\(args): \(err)")
            #expect(r.out.isEmpty)
        }
    }

    // MARK: Library

    /// The eval pipeline gives the same rows whatever the batch size (continuous batching vs one
    /// at a time), and beam search with one beam gives the greedy rows.
    @Test func batchSizeDoesNotChangeRows() throws {
        let (model, tok) = try Self.stories()
        let examples = Array(try loadExamples(from: Self.gsm8k20).examples.prefix(7))
        let target = try resolveEvalTarget(task: nil, path: Self.gsm8k20.path, examples: examples)
        #expect(target == EvalTarget(task: .gsm8k))
        let one = try evaluateGeneration(model: model, tokenizer: tok, examples: examples, target: target,
                                         options: EvalOptions(maxNewTokens: 40, batchSize: 1))
        var seen: [Int] = []
        let many = try evaluateGeneration(model: model, tokenizer: tok, examples: examples, target: target,
                                          options: EvalOptions(maxNewTokens: 40, batchSize: 4), progress: { seen.append($0.done) })
        #expect(one.rows == many.rows)
        #expect(one.generatedTokens == many.generatedTokens && one.generatedTokens > 0)
        #expect(seen == Array(1...7))
        #expect(one.summary.n == 7 && one.maxNewTokens == 40 && one.numBeams == 1)
        // The prompts are the training template's prompt part, tokenized with BOS.
        #expect(one.promptTokens == (try examples.reduce(0) { $0 + (try evalPromptIds($1, template: .auto, tokenizer: tok)).count }))
    }

    /// Four beams through the eval pipeline: deterministic, batched the same as one prompt at a time.
    @Test func beamSearchEvalIsDeterministic() throws {
        let (model, tok) = try Self.stories()
        let examples = Array(try loadExamples(from: Self.gsm8k20).examples.prefix(3))
        let target = EvalTarget(task: .gsm8k)
        let a = try evaluateGeneration(model: model, tokenizer: tok, examples: examples, target: target,
                                       options: EvalOptions(maxNewTokens: 16, batchSize: 3, numBeams: 4))
        let b = try evaluateGeneration(model: model, tokenizer: tok, examples: examples, target: target,
                                       options: EvalOptions(maxNewTokens: 16, batchSize: 1, numBeams: 4))
        #expect(a.rows == b.rows && a.numBeams == 4)
        #expect(a.rows.allSatisfy { !$0.output.isEmpty })
    }

    /// Checked after every new id (as generation does), tail decoding finds a stop string at the
    /// same id as decoding everything would, with the SentencePiece tokenizer (leading-space
    /// handling, byte fallback). After the first hit the tail may move past the marker; generation
    /// has stopped by then.
    @Test func stopStringTailMatchesFullDecode() throws {
        let (_, tok) = try Self.stories()
        let stops = PromptTemplate.ndlinear.stopStrings(for: .ndlinear)
        let matcher = StopStringMatcher(tokenizer: tok, stopStrings: stops)
        let texts = ["The answer is 42.\n\n### Instruction:\nNext one", "Tim said ### Solution then ran",
                     "no marker here at all, just a long story about a dog named Max who liked to run",
                     "héllo wörld ñ 日本 ### Instruction", "###Instruction ## Instruction #### Instruction"]
        for text in texts {
            let ids = try tok.encode(text, addSpecialTokens: false)
            var firstHit: Int?
            for n in 1...ids.count {
                let full = tok.decode(Array(ids[..<n]), skipSpecialTokens: true)
                let expected = stops.contains { full.contains($0) }
                #expect(matcher.matches(Array(ids[..<n])) == expected, "\(text) at \(n) ids")
                if expected { firstHit = n; break }
            }
            #expect((firstHit != nil) == (text.contains("### Instruction") || text.contains("### Solution")), "\(text)")
        }
        #expect(StopStringMatcher.truncate("x = 4\n### Solution:\ny ### Instruction", at: stops) == "x = 4\n")
        #expect(StopStringMatcher.truncate("nothing", at: stops) == "nothing")
        #expect(!StopStringMatcher(tokenizer: tok, stopStrings: []).matches([1, 2, 3]))
    }

    /// Generation stops at a stop string and the text from it on is dropped.
    @Test func generationStopsAtStopString() throws {
        let (model, tok) = try Self.stories()
        let full = try model.generate(prompts: [[1]], maxNewTokens: 60)[0]
        let text = tok.decode(full, skipSpecialTokens: true)
        // A word from the second half of the story: generation must stop at its first occurrence.
        let words = text.split(separator: " ").map(String.init).filter { $0.count >= 3 && $0.allSatisfy(\.isLetter) }
        let marker = try #require(words.dropFirst(words.count / 2).first, "no word in \(text)")
        let matcher = StopStringMatcher(tokenizer: tok, stopStrings: [marker])
        let out = try model.generateGreedy(prompts: [[1]], maxNewTokens: 60, maxBatch: 1, shouldStop: { matcher.matches($1) })[0]
        #expect(out == Array(full.prefix(out.count)))
        #expect(tok.decode(out, skipSpecialTokens: true).contains(marker))
        #expect(!tok.decode(Array(out.dropLast()), skipSpecialTokens: true).contains(marker))
        #expect(StopStringMatcher.truncate(tok.decode(out, skipSpecialTokens: true), at: [marker])
                == String(text[..<text.range(of: marker)!.lowerBound]))
    }

    /// Task resolution and the LLM-Adapters max-new-token defaults.
    @Test func taskResolution() throws {
        let gsm = try loadExamples(from: Self.gsm8k20).examples
        #expect(try resolveEvalTarget(task: nil, path: "/x/preds.jsonl", examples: gsm).task == .gsm8k) // GSM8K layout
        #expect(try resolveEvalTarget(task: .svamp, path: Self.gsm8k20.path, examples: gsm).task == .svamp)
        let boolq = try loadExamples(from: dataFixture("boolq_train_head.json")).examples
        let b = try resolveEvalTarget(task: nil, path: "/x/data.json", examples: boolq)
        #expect(b.task == .boolq && defaultMaxNewTokens(for: b) == 32)
        #expect(defaultMaxNewTokens(for: EvalTarget(task: .gsm8k)) == 256)
        #expect(defaultMaxNewTokens(for: EvalTarget(task: .aqua)) == 256)
        #expect(defaultMaxNewTokens(for: EvalTarget(task: .csqa)) == 32)
        let odd = [Example.instruction("q", output: "o", answer: "maybe", location: RecordLocation(file: "odd.json", line: 1))]
        #expect(throws: ScoringError.self) { try resolveEvalTarget(task: nil, path: "odd.json", examples: odd) }
        // A record without a gold answer is rejected before anything is generated.
        let (model, tok) = try Self.stories()
        let noAnswer = [Example.instruction("What is 2+2?", output: "", answer: nil, location: RecordLocation(file: "t.json", line: 3))]
        #expect(throws: ScoringError.missingAnswer(RecordLocation(file: "t.json", line: 3))) {
            try evaluateGeneration(model: model, tokenizer: tok, examples: noAnswer, target: EvalTarget(task: .gsm8k))
        }
    }

    // MARK: Loss

    /// `--metric loss`: padded batches of any size give the same mean loss as one record at a
    /// time, perplexity is its exp, and the CLI reports the same figure.
    @Test func targetLoss() throws {
        let (model, tok) = try Self.stories()
        let examples = Array(try loadExamples(from: Self.gsm8k20).examples.prefix(5))
        let prepared = try prepareExamples(examples, template: .auto, tokenizer: tok, options: TokenizeOptions(maxLength: 512))
        let single = try prepared.examples.reduce((sum: 0.0, count: 0)) { acc, e in
            let r = try targetLossSum(model: model, examples: [e], batchSize: 1, padId: 0)
            return (acc.sum + r.sum, acc.count + r.count)
        }
        let batched = try targetLossSum(model: model, examples: prepared.examples, batchSize: 4, padId: 0)
        #expect(batched.count == single.count && batched.count == prepared.examples.reduce(0) { $0 + $1.targetCount })
        #expect(abs(batched.sum - single.sum) <= 1e-4 * abs(single.sum))
        let report = try evaluateLoss(model: model, tokenizer: tok, examples: examples, template: .auto, maxLength: 512, batchSize: 3)
        #expect(abs(report.loss - single.sum / Double(single.count)) <= 1e-5)
        #expect(abs(report.perplexity - exp(report.loss)) <= 1e-9 * report.perplexity)
        #expect(report.n == 5 && report.targetTokens == single.count)

        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let r = try runProcess(exe, ["eval", "--model", Self.storiesDir.path, "--data", Self.gsm8k20.path, "--metric", "loss",
                                     "--limit", "5", "--batch-size", "2", "--json"])
        #expect(r.status == 0, "stderr: \(r.err)")
        let s = try Self.json(r.out)
        #expect(s["metric"] as? String == "loss" && s["n"] as? Int == 5 && s["target_tokens"] as? Int == single.count)
        #expect(abs((s["loss"] as? Double ?? 0) - report.loss) <= 1e-4)
    }
}
