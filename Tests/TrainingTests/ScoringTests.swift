import Foundation
import Testing
@testable import Training

@Suite("Answer extraction and scoring")
struct ScoringTests {
    // MARK: LLM-Adapters-compatible rule

    @Test(arguments: [
        // (generation, gold answer, expected prediction, correct)
        ("The answer is 1,234.", "1234", "1234.", true),            // commas removed first
        ("It fell to -5 degrees.", "-5", "-5", true),               // negatives
        ("It weighs 3.5 kg.", "3.5", "3.5", true),                  // decimals
        ("It costs $12.50.", "12.5", "12.50", true),
        ("3 apples, then 7 remain, so we are done", "3", "7", false), // LAST number
        ("no number here", "0", "", false),                          // no match: inf, never correct
        ("", "0", "", false),
        ("The answer is 4.0001", "4", "4.0001", true),              // |diff| <= 0.001
        ("The answer is 4.002", "4", "4.002", false),
        ("5-3=2", "2", "2", true),                                   // matches 5, -3, 2
        ("the result is - 5", "-5", "5", false),                     // "-" must touch the digits
        ("1e5 people", "100000", "5", false),                        // no exponent syntax
        ("answer 10.\n### Response: 99", "10", "10.", true),        // text after a 2nd `### Response:` is not searched
        ("\u{0664}\u{0662} in Arabic-Indic digits", "42", "\u{0664}\u{0662}", true), // \d is any Nd digit
        ("The answer is 576.", "576.0", "576.", true),               // gold answers like 576.0
        ("  \n 8 \n", " 8 ", "8", true),
    ])
    func numeric(generation: String, answer: String, prediction: String, correct: Bool) throws {
        let p = AnswerExtractor.compatible(generation, rule: .number)
        #expect(p == prediction)
        #expect(try AnswerExtractor.isCorrect(prediction: p, answer: answer, rule: .number) == correct)
    }

    @Test(arguments: [
        ("the answer is (D).", "D", "D", true),
        ("Answer: (B)", "B", "A", false),                  // the stray capital A of "Answer" wins
        ("Rationale: 2 + 2 = 4. The answer is (C).", "C", "C", true),
        ("Since E = mc^2, (A)", "A", "E", false),
        ("lowercase only: a b c", "A", "", false),
        ("", "A", "", false),
        ("ÉCOLE (B)", "B", "C", false),                     // É is not E; C of ÉCOLE is
    ])
    func aquaLetters(generation: String, answer: String, prediction: String, correct: Bool) throws {
        let p = AnswerExtractor.compatible(generation, rule: .letter)
        #expect(p == prediction)
        #expect(try AnswerExtractor.isCorrect(prediction: p, answer: answer, rule: .letter) == correct)
    }

    @Test(arguments: [
        (EvalTask.boolq, "the correct answer is false", "false", "false"),
        (.boolq, "True", "true", ""),                       // case-sensitive
        (.boolq, "truefalse", "true", "true"),              // no word boundaries
        (.boolq, "that is untrue", "false", "true"),
        (.boolq, "FALSE, so false", "false", "false"),
        (.piqa, "the correct answer is solution2", "solution2", "solution2"),
        (.piqa, "Solution1", "solution1", ""),
        (.siqa, "answer12", "answer1", "answer1"),
        (.arcE, "the correct answer is answer5", "answer5", "answer5"),
        (.arcC, "answer3 or answer1", "answer1", "answer3"), // first match
        (.obqa, "the correct answer is answer4", "answer4", "answer4"),
        (.winogrande, "option2", "option2", "option2"),
        (.hellaswag, "ending4 then ending1", "ending4", "ending4"),
        (.hellaswag, "ending5", "ending1", ""),
        (.boolq, "the answer is false\n### Response: true", "false", "false"),
    ])
    func commonsense(task: EvalTask, generation: String, answer: String, prediction: String) throws {
        let p = AnswerExtractor.compatible(generation, rule: task.rule)
        #expect(p == prediction)
        #expect(try AnswerExtractor.isCorrect(prediction: p, answer: answer, rule: task.rule) == (prediction == answer))
    }

    // MARK: Strict rule (ours)

