import Foundation

// The lexer of the Jinja subset that chat templates use. It follows jinja2 3.1's `Lexer`
// (lexer.py) as transformers configures it (`trim_blocks=True, lstrip_blocks=True`, default
// delimiters, `keep_trailing_newline=False`):
//
// - line breaks (`\r\n`, `\r`, `\n`) become `\n` and one trailing newline is dropped;
// - `{%-`, `{{-`, `{#-` strip all whitespace before the tag; `-%}`, `-}}`, `-#}` strip all
//   whitespace after it;
// - trim_blocks: a block or comment end (`%}`, `#}`) swallows one following `\n` (not `+%}`);
// - lstrip_blocks: spaces/tabs between the start of a line and a block or comment start are
//   removed (not for `{{` and not for `{%+`); "start of a line" includes right after a tag
//   whose match ended with a newline;
// - inside tags: whitespace, floats, integers, names, strings (Python `unicode-escape`
//   escapes), operators; `}}` / `%}` only close a tag when brackets are balanced.
// `{% raw %}…{% endraw %}` is passed through as text.

/// One token of a chat template, with its 1-based line and column (in Unicode scalars).
struct JinjaToken: Equatable {
    enum Kind: Equatable {
        case data(String)
        case variableBegin, variableEnd, blockBegin, blockEnd
        case name(String)
        case string(String)
        case int(Int)
        case float(Double)
        case op(String)
        case eof
    }
    var kind: Kind
    var line: Int
    var column: Int

    /// How an error message names the token (jinja2's `describe_token`).
    var description: String {
        switch kind {
        case let .data(s): return "template text \(JinjaValue.string(String(s.prefix(20))).repr)"
        case .variableBegin: return "'{{'"
        case .variableEnd: return "end of print statement '}}'"
        case .blockBegin: return "'{%'"
        case .blockEnd: return "end of statement block '%}'"
        case let .name(n): return "'\(n)'"
        case let .string(s): return "string \(JinjaValue.string(s).repr)"
        case let .int(i): return "integer \(i)"
        case let .float(d): return "float \(PythonFormat.floatRepr(d))"
        case let .op(o): return "'\(o)'"
        case .eof: return "end of template"
        }
    }
}

struct JinjaLexer {
    private let src: [Unicode.Scalar]
    private var pos = 0
    private var tokens: [JinjaToken] = []
    /// Offsets where lines start, for line/column numbers.
    private let lineStarts: [Int]

    /// Tokenizes `source`; throws `ChatTemplateError.syntax` naming the line and column.
    static func tokenize(_ source: String) throws -> [JinjaToken] {
        var lexer = JinjaLexer(source: source)
        try lexer.run()
        return lexer.tokens
    }

    private init(source: String) {
        // Newlines normalized to "\n"; one trailing newline dropped (keep_trailing_newline=False).
        var s: [Unicode.Scalar] = []
        s.reserveCapacity(source.unicodeScalars.count)
        var it = source.unicodeScalars.makeIterator()
        var pending = it.next()
        while let c = pending {
            pending = it.next()
            if c == "\r" {
                s.append("\n")
                if pending == "\n" { pending = it.next() }
            } else {
                s.append(c)
            }
        }
        if s.last == "\n" { s.removeLast() }
        src = s
        var starts = [0]
        for (i, c) in s.enumerated() where c == "\n" { starts.append(i + 1) }
        lineStarts = starts
    }

    // MARK: Positions and errors

    private func location(_ offset: Int) -> (line: Int, column: Int) {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return (lo + 1, offset - lineStarts[lo] + 1)
    }

    private func error(_ message: String, at offset: Int) -> ChatTemplateError {
        let (l, c) = location(offset)
        return .syntax(line: l, column: c, message: message)
    }

    private mutating func emit(_ kind: JinjaToken.Kind, at offset: Int) {
        let (l, c) = location(offset)
        tokens.append(JinjaToken(kind: kind, line: l, column: c))
    }

    private func at(_ i: Int, _ literal: String) -> Bool {
        var j = i
        for c in literal.unicodeScalars {
            guard j < src.count, src[j] == c else { return false }
            j += 1
        }
        return true
    }

    private func skipSpace(from i: Int) -> Int {
        var j = i
        while j < src.count, isPythonSpace(src[j].value) { j += 1 }
        return j
    }

