import Foundation

// MARK: - Errors

/// Malformed JSON: what was wrong and where (1-based line, byte offset into the document).
/// Readers of named files wrap it with the file's path.
public struct JSONError: Error, CustomStringConvertible, Equatable, Sendable {
    public let line: Int
    public let offset: Int
    public let reason: String

    public var description: String { "line \(line), byte \(offset): \(reason)" }
}

// MARK: - Streaming reader

/// A strict JSON (RFC 8259) reader over UTF-8 bytes. It serves two kinds of callers: those
/// that want a `JSONValue` tree (`readValue`), and those that stream a large document straight
/// into their own tables (`nextMember` / `nextElement` / `readString(into:)` / `readInt`), as the
/// tokenizer does with 150k-entry vocabularies and merge lists.
///
/// Strings are unescaped exactly (`\uXXXX` pairs joined into one scalar; a lone surrogate, which
/// UTF-8 cannot carry, becomes U+FFFD); numbers follow the JSON grammar exactly (no leading
/// zeros, no trailing dot, no `NaN`/`Infinity`); trailing commas are refused; nesting deeper than
/// `maxDepth` is refused with an error rather than overflowing the stack. A leading UTF-8 byte
/// order mark is skipped.
///
/// The reader holds a pointer into the bytes, so it only exists inside `JSONReader.read`.
public struct JSONReader {
    /// Containers nested deeper than this are refused (JSONDecoder's limit too).
    public static let maxDepth = 512

    let base: UnsafePointer<UInt8>
    /// Length of the document in bytes.
    public let count: Int
    /// Byte offset of the next unread byte.
    public private(set) var pos: Int = 0

    private init(_ base: UnsafePointer<UInt8>, count: Int) {
        self.base = base
        self.count = count
        if count >= 3, base[0] == 0xEF, base[1] == 0xBB, base[2] == 0xBF { pos = 3 }
    }

    /// Runs `body` with a reader over `data`; the reader must not escape the closure.
    public static func read<R>(_ data: Data, _ body: (inout JSONReader) throws -> R) throws -> R {
        try data.withUnsafeBytes { raw in
            if let b = raw.baseAddress, raw.count > 0 {
                var reader = JSONReader(b.assumingMemoryBound(to: UInt8.self), count: raw.count)
                return try body(&reader)
            }
            var zero: UInt8 = 0
            return try withUnsafePointer(to: &zero) { p in
                var reader = JSONReader(p, count: 0)
                return try body(&reader)
            }
        }
    }

    /// The error for `offset` (default: the current position), with its 1-based line number.
    public func error(_ reason: String, at offset: Int? = nil) -> JSONError {
        let at = min(offset ?? pos, count)
        var line = 1
        for i in 0..<at where base[i] == 0x0A { line += 1 }
        return JSONError(line: line, offset: at, reason: reason)
    }

    @inline(__always) mutating func skipWhitespace() {
        while pos < count {
            let c = base[pos]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { pos += 1 } else { break }
        }
    }

    /// The next non-whitespace byte, not consumed.
    public mutating func peek() -> UInt8? {
        skipWhitespace()
        return pos < count ? base[pos] : nil
    }

    private func show(_ byte: UInt8) -> String { "'\(Character(Unicode.Scalar(byte)))'" }

    mutating func expect(_ byte: UInt8) throws {
        skipWhitespace()
        guard pos < count else { throw error("unexpected end of input, expected \(show(byte))") }
        guard base[pos] == byte else { throw error("expected \(show(byte)), found \(show(base[pos]))") }
        pos += 1
    }

    /// Fails unless only whitespace remains.
    public mutating func expectEnd() throws {
        skipWhitespace()
        if pos != count { throw error("unexpected trailing content") }
    }

    // MARK: Containers

    /// Consumes the `{` that opens an object (`what` names it in the error).
    public mutating func beginObject(_ what: String = "an object") throws {
        guard peek() == UInt8(ascii: "{") else { throw error("expected \(what)") }
        pos += 1
    }

    /// Consumes the `[` that opens an array (`what` names it in the error).
    public mutating func beginArray(_ what: String = "an array") throws {
        guard peek() == UInt8(ascii: "[") else { throw error("expected \(what)") }
        pos += 1
    }