    @Test(arguments: [
        ("A: 16 - 12 = 4. The answer is 4.\n\n### Final Answer:\n\\boxed{4.0}", AnswerRule.number, "4.0", "4", true),
        ("half of 3 and 2 is \\boxed{\\frac{1}{2}}", .number, "0.5", "0.5", true),
        ("so 7/2 people\n#### 7/2", .number, "3.5", "3.5", true),
        ("#### 1,000", .number, "1000", "1000", true),
        ("The answer is 12. Check: 12 + 3 = 15", .number, "12.", "12", true),   // `12.` as the regex matches it
        ("we get 5 and 6 apples", .number, "6", "6", true),                  // no marker: falls back
        ("\\boxed{x} but 9", .number, "9", "9", true),                       // marker without a number: falls back
        ("Answer: The answer is (B)", .letter, "B", "B", true),
        ("\\boxed{answer2} answer1", .choice(["answer1", "answer2", "answer3"]), "answer2", "answer2", true),
        ("The answer is True", .choice(["true", "false"]), "", "true", false),
        ("\\boxed{a{b}c} the answer is 3", .number, "3", "3", true),         // balanced braces, last marker kinds in order
    ])
    func strict(generation: String, rule: AnswerRule, prediction: String, answer: String, correct: Bool) throws {
        let p = AnswerExtractor.strict(generation, rule: rule)
        #expect(p == prediction)
        #expect(try AnswerExtractor.isCorrect(prediction: p, answer: answer, rule: rule) == correct)
    }

    @Test func strictDiffersFromCompatibleWhereItShould() throws {
        let row = try scoreRow(PredictionRow(index: 0, output: "The answer is 12. Check: 12 + 3 = 15", answer: "12"), rule: .number)
        #expect(row.prediction == "15" && !row.correct)
        #expect(row.predictionStrict == "12." && row.correctStrict)
    }

    // MARK: Gold answers

    @Test func goldAnswers() throws {
        #expect(AnswerExtractor.parseGoldNumber("576.0") == 576)
        #expect(AnswerExtractor.parseGoldNumber(" 1,000 ") == 1000)
        #expect(AnswerExtractor.parseGoldNumber("1.8333333333333335") == 1.8333333333333335)
        #expect(AnswerExtractor.parseGoldNumber("0x10") == nil)
        #expect(AnswerExtractor.parseGoldNumber("A") == nil)
        #expect(throws: ScoringError.self) { try AnswerExtractor.isCorrect(prediction: "1", answer: "A", rule: .number) }
        #expect(throws: ScoringError.self) { try AnswerExtractor.isCorrect(prediction: "", answer: "", rule: .letter) }
        #expect(throws: ScoringError.self) { try AnswerExtractor.isCorrect(prediction: "", answer: "  ", rule: .number) }
    }

    // MARK: Tasks

    @Test(arguments: [
        ("/x/dataset/gsm8k/test.json", EvalTask.gsm8k), ("/x/dataset/SVAMP/test.json", .svamp),
        ("/x/dataset/AQuA/test.json", .aqua), ("/x/dataset/AddSub/test.json", .addsub),
        ("/x/dataset/MultiArith/test.json", .multiarith), ("/x/dataset/SingleEq/test.json", .singleeq),
        ("/x/dataset/mawps/test.json", .mawps), ("/x/dataset/mathqa/test.json", .mathqa),
        ("/x/dataset/boolq/test.json", .boolq), ("/x/dataset/piqa/test.json", .piqa),
        ("/x/dataset/social_i_qa/test.json", .siqa), ("/x/dataset/ARC-Easy/test.json", .arcE),
        ("/x/dataset/ARC-Challenge/test.json", .arcC), ("/x/dataset/openbookqa/test.json", .obqa),
        ("/x/dataset/winogrande/test.json", .winogrande), ("/x/dataset/hellaswag/test.json", .hellaswag),
        ("/runs/preds_social_i_qa.jsonl", .siqa), ("/runs/ARC-Challenge-preds.jsonl", .arcC),
        ("/runs/csqa/dev.jsonl", .csqa), ("/gsm8k/runs/boolq.jsonl", .boolq),
    ])
    func taskFromPath(path: String, task: EvalTask) {
        #expect(EvalTask.detect(path: path) == task)
    }

    @Test func taskNames() {
        #expect(EvalTask(name: "arc-e") == .arcE)
        #expect(EvalTask(name: "ARC_Easy") == .arcE)
        #expect(EvalTask(name: "Social_I_QA") == .siqa)
        #expect(EvalTask(name: "auto") == nil)
        #expect(EvalTask.detect(path: "/runs/preds.jsonl") == nil)
        for t in EvalTask.allCases {
            #expect(EvalTask(name: t.rawValue) == t)
            #expect(EvalTask(name: t.datasetDirectoryName) == t)
        }
    }

