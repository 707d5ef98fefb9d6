import Foundation
import Testing
@testable import Training

@Suite("Prompt templates")
struct TemplateTests {
    let math = Example.instruction("  Julia has 3 apples.\n", input: "", output: "\nA: 3 + 1 = 4. The answer is 4.", answer: " 4.0 ")
    let withInput = Example.instruction("Add the numbers.", input: "2 and 3", output: "5", answer: "5")

    // MARK: Exact text

    @Test func ndlinearText() throws {
        let r = try PromptTemplate.ndlinear.render(math)
        #expect(r.mode == .ndlinear)
        #expect(r.prompt == "### Instruction:\nJulia has 3 apples.\n\n### Solution:\n")
        // A literal backslash: the reference's typo (`\b` = backspace) is not reproduced.
        #expect(r.target == "A: 3 + 1 = 4. The answer is 4.\n\n### Final Answer:\n\\boxed{4.0}")
        #expect(r.target.unicodeScalars.contains("\\"))
        #expect(!r.target.unicodeScalars.contains("\u{08}"))
        // `input` is ignored by the reference ndlinear template.
        let ri = try PromptTemplate.ndlinear.render(withInput)
        #expect(ri.prompt == "### Instruction:\nAdd the numbers.\n\n### Solution:\n")
        #expect(!ri.full.contains("2 and 3"))
        #expect(try PromptTemplate.ndlinear.evalPrompt(for: math) == r.prompt)
    }

    @Test func alpacaText() throws {
        let r = try PromptTemplate.alpaca.render(math)
        #expect(r.prompt == "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n  Julia has 3 apples.\n\n\n### Response:\n")
        #expect(r.target == "\nA: 3 + 1 = 4. The answer is 4.")   // not stripped, as LLM-Adapters
        let ri = try PromptTemplate.alpaca.render(withInput)
        #expect(ri.full == "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n5")
        #expect(try PromptTemplate.alpaca.evalPrompt(for: withInput) == ri.prompt)
    }