    /// Advances to the next member of the current object, reading its key into `key`
    /// (replacing its contents) and consuming the ':'. Returns false at the closing '}'.
    public mutating func nextMember(key: inout [UInt8], first: inout Bool) throws -> Bool {
        guard try nextKey(first: &first) else { return false }
        key.removeAll(keepingCapacity: true)
        try readString(into: &key)
        try expect(UInt8(ascii: ":"))
        return true
    }

    /// Advances to the next element of the current array. Returns false at the closing ']'.
    public mutating func nextElement(first: inout Bool) throws -> Bool {
        try nextItem(closer: UInt8(ascii: "]"), in: "an array", first: &first)
    }

    /// Like `nextMember`, but leaves the key unread.
    mutating func nextKey(first: inout Bool) throws -> Bool {
        try nextItem(closer: UInt8(ascii: "}"), in: "an object", first: &first)
    }

    /// Consumes the comma before every item but the first; false (the closer consumed) at the end.
    @inline(__always) private mutating func nextItem(closer: UInt8, in container: StaticString, first: inout Bool) throws -> Bool {
        guard let c = peek() else { throw error("unexpected end of input inside \(container)") }
        if c == closer { pos += 1; return false }
        if !first {
            try expect(UInt8(ascii: ","))
            if peek() == closer { throw error("trailing comma in \(container)") }
        }
        first = false
        return true
    }

    // MARK: Strings