    @Test func ruleInference() {
        #expect(AnswerRule.infer(answers: ["1.0", "-2", "3,000"]) == .number)
        #expect(AnswerRule.infer(answers: ["A", "E"]) == .letter)
        #expect(AnswerRule.infer(answers: ["true", "false"]) == EvalTask.boolq.rule)
        #expect(AnswerRule.infer(answers: ["answer1", "answer5"]) == EvalTask.obqa.rule)
        #expect(AnswerRule.infer(answers: ["A", "1"]) == nil)
        #expect(AnswerRule.infer(answers: ["A", ""]) == nil)
        #expect(EvalTask.detect(examples: [Example.instruction("q", output: "", answer: "option1")]) == .winogrande)
        #expect(EvalTask.detect(examples: [Example.instruction("q", output: "", answer: "answer1")]) == nil)
    }

    // MARK: preds.jsonl

    @Test func predsRoundTripAndRescore() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("scoring-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent("gsm8k-preds.jsonl")
        let rows = [
            PredictionRow(index: 0, prompt: "Q: \"quoted\"\n\tnext", output: "so 3 + 4 = 7. The answer is 7.", answer: "7"),
            PredictionRow(index: 1, prompt: nil, output: "The answer is 12. Check: 12 + 3 = 15 \u{1} é 中", answer: "12"),
            PredictionRow(index: 2, output: "nothing", answer: "5.0"),
        ]
        let scored = try scorePredictions(rows, task: nil, path: url.path)
        #expect(scored.summary.task == "gsm8k")
        #expect(scored.summary.n == 3 && scored.summary.correct == 1 && scored.summary.correctStrict == 2)
        try writePredictions(scored.rows, to: url)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path) == ["gsm8k-preds.jsonl"])  // no temp file left

        // Only output + answer are needed; prediction/correct are recomputed, not trusted.
        let tampered = try String(contentsOf: url, encoding: .utf8)
            .replacingOccurrences(of: "\"correct\": false", with: "\"correct\": true")
        try Data(tampered.utf8).write(to: url)
        let again = try scorePredictionsFile(at: url)
        #expect(again.summary == scored.summary)
        #expect(again.rows.map(\.prompt) == rows.map(\.prompt))
        #expect(again.rows.map(\.output) == rows.map(\.output))
        #expect(again.rows.map(\.prediction) == ["7.", "15", ""])

        // The summary encodes with the CLI's JSON keys.
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(again.summary)) as! [String: Any]
        #expect(Set(json.keys) == ["task", "n", "correct", "accuracy", "correct_strict", "accuracy_strict"])
        #expect((json["accuracy"] as? Double).map { abs($0 - 1.0 / 3.0) < 1e-12 } == true)
    }

    @Test func predsMinimalRowsAndErrors() throws {
        let ok = try writeDataTempFile(#"{"output": "the correct answer is true", "answer": "true"}"# + "\n"
                               + #"{"output": "false", "answer": "true", "index": 7}"# + "\n", name: "p.jsonl")
        let report = try scorePredictionsFile(at: ok)
        #expect(report.summary.task == "true|false")    // inferred from the answers
        #expect(report.rows.map(\.index) == [0, 7])
        #expect(report.summary.correct == 1)
        #expect(try scorePredictionsFile(at: ok, task: .boolq).summary.task == "boolq")

        let missing = try writeDataTempFile(#"{"output": "x", "answer": "1"}"# + "\n" + #"{"answer": "1"}"# + "\n", name: "p.jsonl")
        #expect(throws: ScoringError.badRow(RecordLocation(file: missing.path, line: 2), reason: "field `output`: expected a string")) {
            try scorePredictionsFile(at: missing, task: .gsm8k)
        }
        // An empty gold answer (hidden CSQA test split) cannot be scored.
        let csqa = try writeDataTempFile(#"{"output": "the correct answer is A", "answer": ""}"# + "\n", name: "p.jsonl")
        #expect(throws: ScoringError.missingAnswer(RecordLocation(file: csqa.path, line: 1))) {
            try scorePredictionsFile(at: csqa, task: .csqa)
        }
        let unknown = try writeDataTempFile(#"{"output": "x", "answer": "maybe"}"# + "\n", name: "p.jsonl")
        #expect(throws: ScoringError.self) { try scorePredictionsFile(at: unknown) }
    }
}
