import Foundation

// MARK: - Limits of one rendering

/// Bounds on one rendering of a chat template, so that a broken or hostile template (a string
/// doubled in a loop, nested `range()` loops, a namespace that contains itself) stops at once
/// with `ChatTemplateError.limitExceeded` instead of allocating gigabytes, overflowing the stack
/// or running forever.
///
/// The defaults are far above what real chat templates do: the templates of Llama 2/3, Qwen2/3,
/// Mistral, SmolLM2, Gemma, Phi and DeepSeek (Tests/Fixtures/chat_templates/golden.json and the
/// tokenizers under shared/data) render a conversation in well under a millisecond, loop once
/// per message (plus once per tool), build strings no longer than the conversation and nest
/// values a few levels deep (a tool's JSON schema is the deepest). A conversation itself can be
/// as large as the model's context: 64 MiB of text is ~16M tokens, beyond any context length;
/// 250,000 loop iterations cover a template that walks 10,000 messages several times, each with
/// tools, while stopping nested `range()` loops within a second (an iteration costs ~2 µs in a
/// debug build, ~0.2 µs optimised).
public struct JinjaLimits: Sendable, Equatable {
    /// UTF-8 bytes of the rendered text, and of any one string the template builds (`+`, `~`,
    /// `*`, `join`, `replace`, `tojson`, `center`, `indent`, a list printed with `{{ }}`).
    public var maxStringBytes: Int
    /// Items of any one list or dict the template builds (`+`, `*`, `list`, `split`, iterating
    /// over a string's characters).
    public var maxItems: Int
    /// Containers nested inside each other in a value the template builds (list and dict
    /// literals, `dict()`, `namespace()`, `ns.attr = …`); a namespace that holds itself counts
    /// as nested without end.
    public var maxNesting: Int
    /// `for`-loop iterations over the whole rendering (every level of nested loops counts, and
    /// each item a loop's `if` filter tests).
    public var maxLoopIterations: Int
    /// Wall-clock seconds for the whole rendering (checked every few hundred operations).
    public var maxSeconds: Double

    public init(maxStringBytes: Int = 64 << 20, maxItems: Int = 1_000_000, maxNesting: Int = 256,
                maxLoopIterations: Int = 250_000, maxSeconds: Double = 10) {
        self.maxStringBytes = maxStringBytes
        self.maxItems = maxItems
        self.maxNesting = maxNesting
        self.maxLoopIterations = maxLoopIterations
        self.maxSeconds = maxSeconds
    }

    public static let `default` = JinjaLimits()
}

/// A limit was reached; the renderer turns it into `ChatTemplateError.limitExceeded` at the
/// position of the expression or statement being evaluated.
struct JinjaLimitError: Error {
    var message: String
}

/// The budget of one rendering: the limits, the deadline and the loop iterations spent. The
/// renderer binds it to the current thread (`current`) so that filters and methods, which are
/// static functions, can check the sizes they are about to allocate.
final class JinjaBudget {
    let limits: JinjaLimits
    private let deadline: UInt64
    private var iterations = 0
    private var ticks = 0

    init(limits: JinjaLimits) {
        self.limits = limits
        let ns = limits.maxSeconds.isFinite && limits.maxSeconds >= 0 ? min(limits.maxSeconds * 1e9, 1e18) : 1e18
        deadline = DispatchTime.now().uptimeNanoseconds &+ UInt64(ns)
    }

    @TaskLocal static var current: JinjaBudget?

    /// The limits in force (the defaults outside a rendering).
    static var limits: JinjaLimits { current?.limits ?? .default }

    /// One unit of work; every 256 the clock is read.
    @inline(__always) func tick() throws {
        ticks &+= 1
        if ticks & 255 == 0 { try checkTime() }
    }

    func checkTime() throws {
        guard DispatchTime.now().uptimeNanoseconds <= deadline else {
            throw JinjaLimitError("rendering took longer than \(Self.seconds(limits.maxSeconds)) s")
        }
    }

    /// One `for`-loop iteration.
    func iterate() throws {
        iterations += 1
        guard iterations <= limits.maxLoopIterations else {
            throw JinjaLimitError("more than \(limits.maxLoopIterations) loop iterations")
        }
        try tick()
    }

    static func seconds(_ s: Double) -> String { s == s.rounded() && abs(s) < 1e9 ? String(Int(s)) : String(s) }

    // MARK: Size checks (static: they read the rendering's limits)

    /// A string of `bytes` UTF-8 bytes is about to be built.
    static func checkString(bytes: Int, _ what: @autoclosure () -> String = "a string") throws {
        let max = limits.maxStringBytes
        guard bytes <= max else { throw JinjaLimitError("\(what()) would be longer than \(byteText(max))") }
    }

    /// A string made of `count` copies of a piece of `bytes` bytes (multiplication that cannot
    /// overflow).
    static func checkRepeat(count: Int, bytes: Int, _ what: @autoclosure () -> String = "a string") throws {
        guard count > 0, bytes > 0 else { return }
        let (total, overflow) = count.multipliedReportingOverflow(by: bytes)
        try checkString(bytes: overflow ? .max : total, what())
    }

    /// A list or dict of `count` items is about to be built.
    static func checkItems(_ count: Int, _ what: @autoclosure () -> String = "a list") throws {
        let max = limits.maxItems
        guard count <= max else { throw JinjaLimitError("\(what()) would have more than \(max) items") }
    }

    /// `value`, about to be stored inside a new container, nests no deeper than the limit.
    static func checkNesting(_ value: JinjaValue, extra: Int = 1) throws {
        let max = limits.maxNesting
        guard value.nestingDepth(cap: max) + extra <= max else {
            throw JinjaLimitError("values nested more than \(max) deep (or a namespace that contains itself)")
        }
    }

