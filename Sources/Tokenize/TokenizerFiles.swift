import Foundation
import LLMCore

// MARK: - Reading tokenizer files

/// Reads a whole file, mapping I/O failures to typed errors.
func readFile(_ url: URL, expected: String) throws -> Data {
    let path = url.path
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw TokenizerError.missingFile(path: path, expected: expected)
    }
    if isDirectory.boolValue { throw TokenizerError.unreadableFile(path: path, reason: "is a directory, expected \(expected)") }
    do {
        return try Data(contentsOf: url, options: .mappedIfSafe)
    } catch {
        throw TokenizerError.unreadableFile(path: path, reason: "\(error)")
    }
}

/// Runs `body` over a streaming `JSONReader` of `data` (the tokenizer's vocabularies and merge
/// lists go straight into flat tables this way); malformed JSON becomes
/// `TokenizerError.malformedJSON` naming `path`.
func readJSON<R>(_ data: Data, path: String, _ body: (inout JSONReader) throws -> R) throws -> R {
    do { return try JSONReader.read(data, body) } catch let e as JSONError { throw TokenizerError(e, path: path) }
}

/// A whole JSON document as a `JSONValue`, with errors naming `path`.
func parseJSON(_ data: Data, path: String) throws -> JSONValue {
    do { return try JSONValue.parse(data) } catch let e as JSONError { throw TokenizerError(e, path: path) }
}

extension TokenizerError {
    init(_ e: JSONError, path: String) {
        self = .malformedJSON(path: path, line: e.line, offset: e.offset, reason: e.reason)
    }
}

// MARK: - UTF-8

/// Appends the UTF-8 encoding of `scalar` (assumed valid) to `out`.
@inline(__always) func appendUTF8(_ scalar: UInt32, to out: inout [UInt8]) {
    if scalar < 0x80 {
        out.append(UInt8(scalar))
    } else if scalar < 0x800 {
        out.append(UInt8(0xC0 | (scalar >> 6)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    } else if scalar < 0x10000 {
        out.append(UInt8(0xE0 | (scalar >> 12)))
        out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    } else {
        out.append(UInt8(0xF0 | (scalar >> 18)))
        out.append(UInt8(0x80 | ((scalar >> 12) & 0x3F)))
        out.append(UInt8(0x80 | ((scalar >> 6) & 0x3F)))
        out.append(UInt8(0x80 | (scalar & 0x3F)))
    }
}
