import Foundation

/// Everything that can go wrong while loading a tokenizer or encoding text. Each case names the
/// file involved and what was expected, so a command-line user gets a one-line reason.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    /// No file at `path` (or a directory without any known tokenizer file).
    case missingFile(path: String, expected: String)
    /// The file exists but could not be read.
    case unreadableFile(path: String, reason: String)
    /// The JSON in `path` is not well formed; `offset` is a byte offset, `line` 1-based.
    case malformedJSON(path: String, line: Int, offset: Int, reason: String)
    /// The JSON is well formed but a field has the wrong shape or is missing.
    case invalidField(path: String, field: String, expected: String)
    /// `model.type` (or a pipeline stage type) is not one this library implements.
    case unknownModelType(path: String, type: String, supported: [String])
    /// A pipeline stage (normalizer, pre-tokenizer, decoder, post-processor) is not supported.
    case unsupportedComponent(path: String, component: String, detail: String)
    /// A merge names a token that is not in the vocabulary (like `tokenizers`' MergeTokenOutOfVocabulary).
    case mergeTokenOutOfVocabulary(path: String, line: Int, token: String)
    /// A line of a text file (merges.txt, tiktoken ranks) could not be parsed.
    case malformedLine(path: String, line: Int, expected: String)
    /// libsentencepiece rejected the model file.
    case sentencePieceLoadFailed(path: String, reason: String)
    /// libsentencepiece failed while encoding or decoding.
    case sentencePieceFailed(reason: String)
    /// Input bytes handed to `encode(utf8:)` are not valid UTF-8; `offset` is the first bad byte.
    case invalidUTF8(offset: Int)
    /// The regular expression of a Split pre-tokenizer could not be compiled.
    case invalidPattern(path: String, pattern: String, reason: String)
    /// A GGUF metadata key the tokenizer needs is missing, or its value has the wrong type or shape.
    case invalidGGUFMetadata(path: String, key: String, expected: String)
    /// A GGUF metadata value (`tokenizer.ggml.model`, `tokenizer.ggml.pre`) names something this
    /// library does not implement.
    case unsupportedGGUFValue(path: String, key: String, value: String, supported: [String])
    /// The tokens of a text could not be given their spans of it (`encodeWithOffsets`).
    case offsetsUnavailable(reason: String)

    public var description: String {
        switch self {
        case let .missingFile(path, expected):
            return "\(path): file not found (expected \(expected))"
        case let .unreadableFile(path, reason):
            return "\(path): cannot read file: \(reason)"
        case let .malformedJSON(path, line, offset, reason):
            return "\(path):\(line): malformed JSON at byte \(offset): \(reason)"
        case let .invalidField(path, field, expected):
            return "\(path): field `\(field)`: expected \(expected)"
        case let .unknownModelType(path, type, supported):
            return "\(path): unknown tokenizer model type \"\(type)\" (supported: \(supported.joined(separator: ", ")))"
        case let .unsupportedComponent(path, component, detail):
            return "\(path): unsupported \(component): \(detail)"
        case let .mergeTokenOutOfVocabulary(path, line, token):
            return "\(path):\(line): merge token \"\(token)\" is not in the vocabulary"
        case let .malformedLine(path, line, expected):
            return "\(path):\(line): expected \(expected)"
        case let .sentencePieceLoadFailed(path, reason):
            return "\(path): not a SentencePiece model: \(reason)"
        case let .sentencePieceFailed(reason):
            return "SentencePiece error: \(reason)"
        case let .invalidUTF8(offset):
            return "input is not valid UTF-8 (first invalid byte at offset \(offset))"
        case let .invalidPattern(path, pattern, reason):
            return "\(path): cannot compile pre-tokenizer pattern \(pattern): \(reason)"
        case let .invalidGGUFMetadata(path, key, expected):
            return "\(path): GGUF metadata `\(key)`: expected \(expected)"
        case let .unsupportedGGUFValue(path, key, value, supported):
            return "\(path): GGUF metadata `\(key)` = \"\(value)\" is not supported (supported: \(supported.joined(separator: ", ")))"
        case let .offsetsUnavailable(reason):
            return "cannot find each token's span of the text: \(reason)"
        }
    }
}
