import Foundation

// MARK: - Methods

/// The Python methods templates call on strings (`content.split('</think>')`), dicts
/// (`message.get('x')`, `d.items()`) and lists, with Python semantics on code points. Methods
/// that would mutate a list or dict fail, as in transformers' `ImmutableSandboxedEnvironment`.
enum JinjaMethods {
    static let stringMethods: Set<String> = [
        "upper", "lower", "title", "capitalize", "swapcase", "strip", "lstrip", "rstrip", "startswith", "endswith", "split",
        "rsplit", "splitlines", "replace", "find", "rfind", "index", "rindex", "count", "join", "isdigit", "isalpha",
        "isalnum", "isspace", "islower", "isupper",
    ]
    static let mutators: Set<String> = [
        "append", "extend", "insert", "pop", "remove", "sort", "reverse", "clear", "update", "setdefault", "popitem",
    ]

    /// `object.name` as a bound method, or nil when the type has no such method.
    static func bound(_ object: JinjaValue, _ name: String) -> JinjaFunction? {
        let call: @Sendable (JinjaCallArgs) throws -> JinjaValue
        switch object {
        case let .string(s) where stringMethods.contains(name):
            call = { try stringMethod(s, name, $0) }
        case let .dict(d) where ["items", "keys", "values", "get"].contains(name):
            call = { a in
                switch name {
                case "items": return .list(d.pairs.map { .list([.string($0.0), $0.1]) })
                case "keys": return .list(d.keys.map { .string($0) })
                case "values": return .list(d.pairs.map(\.1))
                default:
                    guard case let .string(k)? = a.get(0, "key") else { return a.get(1, "default") ?? .none }
                    return d[k] ?? a.get(1, "default") ?? .none
                }
            }
        case let .list(items) where name == "count" || name == "index":
            call = { a in
                guard let x = a.get(0, "value") else { throw JinjaRuntimeError("list.\(name)() takes exactly one argument") }
                if name == "count" { return .int(items.filter { $0 == x }.count) }
                guard let i = items.firstIndex(where: { $0 == x }) else { throw JinjaRuntimeError("\(x.shortRepr) is not in list") }
                return .int(i)
            }
        case .list, .dict:
            guard mutators.contains(name) else { return nil }
            call = { _ in throw JinjaRuntimeError("access to attribute '\(name)' of '\(object.typeName)' object is unsafe (templates cannot modify their inputs)") }
        default:
            return nil
        }
        return JinjaFunction(name: name) { args, kwargs in try call(JinjaCallArgs(positional: args, keyword: kwargs)) }
    }

