import Foundation
import Testing
import Tokenize
import TestSupport
@testable import Training

/// The `chat` prompt template: records rendered with the model's own chat template.
///
/// The SmolLM2 expectations come from `scripts/chat_template_golden.py`
/// (`Tests/Fixtures/chat_templates/golden.json`, `chat_data`): transformers'
/// `tokenizer.apply_chat_template(messages, add_generation_prompt=..., tokenize=True)` on
/// SmolLM2-135M-Instruct, prompt = [user] with the generation prompt, full = [user, assistant].
@Suite("Chat prompt template")
struct ChatTemplateDataTests {
    struct Golden {
        var templates: [String: String]
        var records: [[String: Any]]
        var endOfTurnId: Int
    }

    static func golden() throws -> Golden {
        let url = TestPaths.fixtures.appendingPathComponent("chat_templates/golden.json")
        let root = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let data = try #require(root["chat_data"] as? [String: Any])
        return Golden(templates: try #require(root["templates"] as? [String: String]),
                      records: try #require(data["records"] as? [[String: Any]]),
                      endOfTurnId: try #require(data["end_of_turn_id"] as? Int))
    }

    static func example(_ r: [String: Any]) -> Example {
        .instruction(r["instruction"] as! String, input: r["input"] as! String, output: r["output"] as! String,
                     answer: r["answer"] as? String, location: RecordLocation(file: "golden.json", index: 0))
    }

    /// A toy chat template over `ToyTokenizer`, whose `<s>` / `</s>` are special tokens 1 / 2.
    static let toyChat = PromptTemplate.Chat(
        template: try! ChatTemplate(source: """
            {{- bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}
            {% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}
            """),
        tokenizer: ToyTokenizer())

    // MARK: Real template and tokenizer (SmolLM2)

    @Test(.requires(Assets.shared)) func smolLM2IdsAndMaskMatchApplyChatTemplate() throws {
        let dir = TestPaths.shared("data/tokenizers/smollm2")
        let tokenizer = try loadTokenizer(from: dir)
        let g = try Self.golden()
        let chat = PromptTemplate.Chat(template: try ChatTemplate(source: try #require(g.templates["smollm2-135m-instruct"])),
                                       tokenizer: tokenizer)
        #expect(chat.bosToken == "<|im_start|>" && chat.eosToken == "<|im_end|>")
        #expect(chat.endOfTurnTokenId(tokenizer: tokenizer) == g.endOfTurnId)
        #expect(g.records.count == 3)
        for r in g.records {
            let e = Self.example(r)
            let promptIds = r["prompt_ids"] as! [Int], fullIds = r["full_ids"] as! [Int]
            let rendered = try PromptTemplate.chat.render(e, chat: chat)
            #expect(rendered.prompt == r["prompt"] as! String)
            #expect(rendered.full == r["full"] as! String)
            // The assistant turn is just the output (no \boxed answer), closed by the template.
            #expect(rendered.target == (r["output"] as! String) + "<|im_end|>\n")

            let t = try tokenize(e, template: .chat, tokenizer: tokenizer, options: TokenizeOptions(maxLength: 512), chat: chat)
            #expect(t.inputIds == fullIds)
            #expect(t.promptLength == promptIds.count)
            #expect(t.labels == Array(repeating: ignoreIndex, count: promptIds.count) + fullIds[promptIds.count...])
            #expect(try evalPromptIds(e, template: .chat, tokenizer: tokenizer, chat: chat) == promptIds)

            // Truncation keeps the first maxLength ids of the same sequence (no EOS re-added).
            let cut = try tokenize(e, template: .chat, tokenizer: tokenizer, options: TokenizeOptions(maxLength: promptIds.count + 3), chat: chat)
            #expect(cut.inputIds == Array(fullIds.prefix(promptIds.count + 3)))
            #expect(cut.targetCount == 3)
        }
    }

    /// The end-of-turn token of the real templates, in their tokenizers.
    @Test(.requires(Assets.shared)) func endOfTurnTokens() throws {
        let g = try Self.golden()
        func check(_ template: String, _ tokenizerPath: String, _ token: String) throws {
            let url = TestPaths.shared("data/tokenizers/" + tokenizerPath)
            let tokenizer = try loadTokenizer(from: url)
            let chat = PromptTemplate.Chat(template: try ChatTemplate(source: try #require(g.templates[template])), tokenizer: tokenizer)
            let id = try #require(chat.endOfTurnTokenId(tokenizer: tokenizer), "\(template)")
            #expect(tokenizer.token(id) == token, "\(template)")
        }
        try check("qwen3-0.6b", "qwen2/tokenizer.json", "<|im_end|>")
        try check("qwen2.5-7b-instruct", "qwen2/tokenizer.json", "<|im_end|>")
        try check("llama-3.1-8b-instruct", "llama3-tiktoken/tokenizer.model", "<|eot_id|>")
        try check("llama-3.2-3b-instruct", "llama3-tiktoken/tokenizer.model", "<|eot_id|>")
    }

    // MARK: Rules (no files needed)

    @Test func recordBecomesUserAndAssistantMessages() throws {
        let toy = ToyTokenizer()
        let withInput = Example.instruction("Add.", input: "2 and 3", output: "5", answer: "5")
        let r = try PromptTemplate.chat.render(withInput, chat: Self.toyChat)
        #expect(r.prompt == "<s><user>Add.\n\n2 and 3</s>\n<assistant>")
        #expect(r.full == "<s><user>Add.\n\n2 and 3</s>\n<assistant>5</s>\n")
        #expect(r.mode == .chat)
        #expect(try PromptTemplate.chat.evalPrompt(for: withInput, chat: Self.toyChat) == r.prompt)
        #expect(PromptTemplate.chat.stopStrings(for: withInput).isEmpty)

        // No special tokens added by the tokenizer: the one BOS is the template's, no EOS appended.
        let t = try tokenize(withInput, template: .chat, tokenizer: toy, chat: Self.toyChat)
        #expect(t.inputIds == (try toy.encode(r.full, addSpecialTokens: false)))
        #expect(t.inputIds.first == 1 && t.inputIds.filter { $0 == 1 }.count == 1)
        #expect(t.promptLength == (try toy.encode(r.prompt, addSpecialTokens: false)).count)
        #expect(try evalPromptIds(withInput, template: .chat, tokenizer: toy, chat: Self.toyChat) == toy.encode(r.prompt, addSpecialTokens: false))
        #expect(Self.toyChat.endOfTurnTokenId(tokenizer: toy) == 2)

        // An empty input adds nothing; GSM8K and CSQA records are instructions too.
        let gsm8k = Example(kind: .gsm8k, instruction: "Q?", output: "Work.", answer: "7")
        #expect(try PromptTemplate.chat.render(gsm8k, chat: Self.toyChat).full == "<s><user>Q?</s>\n<assistant>Work.</s>\n")
        for kind in [Example.Kind.instruction, .gsm8k, .csqa] { #expect(PromptTemplate.chat.mode(for: kind) == .chat) }
        #expect(PromptTemplate.chat.mode(for: .text) == .raw)
        #expect(PromptTemplate.chat.mode(for: .tokenized) == .pretokenized)
        #expect(try PromptTemplate(name: "chat") == .chat)
    }

    @Test func missingChatTemplateIsAClearError() throws {
        let e = Example.instruction("Q", output: "A", answer: nil)
        let expected = DataError.tokenizer("template `chat` needs the model's chat template (chat_template.jinja, `chat_template` in "
                                           + "tokenizer_config.json or GGUF `tokenizer.chat_template`), and this model has none")
        #expect(throws: expected) { try PromptTemplate.chat.render(e) }
        #expect(throws: expected) { try PromptTemplate.chat.evalPrompt(for: e) }
        // Not skipped record by record: the whole data set fails at once, even when not strict.
        #expect(throws: expected) { try prepareExamples([e], template: .chat, tokenizer: ToyTokenizer(), strict: false) }
    }

    @Test func templateThatRewritesEarlierTurnsNamesTheRecord() throws {
        let rewriting = PromptTemplate.Chat(template: try ChatTemplate(source: """
            {% for m in messages %}{% if not add_generation_prompt and loop.first %}[past] {% endif %}{{ m.content }}|{% endfor %}
            """))
        let loc = RecordLocation(file: "train.jsonl", line: 4)
        let e = Example.instruction("Q", output: "A", answer: nil, location: loc)
        #expect(throws: DataError.templateMismatch(loc, template: "chat", kind: "instruction", reason:
            "the chat template renders [user, assistant] so that it does not start with its rendering of [user] + generation prompt "
            + "(it rewrites earlier turns), so the prompt cannot be masked")) { try PromptTemplate.chat.render(e, chat: rewriting) }
    }

    @Test func templateExceptionsSkipTheRecordOrFailInStrictMode() throws {
        let picky = PromptTemplate.Chat(template: try ChatTemplate(source: """
            {% for m in messages %}{% if 'forbidden' in m.content %}{{ raise_exception('no forbidden words') }}{% endif %}{{ m.content }}{% endfor %}
            """))
        let ok = Example.instruction("fine", output: "A", answer: nil)
        let bad = Example.instruction("forbidden", output: "A", answer: nil, location: RecordLocation(file: "d.json", index: 1))
        let prepared = try prepareExamples([ok, bad], template: .chat, tokenizer: ToyTokenizer(), chat: picky)
        #expect(prepared.skipped == 1 && prepared.examples.count == 1)
        #expect(throws: DataError.templateMismatch(bad.location, template: "chat", kind: "instruction", reason:
            "chat template line 1, column 60: raise_exception: no forbidden words")) {
            try prepareExamples([ok, bad], template: .chat, tokenizer: ToyTokenizer(), strict: true, chat: picky)
        }
    }
}
