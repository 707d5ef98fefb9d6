import Foundation

// MARK: - Values

/// A value inside a chat template, with the Python semantics jinja2 gives it: truthiness,
/// `str()` / `repr()`, equality and ordering, and `json.dumps`. Strings compare and index by
/// Unicode scalar (Python code points), never by Swift `Character`.
public enum JinjaValue: Sendable {
    /// jinja2's default `Undefined`: renders as "", is falsy, iterates as empty; most other
    /// uses are an error. `hint` says why it is undefined ("'x' is undefined").
    case undefined(hint: String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JinjaValue])
    case dict(JinjaDict)
    /// `namespace(...)`: the one mutable object (`{% set ns.attr = … %}`).
    case namespace(JinjaNamespace)
    /// A global function, a bound method (`'a'.upper`) or `loop.cycle`.
    case function(JinjaFunction)

    /// A dict from key/value pairs, in order.
    public static func dict(_ pairs: KeyValuePairs<String, JinjaValue>) -> JinjaValue {
        .dict(JinjaDict(pairs.map { ($0.key, $0.value) }))
    }

    public var isUndefined: Bool { if case .undefined = self { return true }; return false }
    public var stringValue: String? { if case let .string(s) = self { return s }; return nil }

    /// Python truthiness.
    public var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case let .bool(b): return b
        case let .int(i): return i != 0
        case let .double(d): return d != 0
        case let .string(s): return !s.isEmpty
        case let .list(a): return !a.isEmpty
        case let .dict(d): return !d.isEmpty
        case .namespace, .function: return true
        }
    }

    /// The Python type name used in error messages.
    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .list: return "list"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .function: return "builtin_function_or_method"
        }
    }

    /// Python `str(value)` (jinja2 renders `{{ value }}` this way; Undefined renders as "").
    public var str: String {
        switch self {
        case .undefined: return ""
        case let .string(s): return s
        default: return repr
        }
    }

    /// Python `repr(value)`.
    public var repr: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "None"
        case let .bool(b): return b ? "True" : "False"
        case let .int(i): return String(i)
        case let .double(d): return PythonFormat.floatRepr(d)
        case let .string(s): return PythonFormat.stringRepr(s)
        case let .list(a): return "[" + a.map(\.repr).joined(separator: ", ") + "]"
        case let .dict(d): return "{" + d.pairs.map { PythonFormat.stringRepr($0.0) + ": " + $0.1.repr }.joined(separator: ", ") + "}"
        case let .namespace(n): return "<Namespace " + JinjaValue.dict(n.attributes).repr + ">"
        case let .function(f): return "<built-in method \(f.name)>"
        }
    }

    /// Python `==` (1 == 1.0 == True; containers compare deeply; Undefined equals Undefined).
    public static func == (a: JinjaValue, b: JinjaValue) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.string(x), .string(y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case let (.list(x), .list(y)): return x.count == y.count && zip(x, y).allSatisfy { $0 == $1 }
        case let (.dict(x), .dict(y)):
            return x.count == y.count && x.pairs.allSatisfy { k, v in y[k].map { $0 == v } ?? false }
        case let (.namespace(x), .namespace(y)): return x === y
        default:
            if let x = a.number, let y = b.number { return x == y }
            return false
        }
    }

    /// Int, float or bool as a number (Python's numeric tower).
    var number: Double? {
        switch self {
        case let .bool(b): return b ? 1 : 0
        case let .int(i): return Double(i)
        case let .double(d): return d
        default: return nil
        }
    }

    /// An int (or bool) as Int.
    var integer: Int? {
        switch self {
        case let .bool(b): return b ? 1 : 0
        case let .int(i): return i
        default: return nil
        }
    }
}

/// An insertion-ordered dict with string keys (JSON objects and dict literals).
public struct JinjaDict: Sendable {
    public private(set) var pairs: [(String, JinjaValue)]

    public init(_ pairs: [(String, JinjaValue)] = []) {
        self.pairs = []
        for (k, v) in pairs { self[k] = v }
    }

    /// Pairs whose keys are known to be distinct (no lookups: the `loop` object of every
    /// iteration is built this way).
    init(distinct pairs: [(String, JinjaValue)]) {
        self.pairs = pairs
    }