    private static func stringMethod(_ s: String, _ name: String, _ a: JinjaCallArgs) throws -> JinjaValue {
        let u = Array(s.unicodeScalars)
        func string(_ i: Int, _ key: String) throws -> [Unicode.Scalar]? {
            guard let v = a.get(i, key), !(v == .none) else { return nil }
            guard case let .string(t) = v else { throw JinjaRuntimeError("str.\(name)() argument must be str, not \(v.typeName)") }
            return Array(t.unicodeScalars)
        }
        func required(_ i: Int, _ key: String) throws -> [Unicode.Scalar] {
            guard let t = try string(i, key) else { throw JinjaRuntimeError("str.\(name)() missing required argument '\(key)'") }
            return t
        }
        func int(_ i: Int, _ key: String) throws -> Int? {
            guard let v = a.get(i, key), !(v == .none) else { return nil }
            guard let n = v.integer else { throw JinjaRuntimeError("str.\(name)(): '\(v.typeName)' object cannot be interpreted as an integer") }
            return n
        }
        func text(_ scalars: some Sequence<Unicode.Scalar>) -> String {
            var v = String.UnicodeScalarView()
            v.append(contentsOf: scalars)
            return String(v)
        }
        func all(_ p: (Unicode.Scalar) -> Bool) -> JinjaValue { .bool(!u.isEmpty && u.allSatisfy(p)) }
        switch name {
        case "upper": return try checked(s.uppercased(), "str.upper()")
        case "lower": return try checked(s.lowercased(), "str.lower()")
        case "swapcase": return try checked(text(u.flatMap { c -> [Unicode.Scalar] in
            let t = String(c)
            return Array((c.properties.isUppercase ? t.lowercased() : c.properties.isLowercase ? t.uppercased() : t).unicodeScalars)
        }), "str.swapcase()")
        case "title", "capitalize": return try checked(titleCase(s, onlyFirst: name == "capitalize"), "str.\(name)()")
        case "strip", "lstrip", "rstrip":
            return .string(text(strip(u, chars: try string(0, "chars"), left: name != "rstrip", right: name != "lstrip")))
        case "startswith", "endswith":
            let v = a.get(0, "prefix") ?? .none
            let candidates: [JinjaValue]
            switch v {
            case .string: candidates = [v]
            case let .list(l): candidates = l
            default: throw JinjaRuntimeError("\(name) first arg must be str or a tuple of str, not \(v.typeName)")
            }
            let (lo, hi) = try range(u.count, int(1, "start"), int(2, "end"))
            let window = lo <= hi ? Array(u[lo..<hi]) : []
            return .bool(try candidates.contains { c in
                guard case let .string(p) = c else { throw JinjaRuntimeError("\(name) tuple items must be str") }
                let q = Array(p.unicodeScalars)
                return lo <= hi && (name == "startswith" ? window.starts(with: q) : window.reversed().starts(with: q.reversed()))
            })
        case "split", "rsplit":
            let parts = try split(u, separator: string(0, "sep"), maxSplit: int(1, "maxsplit") ?? -1, fromRight: name == "rsplit")
            return .list(parts.map { .string(text($0)) })
        case "splitlines":
            return .list(try splitLines(u, keepEnds: a.get(0, "keepends")?.truthy ?? false).map { .string(text($0)) })
        case "replace":
            return .string(text(try replace(u, try required(0, "old"), try required(1, "new"), count: try int(2, "count") ?? -1)))
        case "find", "rfind", "index", "rindex", "count":
            let sub = try required(0, "sub")
            let (lo, hi) = try range(u.count, int(1, "start"), int(2, "end"))
            let window = lo <= hi ? Array(u[lo..<hi]) : []
            if name == "count" {
                guard lo <= hi else { return .int(0) }
                return .int(sub.isEmpty ? window.count + 1 : occurrences(window, sub).count)
            }
            let hit = lo <= hi ? (name.hasPrefix("r") ? occurrences(window, sub, overlapping: true).last : find(window, sub)) : nil
            if let hit { return .int(hit + lo) }
            if name.hasSuffix("index") { throw JinjaRuntimeError("substring not found") }
            return .int(-1)
        case "join":
            let items = try JinjaRenderer.iterate(a.get(0, "iterable") ?? .list([]))
            let parts = try items.map { v -> String in
                guard case let .string(t) = v else { throw JinjaRuntimeError("sequence item: expected str instance, \(v.typeName) found") }
                return t
            }
            try JinjaBudget.checkString(bytes: joinedBytes(parts, separator: s), "str.join()")
            return .string(parts.joined(separator: s))
        case "isdigit": return all { $0.properties.numericType != nil && $0.properties.numericType != .numeric }
        case "isalpha": return all { $0.properties.isAlphabetic }
        case "isalnum": return all { $0.properties.isAlphabetic || $0.properties.numericType != nil }
        case "isspace": return all { isPythonSpace($0.value) }
        case "islower": return .bool(u.contains { $0.properties.isLowercase } && !u.contains { $0.properties.isUppercase })
        default: return .bool(u.contains { $0.properties.isUppercase } && !u.contains { $0.properties.isLowercase })
        }
    }

