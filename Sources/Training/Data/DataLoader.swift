import Foundation
import LLMCore

// MARK: - Loading

/// Loads every record of a JSON array or JSONL file (FORMATS.md "Training data").
///
/// Supported record layouts, detected per record:
/// - `{"input_ids": [...], "labels": [...]}` — pre-tokenized (labels unshifted as in
///   transformers, -100 ignored; missing labels mean "same as input_ids"); needs no tokenizer.
/// - CommonsenseQA in either published layout (a `question` object with `stem`/`choices`, or a
///   string `question` with `choices: {label: [...], text: [...]}`; `answerKey` may be empty or
///   absent, which is fine for generation but not for scoring).
/// - `{"instruction", "input", "output", "answer"}` (LLM-Adapters; `input`, `output`, `answer`
///   may be absent).
/// - GSM8K `{"question", "answer"}` with the final answer after `#### `.
/// - `{"text"}`.
/// - `{"messages": [...][, "tools": [...]]}` and `{"prompt", "completion"}` (`ChatRecords`).
///
/// A record that is not valid JSON or has none of these layouts is skipped and counted (with
/// its file and line, plus the element index in a JSON array) unless `strict` is true, in which
/// case the first such record throws. Structural errors that make it impossible to find the
/// records at all (an unterminated array) always throw.
///
/// - Parameters:
///   - url: a `.json` (array, or JSON lines) or `.jsonl` file.
///   - strict: throw on the first malformed record instead of skipping it.
/// - Throws: `DataError`.
public func loadExamples(from url: URL, strict: Bool = false) throws -> LoadedData {
    let file = url.path
    let data: Data
    do {
        data = try Data(contentsOf: url)
    } catch {
        throw DataError.unreadable(file: file, reason: ErrorText.reason(error, path: file))
    }
    return try loadExamples(bytes: [UInt8](data), file: file, strict: strict)
}

/// Same as `loadExamples(from:strict:)` for bytes already in memory; `file` names them in errors
/// and decides the format by its extension.
public func loadExamples(bytes: [UInt8], file: String, strict: Bool = false) throws -> LoadedData {
    let format = JSONRecordSplitter.detectFormat(path: file, bytes: bytes)
    let raw: [RawRecord]
    switch format {
    case .jsonl: raw = JSONRecordSplitter.splitLines(bytes, file: file)
    case .jsonArray: raw = try JSONRecordSplitter.splitArray(bytes, file: file)
    }
    if raw.isEmpty { throw DataError.empty(file: file) }

    var examples: [Example] = []
    examples.reserveCapacity(raw.count)
    var skipped = 0
    var warnings: [String] = []
    var firstError: DataError?
    for record in raw {
        do {
            let value = try JSONRecordSplitter.parse(record)
            examples.append(try RecordDecoder.decode(value, bytes: record.bytes, at: record.location))
        } catch let error as DataError {
            if strict { throw error }
            skipped += 1
            if firstError == nil { firstError = error }
            if warnings.count < LoadedData.maxWarnings { warnings.append("skipped: \(error)") }
        }
    }
    if skipped > LoadedData.maxWarnings {
        warnings.append("... \(skipped - LoadedData.maxWarnings) more malformed records skipped")
    }
    if skipped > 0 {
        warnings.append("\(file): skipped \(skipped) malformed record(s) of \(raw.count); use strict mode to stop at the first")
    }
    if examples.isEmpty, let firstError {
        // Nothing readable at all: most likely not a data file of a supported shape (e.g. one
        // pretty-printed JSON object); say so instead of "no records". Records that are valid
        // JSON but of no supported layout are a schema problem, not "invalid JSON".
        if case let .malformedRecord(_, reason) = firstError, reason.hasPrefix("not valid JSON") {
            throw DataError.invalidJSON(RecordLocation(file: file, line: raw[0].location.line),
                                        reason: "none of the \(raw.count) record(s) could be read; expected a JSON array of records "
                                            + "or one JSON object per line. First problem: \(firstError)")
        }
        throw DataError.malformedRecord(RecordLocation(file: file, line: raw[0].location.line),
                                        reason: "none of the \(raw.count) record(s) has a supported layout (the JSON is valid). "
                                            + "First problem: \(firstError)")
    }
    if examples.isEmpty { throw DataError.empty(file: file) }
    return LoadedData(file: file, format: format, examples: examples, skipped: skipped, warnings: warnings)
}

// MARK: - Record layouts

