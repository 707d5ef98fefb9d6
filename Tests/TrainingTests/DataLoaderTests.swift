import Foundation
import Testing
import TestSupport
@testable import Training

// MARK: - Record layouts

@Suite("Data loading")
struct DataLoaderTests {
    @Test func math10kJSONArray() throws {
        let loaded = try loadExamples(from: dataFixture("math10k_head.json"), strict: true)
        #expect(loaded.format == .jsonArray)
        #expect(loaded.examples.count == 3)
        #expect(loaded.skipped == 0)
        let e = loaded.examples[0]
        #expect(e.kind == .instruction)
        #expect(e.instruction == "Julia played tag with 16 kids on monday. If she played tag with 12 more kids on monday than on tuesday. How many kids did she play with on tuesday?")
        #expect(e.input == "")
        #expect(e.output.hasPrefix("\nA: She played with 16 kids on Monday."))   // not stripped at load time
        #expect(e.output.hasSuffix("The answer is 4."))
        #expect(e.answer == "4.0")
        #expect(loaded.examples.map(\.answer) == ["4.0", "1.0", "36.0"])
        // Element locations: index and the line the element starts on (`[` is line 1).
        #expect(loaded.examples[0].location.index == 0)
        #expect(loaded.examples[0].location.line == 2)
        #expect(loaded.examples[1].location.index == 1)
        #expect(loaded.examples[1].location.line == 8)
    }

    @Test func gsm8kOriginalLayout() throws {
        let loaded = try loadExamples(from: dataFixture("gsm8k_head.jsonl"), strict: true)
        #expect(loaded.format == .jsonl)
        #expect(loaded.examples.map(\.kind) == [.gsm8k, .gsm8k, .gsm8k])
        let e = loaded.examples[0]
        #expect(e.instruction.hasPrefix("Janet\u{2019}s ducks lay 16 eggs per day."))
        #expect(e.output == "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day at the farmer\u{2019}s market.")
        #expect(e.answer == "18")
        #expect(loaded.examples[1].output == "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total amount of fabric is 2+1=<<2+1=3>>3 bolts of fabric")
        #expect(loaded.examples[1].answer == "3")
        #expect(loaded.examples[2].answer == "70000")
        #expect(loaded.examples[2].location.line == 3)
    }

