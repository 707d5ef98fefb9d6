import Foundation
import LLMCore
import Testing
import TestSupport
import Tokenize

// MARK: - The golden file

/// `Tests/Fixtures/chat_templates/golden.json`, written by `scripts/chat_template_golden.py`
/// with transformers' own rendering (`render_jinja_template`, the function behind
/// `apply_chat_template`) and its jinja2 environment. Dicts are stored as
/// `{"__dict__": [[key, value], ...]}` so their order survives.
struct ChatGolden: Sendable {
    /// One real template over one conversation.
    struct Case: Sendable, CustomTestStringConvertible {
        var template: String
        var name: String
        var context: [String: JinjaValue]
        var expected: String?
        var error: String?
        var testDescription: String { "\(template) \(name)" }
    }

    /// One small template exercising a jinja feature (or a failure).
    struct Snippet: Sendable, CustomTestStringConvertible {
        var source: String
        var context: [String: JinjaValue]
        var expected: String?
        var error: String?
        var errorKind: String?
        var line: Int?
        var testDescription: String { JinjaValue.string(String(source.prefix(60))).repr }
    }

    var templates: [String: String]
    var cases: [Case]
    var snippets: [Snippet]

    static let file: ChatGolden = {
        let url = TestPaths.fixtures.appendingPathComponent("chat_templates/golden.json")
        let root = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        func context(_ any: Any?) -> [String: JinjaValue] {
            guard case let .dict(d) = value(any ?? NSNull()) else { return [:] }
            return Dictionary(uniqueKeysWithValues: d.pairs)
        }
        let cases = (root["cases"] as! [[String: Any]]).map { c -> Case in
            // What render_jinja_template passes, then the kwargs (special tokens, date_string, ...).
            var ctx: [String: JinjaValue] = ["messages": value(c["messages"]!), "tools": value(c["tools"]!),
                                             "documents": .none, "add_generation_prompt": .bool(c["add_generation_prompt"] as! Bool)]
            ctx.merge(context(c["kwargs"])) { $1 }
            return Case(template: c["template"] as! String, name: c["name"] as! String, context: ctx,
                        expected: c["expected"] as? String, error: c["error"] as? String)
        }
        let snippets = (root["snippets"] as! [[String: Any]]).map {
            Snippet(source: $0["template"] as! String, context: context($0["context"]), expected: $0["expected"] as? String,
                    error: $0["error"] as? String, errorKind: $0["error_kind"] as? String, line: $0["line"] as? Int)
        }
        return ChatGolden(templates: root["templates"] as! [String: String], cases: cases, snippets: snippets)
    }()

    /// A JSON value as a template value (integral numbers become ints).
    static func value(_ any: Any) -> JinjaValue {
        switch any {
        case is NSNull: return .none
        case let s as String: return .string(s)
        case let n as NSNumber:
            let type = String(cString: n.objCType)
            if type == "c" || type == "B" { return .bool(n.boolValue) }
            if type == "d" || type == "f" { return .double(n.doubleValue) }
            return .int(n.intValue)
        case let a as [Any]: return .list(a.map(value))
        case let o as [String: Any]:
            let pairs = (o["__dict__"] as? [[Any]]) ?? []
            return .dict(JinjaDict(pairs.map { ($0[0] as! String, value($0[1])) }))
        default: return .undefined(hint: "unconvertible \(type(of: any))")
        }
    }
}

/// Byte-exact comparison with a readable first difference.
func expectSameBytes(_ got: String, _ want: String, _ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let a = Array(got.utf8), b = Array(want.utf8)
    guard a != b else { return }
    let i = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
    let context = { (x: [UInt8]) in String(decoding: x[max(0, i - 40)..<min(x.count, i + 40)], as: UTF8.self) }
    Issue.record("\(label): first difference at byte \(i)\n got: \(JinjaValue.string(context(a)).repr)\nwant: \(JinjaValue.string(context(b)).repr)",
                 sourceLocation: sourceLocation)
}

// MARK: - Golden renders

