import Foundation

// MARK: - JSON values

/// A parsed JSON value. Used for the small parts of tokenizer files (configs, pipeline stages,
/// added tokens); the 100k-entry vocabularies and merge lists are streamed by `JSONReader`
/// straight into flat byte tables instead, which keeps loading fast even in debug builds.
enum JSONValue {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    subscript(key: String) -> JSONValue? {
        if case let .object(members) = self { return members[key] }
        return nil
    }

    var stringValue: String? { if case let .string(s) = self { return s }; return nil }
    var boolValue: Bool? { if case let .bool(b) = self { return b }; return nil }
    var intValue: Int? {
        if case let .number(d) = self, d == d.rounded(), abs(d) < 9.0e15 { return Int(d) }
        return nil
    }
    var arrayValue: [JSONValue]? { if case let .array(a) = self { return a }; return nil }
    var objectValue: [String: JSONValue]? { if case let .object(o) = self { return o }; return nil }
    var isNull: Bool { if case .null = self { return true }; return false }
}

// MARK: - Streaming reader

/// A strict JSON (RFC 8259) reader over UTF-8 bytes. The pointer it holds is only valid inside
/// the `withUnsafeBytes` closure that created it; the reader never outlives that closure.
struct JSONReader {
    let base: UnsafePointer<UInt8>
    let count: Int
    var pos: Int = 0
    /// File name used in error messages.
    let path: String

    init(_ buffer: UnsafeRawBufferPointer, path: String) {
        // An empty buffer has a nil base address; point at a static byte instead.
        if let b = buffer.baseAddress {
            base = b.assumingMemoryBound(to: UInt8.self)
        } else {
            base = JSONReader.emptyByte
        }
        count = buffer.count
        self.path = path
    }

    private static let emptyByte: UnsafePointer<UInt8> = {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        p.pointee = 0
        return UnsafePointer(p)
    }()

    /// Builds the error for the current position, with a 1-based line number.
    func error(_ reason: String, at offset: Int? = nil) -> TokenizerError {
        let at = min(offset ?? pos, count)
        var line = 1
        for i in 0..<at where base[i] == 0x0A { line += 1 }
        return .malformedJSON(path: path, line: line, offset: at, reason: reason)
    }

    @inline(__always) mutating func skipWhitespace() {
        while pos < count {
            let c = base[pos]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { pos += 1 } else { break }
        }
    }

    /// The next non-whitespace byte, not consumed.
    @inline(__always) mutating func peek() -> UInt8? {
        skipWhitespace()
        return pos < count ? base[pos] : nil
    }

    mutating func expect(_ byte: UInt8) throws {
        skipWhitespace()
        guard pos < count else { throw error("unexpected end of input, expected '\(Character(Unicode.Scalar(byte)))'") }
        guard base[pos] == byte else {
            throw error("expected '\(Character(Unicode.Scalar(byte)))', found '\(Character(Unicode.Scalar(base[pos])))'")
        }
        pos += 1
    }

    /// Fails unless only whitespace remains.
    mutating func expectEnd() throws {
        skipWhitespace()
        if pos != count { throw error("unexpected trailing content") }
    }

    // MARK: Containers

    mutating func beginObject() throws { try expect(UInt8(ascii: "{")) }
    mutating func beginArray() throws { try expect(UInt8(ascii: "[")) }

    /// Advances to the next member of the current object, reading its key into `key`
    /// (replacing its contents) and consuming the ':'. Returns false at the closing '}'.
    mutating func nextMember(key: inout [UInt8], first: inout Bool) throws -> Bool {
        guard let c = peek() else { throw error("unexpected end of input inside an object") }
        if c == UInt8(ascii: "}") { pos += 1; return false }
        if !first {
            try expect(UInt8(ascii: ","))
            skipWhitespace()
        }
        first = false
        key.removeAll(keepingCapacity: true)
        try readString(into: &key)
        try expect(UInt8(ascii: ":"))
        return true
    }

    /// Advances to the next element of the current array. Returns false at the closing ']'.
    mutating func nextElement(first: inout Bool) throws -> Bool {
        guard let c = peek() else { throw error("unexpected end of input inside an array") }
        if c == UInt8(ascii: "]") { pos += 1; return false }
        if !first { try expect(UInt8(ascii: ",")) }
        first = false
        return true
    }

    // MARK: Scalars

