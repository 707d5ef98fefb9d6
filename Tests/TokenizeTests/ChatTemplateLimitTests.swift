import Foundation
import Testing
import TestSupport
@testable import Tokenize

/// Issue 20, class 5: a runaway chat template (a string doubled in a loop, nested `range()`
/// loops, a value that contains itself, an amplifying filter) stops at once with
/// `ChatTemplateError.limitExceeded` naming where the template came from, instead of allocating
/// gigabytes, overflowing the stack or hanging. Each test proves the limit named in the message
/// is the one that stops the template (no timing thresholds: a run that hung would instead hit
/// the interpreter's own clock limit, whose message the test does not accept); the goldens
/// prove real templates stay far below the limits.
@Suite("Chat template limits")
struct ChatTemplateLimitTests {
    /// Renders `source` with the default limits, returning the error and the seconds it took.
    func limitError(_ source: String, limits: JinjaLimits = .default, origin: String? = "test/chat_template.jinja",
                    _ context: [String: JinjaValue] = [:]) throws -> (error: ChatTemplateError?, seconds: Double) {
        var t = try ChatTemplate(source: source, origin: origin)
        t.limits = limits
        let start = Date()
        do {
            _ = try t.render(context: context)
            return (nil, Date().timeIntervalSince(start))
        } catch let e as ChatTemplateError {
            return (e, Date().timeIntervalSince(start))
        }
    }

    func expectLimit(_ source: String, mentioning needle: String, limits: JinjaLimits = .default,
                     _ context: [String: JinjaValue] = [:], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let (e, _) = try limitError(source, limits: limits, context)
        guard let e, case let .limitExceeded(file, line, _, message) = e else {
            Issue.record("expected limitExceeded, got \(String(describing: e))", sourceLocation: sourceLocation)
            return
        }
        #expect(file == "test/chat_template.jinja" && line >= 1, sourceLocation: sourceLocation)
        #expect(message.contains(needle), "\(message)", sourceLocation: sourceLocation)
        #expect(e.description.hasPrefix("chat template test/chat_template.jinja line "), "\(e)", sourceLocation: sourceLocation)
    }

    // MARK: The reproductions of the issue

    /// The issue's reproduction: `ns.s + ns.s` 64 times wants 2^65 bytes; it stops at 64 MiB.
    @Test func stringDoubledInALoopStopsAtTheStringLimit() throws {
        try expectLimit("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
                        mentioning: "longer than 64 MiB")
    }

    /// Nested `range(100000)` loops are 10^10 iterations; they stop after 250,000.
    @Test func nestedRangeLoopsStopAtTheIterationLimit() throws {
        try expectLimit("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
                        mentioning: "more than 250000 loop iterations")
    }

    @Test func everyLoopLevelAndLoopFilterCounts() throws {
        let small = JinjaLimits(maxLoopIterations: 100)
        #expect(try limitError("{% for i in range(10) %}{% for j in range(9) %}{% endfor %}{% endfor %}", limits: small).error == nil)   // 100
        try expectLimit("{% for i in range(10) %}{% for j in range(10) %}{% endfor %}{% endfor %}", mentioning: "more than 100 loop iterations",
                        limits: small)
        try expectLimit("{% for i in range(1000) if i > 5000 %}{% endfor %}", mentioning: "more than 100 loop iterations", limits: small)
    }