    private func text(_ a: Int, _ b: Int) -> String {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: src[a..<b])
        return String(v)
    }

    // MARK: Root state

    private mutating func run() throws {
        var lineStarting = true
        while pos < src.count {
            // The earliest tag opener.
            var i = pos
            var opener: Unicode.Scalar? = nil
            while i + 1 < src.count {
                if src[i] == "{", src[i + 1] == "{" || src[i + 1] == "%" || src[i + 1] == "#" { opener = src[i + 1]; break }
                i += 1
            }
            guard let kind = opener else {
                emit(.data(text(pos, src.count)), at: pos)
                pos = src.count
                break
            }
            let sign: Unicode.Scalar? = i + 2 < src.count && (src[i + 2] == "-" || src[i + 2] == "+") ? src[i + 2] : nil
            let raw = kind == "%" ? rawBegin(at: i) : nil
            emitText(from: pos, toTagAt: i, sign: sign, lstrip: kind != "{", lineStarting: lineStarting)
            let tagStart = i + 2 + (sign == nil ? 0 : 1)
            if let raw {
                pos = try rawBody(from: raw, opener: i)
                lineStarting = src[pos - 1] == "\n"
                continue
            }
            switch kind {
            case "#":
                pos = try commentEnd(from: tagStart, opener: i)
            case "{":
                emit(.variableBegin, at: i)
                pos = try tagBody(from: tagStart, block: false, opener: i)
            default:
                emit(.blockBegin, at: i)
                pos = try tagBody(from: tagStart, block: true, opener: i)
            }
            lineStarting = src[pos - 1] == "\n"
        }
        emit(.eof, at: src.count)
    }

    /// Emits the text `start..<tag` with the whitespace control of the tag that follows it:
    /// `-` strips all trailing whitespace; otherwise (lstrip_blocks, for block and comment tags
    /// without `+`) spaces between the start of the line and the tag are dropped, where a line
    /// starts after a newline in the text or, at the text's start, when `lineStarting`.
    private mutating func emitText(from start: Int, toTagAt tag: Int, sign: Unicode.Scalar?, lstrip: Bool, lineStarting: Bool) {
        var end = tag
        if sign == "-" {
            while end > start, isPythonSpace(src[end - 1].value) { end -= 1 }
        } else if sign != "+" && lstrip {
            var lineStart = tag
            while lineStart > start, src[lineStart - 1] != "\n" { lineStart -= 1 }
            if (lineStart > start || lineStarting) && lineStart < tag && (lineStart..<tag).allSatisfy({ isPythonSpace(src[$0].value) }) {
                end = lineStart
            }
        }
        if end > start { emit(.data(text(start, end)), at: start) }
    }

    /// The end of a block-end match at `i` (`+%}`, `-%}\s*`, `%}\n?`), or nil.
    private func blockEnd(at i: Int, close: String, trims: Bool) -> Int? {
        if trims, at(i, "+" + close) { return i + 3 }
        if at(i, "-" + close) { return skipSpace(from: i + 3) }
        if at(i, close) { return trims && i + 2 < src.count && src[i + 2] == "\n" ? i + 3 : i + 2 }
        return nil
    }

    private func commentEnd(from start: Int, opener: Int) throws -> Int {
        var j = start
        while j < src.count {
            if let e = blockEnd(at: j, close: "#}", trims: true) { return e }
            j += 1
        }
        throw error("missing end of comment tag '#}'", at: opener)
    }

    /// `{%(-|+|)\s*raw\s*(-%}\s*|%})` at `i`: the offset after it.
    private func rawBegin(at i: Int) -> Int? {
        var j = i + 2
        if j < src.count, src[j] == "-" || src[j] == "+" { j += 1 }
        j = skipSpace(from: j)
        guard at(j, "raw") else { return nil }
        j = skipSpace(from: j + 3)
        if at(j, "-%}") { return skipSpace(from: j + 3) }
        return at(j, "%}") ? j + 2 : nil
    }

    /// The raw text up to `{% endraw %}` (whose whitespace control applies), emitted as data.
    private mutating func rawBody(from start: Int, opener: Int) throws -> Int {
        var j = start
        while j + 1 < src.count {
            if src[j] == "{", src[j + 1] == "%" {
                var k = j + 2
                let sign: Unicode.Scalar? = k < src.count && (src[k] == "-" || src[k] == "+") ? src[k] : nil
                if sign != nil { k += 1 }
                k = skipSpace(from: k)
                if at(k, "endraw"), let e = blockEnd(at: skipSpace(from: k + 6), close: "%}", trims: true) {
                    emitText(from: start, toTagAt: j, sign: sign, lstrip: true, lineStarting: false)
                    return e
                }
            }
            j += 1
        }
        throw error("missing end of raw directive '{% endraw %}'", at: opener)
    }

    // MARK: Tag state

    private static let operators = ["//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")",
                                    "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"]

    /// Lexes the inside of a `{% %}` or `{{ }}` tag; returns the offset after its end.
    private mutating func tagBody(from start: Int, block: Bool, opener: Int) throws -> Int {
        var i = start
        var brackets: [Unicode.Scalar] = []
        let close = block ? "%}" : "}}"
        while true {
            if brackets.isEmpty, let e = blockEnd(at: i, close: close, trims: block) {
                emit(block ? .blockEnd : .variableEnd, at: i)
                return e
            }
            guard i < src.count else {
                throw error("unexpected end of template: the \(block ? "'{%'" : "'{{'") tag opened here was never closed with '\(close)'", at: opener)
            }
            let c = src[i]
            if isPythonSpace(c.value) { i += 1; continue }
            if let (kind, end) = number(at: i) { emit(kind, at: i); i = end; continue }
            if c == "_" || c.properties.isAlphabetic {
                var j = i + 1
                while j < src.count, src[j] == "_" || src[j].properties.isAlphabetic || src[j].properties.numericType == .decimal { j += 1 }
                emit(.name(text(i, j)), at: i)
                i = j
                continue
            }
            if c == "'" || c == "\"" {
                let (s, end) = try string(at: i)
                emit(.string(s), at: i)
                i = end
                continue
            }
            guard let op = Self.operators.first(where: { at(i, $0) }) else {
                throw error("unexpected character \(JinjaValue.string(String(c)).repr)", at: i)
            }
            switch op {
            case "(": brackets.append(")")
            case "[": brackets.append("]")
            case "{": brackets.append("}")
            case ")", "]", "}":
                guard let expected = brackets.popLast() else { throw error("unexpected '\(op)'", at: i) }
                if String(expected) != op { throw error("unexpected '\(op)', expected '\(expected)'", at: i) }
            default: break
            }
            emit(.op(op), at: i)
            i += op.unicodeScalars.count
        }
    }

    private func isDigit(_ i: Int) -> Bool { i < src.count && src[i].value >= 0x30 && src[i].value <= 0x39 }

    /// Digits with single `_` separators from `i`; the end offset (== i when none).
    private func digits(from i: Int) -> Int {
        guard isDigit(i) else { return i }
        var j = i + 1
        while true {
            if isDigit(j) { j += 1 } else if j < src.count, src[j] == "_", isDigit(j + 1) { j += 2 } else { break }
        }
        return j
    }

    /// A float (`1.5`, `1e3`, `2.5E-2`; never right after a `.`) or a decimal/binary/octal/hex
    /// integer, as jinja2's `float_re` and `integer_re`.
    private func number(at i: Int) -> (JinjaToken.Kind, Int)? {
        guard isDigit(i) else { return nil }
        let clean = { (a: Int, b: Int) in self.text(a, b).replacingOccurrences(of: "_", with: "") }
        if i == 0 || src[i - 1] != "." {
            let intEnd = digits(from: i)
            var j = intEnd
            var isFloat = false
            if j < src.count, src[j] == ".", isDigit(j + 1) { j = digits(from: j + 1); isFloat = true }
            if j < src.count, src[j] == "e" || src[j] == "E" {
                var k = j + 1
                if k < src.count, src[k] == "+" || src[k] == "-" { k += 1 }
                if isDigit(k) { j = digits(from: k); isFloat = true }
            }
            if isFloat, let d = Double(clean(i, j)) { return (.float(d), j) }
        }
        if src[i] == "0", i + 1 < src.count, let radix = ["b": 2, "o": 8, "x": 16][String(src[i + 1]).lowercased()] {
            var j = i + 2
            while j < src.count, src[j] == "_" || Int(String(src[j]), radix: radix) != nil { j += 1 }
            if j > i + 2, let v = Int(clean(i + 2, j), radix: radix) { return (.int(v), j) }
        }
        if src[i] == "0" {
            var j = i + 1
            while j < src.count, src[j] == "0" || (src[j] == "_" && j + 1 < src.count && src[j + 1] == "0") { j += 1 }
            return (.int(0), j)
        }
        let j = digits(from: i)
        // Integers beyond Int: an error at parse time rather than a wrong value.
        return Int(clean(i, j)).map { (.int($0), j) } ?? (.float(Double(clean(i, j)) ?? .infinity), j)
    }

    /// A quoted string at `i` with Python `unicode-escape` escapes resolved (unknown escapes keep
    /// their backslash, as Python does).
    private func string(at i: Int) throws -> (String, Int) {
        let quote = src[i]
        var out = String.UnicodeScalarView()
        var j = i + 1
        func hex(_ n: Int) throws -> Unicode.Scalar {
            guard j + 1 + n <= src.count, let v = UInt32(text(j + 1, j + 1 + n), radix: 16),
                  text(j + 1, j + 1 + n).allSatisfy(\.isHexDigit), let s = Unicode.Scalar(v) else {
                throw error("invalid \\\(src[j]) escape in string literal", at: j - 1)
            }
            j += n
            return s
        }
        while j < src.count {
            let c = src[j]
            if c == quote { return (String(out), j + 1) }
            if c != "\\" { out.append(c); j += 1; continue }
            j += 1
            guard j < src.count else { break }
            let e = src[j]
            switch e {
            case "\n": break
            case "\\", "'", "\"": out.append(e)
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "v": out.append("\u{0B}")
            case "x": out.append(try hex(2))
            case "u": out.append(try hex(4))
            case "U": out.append(try hex(8))
            case "0"..."7":
                var v: UInt32 = 0, n = 0
                while n < 3, j < src.count, ("0"..."7").contains(src[j]) { v = v * 8 + src[j].value - 0x30; j += 1; n += 1 }
                j -= 1
                out.append(Unicode.Scalar(v)!)
            default:
                out.append("\\")
                out.append(e)
            }
            j += 1
        }
        throw error("unterminated string literal", at: i)
    }
}