    /// Reads a JSON string, appending its unescaped UTF-8 bytes to `out`.
    mutating func readString(into out: inout [UInt8]) throws {
        skipWhitespace()
        guard pos < count, base[pos] == UInt8(ascii: "\"") else { throw error("expected a string") }
        pos += 1
        var runStart = pos
        while true {
            guard pos < count else { throw error("unterminated string") }
            let c = base[pos]
            if c == UInt8(ascii: "\"") {
                if pos > runStart { out.append(contentsOf: UnsafeBufferPointer(start: base + runStart, count: pos - runStart)) }
                pos += 1
                return
            }
            if c == UInt8(ascii: "\\") {
                if pos > runStart { out.append(contentsOf: UnsafeBufferPointer(start: base + runStart, count: pos - runStart)) }
                pos += 1
                guard pos < count else { throw error("unterminated escape") }
                let e = base[pos]
                pos += 1
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try readHex4()
                    if scalar >= 0xD800 && scalar < 0xDC00 {
                        // A high surrogate must be followed by an escaped low surrogate.
                        if pos + 1 < count, base[pos] == UInt8(ascii: "\\"), base[pos + 1] == UInt8(ascii: "u") {
                            let save = pos
                            pos += 2
                            let low = try readHex4()
                            if low >= 0xDC00 && low < 0xE000 {
                                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                pos = save
                                scalar = 0xFFFD
                            }
                        } else {
                            scalar = 0xFFFD
                        }
                    } else if scalar >= 0xDC00 && scalar < 0xE000 {
                        scalar = 0xFFFD  // lone low surrogate: not representable in UTF-8
                    }
                    appendUTF8(scalar, to: &out)
                default:
                    throw error("invalid escape '\\\(Character(Unicode.Scalar(e)))'", at: pos - 1)
                }
                runStart = pos
                continue
            }
            if c < 0x20 { throw error("control character in string") }
            pos += 1
        }
    }

    private mutating func readHex4() throws -> UInt32 {
        guard pos + 4 <= count else { throw error("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = base[pos]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw error("invalid hex digit in \\u escape")
            }
            v = v << 4 | d
            pos += 1
        }
        return v
    }

    mutating func readString() throws -> String {
        var bytes: [UInt8] = []
        try readString(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Reads an integer (a JSON number without fraction or exponent).
    mutating func readInt() throws -> Int {
        skipWhitespace()
        let start = pos
        var negative = false
        if pos < count, base[pos] == UInt8(ascii: "-") { negative = true; pos += 1 }
        var value = 0
        var digits = 0
        while pos < count {
            let c = base[pos]
            guard c >= 0x30 && c <= 0x39 else { break }
            value = value &* 10 &+ Int(c - 0x30)
            digits += 1
            pos += 1
        }
        guard digits > 0, digits < 19 else { throw error("expected an integer", at: start) }
        if pos < count, base[pos] == UInt8(ascii: ".") || base[pos] == UInt8(ascii: "e") || base[pos] == UInt8(ascii: "E") {
            // Accept 5.0 style integers by falling back to the general number parser.
            pos = start
            guard case let .number(d) = try parseValue(), d == d.rounded(), abs(d) < 9.0e15 else {
                throw error("expected an integer", at: start)
            }
            return Int(d)
        }
        return negative ? -value : value
    }

    private mutating func readNumber() throws -> Double {
        let start = pos
        if pos < count, base[pos] == UInt8(ascii: "-") { pos += 1 }
        var sawDigit = false
        while pos < count {
            let c = base[pos]
            if (c >= 0x30 && c <= 0x39) { sawDigit = true; pos += 1 } else if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") { pos += 1 } else { break }
        }
        guard sawDigit else { throw error("invalid number", at: start) }
        let text = String(decoding: UnsafeBufferPointer(start: base + start, count: pos - start), as: UTF8.self)
        guard let d = Double(text) else { throw error("invalid number \(text)", at: start) }
        return d
    }

    private mutating func expectLiteral(_ literal: StaticString) throws {
        let n = literal.utf8CodeUnitCount
        guard pos + n <= count, memcmp(base + pos, literal.utf8Start, n) == 0 else { throw error("invalid literal") }
        pos += n
    }

    // MARK: Generic values

    /// Parses any value into a `JSONValue` tree (nesting limited to keep malicious input from
    /// overflowing the stack).
    mutating func parseValue(depth: Int = 0) throws -> JSONValue {
        guard depth < 512 else { throw error("nesting too deep") }
        guard let c = peek() else { throw error("unexpected end of input, expected a value") }
        switch c {
        case UInt8(ascii: "{"):
            pos += 1
            var members: [String: JSONValue] = [:]
            var key: [UInt8] = []
            var first = true
            while try nextMember(key: &key, first: &first) {
                members[String(decoding: key, as: UTF8.self)] = try parseValue(depth: depth + 1)
            }
            return .object(members)
        case UInt8(ascii: "["):
            pos += 1
            var items: [JSONValue] = []
            var first = true
            while try nextElement(first: &first) { items.append(try parseValue(depth: depth + 1)) }
            return .array(items)
        case UInt8(ascii: "\""):
            return .string(try readString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), 0x30...0x39: return .number(try readNumber())
        default:
            throw error("unexpected character '\(Character(Unicode.Scalar(c)))'")
        }
    }

    /// Parses a whole document.
    static func parse(_ data: Data, path: String) throws -> JSONValue {
        try data.withUnsafeBytes { raw in
            var reader = JSONReader(raw, path: path)
            let value = try reader.parseValue()
            try reader.expectEnd()
            return value
        }
    }
}

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