    static func byteText(_ n: Int) -> String {
        n >= 1 << 20 && n % (1 << 20) == 0 ? "\(n >> 20) MiB" : n >= 1 << 10 && n % (1 << 10) == 0 ? "\(n >> 10) KiB" : "\(n) bytes"
    }
}

extension JinjaLimitError {
    init(_ message: String) { self.message = message }
}

extension JinjaValue {
    /// How many containers deep this value goes (0 for a scalar), counting at most `cap + 1`
    /// (a namespace that contains itself is infinitely deep).
    func nestingDepth(cap: Int) -> Int {
        guard cap >= 0 else { return 1 }
        switch self {
        case let .list(items):
            var d = 0
            for i in items where d <= cap { d = max(d, i.nestingDepth(cap: cap - 1)) }
            return d + 1
        case let .dict(dict):
            var d = 0
            for (_, v) in dict.pairs where d <= cap { d = max(d, v.nestingDepth(cap: cap - 1)) }
            return d + 1
        case let .namespace(n):
            var d = 0
            for (_, v) in n.attributes.pairs where d <= cap { d = max(d, v.nestingDepth(cap: cap - 1)) }
            return d + 1
        default:
            return 0
        }
    }

    /// Python `str(value)` with the rendering's string limit: a list or dict printed as its
    /// `repr` is built piece by piece and given up on as soon as it is too long.
    func limitedStr() throws -> String {
        if case let .string(s) = self { return s }
        if case .undefined = self { return "" }
        return try limitedRepr()
    }

    /// A lower bound of the UTF-8 bytes of this value's `repr` or JSON text (each string at
    /// least its bytes and two quotes, each item a separator), counting no further than `cap`:
    /// a list of 100 references to one 1 MB string is known to be too long to print after 100
    /// steps, not after building 64 MB.
    func minimumTextBytes(cap: Int, depth: Int = 0) -> Int {
        guard depth <= JinjaBudget.limits.maxNesting else { return cap + 1 }
        func add(_ a: Int, _ b: Int) -> Int { a > cap - b ? cap + 1 : a + b }
        switch self {
        case let .string(s): return add(s.utf8.count, 2)
        case let .list(items):
            // Brackets, the items, and at least one byte between two items (`,` in compact JSON).
            var n = add(2, max(0, items.count - 1))
            for i in items where n <= cap { n = add(n, i.minimumTextBytes(cap: cap, depth: depth + 1)) }
            return n
        case let .dict(d):
            // Each key quoted and followed by at least `:`.
            var n = add(2, max(0, d.count - 1))
            for (k, v) in d.pairs where n <= cap { n = add(n, add(add(k.utf8.count, 3), v.minimumTextBytes(cap: cap, depth: depth + 1))) }
            return n
        case let .namespace(ns): return add(12, JinjaValue.dict(ns.attributes).minimumTextBytes(cap: cap, depth: depth + 1))
        default: return 1
        }
    }

    /// Python `repr(value)` with the rendering's string limit.
    func limitedRepr() throws -> String {
        switch self {
        case .list, .dict, .namespace:
            let max = JinjaBudget.limits.maxStringBytes
            guard minimumTextBytes(cap: max) <= max else {
                throw JinjaLimitError("the text of a \(typeName) would be longer than \(JinjaBudget.byteText(max))")
            }
            var out = ""
            guard writeRepr(into: &out, limit: max) else {
                throw JinjaLimitError("the text of a \(typeName) would be longer than \(JinjaBudget.byteText(max))")
            }
            return out
        default:
            return repr
        }
    }

    /// `repr(value)` cut to about 200 characters, for error messages.
    var shortRepr: String {
        var out = ""
        if writeRepr(into: &out, limit: 200) { return out }
        if case let .string(s) = self {
            return PythonFormat.stringRepr(String(String.UnicodeScalarView(s.unicodeScalars.prefix(100)))) + "…"
        }
        return String(String.UnicodeScalarView(out.unicodeScalars.prefix(200))) + "…"
    }

    /// Appends `repr(self)` to `out`; false as soon as `out` exceeds `limit` bytes.
    private func writeRepr(into out: inout String, limit: Int, depth: Int = 0) -> Bool {
        // Values built by a template nest at most `maxNesting` deep; deeper ones (a namespace
        // holding itself) are refused rather than followed forever.
        guard depth <= JinjaBudget.limits.maxNesting else { return false }
        func sequence<S: Sequence>(_ items: S, _ open: String, _ close: String,
                                   _ each: (S.Element, inout String) -> Bool) -> Bool {
            out += open
            var first = true
            for item in items {
                if !first { out += ", " }
                first = false
                guard each(item, &out), out.utf8.count <= limit else { return false }
            }
            out += close
            return out.utf8.count <= limit
        }
        switch self {
        case let .list(a):
            return sequence(a, "[", "]") { $0.writeRepr(into: &$1, limit: limit, depth: depth + 1) }
        case let .dict(d):
            return sequence(d.pairs, "{", "}") { pair, o in
                o += PythonFormat.stringRepr(pair.0) + ": "
                return pair.1.writeRepr(into: &o, limit: limit, depth: depth + 1)
            }
        case let .namespace(n):
            out += "<Namespace "
            guard JinjaValue.dict(n.attributes).writeRepr(into: &out, limit: limit, depth: depth + 1) else { return false }
            out += ">"
            return out.utf8.count <= limit
        case let .string(s):
            guard s.utf8.count <= limit else { return false }
            out += PythonFormat.stringRepr(s)
            return out.utf8.count <= limit
        default:
            out += repr
            return out.utf8.count <= limit
        }
    }
}
