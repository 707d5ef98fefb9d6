import Foundation
import Testing
import Tokenize
import TestSupport
@testable import Training

/// `messages` and `prompt`/`completion` records: reading them, the errors that name the file,
/// line and message, and the labels of the rule in `../shared/fixtures/README.md` (chat/) —
/// against the goldens for four real templates and, on a toy template, by hand.
@Suite("Chat data: messages and prompt/completion records")
struct ChatDataTests {
    // MARK: Helpers

    /// The toy template of `ChatTemplateDataTests` over `ToyTokenizer` (`<s>` 1, `</s>` 2,
    /// every other character its scalar + 10); its end of turn is `</s>`.
    static let toyChat = ChatTemplateDataTests.toyChat

    static func load(_ text: String, file: String = "chat.jsonl", strict: Bool = true) throws -> [Example] {
        try loadExamples(bytes: Array(text.utf8), file: file, strict: strict).examples
    }

    static func prepare(_ text: String, maxLength: Int? = nil, template: PromptTemplate = .auto,
                        chat: PromptTemplate.Chat? = toyChat, tokenizer: any Tokenizer = ToyTokenizer()) throws -> PreparedData {
        try prepareExamples(try load(text), template: template, tokenizer: tokenizer,
                            options: TokenizeOptions(maxLength: maxLength), strict: true, chat: chat)
    }

