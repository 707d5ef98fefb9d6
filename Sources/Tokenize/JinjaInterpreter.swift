import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A failure inside an operation; the renderer turns it into `ChatTemplateError` with the
/// position of the expression being evaluated.
struct JinjaRuntimeError: Error {
    var message: String
    /// From `raise_exception(message)`.
    var raised = false
    init(_ message: String, raised: Bool = false) {
        self.message = message
        self.raised = raised
    }
}

/// Positional and keyword arguments of a call, filter or test (the filtered/tested value not
/// included).
struct JinjaCallArgs {
    var positional: [JinjaValue] = []
    var keyword = JinjaDict()
    /// Parameter `index` given positionally or by `name`.
    func get(_ index: Int, _ name: String) -> JinjaValue? { index < positional.count ? positional[index] : keyword[name] }
}

/// Evaluates a parsed template the way jinja2's compiled code does, with its default
/// `Undefined`: a for-loop iteration is a new scope (assignments in it do not leak), `if`
/// is not; `loop.*` as jinja2's `LoopContext`; `and`/`or` return an operand; attribute access
/// tries the Python attribute (methods) before the dict key, subscripts the reverse.
///
/// Every rendering runs under a `JinjaBudget` (`JinjaLimits`): output and string sizes, list
/// sizes, nesting, loop iterations and time are checked before the work or allocation they
/// bound, and a limit reached is `ChatTemplateError.limitExceeded` at the expression (or, for
/// literal text, the last expression) being rendered.
final class JinjaRenderer {
    private var scopes: [[String: JinjaValue]]
    private var out = ""
    private let budget: JinjaBudget
    /// The position of the expression evaluated last (where a limit reached by literal text is
    /// reported).
    private var position = (line: 1, column: 1)

    private enum Flow { case normal, breakLoop, continueLoop }

    init(context: [String: JinjaValue], limits: JinjaLimits = .default) {
        scopes = [Self.globals, context]
        budget = JinjaBudget(limits: limits)
    }

    func render(_ nodes: [JinjaNode]) throws -> String {
        do {
            _ = try JinjaBudget.$current.withValue(budget) { try exec(nodes) }
        } catch let error as JinjaLimitError {
            throw ChatTemplateError.limitExceeded(file: nil, line: position.line, column: position.column, message: error.message)
        }
        return out
    }

    /// Appends rendered text, within the output limit.
    private func emit(_ s: String) throws {
        try JinjaBudget.checkString(bytes: out.utf8.count + s.utf8.count, "the rendered text")
        out += s
    }

    // MARK: Statements

    private func exec(_ nodes: [JinjaNode]) throws -> Flow {
        for node in nodes {
            try budget.tick()
            let flow: Flow
            switch node {
            case let .text(s):
                try emit(s)
                flow = .normal
            case let .output(e):
                let piece = try eval(e)
                try located(e) { try emit(try piece.limitedStr()) }
                flow = .normal
            case let .ifChain(branches, otherwise):
                var body = otherwise
                for (test, nodes) in branches where try eval(test).truthy {
                    body = nodes
                    break
                }
                flow = try exec(body)
            case let .forLoop(target, iterable, filter, body, otherwise):
                flow = try runLoop(target: target, iterable: iterable, filter: filter, body: body, otherwise: otherwise)
            case let .set(target, e):
                try assign(target, try eval(e), at: e)
                flow = .normal
            case let .capture(name, body):
                let saved = out
                out = ""
                _ = try exec(body)
                scopes[scopes.count - 1][name] = .string(out)
                out = saved
                flow = .normal
            case let .loopControl(isBreak):
                return isBreak ? .breakLoop : .continueLoop
            case let .block(body):
                flow = try exec(body)
            }
            if flow != .normal { return flow }
        }
        return .normal
    }

