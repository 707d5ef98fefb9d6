import Foundation

/// A parsed JSON value, the one JSON type of the engine (configs, safetensors headers, adapter
/// configs, tokenizer files, metrics lines). Integers and floats stay distinct as they were
/// written (`8` is `.int`, `8.0` is `.double`, as Python's `json` reads them), and booleans are
/// not numbers, so validation can say exactly what was expected.
///
/// Reading is `parse` (a whole document), `JSONReader` (streaming, for large files), and
/// `members(in:at:)` / `keys(in:at:)` for the file order of an object's keys, which the
/// dictionary does not keep. Writing is `serialized(pretty:)`.
public enum JSONValue: Decodable, Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// As a field of a `Decodable` type, the decoder's own number rules apply (JSONDecoder
    /// reads `8.0` as an integer); `parse` keeps what was written.
    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null; return }
        if let b = try? c.decode(Bool.self) { self = .bool(b); return }
        if let i = try? c.decode(Int.self) { self = .int(i); return }
        if let d = try? c.decode(Double.self) { self = .double(d); return }
        if let s = try? c.decode(String.self) { self = .string(s); return }
        if let a = try? c.decode([JSONValue].self) { self = .array(a); return }
        self = .object(try c.decode([String: JSONValue].self))
    }

    /// Parses a whole document (RFC 8259, strictly; see `JSONReader`). Throws `JSONError`.
    public static func parse(_ data: Data) throws -> JSONValue {
        try JSONReader.read(data) { r in
            let v = try r.readValue()
            try r.expectEnd()
            return v
        }
    }

    public subscript(key: String) -> JSONValue? {
        if case let .object(o) = self { return o[key] }
        return nil
    }

    public var object: [String: JSONValue]? { if case let .object(o) = self { return o }; return nil }
    public var array: [JSONValue]? { if case let .array(a) = self { return a }; return nil }
    public var string: String? { if case let .string(s) = self { return s }; return nil }
    public var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    public var isNull: Bool { self == .null }
    /// Integers, and floats with an integral value (e.g. `8.0`).
    public var int: Int? {
        switch self {
        case let .int(i): return i
        case let .double(d) where d == d.rounded() && abs(d) < 9e15: return Int(d)
        default: return nil
        }
    }
    public var double: Double? {
        switch self {
        case let .int(i): return Double(i)
        case let .double(d): return d
        default: return nil
        }
    }

    /// A JSON string literal with the escapes RFC 8259 requires (non-ASCII text stays UTF-8),
    /// for writers that must control key order or number formatting themselves.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
            }
        }
        return out + "\""
    }

    // MARK: Key order

    /// The members of the object at `path` (keys followed from the top-level object; at a
    /// repeated key the last one, whose value the dictionary holds) in document order, with
    /// repeated keys as written and the byte range of each value's text.
    public static func members(in data: Data, at path: [String] = []) throws -> [JSONMember] {
        try JSONReader.read(data) { r in
            _ = r.peek()  // skips whitespace, so `start` is where the object opens
            var start = r.pos
            var members = try r.readMembers()
            try r.expectEnd()
            for (depth, key) in path.enumerated() {
                guard let m = members.last(where: { $0.key == key }) else {
                    throw r.error("no member '\(path[...depth].joined(separator: "."))' in this object", at: start)
                }
                start = m.range.lowerBound
                try r.seek(to: start)
                members = try r.readMembers()
            }
            return members
        }
    }

    /// The keys of the object at `path` in the order Python's `json` gives them (a dict in
    /// insertion order: each key where it first appears). PEFT, for one, resolves
    /// `rank_pattern` / `alpha_pattern` by the first matching key in that order.
    public static func keys(in data: Data, at path: [String] = []) throws -> [String] {
        var seen = Set<String>()
        return try members(in: data, at: path).map(\.key).filter { seen.insert($0).inserted }
    }

    // MARK: Writing

    /// The value as JSON text: object keys sorted, two-space indentation when `pretty` (as
    /// Python's `json.dumps(indent=2, sort_keys=True)` and transformers' `to_json_string`),
    /// floats in their shortest round-trip form, non-finite floats as Python's `NaN` /
    /// `Infinity` (which Python's `json` reads back), non-ASCII text as UTF-8.
    public func serialized(pretty: Bool = true) -> String {
        var out = ""
        write(into: &out, indent: 0, pretty: pretty)
        return out
    }

    private func write(into out: inout String, indent: Int, pretty: Bool) {
        let pad = pretty ? String(repeating: "  ", count: indent + 1) : ""
        let close = pretty ? String(repeating: "  ", count: indent) : ""
        let nl = pretty ? "\n" : ""
        switch self {
        case .null: out += "null"
        case let .bool(b): out += b ? "true" : "false"
        case let .int(i): out += String(i)
        case let .double(d):
            if d.isNaN { out += "NaN" } else if d.isInfinite { out += d > 0 ? "Infinity" : "-Infinity" } else { out += "\(d)" }
        case let .string(s): out += Self.quote(s)
        case let .array(a):
            if a.isEmpty { out += "[]"; return }
            out += "[" + nl
            for (i, x) in a.enumerated() {
                out += pad
                x.write(into: &out, indent: indent + 1, pretty: pretty)
                out += (i + 1 < a.count ? "," : "") + nl
            }
            out += close + "]"
        case let .object(o):
            if o.isEmpty { out += "{}"; return }
            out += "{" + nl
            let keys = o.keys.sorted()
            for (i, k) in keys.enumerated() {
                out += pad + Self.quote(k) + (pretty ? ": " : ":")
                o[k]!.write(into: &out, indent: indent + 1, pretty: pretty)
                out += (i + 1 < keys.count ? "," : "") + nl
            }
            out += close + "}"
        }
    }
}

/// One member of a JSON object as written: its key, its value, and where the value's text lies
/// in the document (byte offsets), so a writer can replace one value and keep every other byte.
public struct JSONMember: Equatable, Sendable {
    public let key: String
    public let value: JSONValue
    public let range: Range<Int>
}

extension JSONReader {
    /// The members of the object that starts here, in document order, each with the byte
    /// range of its value's text (duplicates included, as written).
    public mutating func readMembers() throws -> [JSONMember] {
        try beginObject("an object")
        var out: [JSONMember] = []
        var first = true
        while try nextKey(first: &first) {
            let key = try readKey()
            skipWhitespace()
            let start = pos
            let value = try readValue(depth: 1)
            out.append(JSONMember(key: key, value: value, range: start..<pos))
        }
        return out
    }
}