    public var count: Int { pairs.count }
    public var isEmpty: Bool { pairs.isEmpty }
    public var keys: [String] { pairs.map(\.0) }

    /// Lookup by key (compared by Unicode scalars, as Python does); setting replaces in place.
    public subscript(key: String) -> JinjaValue? {
        get { pairs.first { $0.0.unicodeScalars.elementsEqual(key.unicodeScalars) }?.1 }
        set {
            let i = pairs.firstIndex { $0.0.unicodeScalars.elementsEqual(key.unicodeScalars) }
            switch (i, newValue) {
            case let (i?, v?): pairs[i].1 = v
            case let (i?, nil): pairs.remove(at: i)
            case let (nil, v?): pairs.append((key, v))
            case (nil, nil): break
            }
        }
    }
}

/// The object `namespace(...)` returns. Only the render that created it mutates it.
public final class JinjaNamespace: @unchecked Sendable {
    public var attributes: JinjaDict
    public init(_ attributes: JinjaDict = JinjaDict()) { self.attributes = attributes }
}

/// A callable value: positional and keyword arguments in, a value out.
public struct JinjaFunction: Sendable {
    public typealias Body = @Sendable (_ args: [JinjaValue], _ kwargs: JinjaDict) throws -> JinjaValue
    public let name: String
    let body: Body
    public init(name: String, _ body: @escaping Body) {
        self.name = name
        self.body = body
    }
}

// MARK: - Python formatting

/// Python's `repr` of floats and strings and `json.dumps`, byte for byte.
public enum PythonFormat {
    /// `repr(float)`: Swift's `description` has the same shortest round-trip digits; they are laid
    /// out as Python does: positional for decimal exponents -4..<16 (`0.0001`,
    /// `1000000000000000.0`), else scientific with a signed two-digit-minimum exponent (`1e-05`).
    public static func floatRepr(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        let text = abs(d).description
        let parts = text.split(separator: "e")
        let mantissa = parts[0].split(separator: ".", omittingEmptySubsequences: false)
        var digits = Array(mantissa[0] + (mantissa.count > 1 ? mantissa[1] : ""))
        var point = mantissa[0].count + (parts.count > 1 ? Int(parts[1])! : 0)
        while digits.count > 1, digits.first == "0" { digits.removeFirst(); point -= 1 }
        while digits.count > 1, digits.last == "0" { digits.removeLast() }
        let sign = d < 0 ? "-" : ""
        let exp = point - 1
        if exp >= -4 && exp < 16 {
            if point <= 0 { return sign + "0." + String(repeating: "0", count: -point) + String(digits) }
            if point >= digits.count { return sign + String(digits) + String(repeating: "0", count: point - digits.count) + ".0" }
            return sign + String(digits[..<point]) + "." + String(digits[point...])
        }
        let m = String(digits[0]) + (digits.count > 1 ? "." + String(digits[1...]) : "")
        let e = String(abs(exp))
        return sign + m + "e" + (exp < 0 ? "-" : "+") + (e.count < 2 ? "0" + e : e)
    }

    /// `repr(str)`: single quotes unless the text has `'` and no `"`; `\\`, the quote, `\t`,
    /// `\n`, `\r` escaped; other non-printable code points as `\xhh`, `\uhhhh`, `\Uhhhhhhhh`.
    static func stringRepr(_ s: String) -> String {
        let quote: Unicode.Scalar = s.unicodeScalars.contains("'") && !s.unicodeScalars.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for c in s.unicodeScalars {
            switch c {
            case quote, "\\": out += "\\" + String(c)
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default:
                if isPrintable(c) {
                    out.unicodeScalars.append(c)
                } else {
                    let h = String(c.value, radix: 16)
                    let width = c.value <= 0xFF ? 2 : c.value <= 0xFFFF ? 4 : 8
                    out += "\\" + (width == 2 ? "x" : width == 4 ? "u" : "U") + String(repeating: "0", count: width - h.count) + h
                }
            }
        }
        out.unicodeScalars.append(quote)
        return out
    }