    private func runLoop(target: JinjaTarget, iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode],
                         otherwise: [JinjaNode]) throws -> Flow {
        var items = try located(iterable) { try Self.iterate(try self.eval(iterable)) }
        if let filter {
            items = try items.filter { item in
                try located(filter) { try budget.iterate() }
                scopes.append([:])
                defer { scopes.removeLast() }
                try assign(target, item, at: iterable)
                return try eval(filter).truthy
            }
        }
        if items.isEmpty { return try exec(otherwise) }
        let n = items.count
        for (i, item) in items.enumerated() {
            let loop = JinjaDict(distinct: [
                ("index", .int(i + 1)), ("index0", .int(i)), ("revindex", .int(n - i)), ("revindex0", .int(n - i - 1)),
                ("first", .bool(i == 0)), ("last", .bool(i == n - 1)), ("length", .int(n)), ("depth", .int(1)), ("depth0", .int(0)),
                ("previtem", i > 0 ? items[i - 1] : .undefined(hint: "there is no previous item")),
                ("nextitem", i < n - 1 ? items[i + 1] : .undefined(hint: "there is no next item")),
                ("cycle", .function(JinjaFunction(name: "cycle") { args, _ in
                    guard !args.isEmpty else { throw JinjaRuntimeError("no items for cycling given") }
                    return args[i % args.count]
                })),
            ])
            try located(iterable) { try budget.iterate() }
            scopes.append(["loop": .dict(loop)])
            defer { scopes.removeLast() }
            try assign(target, item, at: iterable)
            if try exec(body) == .breakLoop { break }
        }
        return .normal
    }

    private func assign(_ target: JinjaTarget, _ value: JinjaValue, at e: JinjaExpr) throws {
        switch target {
        case let .name(n):
            scopes[scopes.count - 1][n] = value
        case let .tuple(names):
            let items = try located(e) { try Self.iterate(value) }
            guard items.count == names.count else {
                throw located(e, JinjaRuntimeError(items.count < names.count
                    ? "not enough values to unpack (expected \(names.count), got \(items.count))"
                    : "too many values to unpack (expected \(names.count))"))
            }
            for (n, v) in zip(names, items) { scopes[scopes.count - 1][n] = v }
        case let .attribute(ns, attr):
            guard case let .namespace(object)? = lookup(ns) else {
                throw located(e, JinjaRuntimeError("cannot assign attribute on non-namespace object '\(ns)'"))
            }
            let previous = object.attributes[attr]
            object.attributes[attr] = value
            // `ns.x = ns` (or a value holding ns) would make the namespace contain itself.
            do { try located(e) { try JinjaBudget.checkNesting(.namespace(object), extra: 0) } } catch {
                object.attributes[attr] = previous
                throw error
            }
        }
    }

    private func lookup(_ name: String) -> JinjaValue? {
        for frame in scopes.reversed() { if let v = frame[name] { return v } }
        return nil
    }

    // MARK: Expressions

    private func located(_ e: JinjaExpr, _ error: JinjaRuntimeError) -> ChatTemplateError {
        error.raised ? .raised(message: error.message, line: e.line, column: e.column)
            : .runtime(line: e.line, column: e.column, message: error.message)
    }

    /// Runs `body`, giving a `JinjaRuntimeError` or `JinjaLimitError` the position of `e`.
    private func located<T>(_ e: JinjaExpr, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let error as JinjaRuntimeError { throw located(e, error) } catch let error as JinjaLimitError {
            throw ChatTemplateError.limitExceeded(file: nil, line: e.line, column: e.column, message: error.message)
        }
    }

    func eval(_ e: JinjaExpr) throws -> JinjaValue {
        position = (e.line, e.column)
        return try located(e) {
            try budget.tick()
            return try evalKind(e)
        }
    }

    private func evalKind(_ e: JinjaExpr) throws -> JinjaValue {
        switch e.kind {
        case let .literal(v):
            return v
        case let .name(n):
            return lookup(n) ?? .undefined(hint: "'\(n)' is undefined")
        case let .list(items), let .tuple(items):
            let list = JinjaValue.list(try items.map(eval))
            try JinjaBudget.checkNesting(list, extra: 0)
            return list
        case let .dict(items):
            var d = JinjaDict()
            for (k, v) in items {
                guard case let .string(key) = try eval(k) else { throw JinjaRuntimeError("dict keys must be strings") }
                d[key] = try eval(v)
            }
            try JinjaBudget.checkNesting(.dict(d), extra: 0)
            return .dict(d)
        case let .attribute(object, name):
            return try Self.attribute(try eval(object), name)
        case let .item(object, index):
            let o = try eval(object)
            if case let .slice(a, b, c) = index.kind {
                return try Self.slice(o, try a.map(eval), try b.map(eval), try c.map(eval))
            }
            return try Self.item(o, try eval(index))
        case .slice:
            throw JinjaRuntimeError("a slice is only allowed inside [ ]")
        case let .call(callee, args):
            let f = try eval(callee)
            guard case let .function(fn) = f else {
                try Self.requireDefined(f)
                throw JinjaRuntimeError("'\(f.typeName)' object is not callable")
            }
            let a = try evalArgs(args)
            return try fn.body(a.positional, a.keyword)
        case let .filter(value, name, args):
            return try filter(name, try eval(value), try evalArgs(args))
        case let .test(value, name, args):
            return .bool(try test(name, try eval(value), try evalArgs(args)))
        case let .unary(op, operand):
            let v = try eval(operand)
            if op == "not" { return .bool(!v.truthy) }
            try Self.requireDefined(v)
            switch v {
            case let .double(d): return .double(op == "-" ? -d : d)
            case .int, .bool:
                let i = v.integer!
                guard op == "-" else { return .int(i) }
                let (r, overflow) = (0).subtractingReportingOverflow(i)
                if overflow { throw JinjaRuntimeError("integer overflow") }
                return .int(r)
            default: throw JinjaRuntimeError("bad operand type for unary \(op): '\(v.typeName)'")
            }
        case let .binary(op, a, b):
            let l = try eval(a)
            switch op {
            case "and": return l.truthy ? try eval(b) : l
            case "or": return l.truthy ? l : try eval(b)
            default: return try Self.arithmetic(op, l, try eval(b))
            }
        case let .compare(first, ops):
            var l = try eval(first)
            for (op, e) in ops {
                let r = try eval(e)
                if !(try Self.compare(op, l, r)) { return .bool(false) }
                l = r
            }
            return .bool(true)
        case let .concat(parts):
            var pieces: [String] = []
            var bytes = 0
            for p in parts {
                let piece = try eval(p).limitedStr()
                bytes += piece.utf8.count
                try JinjaBudget.checkString(bytes: bytes, "a `~` concatenation")
                pieces.append(piece)
            }
            return .string(pieces.joined())
        case let .conditional(test, then, otherwise):
            if try eval(test).truthy { return try eval(then) }
            return try otherwise.map(eval) ?? .undefined(hint: "the inline if-expression evaluated to false and no else section was defined")
        }
    }

    private func evalArgs(_ args: JinjaArgs) throws -> JinjaCallArgs {
        var a = JinjaCallArgs(positional: try args.positional.map(eval))
        for (k, v) in args.keyword { a.keyword[k] = try eval(v) }
        return a
    }

    // MARK: Python operations

    static func requireDefined(_ v: JinjaValue) throws {
        if case let .undefined(hint) = v { throw JinjaRuntimeError(hint) }
    }

    /// `iter(value)` as a list: list items, dict keys, string characters; Undefined is empty.
    static func iterate(_ v: JinjaValue) throws -> [JinjaValue] {
        switch v {
        case .undefined: return []
        case let .list(a): return a
        case let .dict(d): return d.keys.map { .string($0) }
        case let .string(s):
            try JinjaBudget.checkItems(s.unicodeScalars.count, "iterating over a string's characters")
            return s.unicodeScalars.map { .string(String($0)) }
        default: throw JinjaRuntimeError("'\(v.typeName)' object is not iterable")
        }
    }

    /// `len(value)`.
    static func length(_ v: JinjaValue) throws -> Int {
        switch v {
        case .undefined: return 0
        case let .string(s): return s.unicodeScalars.count
        case let .list(a): return a.count
        case let .dict(d): return d.count
        default: throw JinjaRuntimeError("object of type '\(v.typeName)' has no len()")
        }
    }

    /// `obj.name`: a method first (for dicts, strings, lists), then a dict key or namespace
    /// attribute; missing → Undefined; on Undefined → error.
    static func attribute(_ object: JinjaValue, _ name: String) throws -> JinjaValue {
        try requireDefined(object)
        if let m = JinjaMethods.bound(object, name) { return .function(m) }
        switch object {
        case let .dict(d): if let v = d[name] { return v }
        case let .namespace(n): if let v = n.attributes[name] { return v }
        default: break
        }
        return .undefined(hint: "'\(object.typeName) object' has no attribute '\(name)'")
    }

    /// `obj[key]`: dict key, list/string index (negative from the end); missing → Undefined.
    static func item(_ object: JinjaValue, _ key: JinjaValue) throws -> JinjaValue {
        try requireDefined(object)
        switch (object, key) {
        case let (.dict(d), .string(k)):
            if let v = d[k] { return v }
        case let (.namespace(n), .string(k)):
            if let v = n.attributes[k] { return v }
        case (.list, _), (.string, _):
            if let i = key.integer {
                let items = try iterate(object)
                let j = i < 0 ? i + items.count : i
                if j >= 0 && j < items.count { return items[j] }
                return .undefined(hint: "'\(object.typeName) object' has no element \(i)")
            }
        default: break
        }
        if case let .string(k) = key { return try attribute(object, k) }
        return .undefined(hint: "'\(object.typeName) object' has no element \(key.shortRepr)")
    }

    /// `obj[a:b:c]` on a list or string, with Python's clamping and negative steps.
    static func slice(_ object: JinjaValue, _ a: JinjaValue?, _ b: JinjaValue?, _ c: JinjaValue?) throws -> JinjaValue {
        try requireDefined(object)
        func bound(_ v: JinjaValue?) throws -> Int? {
            guard let v, !(v == .none) else { return nil }
            guard let i = v.integer else { throw JinjaRuntimeError("slice indices must be integers or None") }
            return i
        }
        let items: [JinjaValue]
        switch object {
        case .list, .string: items = try iterate(object)
        default: throw JinjaRuntimeError("'\(object.typeName)' object is not subscriptable")
        }
        let n = items.count
        let step = try bound(c) ?? 1
        guard step != 0 else { throw JinjaRuntimeError("slice step cannot be zero") }
        let (lower, upper) = step > 0 ? (0, n) : (-1, n - 1)
        func clamp(_ i: Int?, _ fallback: Int) -> Int {
            guard let i else { return fallback }
            return i < 0 ? max(i + n, lower) : min(i, upper)
        }
        let start = clamp(try bound(a), step > 0 ? lower : upper)
        let stop = clamp(try bound(b), step > 0 ? upper : lower)
        let picked = stride(from: start, to: stop, by: step).map { items[$0] }
        if case .string = object { return .string(picked.map(\.str).joined()) }
        return .list(picked)
    }

    static func arithmetic(_ op: String, _ l: JinjaValue, _ r: JinjaValue) throws -> JinjaValue {
        try requireDefined(l)
        try requireDefined(r)
        func unsupported() -> JinjaRuntimeError {
            JinjaRuntimeError("unsupported operand type(s) for \(op): '\(l.typeName)' and '\(r.typeName)'")
        }
        /// The count of a sequence repetition (limits checked by the caller).
        func repeats(_ n: JinjaValue) throws -> Int {
            guard let k = n.integer else { throw unsupported() }
            return max(k, 0)
        }
        func checked(_ result: (Int, Bool)) throws -> JinjaValue {
            if result.1 { throw JinjaRuntimeError("integer overflow in \(op)") }
            return .int(result.0)
        }
        switch (op, l, r) {
        case let ("+", .string(a), .string(b)):
            try JinjaBudget.checkString(bytes: a.utf8.count + b.utf8.count, "a `+` of two strings")
            return .string(a + b)
        case let ("+", .list(a), .list(b)):
            try JinjaBudget.checkItems(a.count + b.count, "a `+` of two lists")
            return .list(a + b)
        case let ("*", .string(s), n), let ("*", n, .string(s)):
            let k = try repeats(n)
            try JinjaBudget.checkRepeat(count: k, bytes: s.utf8.count, "a repeated string")
            return .string(String(repeating: s, count: k))
        case let ("*", .list(a), n), let ("*", n, .list(a)):
            let k = try repeats(n)
            if k > 0, !a.isEmpty {
                let (total, overflow) = k.multipliedReportingOverflow(by: a.count)
                try JinjaBudget.checkItems(overflow ? .max : total, "a repeated list")
            }
            return .list(Array([[JinjaValue]](repeating: a, count: k).joined()))
        case ("%", .string, _): throw JinjaRuntimeError("string formatting with '%' is not supported")
        default: break
        }
        if let a = l.integer, let b = r.integer {
            switch op {
            case "+": return try checked(a.addingReportingOverflow(b))
            case "-": return try checked(a.subtractingReportingOverflow(b))
            case "*": return try checked(a.multipliedReportingOverflow(by: b))
            case "//", "%":
                guard b != 0 else { throw JinjaRuntimeError("integer division or modulo by zero") }
                let (q, overflow) = a.dividedReportingOverflow(by: b)
                if overflow { throw JinjaRuntimeError("integer overflow in \(op)") }
                let m = a - q * b
                let floorQ = (m != 0 && (m < 0) != (b < 0)) ? q - 1 : q
                return .int(op == "//" ? floorQ : a - floorQ * b)
            case "**" where b >= 0:
                if a == 0 || a == 1 { return .int(b == 0 ? 1 : a) }
                if a == -1 { return .int(b % 2 == 0 ? 1 : -1) }
                var result = 1
                for _ in 0..<b { result = try checked(result.multipliedReportingOverflow(by: a)).integer! }
                return .int(result)
            default: break
            }
        }
        guard let a = l.number, let b = r.number else { throw unsupported() }
        switch op {
        case "+": return .double(a + b)
        case "-": return .double(a - b)
        case "*": return .double(a * b)
        case "/", "//", "%":
            guard b != 0 else { throw JinjaRuntimeError("division by zero") }
            if op == "/" { return .double(a / b) }
            let q = (a / b).rounded(.down)
            return .double(op == "//" ? q : a - q * b)
        case "**": return .double(Foundation.pow(a, b))
        default: throw unsupported()
        }
    }

    /// Python comparison operators and `in` / `not in`.
    static func compare(_ op: String, _ l: JinjaValue, _ r: JinjaValue) throws -> Bool {
        switch op {
        case "==": return l == r
        case "!=": return !(l == r)
        case "in": return try contains(r, l)
        case "notin": return !(try contains(r, l))
        default:
            let order = try ordering(l, r, op)
            switch op {
            case "<": return order < 0
            case "<=": return order <= 0
            case ">": return order > 0
            default: return order >= 0
            }
        }
    }

    /// -1, 0 or 1 for orderable pairs (numbers, strings by code point, lists element-wise).
    static func ordering(_ l: JinjaValue, _ r: JinjaValue, _ op: String = "<") throws -> Int {
        try requireDefined(l)
        try requireDefined(r)
        if let a = l.number, let b = r.number { return a < b ? -1 : a > b ? 1 : 0 }
        switch (l, r) {
        case let (.string(a), .string(b)):
            if a.unicodeScalars.elementsEqual(b.unicodeScalars) { return 0 }
            return a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars) { $0.value < $1.value } ? -1 : 1
        case let (.list(a), .list(b)):
            for (x, y) in zip(a, b) where !(x == y) { return try ordering(x, y, op) }
            return a.count < b.count ? -1 : a.count > b.count ? 1 : 0
        default:
            throw JinjaRuntimeError("'\(op)' not supported between instances of '\(l.typeName)' and '\(r.typeName)'")
        }
    }

    /// `item in container`.
    static func contains(_ container: JinjaValue, _ item: JinjaValue) throws -> Bool {
        switch container {
        case let .string(s):
            guard case let .string(sub) = item else {
                throw JinjaRuntimeError("'in <string>' requires string as left operand, not \(item.typeName)")
            }
            return JinjaMethods.find(Array(s.unicodeScalars), Array(sub.unicodeScalars)) != nil
        case let .dict(d):
            guard case let .string(k) = item else { return false }
            return d[k] != nil
        case .list, .undefined:
            return try iterate(container).contains { $0 == item }
        default:
            throw JinjaRuntimeError("argument of type '\(container.typeName)' is not iterable")
        }
    }

    // MARK: Globals

    /// What transformers adds to the environment (`raise_exception`, `strftime_now`,
    /// `namespace`, `dict`) plus jinja2's `range`.
    static let globals: [String: JinjaValue] = [
        "raise_exception": .function(JinjaFunction(name: "raise_exception") { args, _ in
            throw JinjaRuntimeError(try args.first?.limitedStr() ?? "", raised: true)
        }),
        "strftime_now": .function(JinjaFunction(name: "strftime_now") { args, _ in
            guard case let .string(format)? = args.first else { throw JinjaRuntimeError("strftime_now(format) needs a format string") }
            return .string(strftimeNow(format))
        }),
        "namespace": .function(JinjaFunction(name: "namespace") { args, kwargs in
            let ns = JinjaValue.namespace(JinjaNamespace(try dictArgs(args, kwargs)))
            try JinjaBudget.checkNesting(ns, extra: 0)
            return ns
        }),
        "dict": .function(JinjaFunction(name: "dict") { args, kwargs in
            let d = JinjaValue.dict(try dictArgs(args, kwargs))
            try JinjaBudget.checkNesting(d, extra: 0)
            return d
        }),
        "range": .function(JinjaFunction(name: "range") { args, _ in
            let ints = try args.map { v -> Int in
                guard let i = v.integer else { throw JinjaRuntimeError("range() arguments must be integers") }
                return i
            }
            guard (1...3).contains(ints.count) else { throw JinjaRuntimeError("range expected 1 to 3 arguments, got \(ints.count)") }
            let (start, stop) = ints.count == 1 ? (0, ints[0]) : (ints[0], ints[1])
            let step = ints.count == 3 ? ints[2] : 1
            guard step != 0 else { throw JinjaRuntimeError("range() arg 3 must not be zero") }
            // jinja2's sandbox MAX_RANGE.
            guard ((Double(stop) - Double(start)) / Double(step)).rounded(.up) <= 100_000 else {
                throw JinjaRuntimeError("range too big (more than 100000 items)")
            }
            return .list(stride(from: start, to: stop, by: step).map { .int($0) })
        }),
    ]

    /// `dict(mapping, **kwargs)` / `namespace(mapping, **kwargs)`.
    private static func dictArgs(_ args: [JinjaValue], _ kwargs: JinjaDict) throws -> JinjaDict {
        var d = JinjaDict()
        for a in args {
            guard case let .dict(m) = a else { throw JinjaRuntimeError("expected a mapping argument, got '\(a.typeName)'") }
            for (k, v) in m.pairs { d[k] = v }
        }
        for (k, v) in kwargs.pairs { d[k] = v }
        return d
    }

    /// `datetime.now().strftime(format)` (C `strftime` on the local time, as CPython uses).
    private static func strftimeNow(_ format: String) -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 1024)
        let n = strftime(&buffer, buffer.count, format, &parts)
        return String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: Filters and tests

    private func filter(_ name: String, _ v: JinjaValue, _ a: JinjaCallArgs) throws -> JinjaValue {
        try JinjaFilters.apply(name, v, a, test: { try self.test($0, $1, $2) })
    }

    /// jinja2's builtin tests.
    private func test(_ name: String, _ v: JinjaValue, _ a: JinjaCallArgs) throws -> Bool {
        func other() throws -> JinjaValue {
            guard let o = a.get(0, "other") ?? a.get(0, "value") else { throw JinjaRuntimeError("test '\(name)' needs an argument") }
            return o
        }
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": if case .none = v { return true }; return false
        case "boolean": if case .bool = v { return true }; return false
        case "true": if case .bool(true) = v { return true }; return false
        case "false": if case .bool(false) = v { return true }; return false
        case "integer": if case .int = v { return true }; return false
        case "float": if case .double = v { return true }; return false
        case "number": return v.number != nil
        case "string": return v.stringValue != nil
        case "mapping": if case .dict = v { return true }; return false
        case "iterable", "sequence":
            switch v {
            case .undefined, .string, .list, .dict: return true
            default: return false
            }
        case "callable": if case .function = v { return true }; return false
        case "sameas":
            let o = try other()
            if case let (.namespace(x), .namespace(y)) = (v, o) { return x === y }
            return v.typeName == o.typeName && v == o
        case "eq", "equalto", "==": return try Self.compare("==", v, try other())
        case "ne", "!=": return try Self.compare("!=", v, try other())
        case "lt", "lessthan", "<": return try Self.compare("<", v, try other())
        case "le", "<=": return try Self.compare("<=", v, try other())
        case "gt", "greaterthan", ">": return try Self.compare(">", v, try other())
        case "ge", ">=": return try Self.compare(">=", v, try other())
        case "in": return try Self.contains(try other(), v)
        case "odd", "even", "divisibleby":
            guard let i = v.integer else { throw JinjaRuntimeError("test '\(name)' needs an integer, got '\(v.typeName)'") }
            if name == "odd" { return i % 2 != 0 }
            if name == "even" { return i % 2 == 0 }
            guard let d = try other().integer, d != 0 else { throw JinjaRuntimeError("divisibleby needs a non-zero integer") }
            return i % d == 0
        case "lower": let t = try v.limitedStr(); return t == t.lowercased()
        case "upper": let t = try v.limitedStr(); return t == t.uppercased()
        case "escaped": return false
        case "filter": return JinjaFilters.names.contains(try other().limitedStr())
        case "test": return Self.testNames.contains(try other().limitedStr())
        default: throw JinjaRuntimeError("no test named '\(name)'")
        }
    }

    static let testNames: Set<String> = [
        "defined", "undefined", "none", "boolean", "true", "false", "integer", "float", "number", "string", "mapping",
        "iterable", "sequence", "callable", "sameas", "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=",
        "gt", "greaterthan", ">", "ge", ">=", "in", "odd", "even", "divisibleby", "lower", "upper", "escaped", "filter", "test",
    ]
}