/// Turns one parsed JSON value into an `Example`.
enum RecordDecoder {
    /// `bytes` is the record's JSON text: chat records are read from it again with their keys
    /// in file order (`ChatRecords`).
    static func decode(_ value: Any, bytes: ArraySlice<UInt8>, at loc: RecordLocation) throws -> Example {
        guard let obj = value as? [String: Any] else {
            throw DataError.malformedRecord(loc, reason: "expected a JSON object, found \(jsonTypeName(value))")
        }
        if obj["messages"] != nil || (obj["prompt"] != nil && obj["completion"] != nil) {
            return try ChatRecords.decode(bytes, at: loc)
        }
        if obj["input_ids"] != nil { return try tokenized(obj, loc) }
        if isCSQA(obj) { return try csqa(obj, loc) }
        if obj["instruction"] != nil { return try instruction(obj, loc) }
        if obj["question"] != nil && obj["answer"] != nil { return try gsm8k(obj, loc) }
        if obj["text"] != nil {
            return Example(kind: .text, text: try string(obj, "text", loc), location: loc)
        }
        throw DataError.unrecognizedRecord(loc, keys: Array(obj.keys))
    }

    // MARK: Field access

    static func jsonTypeName(_ v: Any) -> String {
        switch v {
        case is String: return "a string"
        case is [Any]: return "an array"
        case is [String: Any]: return "an object"
        case is NSNull: return "null"
        default: return "a number or boolean"
        }
    }

    /// A required scalar field as Python's `str()` would render it.
    static func string(_ obj: [String: Any], _ key: String, _ loc: RecordLocation) throws -> String {
        guard let v = obj[key] else { throw DataError.badField(loc, field: key, expected: "a string (the field is missing)") }
        guard let s = PyText.str(v) else {
            throw DataError.badField(loc, field: key, expected: "a string, found \(jsonTypeName(v))")
        }
        return s
    }

    /// An optional scalar field; absent or null gives nil.
    static func optionalString(_ obj: [String: Any], _ key: String, _ loc: RecordLocation) throws -> String? {
        guard let v = obj[key], !(v is NSNull) else { return nil }
        guard let s = PyText.str(v) else {
            throw DataError.badField(loc, field: key, expected: "a string, found \(jsonTypeName(v))")
        }
        return s
    }

    static func intArray(_ v: Any, field: String, _ loc: RecordLocation) throws -> [Int] {
        guard let arr = v as? [Any] else {
            throw DataError.badField(loc, field: field, expected: "an array of integers, found \(jsonTypeName(v))")
        }
        var out: [Int] = []
        out.reserveCapacity(arr.count)
        for (i, x) in arr.enumerated() {
            guard let n = x as? NSNumber, !(x is String) else {
                throw DataError.badField(loc, field: "\(field)[\(i)]", expected: "an integer, found \(jsonTypeName(x))")
            }
            let type = String(cString: n.objCType)
            let d = n.doubleValue
            guard type != "c", type != "B", d == d.rounded(), abs(d) < 9.0e15 else {
                throw DataError.badField(loc, field: "\(field)[\(i)]", expected: "an integer, found \(n)")
            }
            out.append(n.intValue)
        }
        return out
    }

    // MARK: Layouts

    /// `{input_ids, labels}`: labels are optional (= input_ids), must match input_ids in length,
    /// and hold token ids or -100.
    static func tokenized(_ obj: [String: Any], _ loc: RecordLocation) throws -> Example {
        let ids = try intArray(obj["input_ids"]!, field: "input_ids", loc)
        if ids.isEmpty { throw DataError.badField(loc, field: "input_ids", expected: "a non-empty array of token ids") }
        if let bad = ids.firstIndex(where: { $0 < 0 }) {
            throw DataError.badField(loc, field: "input_ids[\(bad)]", expected: "a token id >= 0, found \(ids[bad])")
        }
        var labels: [Int]?
        if let l = obj["labels"], !(l is NSNull) {
            let lab = try intArray(l, field: "labels", loc)
            guard lab.count == ids.count else {
                throw DataError.badField(loc, field: "labels", expected: "\(ids.count) labels (one per input id, unshifted), found \(lab.count)")
            }
            if let bad = lab.firstIndex(where: { $0 < 0 && $0 != ignoreIndex }) {
                throw DataError.badField(loc, field: "labels[\(bad)]", expected: "a token id or -100, found \(lab[bad])")
            }
            labels = lab
        }
        return Example(kind: .tokenized, inputIds: ids, labels: labels, location: loc)
    }