    /// The message of the error `body` throws.
    static func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        return "no error"
    }

    /// The trained tokens of an example, decoded (special tokens included).
    static func trainedText(_ e: TokenizedExample, _ tokenizer: any Tokenizer) -> String {
        tokenizer.decode(zip(e.inputIds, e.labels).compactMap { $1 == ignoreIndex ? nil : $0 }, skipSpecialTokens: false)
    }

    // MARK: The rule, by hand (toy template)

    @Test func everyAssistantTurnIsTrainedWithItsEndOfTurn() throws {
        let p = try Self.prepare(#"""
            {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Ok"}]}
            """#)
        let e = try #require(p.examples.first)
        // <s><system>Be brief.</s>\n<user>Hi</s>\n<assistant>Yo</s>\n<user>Bye</s>\n<assistant>Ok</s>\n
        let text = "<system>Be brief.</s>\n<user>Hi</s>\n<assistant>Yo</s>\n<user>Bye</s>\n<assistant>Ok</s>\n"
        let ids = try ToyTokenizer().encode("<s>" + text, addSpecialTokens: false)
        #expect(e.inputIds == ids)
        var labels = [Int](repeating: ignoreIndex, count: ids.count)
        for (content, _) in [("Yo", 0), ("Ok", 1)] {
            // The content's characters and the `</s>` right after them.
            let before = try ToyTokenizer().encode("<s>" + String(text[..<text.range(of: "<assistant>" + content)!.upperBound]), addSpecialTokens: false).count
            for i in (before - content.count)...(before) { labels[i] = ids[i] }
        }
        #expect(e.labels == labels)
        #expect(Self.trainedText(e, ToyTokenizer()) == "Yo</s>Ok</s>")
        #expect(e.promptLength == labels.firstIndex { $0 != ignoreIndex })
    }

    @Test func weightZeroTurnsAreNotTrained() throws {
        let e = try #require(try Self.prepare(#"""
            {"messages": [{"role": "user", "content": "A"}, {"role": "assistant", "content": "first", "weight": 0}, {"role": "user", "content": "B"}, {"role": "assistant", "content": "second", "weight": 1}]}
            """#).examples.first)
        #expect(Self.trainedText(e, ToyTokenizer()) == "second</s>")
    }

    @Test func toolMessagesAndToolsReachTheTemplate() throws {
        let chat = PromptTemplate.Chat(template: try ChatTemplate(source: """
            {% if tools %}{% for t in tools %}[{{ t.name }}]{% endfor %}{% endif %}{% for m in messages %}<{{ m.role }}>{{ m.content }}\
            {% if m.tool_call_id %}#{{ m.tool_call_id }}{% endif %}</s>{% endfor %}
            """), tokenizer: ToyTokenizer())
        let e = try #require(try Self.prepare(#"""
            {"tools": [{"name": "calc"}], "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "call"}, {"role": "tool", "content": "4", "tool_call_id": "c1"}, {"role": "assistant", "content": "4."}]}
            """#, chat: chat).examples.first)
        #expect(ToyTokenizer().decode(e.inputIds) == "[calc]<user>2+2?</s><assistant>call</s><tool>4#c1</s><assistant>4.</s>")
        #expect(Self.trainedText(e, ToyTokenizer()) == "call</s>4.</s>")
    }

    // MARK: prompt / completion

    @Test func stringPromptCompletionIsRawTextWithEOS() throws {
        let e = try #require(try Self.prepare(#"{"prompt": "2+2=", "completion": "4"}"#).examples.first)
        // BOS (the tokenizer's default special tokens), the text, EOS; the prompt masked.
        #expect(e.inputIds == [1] + ToyTokenizer.plain("2+2=4") + [2])
        #expect(e.labels == [ignoreIndex] + [Int](repeating: ignoreIndex, count: 4) + ToyTokenizer.plain("4") + [2])
    }

    @Test func conversationalPromptCompletionTrainsTheCompletion() throws {
        let e = try #require(try Self.prepare(#"""
            {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]}
            """#).examples.first)
        #expect(ToyTokenizer().decode(e.inputIds) == "<s><system>S</s>\n<user>Q</s>\n<assistant>A</s>\n")
        // Everything after "<assistant>" (the generation prompt) is trained, to the end.
        #expect(Self.trainedText(e, ToyTokenizer()) == "A</s>\n")
    }

    // MARK: Truncation

    @Test func truncationKeepsTheBeginningAndDropsRecordsWithNothingTrainedLeft() throws {
        let long = String(repeating: "x", count: 40)
        let data = #"""
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\#(long)"}]}
            {"messages": [{"role": "user", "content": "\#(long)"}, {"role": "assistant", "content": "late"}]}
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
            """#
        let p = try Self.prepare(data, maxLength: 30)
        #expect(p.examples.count == 2)
        #expect(p.droppedNoTarget == 1)   // the second: its only trained tokens lie past 30
        #expect(p.truncated == 1)         // the first, cut to 30 tokens
        #expect(p.examples[0].inputIds.count == 30 && p.examples[0].truncated)
        #expect(p.warnings.contains { $0.contains("chat.jsonl:2") && $0.contains("dropped") })
        #expect(p.warnings.contains("truncated 1 record(s) to the max length (their beginning kept)"))
    }

    // MARK: Errors name the file, line, message and what was expected

    @Test func unknownRole() {
        let m = Self.message { _ = try Self.load("{\"text\": \"x\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"bot\", \"content\": \"b\"}]}") }
        #expect(m == "chat.jsonl:2: field `messages[1].role`: expected one of system, user, assistant, tool, found `bot`")
    }

    @Test func contentNotAString() {
        let m = Self.message { _ = try Self.load(#"[{"messages": [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "b"}]}]"#, file: "chat.json") }
        #expect(m == "chat.json:1 (element 0): field `messages[0].content`: expected a string, found an array")
    }

    @Test func missingRoleAndContent() {
        #expect(Self.message { _ = try Self.load(#"{"messages": [{"content": "a"}]}"#) }
            == "chat.jsonl:1: field `messages[0].role`: expected one of system, user, assistant, tool (the field is missing)")
        #expect(Self.message { _ = try Self.load(#"{"messages": [{"role": "user"}]}"#) }
            == "chat.jsonl:1: field `messages[0].content`: expected a string (the field is missing)")
    }

    @Test func noAssistantMessage() {
        let m = Self.message { _ = try Self.load(#"{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]}"#) }
        #expect(m == "chat.jsonl:1: field `messages`: expected at least one assistant message to train on, found roles system, user")
    }

    @Test func badWeightsAndShapes() {
        #expect(Self.message { _ = try Self.load(#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 2}]}"#) }
            == "chat.jsonl:1: field `messages[1].weight`: expected 0 or 1, found 2")
        #expect(Self.message { _ = try Self.load(#"{"messages": [{"role": "user", "content": "a", "weight": 0}, {"role": "assistant", "content": "b"}]}"#) }
            == "chat.jsonl:1: field `messages[0].weight`: expected no weight on a user message (only assistant messages have one: 0 or 1)")
        #expect(Self.message { _ = try Self.load(#"{"messages": {"role": "user"}}"#) }
            == "chat.jsonl:1: field `messages`: expected a non-empty array of {role, content} messages, found an object")
        #expect(Self.message { _ = try Self.load(#"{"messages": ["hi"]}"#) }
            == "chat.jsonl:1: field `messages[0]`: expected a message object {role, content}, found a string")
        #expect(Self.message { _ = try Self.load(#"{"tools": {}, "messages": [{"role": "assistant", "content": "b"}]}"#) }
            == "chat.jsonl:1: field `tools`: expected an array of tool definitions, found an object")
        #expect(Self.message { _ = try Self.load(#"{"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]}"#) }
            == "chat.jsonl:1: field `completion`: expected a string like `prompt` (strings: raw text; message lists: conversational), found an array")
        #expect(Self.message { _ = try Self.load(#"{"prompt": [{"role": "user", "content": "a"}], "completion": [{"role": "user", "content": "b"}]}"#) }
            == "chat.jsonl:1: field `completion`: expected at least one assistant message to train on, found roles user")
    }

    @Test func templateThatLosesAnAssistantMessage() throws {
        let chat = PromptTemplate.Chat(template: try ChatTemplate(source: "{% for m in messages %}{% if m.role != 'assistant' %}{{ m.content }}{% endif %}</s>{% endfor %}"),
                                       tokenizer: ToyTokenizer())
        let m = Self.message { _ = try Self.prepare("\n" + #"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "the answer"}]}"#, chat: chat) }
        #expect(m == "chat.jsonl:2: template `auto` cannot render a messages record: assistant message 1 (messages[1], \"the answer\") is not in "
            + "the chat template's rendering after the messages before it, so its tokens cannot be found to train on")
    }

    @Test func conversationsNeedAChatTemplate() {
        let data = #"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#
        #expect(Self.message { _ = try Self.prepare(data, chat: nil) }.hasPrefix("tokenizer: template `chat` needs the model's chat template"))
        #expect(Self.message { _ = try Self.prepare(data, template: .alpaca) }
            == "chat.jsonl:1: template `alpaca` cannot render a messages record: conversations are rendered by the model's chat template: use --template chat (or auto)")
    }

    // MARK: Real templates and tokenizers (the goldens)

    struct Golden {
        let template: String, messages: [[String: Any]], text: String, inputIds: [Int], labels: [Int]
    }

    static func goldens() throws -> [Golden] {
        let url = TestPaths.shared("fixtures/chat/chat_goldens.json")
        let root = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        return try #require(root["cases"] as? [[String: Any]]).map {
            Golden(template: $0["template"] as! String, messages: $0["messages"] as! [[String: Any]], text: $0["text"] as! String,
                   inputIds: $0["input_ids"] as! [Int], labels: $0["labels"] as! [Int])
        }
    }

    static let templateNames = ["qwen2.5", "qwen3", "smollm2", "llama3.1"]

    /// The chat template file of a golden template name: the llama.cpp copies in ../shared,
    /// and SmolLM2-135M-Instruct's own (its tokenizer_config.json in ../shared has none; the
    /// template is in Tests/Fixtures/chat_templates/golden.json, written out once per process).
    static func templateFile(_ name: String) throws -> URL {
        if let file = ["qwen2.5": "Qwen-Qwen2.5-7B-Instruct.jinja", "qwen3": "Qwen-Qwen3-0.6B.jinja",
                       "llama3.1": "meta-llama-Llama-3.1-8B-Instruct.jinja"][name] {
            return TestPaths.shared("data/tokenizers/llama.cpp-vocab/templates/\(file)")
        }
        let golden = TestPaths.fixtures.appendingPathComponent("chat_templates/golden.json")
        let root = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: golden)) as? [String: Any])
        let source = try #require((root["templates"] as? [String: String])?["smollm2-135m-instruct"])
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("smollm2-135m-instruct-\(ProcessInfo.processInfo.processIdentifier).jinja")
        try source.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// The tokenizer directory the goldens encode with (fixtures README, chat/).
    static func tokenizerDirectory(_ name: String) -> URL {
        TestPaths.shared("data/tokenizers/\(["smollm2": "smollm2", "llama3.1": "llama3-bpe"][name] ?? "qwen2")")
    }

    /// The tokenizer and chat template the goldens were made with.
    static func realChat(_ name: String) throws -> (any Tokenizer, PromptTemplate.Chat) {
        let tokenizer = try loadTokenizer(from: tokenizerDirectory(name))
        let template = try ChatTemplate(source: String(contentsOf: try templateFile(name), encoding: .utf8))
        return (tokenizer, PromptTemplate.Chat(template: template, tokenizer: tokenizer))
    }

    /// JSONL of `messages` records.
    static func jsonl(_ conversations: [[[String: Any]]]) throws -> String {
        try conversations.map { String(decoding: try JSONSerialization.data(withJSONObject: ["messages": $0], options: [.sortedKeys]), as: UTF8.self) }
            .joined(separator: "\n")
    }

    @Test(.requires(Assets.shared), arguments: templateNames)
    func goldensReproducedExactly(_ name: String) throws {
        let cases = try Self.goldens().filter { $0.template == name }
        #expect(cases.count == 3)
        let (tokenizer, chat) = try Self.realChat(name)
        let url = try writeDataTempFile(try Self.jsonl(cases.map(\.messages)), name: "\(name).jsonl")
        // The path `train` and `prepare` share.
        let file = try PreparedFile(path: url.path, template: .auto, tokenizer: tokenizer, chat: chat, options: TokenizeOptions(maxLength: 4096),
                                    strict: true, warn: { Issue.record("warning: \($0)") })
        #expect(file.examples.count == cases.count)
        for (i, (e, g)) in zip(file.examples, cases).enumerated() {
            #expect(try ChatRecords.render(file.loaded.examples[i].conversation!, chat: chat) == g.text, "\(name) case \(i): text")
            #expect(e.inputIds == g.inputIds, "\(name) case \(i): input_ids")
            #expect(e.labels == g.labels, "\(name) case \(i): labels")
        }
        // Weight 0 (the third conversation's "Hi!") is not trained; "HI!" is.
        let eot = try #require(chat.endOfTurn)
        #expect(Self.trainedText(file.examples[2], tokenizer) == "HI!" + eot)
        // System prompt and two turns: both answers, nothing else.
        #expect(Self.trainedText(file.examples[1], tokenizer) == "42" + eot + "84" + eot)
    }

    /// Content the template trims (Llama 3.1 writes `content | trim`) is found stripped; a
    /// template that keeps it (Qwen2.5) has it as written, and there the content's leading
    /// "\n" joins the role header's "\n" in one token that straddles the span's start, so it is
    /// not trained (a token is trained only when it lies entirely inside).
    @Test(.requires(Assets.shared), arguments: ["llama3.1", "qwen2.5"])
    func trimmedContent(_ name: String) throws {
        let (tokenizer, chat) = try Self.realChat(name)
        let p = try prepareExamples(try Self.load(try Self.jsonl([[["role": "user", "content": " Add 2 and 2. "], ["role": "assistant", "content": "\n 4 \n"]]])),
                                    template: .chat, tokenizer: tokenizer, strict: true, chat: chat)
        let e = try #require(p.examples.first)
        let eot = try #require(chat.endOfTurn)
        #expect(Self.trainedText(e, tokenizer) == (name == "llama3.1" ? "4" : " 4 \n") + eot)
        if name == "qwen2.5" { #expect(tokenizer.decode(e.inputIds).contains("<|im_start|>assistant\n\n 4 \n<|im_end|>")) }
    }

    /// Multi-byte characters: byte-level tokens may split a character; the trained tokens are
    /// exactly the content and the end of turn.
    @Test(.requires(Assets.shared), arguments: templateNames)
    func unicodeContent(_ name: String) throws {
        let (tokenizer, chat) = try Self.realChat(name)
        let answer = "Ça coûte 3 € — 日本語で「はい」🙂👍🏽"
        let examples = try Self.load(try Self.jsonl([[["role": "system", "content": "Réponds en français ☕"], ["role": "user", "content": "Combien ? 💶"],
                                                     ["role": "assistant", "content": answer], ["role": "user", "content": "Merci ✓"],
                                                     ["role": "assistant", "content": "De rien 😊"]]]))
        let p = try prepareExamples(examples, template: .chat, tokenizer: tokenizer, strict: true, chat: chat)
        let e = try #require(p.examples.first)
        let eot = try #require(chat.endOfTurn)
        #expect(Self.trainedText(e, tokenizer) == answer + eot + "De rien 😊" + eot)
        #expect(tokenizer.decode(e.inputIds) == (try ChatRecords.render(examples[0].conversation!, chat: chat)))
    }

    /// Offsets: every token's span holds exactly its bytes (byte-level BPE, with unicode).
    @Test(.requires(Assets.shared), arguments: ["qwen2", "smollm2", "llama3-bpe"])
    func tokenSpansCoverTheirBytes(_ vocab: String) throws {
        let tokenizer = try loadTokenizer(from: TestPaths.shared("data/tokenizers/\(vocab)"))
        let text = "<|im_start|>user\n  Héllo,\tworld! 123456 — 日本語 🙂👍🏽\n\n<|im_end|>"
        let enc = try tokenizer.encodeWithOffsets(text)
        #expect(enc.ids == (try tokenizer.encode(text, addSpecialTokens: false)))
        let bytes = Array(text.utf8)
        #expect(enc.spans.first?.lowerBound == 0 && enc.spans.last?.upperBound == bytes.count)
        for (id, span) in zip(enc.ids, enc.spans) {
            #expect(Array(bytes[span]) == tokenizer.tokenBytes(id), "token \(id)")
        }
    }

    /// Offsets for tiktoken (Llama 3's tokenizer.model) and SentencePiece (Llama 2): the spans
    /// tile the text, and each holds its token's bytes (SentencePiece's dummy-prefix `▁` on the
    /// first piece covers no byte of the text).
    @Test(.requires(Assets.shared), arguments: ["llama3-tiktoken/tokenizer.model", "llama2-spm/tokenizer.model"])
    func tokenSpansForTiktokenAndSentencePiece(_ file: String) throws {
        let tokenizer = try loadTokenizer(from: TestPaths.shared("data/tokenizers/\(file)"))
        let text = "Héllo,\tworld!  123456 — 日本語 🙂\n\nBye"
        let enc = try tokenizer.encodeWithOffsets(text)
        #expect(enc.ids == (try tokenizer.encode(text, addSpecialTokens: false)))
        let bytes = Array(text.utf8)
        #expect(enc.spans.first?.lowerBound == 0 && enc.spans.last?.upperBound == bytes.count)
        for (i, (id, span)) in zip(enc.ids, enc.spans).enumerated() {
            if i > 0 { #expect(span.lowerBound == enc.spans[i - 1].upperBound) }
            let piece = try #require(tokenizer.tokenBytes(id))
            #expect(Array(bytes[span]) == piece || (i == 0 && [0x20] + bytes[span] == piece), "token \(id)")
        }
    }
}