    /// A string the template built, within the rendering's string limit (case mappings can
    /// make a string up to three times longer).
    static func checked(_ s: String, _ what: String) throws -> JinjaValue {
        try JinjaBudget.checkString(bytes: s.utf8.count, "the result of \(what)")
        return .string(s)
    }

    /// UTF-8 bytes of `parts` joined with `separator` (overflow-safe).
    static func joinedBytes(_ parts: [String], separator: String) -> Int {
        var total = parts.isEmpty ? 0 : (parts.count - 1).multipliedReportingOverflow(by: separator.utf8.count).partialValue
        if !parts.isEmpty, (parts.count - 1).multipliedReportingOverflow(by: separator.utf8.count).overflow { return .max }
        for p in parts {
            let (t, o) = total.addingReportingOverflow(p.utf8.count)
            if o { return .max }
            total = t
        }
        return total
    }

    /// Python's clamping of `start`/`end` arguments to `[0, count]`.
    private static func range(_ count: Int, _ start: Int?, _ end: Int?) -> (Int, Int) {
        func clamp(_ i: Int) -> Int { i < 0 ? max(i + count, 0) : min(i, count) }
        return (clamp(start ?? 0), clamp(end ?? count))
    }

    // MARK: Code-point string algorithms

    /// The first offset of `needle` in `hay` at or after `from`.
    static func find(_ hay: [Unicode.Scalar], _ needle: [Unicode.Scalar], from: Int = 0) -> Int? {
        guard from >= 0, needle.count <= hay.count - from else { return nil }
        if needle.isEmpty { return from }
        var hit: Int?
        search(hay, needle, from: from) { hit = $0; return false }
        return hit
    }

    /// Offsets of `needle` in `hay`, non-overlapping from the left unless `overlapping`.
    private static func occurrences(_ hay: [Unicode.Scalar], _ needle: [Unicode.Scalar], overlapping: Bool = false) -> [Int] {
        if needle.isEmpty { return Array(0...hay.count) }
        var hits: [Int] = []
        var next = 0
        search(hay, needle, from: 0) { j in
            if overlapping || j >= next { hits.append(j); next = j + needle.count }
            return true
        }
        return hits
    }

    /// Knuth–Morris–Pratt: calls `hit` with the offset of every (overlapping) match of a
    /// non-empty `needle` at or after `from` until it returns false, in O(hay + needle) time
    /// (the naive scan is O(hay · needle), which a template can make take hours).
    private static func search(_ hay: [Unicode.Scalar], _ needle: [Unicode.Scalar], from: Int, _ hit: (Int) -> Bool) {
        let m = needle.count
        var fail = [Int](repeating: 0, count: m)
        var k = 0
        for i in 1..<max(m, 1) {
            while k > 0 && needle[i] != needle[k] { k = fail[k - 1] }
            if needle[i] == needle[k] { k += 1 }
            fail[i] = k
        }
        k = 0
        var i = from
        while i < hay.count {
            while k > 0 && hay[i] != needle[k] { k = fail[k - 1] }
            if hay[i] == needle[k] { k += 1 }
            if k == m {
                guard hit(i - m + 1) else { return }
                k = fail[k - 1]
            }
            i += 1
        }
    }

    /// `str.strip/lstrip/rstrip(chars)`: whitespace when `chars` is nil.
    static func strip(_ u: [Unicode.Scalar], chars: [Unicode.Scalar]?, left: Bool = true, right: Bool = true) -> ArraySlice<Unicode.Scalar> {
        let drop: (Unicode.Scalar) -> Bool = chars.map { set in { set.contains($0) } } ?? { isPythonSpace($0.value) }
        var a = 0, b = u.count
        if left { while a < b, drop(u[a]) { a += 1 } }
        if right { while b > a, drop(u[b - 1]) { b -= 1 } }
        return u[a..<b]
    }