    @Test func gsm8kWithoutMarkerIsMalformed() throws {
        let url = try writeDataTempFile(#"{"question": "q?", "answer": "no final answer here"}"# + "\n", name: "g.jsonl")
        #expect(throws: DataError.badField(RecordLocation(file: url.path, line: 1), field: "answer",
                                           expected: "a GSM8K solution ending with `#### <final answer>`")) {
            try loadExamples(from: url, strict: true)
        }
    }

    @Test func csqaBothLayoutsAgree() throws {
        let a = try loadExamples(from: dataFixture("csqa_original.jsonl"), strict: true).examples
        let b = try loadExamples(from: dataFixture("csqa_hf.jsonl"), strict: true).examples
        #expect(a.count == 3 && b.count == 3)
        for (x, y) in zip(a, b) {
            #expect(x.kind == .csqa && y.kind == .csqa)
            #expect(x.instruction == y.instruction)
            #expect(x.output == y.output)
            #expect(x.answer == y.answer)
            #expect(x.id == y.id)
        }
        #expect(a[0].instruction == "The sanctions against the school were a punishing blow, and they seemed to what the efforts the school had made to change? Answer Choices: (A) ignore (B) enforce (C) authoritarian (D) yell at (E) avoid")
        #expect(a[0].output == "the correct answer is A")
        #expect(a[0].answer == "A")
        #expect(a[1].answer == "B")
        // Hidden test split: no answerKey (original) / "" (HF): allowed, no answer.
        #expect(a[2].answer == nil && b[2].answer == nil)
        #expect(a[2].output == "" && b[2].output == "")
    }

    @Test func csqaAnswerKeyMustBeAChoice() throws {
        let line = #"{"id": "x", "question": "Q?", "choices": {"label": ["A", "B"], "text": ["a", "b"]}, "answerKey": "C"}"#
        let url = try writeDataTempFile(line + "\n", name: "c.jsonl")
        #expect(throws: DataError.self) { try loadExamples(from: url, strict: true) }
    }

    @Test func commonsenseTrainRecords() throws {
        let e = try loadExamples(from: dataFixture("boolq_train_head.json"), strict: true).examples
        #expect(e.count == 2)
        #expect(e.allSatisfy { $0.kind == .instruction })
        #expect(e[0].output.hasPrefix("the correct answer is "))
        let answers: [String?] = e.map(\.answer)
        #expect(answers.allSatisfy { $0 == "true" || $0 == "false" })
    }

    @Test func textAndPretokenized() throws {
        let text = """
        {"text": "  Once upon a time.  "}
        {"input_ids": [1, 5, 6, 7]}
        {"input_ids": [1, 5, 6, 7], "labels": [-100, -100, 6, 7]}
        """
        let loaded = try loadExamples(from: try writeDataTempFile(text, name: "mixed.jsonl"), strict: true)
        #expect(loaded.examples.map(\.kind) == [.text, .tokenized, .tokenized])
        #expect(loaded.examples[0].text == "  Once upon a time.  ")
        #expect(loaded.examples[1].inputIds == [1, 5, 6, 7])
        #expect(loaded.examples[1].labels == nil)
        #expect(loaded.examples[2].labels == [-100, -100, 6, 7])
        #expect(loaded.kindCounts[.tokenized] == 2)
    }

    @Test(arguments: [
        (#"{"input_ids": [1, 2], "labels": [1]}"#, "labels"),
        (#"{"input_ids": [1, 2], "labels": [1, -5]}"#, "labels[1]"),
        (#"{"input_ids": [1, 2.5]}"#, "input_ids[1]"),
        (#"{"input_ids": [1, "2"]}"#, "input_ids[1]"),
        (#"{"input_ids": []}"#, "input_ids"),
        (#"{"input_ids": [-1]}"#, "input_ids[0]"),
        (#"{"instruction": ["not", "a", "string"], "output": "x"}"#, "instruction"),
    ])
    func badFieldsNameTheField(line: String, field: String) throws {
        let url = try writeDataTempFile("\n" + line + "\n", name: "bad.jsonl")
        do {
            _ = try loadExamples(from: url, strict: true)
            Issue.record("expected an error for \(line)")
        } catch let DataError.badField(loc, f, _) {
            #expect(f == field)
            #expect(loc.line == 2)
            #expect(loc.file == url.path)
        }
    }

    // MARK: Malformed records: skip with a count, or fail in strict mode

    @Test func malformedJSONLLinesAreSkippedAndCounted() throws {
        let text = """
        {"instruction": "a", "output": "b", "answer": "1"}
        {"instruction": "c", "output": "d", "answer": "2"

        [1, 2, 3]
        {"foo": 1}
        {"instruction": "e", "output": "f", "answer": "3"}
        """
        let url = try writeDataTempFile(text, name: "m.jsonl")
        let loaded = try loadExamples(from: url, strict: false)
        #expect(loaded.examples.map(\.instruction) == ["a", "e"])
        #expect(loaded.examples.map { $0.location.line } == [1, 6])
        #expect(loaded.skipped == 3)
        #expect(loaded.warnings.contains { $0.contains("\(url.path):2") && $0.contains("not valid JSON") })
        #expect(loaded.warnings.contains { $0.contains("\(url.path):4") && $0.contains("expected a JSON object") })
        #expect(loaded.warnings.contains { $0.contains("\(url.path):5") && $0.contains("unrecognized record") && $0.contains("foo") })
        #expect(loaded.warnings.last!.contains("skipped 3 malformed record(s) of 5"))

        do {
            _ = try loadExamples(from: url, strict: true)
            Issue.record("strict mode must throw")
        } catch let DataError.malformedRecord(loc, _) {
            #expect(loc == RecordLocation(file: url.path, line: 2))
            #expect(DataError.malformedRecord(loc, reason: "x").description.hasPrefix("\(url.path):2"))
        }
    }

    @Test func malformedArrayElementReportsIndexAndLine() throws {
        let text = """
        [
          {"instruction": "a", "output": "b", "answer": "1"},
          {"instruction": "c",
           "output": tru},
          {"text": "ok, [still] {fine}, \\"quoted\\" ]"},
          7
        ]
        """
        let url = try writeDataTempFile(text, name: "arr.json")
        let loaded = try loadExamples(from: url)
        #expect(loaded.examples.count == 2)
        #expect(loaded.examples[1].text == #"ok, [still] {fine}, "quoted" ]"#)
        #expect(loaded.examples[1].location == RecordLocation(file: url.path, line: 5, index: 2))
        #expect(loaded.skipped == 2)
        #expect(loaded.warnings.contains { $0.contains("\(url.path):3 (element 1)") })
        #expect(loaded.warnings.contains { $0.contains("\(url.path):6 (element 3)") })
        #expect(throws: DataError.self) { try loadExamples(from: url, strict: true) }
    }

    @Test(arguments: [
        ("[\n {\"text\": \"a\"},\n {\"text\": \"b\"\n", 3),   // unterminated element
        ("[\n {\"text\": \"a\"},\n]\n", 3),                     // trailing comma
        ("[\n {\"text\": \"a\"}\n] extra\n", 3),               // content after the array
        ("[\n {\"text\": \"unterminated}\n]\n", 2),            // unterminated string
    ])
    func structuralErrorsAlwaysThrow(text: String, line: Int) throws {
        let url = try writeDataTempFile(text, name: "s.json")
        do {
            _ = try loadExamples(from: url, strict: false)
            Issue.record("expected a structural error")
        } catch let DataError.invalidJSON(loc, _) {
            #expect(loc.line == line)
        }
    }

    @Test func bomCRLFAndBlankLines() throws {
        let text = "\u{FEFF}{\"text\": \"a\"}\r\n\r\n  \r\n{\"text\": \"b\"}\r\n"
        let loaded = try loadExamples(from: try writeDataTempFile(text, name: "crlf.jsonl"), strict: true)
        #expect(loaded.examples.map(\.text) == ["a", "b"])
        #expect(loaded.examples.map { $0.location.line } == [1, 4])
    }

    @Test func jsonLinesUnderAJSONName() throws {
        let loaded = try loadExamples(from: try writeDataTempFile("{\"text\": \"a\"}\n{\"text\": \"b\"}\n", name: "lines.json"))
        #expect(loaded.format == .jsonl)
        #expect(loaded.examples.count == 2)
    }

    @Test func prettyPrintedSingleObjectIsExplained() throws {
        let url = try writeDataTempFile("{\n  \"text\": \"a\"\n}\n", name: "obj.json")
        do {
            _ = try loadExamples(from: url)
            Issue.record("expected an error")
        } catch let DataError.invalidJSON(loc, reason) {
            #expect(loc.line == 1)
            #expect(reason.contains("expected a JSON array of records or one JSON object per line"))
        }
    }

    @Test func emptyAndMissingFiles() throws {
        #expect(throws: DataError.self) { try loadExamples(from: try writeDataTempFile("\n\n", name: "e.jsonl")) }
        #expect(throws: DataError.self) { try loadExamples(from: try writeDataTempFile("[]", name: "e.json")) }
        #expect(throws: DataError.self) { try loadExamples(from: URL(fileURLWithPath: "/nonexistent/x.jsonl")) }
        // All records malformed: nothing to train on is an error even when skipping.
        #expect(throws: DataError.self) { try loadExamples(from: try writeDataTempFile("{\"foo\": 1}\n", name: "f.jsonl")) }
    }

    @Test func scalarFieldsBecomeStringsAsPythonStr() throws {
        let text = #"{"instruction": "q", "output": "o", "answer": 18}"# + "\n"
            + #"{"instruction": "q", "output": "o", "answer": 2.50}"# + "\n"
            + #"{"instruction": "q", "output": "o", "answer": true, "input": null}"# + "\n"
        let e = try loadExamples(from: try writeDataTempFile(text, name: "n.jsonl"), strict: true).examples
        #expect(e.map(\.answer) == ["18", "2.5", "True"])
        #expect(e[2].input == "")
    }
}

// MARK: - Python-compatible helpers

@Suite("Python text helpers")
struct DataPyTextTests {
    @Test(arguments: [
        ("  a b  ", "a b"),
        ("\n\tA: x\r\n", "A: x"),
        ("\u{1C}\u{85}\u{A0}x\u{3000}", "x"),   // Python isspace() includes U+001C and U+0085
        ("\u{200B}x", "\u{200B}x"),               // ZERO WIDTH SPACE is not whitespace in Python
        ("   ", ""),
        ("", ""),
    ])
    func strip(input: String, expected: String) {
        #expect(PyText.strip(input) == expected)
    }

    @Test(arguments: [
        (18.0, "18.0"), (0.1, "0.1"), (1e16, "1e+16"), (1e15, "1000000000000000.0"),
        (1e-5, "1e-05"), (0.0001, "0.0001"), (-2.5, "-2.5"), (123456789.0, "123456789.0"),
        (1.5e300, "1.5e+300"), (-0.0, "-0.0"), (1.8333333333333335, "1.8333333333333335"),
        (Double.infinity, "inf"),
    ])
    func floatRepr(value: Double, expected: String) {
        #expect(PyText.floatRepr(value) == expected)
    }
}