    /// Reads a JSON string, appending its unescaped UTF-8 bytes to `out`.
    public mutating func readString(into out: inout [UInt8]) throws {
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
                try readEscape(into: &out)
                runStart = pos
                continue
            }
            if c < 0x20 { throw error("control character in string") }
            pos += 1
        }
    }

    /// One escape sequence (`pos` at the backslash).
    private mutating func readEscape(into out: inout [UInt8]) throws {
        pos += 1
        guard pos < count else { throw error("unterminated escape") }
        let e = base[pos]
        pos += 1
        switch e {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
        case UInt8(ascii: "b"): out.append(0x08)
        case UInt8(ascii: "f"): out.append(0x0C)
        case UInt8(ascii: "n"): out.append(0x0A)
        case UInt8(ascii: "r"): out.append(0x0D)
        case UInt8(ascii: "t"): out.append(0x09)
        case UInt8(ascii: "u"):
            var scalar = try readHex4()
            if scalar >= 0xD800 && scalar < 0xDC00 {
                // A high surrogate joins the escaped low surrogate that follows it; alone it
                // cannot be UTF-8 and becomes U+FFFD.
                let high = scalar
                scalar = 0xFFFD
                if pos + 1 < count, base[pos] == UInt8(ascii: "\\"), base[pos + 1] == UInt8(ascii: "u") {
                    let save = pos
                    pos += 2
                    let low = try readHex4()
                    if low >= 0xDC00 && low < 0xE000 { scalar = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00) } else { pos = save }
                }
            } else if scalar >= 0xDC00 && scalar < 0xE000 {
                scalar = 0xFFFD
            }
            UTF8.encode(Unicode.Scalar(scalar)!) { out.append($0) }
        default:
            throw error("invalid escape '\\\(Character(Unicode.Scalar(e)))'", at: pos - 1)
        }
    }

    private static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }

    private mutating func readHex4() throws -> UInt32 {
        guard pos + 4 <= count else { throw error("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            guard let d = Self.hexDigit(base[pos]) else { throw error("invalid hex digit in \\u escape") }
            v = v << 4 | UInt32(d)
            pos += 1
        }
        return v
    }

    /// Reads a JSON string (invalid UTF-8 is repaired with U+FFFD, as `String(decoding:)` does).
    public mutating func readString() throws -> String {
        skipWhitespace()
        // Fast path: no escapes, so the text between the quotes is the string.
        if pos < count, base[pos] == UInt8(ascii: "\"") {
            var i = pos + 1
            while i < count, base[i] != UInt8(ascii: "\""), base[i] != UInt8(ascii: "\\"), base[i] >= 0x20 { i += 1 }
            if i < count, base[i] == UInt8(ascii: "\"") {
                defer { pos = i + 1 }
                return String(decoding: UnsafeBufferPointer(start: base + pos + 1, count: i - pos - 1), as: UTF8.self)
            }
        }
        var bytes: [UInt8] = []
        try readString(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: Numbers and literals

    /// The end of the number starting at `pos`, following the JSON grammar
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, and whether it is an integer.
    private func scanNumber() throws -> (end: Int, integer: Bool) {
        var i = pos
        func digits() -> Int { let s = i; while i < count, base[i] >= 0x30, base[i] <= 0x39 { i += 1 }; return i - s }
        if i < count, base[i] == UInt8(ascii: "-") { i += 1 }
        let intStart = i
        let n = digits()
        guard n > 0 else { throw error("invalid number", at: pos) }
        if n > 1, base[intStart] == 0x30 { throw error("invalid number (leading zero)", at: pos) }
        var integer = true
        if i < count, base[i] == UInt8(ascii: ".") {
            i += 1
            integer = false
            guard digits() > 0 else { throw error("invalid number (no digit after '.')", at: pos) }
        }
        if i < count, base[i] == UInt8(ascii: "e") || base[i] == UInt8(ascii: "E") {
            i += 1
            integer = false
            if i < count, base[i] == UInt8(ascii: "+") || base[i] == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { throw error("invalid number (no digit in the exponent)", at: pos) }
        }
        return (i, integer)
    }

    /// Reads a number: `.int` when written without fraction or exponent and within `Int`,
    /// else `.double` (the nearest one; a number beyond `Double`'s range is an error).
    public mutating func readNumber() throws -> JSONValue {
        skipWhitespace()
        let start = pos
        let (end, integer) = try scanNumber()
        let text = String(decoding: UnsafeBufferPointer(start: base + start, count: end - start), as: UTF8.self)
        pos = end
        if integer, let i = Int(text) { return .int(i) }
        guard let d = Double(text), d.isFinite else { throw error("number \(text) is out of range", at: start) }
        return .double(d)
    }

    /// Reads an integer; a number with an integral value written as a float (`5.0`) is accepted.
    public mutating func readInt() throws -> Int {
        skipWhitespace()
        let start = pos
        var i = pos
        let negative = i < count && base[i] == UInt8(ascii: "-")
        if negative { i += 1 }
        var value = 0, digits = 0
        while i < count, base[i] >= 0x30, base[i] <= 0x39 {
            value = value &* 10 &+ Int(base[i] - 0x30)
            digits += 1
            i += 1
        }
        let simple = digits > 0 && digits < 19 && !(digits > 1 && base[i - digits] == 0x30)
            && !(i < count && (base[i] == UInt8(ascii: ".") || base[i] == UInt8(ascii: "e") || base[i] == UInt8(ascii: "E")))
        if simple { pos = i; return negative ? -value : value }
        guard peek() == UInt8(ascii: "-") || (pos < count && base[pos] >= 0x30 && base[pos] <= 0x39) else {
            throw error("expected an integer", at: start)
        }
        guard let n = try readNumber().int else { throw error("expected an integer", at: start) }
        return n
    }

    private mutating func expectLiteral(_ literal: StaticString) throws {
        let n = literal.utf8CodeUnitCount
        guard pos + n <= count, memcmp(base + pos, literal.utf8Start, n) == 0 else { throw error("invalid literal") }
        pos += n
    }

    // MARK: Values

    /// Reads any value into a `JSONValue` tree. Duplicate keys: the last value wins, as in
    /// Python's `json`.
    public mutating func readValue() throws -> JSONValue { try readValue(depth: 0) }

    mutating func readValue(depth: Int) throws -> JSONValue {
        guard let c = peek() else { throw error("unexpected end of input, expected a value") }
        switch c {
        case UInt8(ascii: "{"):
            guard depth < Self.maxDepth else { throw error("nesting deeper than \(Self.maxDepth) levels") }
            pos += 1
            var members: [String: JSONValue] = [:]
            var first = true
            while try nextKey(first: &first) { members[try readKey()] = try readValue(depth: depth + 1) }
            return .object(members)
        case UInt8(ascii: "["):
            guard depth < Self.maxDepth else { throw error("nesting deeper than \(Self.maxDepth) levels") }
            pos += 1
            var items: [JSONValue] = []
            var first = true
            while try nextElement(first: &first) { items.append(try readValue(depth: depth + 1)) }
            return .array(items)
        case UInt8(ascii: "\""): return .string(try readString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), 0x30...0x39: return try readNumber()
        default: throw error("unexpected character \(show(c))")
        }
    }

    mutating func readKey() throws -> String {
        let key = try readString()
        try expect(UInt8(ascii: ":"))
        return key
    }

    /// Moves to `offset` (a position this reader reported, e.g. a member's value range).
    mutating func seek(to offset: Int) throws {
        guard offset >= 0, offset <= count else { throw error("offset \(offset) outside the document") }
        pos = offset
    }
}