    /// `{instruction, input, output, answer}`; `input` defaults to "", `output` to "",
    /// `answer` to nil (templates that need them say so).
    static func instruction(_ obj: [String: Any], _ loc: RecordLocation) throws -> Example {
        Example(kind: .instruction,
                instruction: try string(obj, "instruction", loc),
                input: try optionalString(obj, "input", loc) ?? "",
                output: try optionalString(obj, "output", loc) ?? "",
                answer: try optionalString(obj, "answer", loc),
                location: loc)
    }

    /// GSM8K `{question, answer}`: the answer is the worked solution, ending with
    /// `#### <final answer>`. Split at the last `####`: output = the reasoning before it and
    /// answer = the text after it, both stripped. The `<<48/2=24>>` calculator annotations are
    /// kept as published.
    static func gsm8k(_ obj: [String: Any], _ loc: RecordLocation) throws -> Example {
        let question = try string(obj, "question", loc)
        let solution = try string(obj, "answer", loc)
        guard let marker = solution.range(of: "####", options: .backwards) else {
            throw DataError.badField(loc, field: "answer", expected: "a GSM8K solution ending with `#### <final answer>`")
        }
        let final = PyText.strip(String(solution[marker.upperBound...]))
        if final.isEmpty {
            throw DataError.badField(loc, field: "answer", expected: "a final answer after `####`")
        }
        return Example(kind: .gsm8k, instruction: question, output: PyText.strip(String(solution[..<marker.lowerBound])),
                       answer: final, location: loc)
    }

    static func isCSQA(_ obj: [String: Any]) -> Bool {
        if obj["answerKey"] != nil || obj["choices"] != nil { return true }
        if let q = obj["question"] as? [String: Any], q["stem"] != nil { return true }
        return false
    }

    /// CommonsenseQA in the original layout (`question: {stem, choices: [{label, text}]}`) or the
    /// Hugging Face layout (`question: "..."`, `choices: {label: [...], text: [...]}`).
    /// Rendered like the LLM-Adapters AQuA items: `"{question} Answer Choices: (A) x (B) y ..."`,
    /// output `the correct answer is {letter}`, answer `{letter}` (nil when `answerKey` is empty
    /// or absent: the hidden test split, fine for generation, rejected by scoring).
    static func csqa(_ obj: [String: Any], _ loc: RecordLocation) throws -> Example {
        let stem: String
        var labels: [String] = []
        var texts: [String] = []
        if let q = obj["question"] as? [String: Any] {
            stem = try string(q, "stem", loc)
            guard let choices = q["choices"] as? [Any] else {
                throw DataError.badField(loc, field: "question.choices", expected: "an array of {label, text}")
            }
            for (i, c) in choices.enumerated() {
                guard let c = c as? [String: Any], let l = c["label"].flatMap(PyText.str), let t = c["text"].flatMap(PyText.str) else {
                    throw DataError.badField(loc, field: "question.choices[\(i)]", expected: "an object {label, text}")
                }
                labels.append(l)
                texts.append(t)
            }
        } else {
            stem = try string(obj, "question", loc)
            guard let choices = obj["choices"] as? [String: Any],
                  let l = choices["label"] as? [Any], let t = choices["text"] as? [Any], l.count == t.count else {
                throw DataError.badField(loc, field: "choices", expected: "an object {label: [...], text: [...]} with equal lengths")
            }
            for (i, (a, b)) in zip(l, t).enumerated() {
                guard let a = PyText.str(a), let b = PyText.str(b) else {
                    throw DataError.badField(loc, field: "choices[\(i)]", expected: "string label and text")
                }
                labels.append(a)
                texts.append(b)
            }
        }
        if labels.isEmpty { throw DataError.badField(loc, field: "choices", expected: "at least one answer choice") }
        let key = try optionalString(obj, "answerKey", loc).map(PyText.strip)
        let answer = (key?.isEmpty ?? true) ? nil : key
        if let answer, !labels.contains(answer) {
            throw DataError.badField(loc, field: "answerKey", expected: "one of the choice labels \(labels), found `\(answer)`")
        }
        let choiceText = zip(labels, texts).map { "(\($0)) \($1)" }.joined(separator: " ")
        let instruction = PyText.strip(stem) + " Answer Choices: " + choiceText
        return Example(kind: .csqa, instruction: instruction, output: answer.map { "the correct answer is \($0)" } ?? "",
                       answer: answer, id: try optionalString(obj, "id", loc), location: loc)
    }
}

/// The label value that the loss ignores (PyTorch `CrossEntropyLoss(ignore_index=-100)`).
public let ignoreIndex = -100