    /// `str.split` / `str.rsplit`: on runs of whitespace (ends ignored) without a separator.
    static func split(_ u: [Unicode.Scalar], separator: [Unicode.Scalar]?, maxSplit: Int, fromRight: Bool) throws -> [[Unicode.Scalar]] {
        if fromRight {
            // rsplit is split of the reversed text with a reversed separator, reversed back.
            return try split(u.reversed(), separator: separator?.reversed(), maxSplit: maxSplit, fromRight: false)
                .reversed().map { $0.reversed() }
        }
        var parts: [[Unicode.Scalar]] = []
        let maxItems = JinjaBudget.limits.maxItems
        // The number of parts is counted before any is built.
        var count = 1
        if let sep = separator, !sep.isEmpty {
            var next = 0
            search(u, sep, from: 0) { j in
                if j >= next { count += 1; next = j + sep.count }
                return count <= maxItems
            }
        } else if separator == nil {
            count = 0
            var inWord = false
            for c in u {
                let space = isPythonSpace(c.value)
                if !space && !inWord { count += 1 }
                inWord = !space
                if count > maxItems { break }
            }
        }
        if maxSplit < 0 || maxSplit >= maxItems { try JinjaBudget.checkItems(count, "str.split()") }
        guard let sep = separator else {
            var i = 0
            while true {
                while i < u.count, isPythonSpace(u[i].value) { i += 1 }
                guard i < u.count else { break }
                if maxSplit >= 0 && parts.count == maxSplit {
                    parts.append(Array(u[i...]))
                    break
                }
                let start = i
                while i < u.count, !isPythonSpace(u[i].value) { i += 1 }
                try JinjaBudget.checkItems(parts.count + 1, "str.split()")
                parts.append(Array(u[start..<i]))
            }
            return parts
        }
        guard !sep.isEmpty else { throw JinjaRuntimeError("empty separator") }
        var start = 0
        while maxSplit < 0 || parts.count < maxSplit, let j = find(u, sep, from: start) {
            if parts.count >= maxItems { try JinjaBudget.checkItems(parts.count + 1, "str.split()") }
            parts.append(Array(u[start..<j]))
            start = j + sep.count
        }
        parts.append(Array(u[start...]))
        return parts
    }

    /// `str.splitlines(keepends)` with Python's line boundaries.
    static func splitLines(_ u: [Unicode.Scalar], keepEnds: Bool = false) throws -> [[Unicode.Scalar]] {
        let breaks: Set<UInt32> = [0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029]
        // At most one line per break plus one: counted before any is built.
        var lineBreaks = 0
        for (k, c) in u.enumerated() where breaks.contains(c.value) && !(c == "\n" && k > 0 && u[k - 1] == "\r") { lineBreaks += 1 }
        try JinjaBudget.checkItems(lineBreaks, "str.splitlines()")
        var lines: [[Unicode.Scalar]] = []
        var start = 0, i = 0
        while i < u.count {
            guard breaks.contains(u[i].value) else { i += 1; continue }
            try JinjaBudget.checkItems(lines.count + 1, "str.splitlines()")
            var end = i + 1
            if u[i] == "\r", end < u.count, u[end] == "\n" { end += 1 }
            lines.append(Array(u[start..<(keepEnds ? end : i)]))
            start = end
            i = end
        }
        if start < u.count { lines.append(Array(u[start...])) }
        return lines
    }

