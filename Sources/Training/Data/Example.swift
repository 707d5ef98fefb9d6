import Foundation
import Tokenize

// MARK: - Records

/// One training or evaluation record, normalised from any supported layout
/// (FORMATS.md "Training data").
///
/// Instruction-style layouts (Math10K / commonsense, GSM8K, CommonsenseQA) are all converted to
/// `instruction` / `input` / `output` / `answer`; `{text}` records fill `text`; pre-tokenized
/// records fill `inputIds` (and `labels` when the file has them). Field values are kept as
/// written in the file (no whitespace stripping here: templates decide that, as the references do).
public struct Example: Sendable, Equatable {
    /// The layout a record was read from; `auto` template selection uses it.
    public enum Kind: String, Sendable, CaseIterable {
        /// `{instruction, input, output, answer}` (LLM-Adapters Math10K / commonsense_170k style).
        case instruction
        /// Original GSM8K `{question, answer}`, converted: instruction = question,
        /// output = the reasoning before `#### `, answer = the text after it.
        case gsm8k
        /// CommonsenseQA (either published layout), converted to an instruction with
        /// `Answer Choices: (A) ... (E) ...` and output `the correct answer is {letter}`.
        case csqa
        /// `{text}`: plain text, every token trained.
        case text
        /// `{input_ids[, labels]}`: pre-tokenized; needs no tokenizer.
        case tokenized
        /// `{messages: [{role, content[, weight]}, ...][, tools]}` (TRL, mlx-lm, Axolotl, OpenAI
        /// fine-tuning): rendered by the chat template, every assistant turn trained.
        case messages
        /// TRL `{prompt, completion}`: strings (raw text, `prompt`/`completion`) or message
        /// lists (conversational, `conversation` with `promptCount`).
        case promptCompletion = "prompt-completion"
    }

    public var kind: Kind
    public var instruction: String
    public var input: String
    public var output: String
    /// The gold answer; nil when the record has none (e.g. the hidden CSQA test split).
    public var answer: String?
    public var text: String
    /// Pre-tokenized ids (kind `.tokenized` only).
    public var inputIds: [Int]
    /// Pre-tokenized labels, unshifted, -100 = ignored; nil means "same as `inputIds`".
    public var labels: [Int]?
    /// A record id when the file has one (CSQA `id`).
    public var id: String?
    /// `messages` records and conversational prompt/completion records.
    public var conversation: ChatConversation?
    /// String prompt/completion records (kind `.promptCompletion` without a conversation).
    public var prompt: String
    public var completion: String
    /// Where the record was read from.
    public var location: RecordLocation

    public init(kind: Kind, instruction: String = "", input: String = "", output: String = "",
                answer: String? = nil, text: String = "", inputIds: [Int] = [], labels: [Int]? = nil,
                id: String? = nil, conversation: ChatConversation? = nil, prompt: String = "", completion: String = "",
                location: RecordLocation = RecordLocation(file: "<memory>")) {
        self.kind = kind
        self.instruction = instruction
        self.input = input
        self.output = output
        self.answer = answer
        self.text = text
        self.inputIds = inputIds
        self.labels = labels
        self.id = id
        self.conversation = conversation
        self.prompt = prompt
        self.completion = completion
        self.location = location
    }

    /// An instruction record (`{instruction, input, output, answer}`).
    public static func instruction(_ instruction: String, input: String = "", output: String,
                                   answer: String?, location: RecordLocation = RecordLocation(file: "<memory>")) -> Example {
        Example(kind: .instruction, instruction: instruction, input: input, output: output, answer: answer, location: location)
    }

    /// A plain-text record (`{text}`).
    public static func text(_ text: String, location: RecordLocation = RecordLocation(file: "<memory>")) -> Example {
        Example(kind: .text, text: text, location: location)
    }

    /// A pre-tokenized record (`{input_ids, labels}`).
    public static func tokenized(_ inputIds: [Int], labels: [Int]? = nil,
                                 location: RecordLocation = RecordLocation(file: "<memory>")) -> Example {
        Example(kind: .tokenized, inputIds: inputIds, labels: labels, location: location)
    }
}

/// The on-disk layout a file was read as.
public enum DataFileFormat: String, Sendable {
    /// One JSON value per line.
    case jsonl
    /// One JSON array of records.
    case jsonArray = "json"
}

/// The result of `loadExamples(from:strict:)`.
public struct LoadedData: Sendable {
    /// The file that was read.
    public var file: String
    public var format: DataFileFormat
    /// The records that were read successfully, in file order.
    public var examples: [Example]
    /// How many records were skipped as malformed (always 0 in strict mode).
    public var skipped: Int
    /// One human-readable line per skipped record (capped at `LoadedData.maxWarnings`, then a
    /// summary line), plus notes about the data worth showing to a user.
    public var warnings: [String]

    /// How many per-record warnings are kept before they are summarised.
    public static let maxWarnings = 20

    /// How many records of each kind were read.
    public var kindCounts: [Example.Kind: Int] {
        var counts: [Example.Kind: Int] = [:]
        for e in examples { counts[e.kind, default: 0] += 1 }
        return counts
    }
}

// MARK: - Python-compatible string helpers

/// Text helpers that reproduce the Python string operations the reference scripts use,
/// so that whitespace handling is byte-for-byte the same.
public enum PyText {
    /// Python's `str.isspace()` for one code point: general category Zs, or bidirectional class
    /// WS, B or S. That is the Unicode White_Space set plus U+001C...U+001F.
    public static func isSpace(_ s: Unicode.Scalar) -> Bool {
        if s.properties.isWhitespace { return true }
        return (0x1C...0x1F).contains(s.value)
    }

    /// Python's `str.strip()` (no argument): removes leading and trailing whitespace code points.
    public static func strip(_ text: String) -> String {
        let scalars = text.unicodeScalars
        guard let first = scalars.firstIndex(where: { !isSpace($0) }) else { return "" }
        let last = scalars.lastIndex(where: { !isSpace($0) })!
        return String(scalars[first...last])
    }

    /// Python's `str(value)` for a JSON scalar as the reference scripts see it
    /// (`str(item["answer"])`): strings as is, integers in decimal, floats in shortest
    /// round-trip form (`18.0`, `1e+16`), booleans as `True`/`False`. Nil for null, arrays and objects.
    public static func str(_ value: Any) -> String? {
        if let s = value as? String { return s }
        if let n = value as? NSNumber {
            let type = String(cString: n.objCType)
            if type == "c" || type == "B" { return n.boolValue ? "True" : "False" }
            if type == "d" || type == "f" { return floatRepr(n.doubleValue) }
            return n.stringValue
        }
        if let b = value as? Bool { return b ? "True" : "False" }
        return nil
    }

    /// Python's `repr(float)`: the shortest round-trip digits (Swift's `description` computes
    /// the same digits), laid out the way Python does: positional when the decimal exponent is in
    /// -4..<16 (`1000000000000000.0`, `0.0001`), otherwise scientific with a signed exponent of at
    /// least two digits (`1e+16`, `1e-05`, `1.5e+300`).
    public static func floatRepr(_ d: Double) -> String { PythonFormat.floatRepr(d) }
}