    /// A slow rendering under the iteration and size limits is stopped by the clock.
    @Test func theClockStopsASlowRendering() throws {
        let slow = JinjaLimits(maxLoopIterations: .max, maxSeconds: 0.2)
        try expectLimit("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                        mentioning: "longer than 0.2 s", limits: slow)
    }

    // MARK: Other amplifiers

    @Test(arguments: [
        ("{{ 'ab' * 10**12 }}", "a repeated string would be longer than 64 MiB"),
        ("{{ ' ' | center(10**12) }}", "center"),
        ("{{ 'a\nb' | indent(10**12) }}", "indent"),
        ("{{ [1] | tojson(indent=10**12) }}", "tojson"),
        ("{% set s = 'a' * 1000000 %}{{ s.replace('a', s) }}", "replace()"),
        ("{% set s = 'a' * 1000000 %}{{ s | replace('a', s) }}", "replace()"),
        ("{% set s = 'a' * 1000000 %}{{ ([s] * 100) | join }}", "join"),
        ("{% set s = 'a' * 1000000 %}{{ ''.join([s] * 100) }}", "str.join()"),
        ("{% set s = 'a' * 1000000 %}{{ [s] * 100 }}", "the text of a list"),
        ("{% set s = 'a' * 1000000 %}{{ ([s] * 100) | tojson }}", "tojson"),
        ("{% set s = 'a' * 1000000 %}{{ ([s] * 100) | string }}", "the text of a list"),
        ("{% set s = 'a' * 1000000 %}{{ ([s] * 100) ~ 'x' }}", "the text of a list"),
        ("{% set s = 'a' * 60000000 %}{{ s ~ s }}", "`~` concatenation"),
        ("{% set s = '&' * 20000000 %}{{ s | escape }}", "escape"),
        ("{{ [0] * 10**12 }}", "a repeated list would have more than 1000000 items"),
        ("{% set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", "a `+` of two lists"),
        ("{% set s = 'a' * 2000000 %}{% for c in s %}{% endfor %}", "iterating over a string's characters"),
        ("{% set s = ',' * 2000000 %}{{ s.split(',') | length }}", "str.split()"),
        ("{% set s = ' a' * 2000000 %}{{ s.split() | length }}", "str.split()"),
        ("{% set s = '\n' * 2000000 %}{{ s.splitlines() | length }}", "str.splitlines()"),
    ])
    func amplifiersStopAtALimit(_ source: String, _ needle: String) throws {
        try expectLimit(source, mentioning: needle)
    }

    /// A namespace that holds itself, or values nested in a loop, would overflow the stack when
    /// printed, compared or freed; they are refused when built.
    @Test(arguments: [
        "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}",
        "{% set ns = namespace() %}{% set ns.me = [ns] %}{{ ns }}",
        "{% set ns = namespace(x=0) %}{% for i in range(100000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x }}",
        "{% set ns = namespace(x=0) %}{% for i in range(100000) %}{% set ns.x = {'a': ns.x} %}{% endfor %}",
        "{% set ns = namespace(x=0) %}{% for i in range(100000) %}{% set ns.x = namespace(x=ns.x) %}{% endfor %}",
        "{% set ns = namespace(x=0) %}{% for i in range(100000) %}{% set ns.x = dict(a=ns.x) %}{% endfor %}",
    ])
    func selfContainingOrDeepValuesAreRefused(_ source: String) throws {
        try expectLimit(source, mentioning: "nested more than 256 deep")
    }

    /// Substring search is linear: a 4M-character haystack and a 2M-character needle that
    /// almost match everywhere (quadratic naively: 10^12 comparisons) finish under the
    /// interpreter's time limit (a quadratic search would end in that limit's error).
    @Test func substringSearchIsLinear() throws {
        let (e, _) = try limitError("{% set h = 'a' * 4000000 %}{% set n = 'a' * 2000000 + 'b' %}{{ n in h }}{{ h.count(n) }}{{ h.find(n) }}")
        #expect(e == nil, "\(String(describing: e))")
        let t = try ChatTemplate(source: "{{ 'abcabcab'.find('cab') }} {{ 'aaaa'.count('aa') }} {{ 'aaaa'.rfind('aa') }} {{ 'xaxbx'.split('x') }} {{ 'aaa'.replace('a', 'bb', 2) }} {{ 'ab'.replace('', '-') }}")
        #expect(try t.render(context: [:]) == "2 2 2 ['', 'a', 'b', ''] bbbba -a-b-")
    }

    /// Within the limits nothing changes: values at the limit are fine, and the limit error
    /// says where the template came from (the path `loadChatTemplate` recorded).
    @Test func limitErrorsNameTheTemplateFile() throws {
        let dir = try temporaryDirectory("limit-origin")
        defer { try? FileManager.default.removeItem(at: dir) }
        try "{% for i in range(1000) %}{% for j in range(1000) %}{% endfor %}{% endfor %}".write(to: dir.appendingPathComponent("chat_template.jinja"), atomically: true, encoding: .utf8)
        let t = try #require(try loadChatTemplate(from: dir))
        #expect(t.origin == dir.appendingPathComponent("chat_template.jinja").path)
        #expect { try t.render(messages: [], addGenerationPrompt: true) } throws: { e in
            guard let e = e as? ChatTemplateError, e.isLimit else { return false }
            return e.description.contains(dir.appendingPathComponent("chat_template.jinja").path) && e.description.contains("loop iterations")
        }
        // Other errors keep their form (no file: the caller names the model or record).
        #expect(throws: ChatTemplateError.runtime(line: 1, column: 4, message: "'x' is undefined")) {
            try ChatTemplate(source: "{{ x.y }}", origin: "f.jinja").render(context: [:])
        }
        #expect(try ChatTemplate(source: "{{ 'ab' * 1000 }}").render(context: [:]).count == 2000)
    }

    // MARK: Found by fuzzing (docs/RELIABILITY.md)

    /// fuzz-jinja: `int` with a base outside 2...36 (here `true`, i.e. 1) trapped in Swift's
    /// `Int(_:radix:)`. Python's int() refuses such a base and jinja2 falls back to
    /// int(float(value)), then to the default (results checked against jinja2 3.1.6).
    @Test func intFilterWithABaseOutOfRangeFallsBackLikeJinja2() throws {
        let t = try ChatTemplate(source: "{{ 'a\\nb' | int(2, true) }}|{{ '12' | int(0, 1) }}|{{ '7' | int(5, 99) }}|{{ 'ff' | int(0, 16) }}")
        #expect(try t.render(context: [:]) == "2|12|7|255")
    }

    // MARK: Real templates stay far below the limits

    /// Every golden conversation of every real template (Qwen2.5, Qwen3, Llama 3.1/3.2, SmolLM2,
    /// ...) renders identically with limits 100 times smaller than the defaults (8 times for
    /// nesting): the defaults leave two orders of magnitude of room.
    @Test func realTemplatesRenderUnderLimitsAHundredTimesSmaller() throws {
        let tight = JinjaLimits(maxStringBytes: (64 << 20) / 100, maxItems: 10_000, maxNesting: 32, maxLoopIterations: 2_500, maxSeconds: 5)
        var rendered = 0
        for c in ChatGolden.file.cases {
            guard let source = ChatGolden.file.templates[c.template], let expected = c.expected else { continue }
            var t = try ChatTemplate(source: source, origin: c.template)
            t.limits = tight
            #expect(try t.render(context: c.context) == expected, "\(c.template) \(c.name)")
            rendered += 1
        }
        #expect(rendered >= 50, "\(rendered) golden renderings")
    }
}