    /// Python's `str.isprintable()` for one code point: not in categories Cc, Cf, Cs, Co, Cn,
    /// Zl, Zp, Zs (the ASCII space excepted).
    private static func isPrintable(_ c: Unicode.Scalar) -> Bool {
        if c == " " { return true }
        switch c.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator, .spaceSeparator:
            return false
        default:
            return true
        }
    }

    /// `json.dumps(value, ensure_ascii=ascii, indent=indent, separators=separators,
    /// sort_keys=sortKeys)` as transformers' `tojson` filter calls it (`ensure_ascii=False` by
    /// default). `indent` is a string of spaces (or the given string); separators default to
    /// `(", ", ": ")`, or `(",", ": ")` with an indent. Throws for values JSON cannot hold.
    static func json(_ v: JinjaValue, ascii: Bool = false, indent: String? = nil, separators: (String, String)? = nil,
                     sortKeys: Bool = false) throws -> String {
        let (item, key) = separators ?? (indent == nil ? ", " : ",", ": ")
        var out = ""
        // Within the rendering's string limit (`JinjaLimits`), checked as the text grows (and
        // first against a lower bound, so a structure far too large is refused at once).
        let limits = JinjaBudget.limits
        if v.minimumTextBytes(cap: limits.maxStringBytes) > limits.maxStringBytes {
            throw JinjaLimitError("the result of tojson would be longer than \(JinjaBudget.byteText(limits.maxStringBytes))")
        }
        func write(_ v: JinjaValue, _ level: Int) throws {
            guard level <= limits.maxNesting else {
                throw JinjaLimitError("tojson: values nested more than \(limits.maxNesting) deep")
            }
            func open(_ bracket: String, _ close: String, _ n: Int, _ element: (Int) throws -> Void) throws {
                guard n > 0 else { out += bracket + close; return }
                out += bracket
                if let indent { try JinjaBudget.checkRepeat(count: level + 1, bytes: indent.utf8.count, "tojson's indentation") }
                let pad = indent.map { "\n" + String(repeating: $0, count: level + 1) }
                for i in 0..<n {
                    if i > 0 { out += item }
                    if let pad { out += pad }
                    try element(i)
                    try JinjaBudget.checkString(bytes: out.utf8.count, "the result of tojson")
                }
                if let indent { out += "\n" + String(repeating: indent, count: level) }
                out += close
            }
            switch v {
            case .none: out += "null"
            case let .bool(b): out += b ? "true" : "false"
            case let .int(i): out += String(i)
            case let .double(d): out += d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : floatRepr(d)
            case let .string(s): out += jsonString(s, ascii: ascii)
            case let .list(a): try open("[", "]", a.count) { try write(a[$0], level + 1) }
            case let .dict(d):
                let pairs = sortKeys ? d.pairs.sorted { $0.0.unicodeScalars.lexicographicallyPrecedes($1.0.unicodeScalars) } : d.pairs
                try open("{", "}", pairs.count) { i in
                    out += jsonString(pairs[i].0, ascii: ascii) + key
                    try write(pairs[i].1, level + 1)
                }
            case .undefined, .namespace, .function:
                throw JinjaRuntimeError("Object of type \(v.typeName) is not JSON serializable")
            }
        }
        try write(v, 0)
        return out
    }

    /// A JSON string: `"`, `\` and control characters escaped, and with `ascii` every code point
    /// outside U+0020…U+007E as `\uxxxx` (UTF-16 surrogate pairs above U+FFFF).
    static func jsonString(_ s: String, ascii: Bool = false) -> String {
        var out = "\""
        func u(_ v: UInt32) {
            let h = String(v, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
        }
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if c.value < 0x20 || (ascii && c.value > 0x7E) {
                    if c.value > 0xFFFF {
                        u(0xD800 + ((c.value - 0x10000) >> 10))
                        u(0xDC00 + ((c.value - 0x10000) & 0x3FF))
                    } else {
                        u(c.value)
                    }
                } else {
                    out.unicodeScalars.append(c)
                }
            }
        }
        return out + "\""
    }

    /// Python `str.strip()` (whitespace code points at both ends removed).
    static func trimmed(_ s: String) -> String {
        String(String.UnicodeScalarView(JinjaMethods.strip(Array(s.unicodeScalars), chars: nil)))
    }
}