@Suite("Chat templates (transformers goldens)")
struct ChatTemplateGoldenTests {
    @Test(arguments: ChatGolden.file.cases)
    func realTemplate(_ c: ChatGolden.Case) throws {
        let template = try ChatTemplate(source: try #require(ChatGolden.file.templates[c.template]))
        guard let expected = c.expected else {
            #expect { try template.render(context: c.context) } throws: { error in
                guard case let .raised(message, _, _) = error as? ChatTemplateError else { return false }
                return message == c.error
            }
            return
        }
        expectSameBytes(try template.render(context: c.context), expected, c.testDescription)

        // The ChatMessage entry point gives the same text for plain role/content conversations.
        guard case let .list(messages)? = c.context["messages"], case .none? = c.context["tools"] else { return }
        let chat = messages.compactMap { m -> ChatMessage? in
            guard case let .dict(d) = m, d.count == 2, let r = d["role"]?.stringValue, let t = d["content"]?.stringValue else { return nil }
            return ChatMessage(role: r, content: t)
        }
        guard chat.count == messages.count else { return }
        var extra = c.context
        for key in ["messages", "tools", "documents", "add_generation_prompt", "bos_token", "eos_token"] { extra[key] = nil }
        let text = try template.render(messages: chat, addGenerationPrompt: c.context["add_generation_prompt"]!.truthy,
                                       bosToken: c.context["bos_token"]?.stringValue, eosToken: c.context["eos_token"]?.stringValue,
                                       extra: extra)
        expectSameBytes(text, expected, c.testDescription + " (ChatMessage API)")
    }

    /// Every named template is in the fixture and covered by cases, with and without a
    /// generation prompt.
    @Test func coverage() {
        let names = Set(ChatGolden.file.templates.keys)
        for required in ["qwen2.5-7b-instruct", "qwen3-0.6b", "llama-3.1-8b-instruct", "llama-3.2-3b-instruct",
                         "qwen3-tokenizer-config", "qwen2-rtp-llm-fixture", "smollm2-135m-instruct"] {
            #expect(names.contains(required), "missing template \(required)")
            #expect(ChatGolden.file.cases.filter { $0.template == required }.count >= 14, "\(required): too few cases")
        }
    }

    @Test(arguments: ChatGolden.file.snippets)
    func snippet(_ s: ChatGolden.Snippet) throws {
        if let expected = s.expected {
            let template = try ChatTemplate(source: s.source)
            expectSameBytes(try template.render(context: s.context), expected, s.testDescription)
            return
        }
        do {
            _ = try ChatTemplate(source: s.source).render(context: s.context)
            Issue.record("\(s.testDescription): rendered, but jinja2 fails with \(s.error ?? "?")")
        } catch let error as ChatTemplateError {
            switch (s.errorKind, error) {
            case let ("raised", .raised(message, _, _)): #expect(message == s.error)
            case ("runtime", .runtime): break
            case let ("syntax", .syntax(line, _, _)): #expect(line == s.line, "\(error)")
            default: Issue.record("\(s.testDescription): jinja2 raises a \(s.errorKind ?? "?") error (\(s.error ?? "")), got \(error)")
            }
        }
    }
}

// MARK: - Errors

@Suite("Chat template errors")
struct ChatTemplateErrorTests {
    func error(_ source: String, _ context: [String: JinjaValue] = [:]) -> ChatTemplateError? {
        do {
            _ = try ChatTemplate(source: source).render(context: context)
            return nil
        } catch {
            return error as? ChatTemplateError
        }
    }

    @Test func syntaxErrorNamesLineColumnAndExpectation() {
        #expect(error("line one\n  {{ x + }}") == .syntax(line: 2, column: 10, message: "unexpected end of print statement '}}'"))
        #expect(error("{% if x %}\nunclosed") == .syntax(line: 2, column: 9, message: "unexpected end of template: expected 'elif' or 'else' or 'endif' to close the 'if' tag of line 1"))
        #expect(error("{% for x in y %}{% endif %}") == .syntax(line: 1, column: 20, message: "unknown tag 'endif' inside the 'for' tag of line 1"))
        #expect(error("{{ 'open }}")?.description == "chat template line 1, column 4: syntax error: unterminated string literal")
        #expect(error("a\n{# never closed") == .syntax(line: 2, column: 1, message: "missing end of comment tag '#}'"))
        #expect(error("{{ (1, 2 }}") == .syntax(line: 1, column: 10, message: "unexpected '}', expected ')'"))
        #expect(error("{{ x") == .syntax(line: 1, column: 1, message: "unexpected end of template: the '{{' tag opened here was never closed with '}}'"))
    }

    @Test func unsupportedTagsAreSyntaxErrors() {
        #expect(error("{% macro m() %}x{% endmacro %}") == .syntax(line: 1, column: 4, message: "the 'macro' tag is not supported by this chat template interpreter"))
        #expect(error("{% break %}") == .syntax(line: 1, column: 4, message: "'break' outside a for loop"))
    }

    @Test func raiseExceptionCarriesTheTemplateMessage() {
        let e = error("{% if messages | length == 0 %}\n  {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\n{% endif %}",
                      ["messages": .list([])])
        #expect(e == .raised(message: "Conversation roles must alternate user/assistant/user/assistant/...", line: 2, column: 7))
        #expect(e?.description == "chat template line 2, column 7: raise_exception: Conversation roles must alternate user/assistant/user/assistant/...")
    }