    /// `str.replace(old, new, count)`; an empty `old` inserts `new` around every code point.
    /// The result's size is checked against the rendering's limit before it is built.
    static func replace(_ u: [Unicode.Scalar], _ old: [Unicode.Scalar], _ new: [Unicode.Scalar], count: Int) throws -> [Unicode.Scalar] {
        let bytes = { (s: [Unicode.Scalar]) in s.reduce(0) { $0 + UTF8.width($1) } }
        let (newBytes, oldBytes) = (bytes(new), bytes(old))
        if newBytes > oldBytes {
            var n = 0
            if old.isEmpty {
                n = u.count + 1
            } else {
                search(u, old, from: 0) { _ in n += 1; return true }   // an upper bound (overlaps counted)
            }
            if count >= 0 { n = min(n, count) }
            let (grow, o1) = n.multipliedReportingOverflow(by: newBytes - oldBytes)
            let (total, o2) = bytes(u).addingReportingOverflow(grow)
            try JinjaBudget.checkString(bytes: o1 || o2 ? .max : total, "the result of replace()")
        }
        var out: [Unicode.Scalar] = []
        var i = 0, done = 0
        while count < 0 || done < count, let j = find(u, old, from: i), j <= u.count {
            out += u[i..<j] + new
            done += 1
            if old.isEmpty {
                guard j < u.count else { return out }
                out.append(u[j])
                i = j + 1
            } else {
                i = j + old.count
            }
        }
        return out + u[min(i, u.count)...]
    }

    /// `str.title()` (each run of letters starts upper case, the rest lower), or
    /// `str.capitalize()` (`onlyFirst`).
    static func titleCase(_ s: String, onlyFirst: Bool) -> String {
        var out = ""
        var previousCased = false
        for (i, c) in s.unicodeScalars.enumerated() {
            let t = String(c)
            let upper = onlyFirst ? i == 0 : !previousCased
            out += upper ? t.uppercased() : t.lowercased()
            previousCased = c.properties.isCased
        }
        return out
    }
}

// MARK: - Filters

/// jinja2's builtin filters that chat templates use, with transformers' `tojson`.
enum JinjaFilters {
    static let names: Set<String> = [
        "trim", "length", "count", "tojson", "string", "default", "d", "first", "last", "lower", "upper", "capitalize",
        "title", "items", "join", "list", "reverse", "replace", "int", "float", "abs", "round", "select", "reject",
        "selectattr", "rejectattr", "map", "unique", "sort", "dictsort", "sum", "min", "max", "indent", "safe", "escape",
        "e", "attr", "wordcount", "center",
    ]

    typealias Test = (String, JinjaValue, JinjaCallArgs) throws -> Bool