    @Test func llmAdaptersTextIsByteExact() throws {
        let pad = String(repeating: " ", count: 16)
        // finetune.py generate_prompt (no input): two spaces after "request.", 16-space blank line.
        let r = try PromptTemplate.llmAdapters.render(Example.instruction("Q?", output: "A.", answer: nil))
        #expect(r.full == "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n"
                + "\(pad)### Instruction:\n\(pad)Q?\n\(pad)\n\(pad)### Response:\n\(pad)A.")
        // finetune.py with input: one space after "request.".
        let ri = try PromptTemplate.llmAdapters.render(withInput)
        #expect(ri.full == "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request. \n\n"
                + "\(pad)### Instruction:\n\(pad)Add the numbers.\n\(pad)\n\(pad)### Input:\n\(pad)2 and 3\n\(pad)\n\(pad)### Response:\n\(pad)5")
        // evaluate.py generate_prompt: one space (no input) / none (input), empty blank lines.
        #expect(try PromptTemplate.llmAdapters.evalPrompt(for: Example.instruction("Q?", output: "", answer: nil))
                == "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n\n"
                + "\(pad)### Instruction:\n\(pad)Q?\n\n\(pad)### Response:\n\(pad)")
        #expect(try PromptTemplate.llmAdapters.evalPrompt(for: withInput)
                == "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n"
                + "\(pad)### Instruction:\n\(pad)Add the numbers.\n\n\(pad)### Input:\n\(pad)2 and 3\n\n\(pad)### Response:\n\(pad)")
    }

    @Test func stopStrings() {
        #expect(PromptTemplate.ndlinear.stopStrings(for: .instruction) == ["### Instruction", "### Solution"])
        #expect(PromptTemplate.alpaca.stopStrings(for: .instruction).contains("### Response"))
        #expect(PromptTemplate.auto.stopStrings(for: .text) == [])
        // No stop string occurs inside a well-formed ndlinear target.
        let target = (try? PromptTemplate.ndlinear.render(math).target) ?? ""
        for s in PromptTemplate.ndlinear.stopStrings(for: .instruction) { #expect(!target.contains(s)) }
    }

    @Test func templateNames() throws {
        #expect(try PromptTemplate(name: "LLM_Adapters") == .llmAdapters)
        #expect(try PromptTemplate(name: "auto") == .auto)
        #expect(throws: DataError.unknownTemplate("chatml")) { try PromptTemplate(name: "chatml") }
    }

    @Test func autoPicksByRecordKind() throws {
        #expect(PromptTemplate.auto.mode(for: .instruction) == .ndlinear)
        #expect(PromptTemplate.auto.mode(for: .gsm8k) == .ndlinear)
        #expect(PromptTemplate.auto.mode(for: .csqa) == .ndlinear)
        #expect(PromptTemplate.auto.mode(for: .text) == .raw)
        #expect(PromptTemplate.auto.mode(for: .tokenized) == .pretokenized)
        #expect(PromptTemplate.alpaca.mode(for: .text) == .raw)
        let plainAlpaca = Example.instruction("Name a color.", output: "Blue.", answer: nil)
        #expect(PromptTemplate.auto.mode(for: plainAlpaca) == .alpaca)
        #expect(PromptTemplate.ndlinear.mode(for: plainAlpaca) == .ndlinear)
        #expect(PromptTemplate.auto.stopStrings(for: plainAlpaca) == PromptTemplate.alpaca.stopStrings(for: .instruction))
        #expect(try PromptTemplate.auto.render(plainAlpaca) == PromptTemplate.alpaca.render(plainAlpaca))
    }

    @Test func renderErrors() throws {
        #expect(throws: DataError.self) { try PromptTemplate.raw.render(math) }
        #expect(throws: DataError.self) { try PromptTemplate.ndlinear.render(Example.instruction("q", output: "o", answer: nil)) }
        #expect(throws: DataError.self) { try PromptTemplate.alpaca.render(Example.tokenized([1, 2])) }
    }

    // MARK: Tokenization and masking (toy tokenizer: one id per scalar, BOS 1, EOS 2)

    @Test func ndlinearTokensAreOneTextPlusEOS() throws {
        let tok = ToyTokenizer()
        let r = try PromptTemplate.ndlinear.render(math)
        let t = try tokenize(math, template: .ndlinear, tokenizer: tok)
        #expect(t.inputIds == [1] + ToyTokenizer.plain(r.prompt + r.target) + [2])
        // Masked: BOS + the prompt (len(tokenizer(prompt)) counts the BOS, as in the reference).
        let p = 1 + r.prompt.unicodeScalars.count
        #expect(t.promptLength == p)
        #expect(t.labels == [Int](repeating: -100, count: p) + Array(t.inputIds[p...]))
        let unmasked = try tokenize(math, template: .ndlinear, tokenizer: tok, options: TokenizeOptions(maskPrompt: false))
        #expect(unmasked.labels == unmasked.inputIds)
        let noBOS = try tokenize(math, template: .ndlinear, tokenizer: tok, options: TokenizeOptions(addSpecialTokens: false))
        #expect(noBOS.inputIds == Array(t.inputIds.dropFirst()))
        #expect(noBOS.promptLength == p - 1)
    }

    @Test func seamMergesAreMaskedByPromptLengthAlone() throws {
        // "\n\n" is one token: prompt "...Response:\n" + output "\nA..." merges across the seam,
        // so the joint text has one token fewer than the two parts; the reference masks
        // len(tokenize(prompt)) tokens of the joint text anyway (covering the merged token and
        // the first target token).
        let tok = ToyTokenizer(merges: ["\n\n": 5])
        let ex = Example.instruction("Q", output: "\nA", answer: "x")
        let r = try PromptTemplate.alpaca.render(ex)
        let t = try tokenize(ex, template: .alpaca, tokenizer: tok)
        let joint = try tok.encode(r.full, addSpecialTokens: true)
        let promptAlone = try tok.encode(r.prompt, addSpecialTokens: true)
        let separate = promptAlone + (try tok.encode(r.target, addSpecialTokens: false))
        #expect(joint.count == separate.count - 1)
        #expect(t.inputIds == joint + [2])
        #expect(t.promptLength == promptAlone.count)
        #expect(t.labels.prefix(promptAlone.count).allSatisfy { $0 == -100 })
        #expect(Array(t.labels.suffix(from: promptAlone.count)) == Array(t.inputIds.suffix(from: promptAlone.count)))
    }

    @Test func eosHandlingAndTruncation() throws {
        let tok = ToyTokenizer()
        // ndlinear: a text that already ends with the EOS string gets no second EOS.
        let ended = Example.instruction("q", output: "o", answer: "a")
        var e2 = ended
        e2.answer = "a}</s"   // not the EOS string: EOS appended
        let t2 = try tokenize(e2, template: .ndlinear, tokenizer: tok)
        #expect(t2.inputIds.last == 2)
        let text = Example.text("hello</s>")
        let tt = try tokenize(text, template: .raw, tokenizer: tok)
        #expect(tt.inputIds == [1] + ToyTokenizer.plain("hello") + [2])

        // ndlinear truncation happens after the EOS is added: a cut sequence has no EOS.
        let full = try tokenize(ended, template: .ndlinear, tokenizer: tok)
        let cut = try tokenize(ended, template: .ndlinear, tokenizer: tok, options: TokenizeOptions(maxLength: full.inputIds.count - 1))
        #expect(cut.inputIds == Array(full.inputIds.dropLast()))
        #expect(cut.labels == Array(full.labels.dropLast()))

        // LLM-Adapters: truncate, then append EOS only if there is room.
        let a = try tokenize(ended, template: .alpaca, tokenizer: tok)
        let n = a.inputIds.count   // includes the EOS
        let exact = try tokenize(ended, template: .alpaca, tokenizer: tok, options: TokenizeOptions(maxLength: n))
        #expect(exact.inputIds == a.inputIds)
        let short = try tokenize(ended, template: .alpaca, tokenizer: tok, options: TokenizeOptions(maxLength: n - 1))
        #expect(short.inputIds == Array(a.inputIds.dropLast()))
        #expect(short.inputIds.last != 2)
        let shorter = try tokenize(ended, template: .alpaca, tokenizer: tok, options: TokenizeOptions(maxLength: n - 3))
        #expect(shorter.inputIds == Array(a.inputIds.prefix(n - 3)))

        // A prompt longer than maxLength: everything masked, nothing to train on.
        let tiny = try tokenize(ended, template: .ndlinear, tokenizer: tok, options: TokenizeOptions(maxLength: 5))
        #expect(tiny.inputIds.count == 5 && tiny.labels.allSatisfy { $0 == -100 })
        #expect(tiny.targetCount == 0)

        #expect(throws: DataError.self) { try tokenize(ended, template: .ndlinear, tokenizer: ToyTokenizer(hasEOS: false)) }
        #expect(throws: DataError.self) { try tokenize(ended, template: .ndlinear, tokenizer: tok, options: TokenizeOptions(maxLength: 0)) }
    }

    @Test func rawTextMasksOnlyTheBOS() throws {
        let t = try tokenize(Example.text("  hi \n"), template: .auto, tokenizer: ToyTokenizer())
        #expect(t.inputIds == [1] + ToyTokenizer.plain("hi") + [2])
        #expect(t.labels == [-100] + ToyTokenizer.plain("hi") + [2])
        let q = try tokenize(Example.text("hi"), template: .raw, tokenizer: ToyTokenizer(addsBOS: false))
        #expect(q.labels == q.inputIds)
    }

    @Test func pretokenizedRecordsNeedNoTokenizer() throws {
        let e = Example.tokenized([1, 5, 6, 7], labels: [-100, -100, 6, 7])
        let t = try tokenize(e, template: .ndlinear, tokenizer: nil)
        #expect(t.inputIds == [1, 5, 6, 7] && t.labels == [-100, -100, 6, 7])
        let d = try tokenize(Example.tokenized([1, 5, 6]), template: .auto, tokenizer: nil, options: TokenizeOptions(maxLength: 2))
        #expect(d.inputIds == [1, 5] && d.labels == [1, 5])
        #expect(throws: DataError.self) { try tokenize(math, template: .ndlinear, tokenizer: nil) }
    }

    @Test func evalPromptIdsUseTheTokenizerDefaults() throws {
        let ids = try evalPromptIds(math, template: .ndlinear, tokenizer: ToyTokenizer())
        #expect(ids == [1] + ToyTokenizer.plain("### Instruction:\nJulia has 3 apples.\n\n### Solution:\n"))
    }

    @Test func prepareSkipsDropsAndWarns() throws {
        let records = [
            math,
            Example.instruction("no answer", output: "o", answer: nil),   // ndlinear cannot render
            withInput,                                                    // input ignored: warning
            Example.text("plain text"),
        ]
        let p = try prepareExamples(records, template: .ndlinear, tokenizer: ToyTokenizer())
        #expect(p.examples.count == 3)
        #expect(p.sourceIndex == [0, 2, 3])
        #expect(p.skipped == 1)
        #expect(p.warnings.contains { $0.contains("ignores") })
        #expect(throws: DataError.self) { try prepareExamples(records, template: .ndlinear, tokenizer: ToyTokenizer(), strict: true) }
        // `auto` renders the answer-less instruction record with alpaca instead of skipping it.
        let auto = try prepareExamples(records, template: .auto, tokenizer: ToyTokenizer(), strict: true)
        #expect(auto.examples.count == 4 && auto.skipped == 0)

        let dropped = try prepareExamples([math], template: .ndlinear, tokenizer: ToyTokenizer(), options: TokenizeOptions(maxLength: 4))
        #expect(dropped.examples.isEmpty && dropped.droppedNoTarget == 1)
    }
}