    @Test func runtimeErrorsNameTheExpression() {
        #expect(error("{{ 1 }}\n{{ x | nosuchfilter }}", ["x": .int(1)]) == .runtime(line: 2, column: 8, message: "no filter named 'nosuchfilter'"))
        #expect(error("{{ x is nosuchtest }}", ["x": .int(1)]) == .runtime(line: 1, column: 9, message: "no test named 'nosuchtest'"))
        #expect(error("{{ missing.attr }}") == .runtime(line: 1, column: 4, message: "'missing' is undefined"))
        #expect(error("{{ 1 + 'a' }}") == .runtime(line: 1, column: 6, message: "unsupported operand type(s) for +: 'int' and 'str'"))
        // An unknown filter in a branch that is not taken is not an error (as jinja2 3.x).
        #expect(error("{% if false %}{{ x | nosuchfilter }}{% endif %}") == nil)
    }

    /// No input crashes: every prefix of every golden template, and seeded random edits of them,
    /// either render or throw `ChatTemplateError`.
    @Test func malformedTemplatesNeverCrash() {
        let context: [String: JinjaValue] = [
            "messages": .list([.dict(["role": .string("user"), "content": .string("hi")])]), "add_generation_prompt": .bool(true),
        ]
        var rng = SplitMix64(seed: 7)
        let pieces = ["{%", "%}", "{{", "}}", "{#", "#}", "-", "(", ")", "[", "]", "{", "}", "'", "\"", "|", ".", "not", "in", "\u{0}", "🎉"]
        for source in ChatGolden.file.templates.values.sorted() {
            let scalars = Array(source.unicodeScalars)
            var variants = stride(from: 0, to: scalars.count, by: 37).map { String(String.UnicodeScalarView(scalars[..<$0])) }
            for _ in 0..<40 {
                var s = scalars
                let at = Int(rng.next() % UInt64(s.count + 1))
                if rng.next() % 2 == 0, at < s.count {
                    s.removeSubrange(at..<min(s.count, at + Int(rng.next() % 5) + 1))
                } else {
                    s.insert(contentsOf: pieces[Int(rng.next() % UInt64(pieces.count))].unicodeScalars, at: at)
                }
                variants.append(String(String.UnicodeScalarView(s)))
            }
            variants += [String(repeating: "{{ (", count: 5000), String(repeating: "{% if x %}", count: 5000),
                         "{{ " + String(repeating: "-", count: 10000) + "1 }}", "{{ " + String(repeating: "not ", count: 5000) + "x }}",
                         "{{ [" + String(repeating: "[", count: 5000) + " }}", "{{ 'ab' * 100000000000 }}", "{{ range(10**12) }}"]
            for v in variants {
                do { _ = try ChatTemplate(source: v).render(context: context) } catch is ChatTemplateError {} catch {
                    Issue.record("non-ChatTemplateError \(error) for \(JinjaValue.string(v).repr)")
                }
            }
        }
    }
}

// MARK: - Finding a model's template

@Suite("Chat template loading")
struct ChatTemplateLoadingTests {
    func directory(_ files: [String: String]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("chat-template-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        for (name, text) in files { try Data(text.utf8).write(to: dir.appendingPathComponent(name)) }
        return dir
    }

    @Test func jinjaFileWinsOverTokenizerConfig() throws {
        let dir = try directory(["chat_template.jinja": "{{ 'from jinja file' }}\n",
                                 "tokenizer_config.json": #"{"chat_template": "{{ 'from config' }}"}"#])
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(try loadChatTemplate(from: dir)?.render(context: [:]) == "from jinja file")
        // A file in the directory finds the same template.
        #expect(try loadChatTemplate(from: dir.appendingPathComponent("tokenizer_config.json"))?.render(context: [:]) == "from jinja file")
    }

    @Test func tokenizerConfigStringOrNamedList() throws {
        let plain = try directory(["tokenizer_config.json": #"{"chat_template": "{{ 'plain' }}"}"#])
        let named = try directory(["tokenizer_config.json":
            #"{"chat_template": [{"name": "tool_use", "template": "tools"}, {"name": "default", "template": "{{ 'default' }}"}]}"#])
        let none = try directory(["tokenizer_config.json": #"{"eos_token": "</s>"}"#])
        defer { for d in [plain, named, none] { try? FileManager.default.removeItem(at: d) } }
        #expect(try loadChatTemplate(from: plain)?.render(context: [:]) == "plain")
        #expect(try loadChatTemplate(from: named)?.render(context: [:]) == "default")
        #expect(try loadChatTemplate(from: none) == nil)
    }

    @Test(.requires(Assets.smolLM2GGUF)) func ggufChatTemplate() throws {
        let url = try Assets.smolLM2GGUF.url()
        let template = try #require(try loadChatTemplate(from: url))
        #expect(try template.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
            == "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    }
}