    static func apply(_ name: String, _ v: JinjaValue, _ a: JinjaCallArgs, test: Test) throws -> JinjaValue {
        func attribute(_ item: JinjaValue, _ path: JinjaValue) throws -> JinjaValue {
            // `attribute="a.b"` walks dotted paths; integers index.
            if let i = path.integer { return try JinjaRenderer.item(item, .int(i)) }
            return try path.limitedStr().split(separator: ".").reduce(item) { try JinjaRenderer.item($0, .string(String($1))) }
        }
        func key(_ item: JinjaValue, caseSensitive: Bool) -> JinjaValue {
            if !caseSensitive, case let .string(s) = item { return .string(s.lowercased()) }
            return item
        }
        func sorted(_ items: [JinjaValue], by k: (JinjaValue) throws -> JinjaValue, reverse: Bool) throws -> [JinjaValue] {
            let keyed = try items.map { (try k($0), $0) }
            var failure: Error?
            let result = keyed.enumerated().sorted { x, y in
                do {
                    let o = try JinjaRenderer.ordering(x.element.0, y.element.0)
                    return o == 0 ? x.offset < y.offset : (o < 0) != reverse
                } catch { failure = error; return false }
            }
            if let failure { throw failure }
            return result.map(\.element.1)
        }
        /// The sort key of `sort`, `min`, `max`: an attribute, lower-cased unless case-sensitive.
        func sortKey(path: JinjaValue?, caseSensitive: JinjaValue?) -> (JinjaValue) throws -> JinjaValue {
            { item in key(try path.map { try attribute(item, $0) } ?? item, caseSensitive: caseSensitive?.truthy ?? false) }
        }
        let caseSensitive = a.keyword["case_sensitive"]?.truthy ?? false
        switch name {
        case "trim":
            let chars = try a.get(0, "chars").flatMap { $0 == .none ? nil : Array(try $0.limitedStr().unicodeScalars) }
            return .string(String(String.UnicodeScalarView(JinjaMethods.strip(Array(try v.limitedStr().unicodeScalars), chars: chars))))
        case "length", "count":
            return .int(try JinjaRenderer.length(v))
        case "tojson":
            let indent: String? = try a.get(1, "indent").flatMap { i in
                switch i {
                case .none: return nil
                case let .string(s): return s
                default:
                    guard let n = i.integer else { throw JinjaRuntimeError("tojson: indent must be an integer or a string") }
                    try JinjaBudget.checkString(bytes: n, "tojson's indent")
                    return String(repeating: " ", count: max(n, 0))
                }
            }
            var separators: (String, String)? = nil
            if let s = a.get(2, "separators"), !(s == .none) {
                guard case let .list(pair) = s, pair.count == 2, let x = pair[0].stringValue, let y = pair[1].stringValue else {
                    throw JinjaRuntimeError("tojson: separators must be a pair of strings")
                }
                separators = (x, y)
            }
            return .string(try PythonFormat.json(v, ascii: a.get(0, "ensure_ascii")?.truthy ?? false, indent: indent,
                                                 separators: separators, sortKeys: a.get(3, "sort_keys")?.truthy ?? false))
        case "string":
            return .string(try v.limitedStr())
        case "default", "d":
            let fallback = a.get(0, "default_value") ?? .string("")
            return v.isUndefined || ((a.get(1, "boolean")?.truthy ?? false) && !v.truthy) ? fallback : v
        case "first", "last":
            var items = try JinjaRenderer.iterate(v)
            if name == "last" { items.reverse() }
            return items.first ?? .undefined(hint: "No \(name) item, sequence was empty.")
        case "lower": return try JinjaMethods.checked(try v.limitedStr().lowercased(), "lower")
        case "upper": return try JinjaMethods.checked(try v.limitedStr().uppercased(), "upper")
        case "capitalize": return try JinjaMethods.checked(JinjaMethods.titleCase(try v.limitedStr(), onlyFirst: true), "capitalize")
        case "title":
            // jinja2 do_title: words start after runs of `-`, whitespace, `(`, `{`, `[`, `<`
            // (not after apostrophes, unlike str.title()).
            var out = ""
            var wordStart = true
            for c in try v.limitedStr().unicodeScalars {
                let separator = isPythonSpace(c.value) || "-({[<".unicodeScalars.contains(c)
                out += wordStart || separator ? String(c).uppercased() : String(c).lowercased()
                wordStart = separator
            }
            return try JinjaMethods.checked(out, "title")
        case "items":
            switch v {
            case .undefined: return .list([])
            case let .dict(d):
                let pairs = JinjaValue.list(d.pairs.map { .list([.string($0.0), $0.1]) })
                try JinjaBudget.checkNesting(pairs, extra: 0)
                return pairs
            default: throw JinjaRuntimeError("Can only get item pairs from a mapping.")
            }
        case "join":
            var items = try JinjaRenderer.iterate(v)
            if let path = a.get(1, "attribute"), !(path == .none) { items = try items.map { try attribute($0, path) } }
            let parts = try items.map { try $0.limitedStr() }
            let separator = try a.get(0, "d")?.limitedStr() ?? ""
            try JinjaBudget.checkString(bytes: JinjaMethods.joinedBytes(parts, separator: separator), "the result of join")
            return .string(parts.joined(separator: separator))
        case "list": return .list(try JinjaRenderer.iterate(v))
        case "reverse":
            if case let .string(s) = v { return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed()))) }
            return .list(try JinjaRenderer.iterate(v).reversed())
        case "replace":
            guard let old = a.get(0, "old"), let new = a.get(1, "new") else { throw JinjaRuntimeError("replace needs old and new") }
            let count = a.get(2, "count").flatMap(\.integer) ?? -1
            let u = try JinjaMethods.replace(Array(try v.limitedStr().unicodeScalars), Array(try old.limitedStr().unicodeScalars),
                                             Array(try new.limitedStr().unicodeScalars), count: count)
            return .string(String(String.UnicodeScalarView(u)))
        case "int", "float":
            let fallback = a.get(0, "default") ?? (name == "int" ? .int(0) : .double(0))
            let number: Double?
            switch v {
            case let .string(s):
                let t = PythonFormat.trimmed(s)
                // A base Python's int() refuses (not 2...36) falls through to int(float(s)), as in jinja2.
                let base = a.get(1, "base")?.integer ?? 10
                if name == "int", (2...36).contains(base), let i = Int(t.replacingOccurrences(of: "_", with: ""), radix: base) { return .int(i) }
                number = Double(t)
            default: number = v.number
            }
            guard let d = number, d.isFinite || name == "float" else { return fallback }
            if name == "float" { return .double(d) }
            guard abs(d) < 9.2e18 else { return fallback }
            return .int(Int(d))
        case "abs":
            if case let .double(d) = v { return .double(abs(d)) }
            guard let i = v.integer, i != .min else { throw JinjaRuntimeError("bad operand type for abs(): '\(v.typeName)'") }
            return .int(abs(i))
        case "round":
            guard let d = v.number else { throw JinjaRuntimeError("round needs a number, got '\(v.typeName)'") }
            let p = Foundation.pow(10.0, Double(a.get(0, "precision")?.integer ?? 0))
            let rule: FloatingPointRoundingRule
            switch try a.get(1, "method")?.limitedStr() ?? "common" {
            case "ceil": rule = .up
            case "floor": rule = .down
            default: rule = .toNearestOrEven
            }
            return .double((d * p).rounded(rule) / p)
        case "select", "reject", "selectattr", "rejectattr":
            let byAttr = name.hasSuffix("attr")
            let rest = Array(a.positional.dropFirst(byAttr ? 2 : 1))
            let testName = try (byAttr ? a.positional.dropFirst().first : a.positional.first).map { try $0.limitedStr() }
            let keep = name.hasPrefix("select")
            return .list(try JinjaRenderer.iterate(v).filter { item in
                let x = byAttr ? try attribute(item, a.positional.first ?? .none) : item
                let passed = try testName.map { try test($0, x, JinjaCallArgs(positional: rest)) } ?? x.truthy
                return passed == keep
            })
        case "map":
            let items = try JinjaRenderer.iterate(v)
            if let path = a.keyword["attribute"] {
                return .list(try items.map { item in
                    let r = try attribute(item, path)
                    return r.isUndefined ? a.keyword["default"] ?? r : r
                })
            }
            guard let filterName = try a.positional.first?.limitedStr() else { throw JinjaRuntimeError("map needs a filter name or attribute=") }
            let rest = JinjaCallArgs(positional: Array(a.positional.dropFirst()), keyword: a.keyword)
            return .list(try items.map { try apply(filterName, $0, rest, test: test) })
        case "unique":
            var seen: [JinjaValue] = []
            var out: [JinjaValue] = []
            let path = a.keyword["attribute"]
            let budget = JinjaBudget.current
            for item in try JinjaRenderer.iterate(v) {
                try budget?.tick()   // quadratic: the time limit must be able to stop it
                let k = key(try path.map { try attribute(item, $0) } ?? item, caseSensitive: caseSensitive)
                if !seen.contains(where: { $0 == k }) { seen.append(k); out.append(item) }
            }
            return .list(out)
        case "sort":
            return .list(try sorted(try JinjaRenderer.iterate(v), by: sortKey(path: a.get(2, "attribute"), caseSensitive: a.get(1, "case_sensitive")),
                                    reverse: a.get(0, "reverse")?.truthy ?? false))
        case "dictsort":
            guard case let .dict(d) = v else { throw JinjaRuntimeError("dictsort needs a mapping, got '\(v.typeName)'") }
            let byValue = try a.get(1, "by")?.limitedStr() == "value"
            let pairs = d.pairs.map { JinjaValue.list([.string($0.0), $0.1]) }
            try JinjaBudget.checkNesting(.list(pairs), extra: 0)
            return .list(try sorted(pairs, by: { p in
                guard case let .list(kv) = p else { return p }
                return key(kv[byValue ? 1 : 0], caseSensitive: a.get(0, "case_sensitive")?.truthy ?? false)
            }, reverse: a.get(2, "reverse")?.truthy ?? false))
        case "sum":
            var total = a.get(1, "start") ?? .int(0)
            for item in try JinjaRenderer.iterate(v) {
                total = try JinjaRenderer.arithmetic("+", total, try a.get(0, "attribute").map { try attribute(item, $0) } ?? item)
            }
            return total
        case "min", "max":
            let items = try sorted(try JinjaRenderer.iterate(v), by: sortKey(path: a.get(1, "attribute"), caseSensitive: a.get(0, "case_sensitive")),
                                   reverse: name == "max")
            return items.first ?? .undefined(hint: "No aggregated item, sequence was empty.")
        case "indent":
            // jinja2 do_indent: a newline is appended before splitting, so a trailing newline
            // is kept; empty lines are only indented with `blank=True`.
            let w = a.get(0, "width") ?? .int(4)
            if w.stringValue == nil { try JinjaBudget.checkString(bytes: w.integer ?? 4, "indent's width") }
            let pad = w.stringValue ?? String(repeating: " ", count: max(w.integer ?? 4, 0))
            let text = try v.limitedStr()
            let lines = try JinjaMethods.splitLines(Array((text + "\n").unicodeScalars)).map { String(String.UnicodeScalarView($0)) }
            let (padBytes, overflow) = lines.count.multipliedReportingOverflow(by: pad.utf8.count + 1)
            try JinjaBudget.checkString(bytes: overflow ? .max : text.utf8.count + padBytes, "the result of indent")
            var rv: String
            if a.get(2, "blank")?.truthy ?? false {
                rv = lines.joined(separator: "\n" + pad)
            } else {
                rv = lines.first ?? ""
                if lines.count > 1 { rv += "\n" + lines.dropFirst().map { $0.isEmpty ? $0 : pad + $0 }.joined(separator: "\n") }
            }
            return .string((a.get(1, "first")?.truthy ?? false) ? pad + rv : rv)
        case "safe": return v
        case "escape", "e":
            var out = ""
            let text = try v.limitedStr()
            // The escaped size, known before anything is built.
            let grow = text.utf8.reduce(0) { n, b in
                switch b {
                case UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "\""): return n + 4
                case UInt8(ascii: "<"), UInt8(ascii: ">"): return n + 3
                default: return n
                }
            }
            try JinjaBudget.checkString(bytes: text.utf8.count + grow, "the result of escape")
            for c in text.unicodeScalars {
                switch c {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "'": out += "&#39;"
                case "\"": out += "&#34;"
                default: out.unicodeScalars.append(c)
                }
            }
            return .string(out)
        case "attr":
            return try JinjaRenderer.attribute(v, a.get(0, "name")?.limitedStr() ?? "")
        case "wordcount":
            return .int(try JinjaMethods.split(Array(try v.limitedStr().unicodeScalars), separator: nil, maxSplit: -1, fromRight: false).count)
        case "center":
            let width = a.get(0, "width")?.integer ?? 80
            let text = try v.limitedStr()
            let n = text.unicodeScalars.count
            guard width > n else { return .string(text) }
            try JinjaBudget.checkString(bytes: text.utf8.count + (width - n), "the result of center")
            // Python str.center: the extra space goes left when the padding is odd and width odd.
            let total = width - n
            let left = total / 2 + (total & width & 1)
            return .string(String(repeating: " ", count: left) + text + String(repeating: " ", count: total - left))
        default:
            throw JinjaRuntimeError("no filter named '\(name)'")
        }
    }
}
