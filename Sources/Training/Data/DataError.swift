import Foundation

// MARK: - Where a record came from

/// The place in a data file a record (or an error) comes from.
///
/// `line` is 1-based. For JSONL it is the line of the record; for a JSON array it is the line
/// on which the element starts, and `index` is the 0-based element index.
public struct RecordLocation: Sendable, Equatable, Hashable, CustomStringConvertible {
    /// The file path as given to the loader.
    public var file: String
    /// 1-based line number, when known.
    public var line: Int?
    /// 0-based element index inside a JSON array (nil for JSONL).
    public var index: Int?

    public init(file: String, line: Int? = nil, index: Int? = nil) {
        self.file = file
        self.line = line
        self.index = index
    }

    public var description: String {
        var s = file
        if let line { s += ":\(line)" }
        if let index { s += " (element \(index))" }
        return s
    }
}

// MARK: - Errors

/// Errors raised while loading, rendering, tokenizing or batching training data.
/// Each names the file and line (or element) and says what was expected.
public enum DataError: Error, CustomStringConvertible, Equatable {
    /// The file could not be read at all.
    case unreadable(file: String, reason: String)
    /// The file is not valid JSON / JSONL at a structural level (cannot find records).
    case invalidJSON(RecordLocation, reason: String)
    /// One record is not valid JSON.
    case malformedRecord(RecordLocation, reason: String)
    /// A record is valid JSON but has none of the supported layouts.
    case unrecognizedRecord(RecordLocation, keys: [String])
    /// A field is missing or has the wrong type.
    case badField(RecordLocation, field: String, expected: String)
    /// A file with no records.
    case empty(file: String)
    /// A template cannot render this kind of record (e.g. `raw` on an instruction record).
    case templateMismatch(RecordLocation, template: String, kind: String, reason: String)
    /// An unknown template name.
    case unknownTemplate(String)
    /// The tokenizer lacks something the template needs (e.g. an EOS token).
    case tokenizer(String)
    /// Tokenization produced nothing to train on.
    case emptySequence(RecordLocation)
    /// Bad arguments to batching/packing helpers.
    case invalidArgument(String)
    /// Serialised RNG state of the wrong size or content.
    case badRNGState(String)

    public var description: String {
        switch self {
        case let .unreadable(file, reason):
            return "\(file): cannot read data file: \(reason)"
        case let .invalidJSON(loc, reason):
            return "\(loc): invalid JSON: \(reason)"
        case let .malformedRecord(loc, reason):
            return "\(loc): malformed record: \(reason)"
        case let .unrecognizedRecord(loc, keys):
            return "\(loc): unrecognized record with keys [\(keys.sorted().joined(separator: ", "))]; expected "
                + "{instruction, output[, input, answer]}, {question, answer} (GSM8K), CommonsenseQA "
                + "{question, choices, answerKey}, {text}, {messages}, {prompt, completion} or {input_ids[, labels]}"
        case let .badField(loc, field, expected):
            return "\(loc): field `\(field)`: expected \(expected)"
        case let .empty(file):
            return "\(file): no records found"
        case let .templateMismatch(loc, template, kind, reason):
            return "\(loc): template `\(template)` cannot render a \(kind) record: \(reason)"
        case let .unknownTemplate(name):
            return "unknown template `\(name)`; expected one of \(PromptTemplate.allCases.map(\.rawValue).joined(separator: ", "))"
        case let .tokenizer(reason):
            return "tokenizer: \(reason)"
        case let .emptySequence(loc):
            return "\(loc): the record tokenizes to an empty sequence"
        case let .invalidArgument(reason):
            return "invalid argument: \(reason)"
        case let .badRNGState(reason):
            return "bad RNG state: \(reason)"
        }
    }
}
