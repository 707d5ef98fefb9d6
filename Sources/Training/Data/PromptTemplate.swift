import Foundation
import Tokenize

// MARK: - Templates

/// The prompt templates offered by name (FORMATS.md "Prompt templates", CLI `--template`).
///
/// Reference facts each template follows (read from the reference repositories):
///
/// **`ndlinear`** — ensemble-core/NdLinear-LoRA `ndlinear_lora_finetune.py` (commit 054d7bb),
/// class `GeneralTextDataset`:
/// - Only `instruction`, `output` and `answer` are used (the record must have all three);
///   the `input` field is ignored entirely — it appears nowhere in the text.
/// - Each of the three is `str(...).strip()`-ed, then
///   prompt = `"### Instruction:\n{instruction}\n\n### Solution:\n"` and
///   target = `"{output}\n\n### Final Answer:\n\boxed{{answer}}"`. (In the script the f-string's
///   `\b` is a backspace character, a typo; we emit the intended literal `\boxed{...}`.)
/// - The EOS is appended as the *string* `tokenizer.eos_token` unless the text already ends with
///   it; the text is then tokenized once with the tokenizer's default special tokens (BOS for
///   Llama / SentencePiece, nothing for Qwen) and truncated to `max_length`, so a truncated
///   example loses its EOS. Because added/special tokens are split out of the text before the
///   model tokenizer runs, appending the string yields exactly one EOS id after the unchanged
///   tokens of the text; we append that id.
/// - The masked prefix is `len(tokenizer(prompt))` — also with the default special tokens, so
///   the BOS is counted (and masked).
/// - A `{text}` record (`elif "text" in item`) is stripped, gets the EOS the same way, and has an
///   empty prompt, so only `len(tokenizer(""))` tokens (the BOS, if any) are masked.
///
/// **`alpaca`** — the standard Alpaca wording that LLM-Adapters uses, with clean whitespace:
/// `"Below is an instruction that describes a task[, paired with an input that provides further
/// context]. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n[### Input:\n{input}\n\n]### Response:\n{output}"`.
/// Tokenized and masked as LLM-Adapters does (below). Fields are not stripped.
///
/// **`llm-adapters`** — byte-exact AGI-Edgerunners/LLM-Adapters (`finetune.py` @91770ab,
/// `evaluate.py` @32e03af, `commomsense_evaluate.py` @e0efdc0; an older `finetune.py`, @063e3d4,
/// even had `  # noqa: E501` inside the string). Its `finetune.py`
/// `generate_prompt` is an indented triple-quoted f-string, so the text really contains a
/// trailing space after "request." (two in the no-input variant), 16 spaces before every
/// `### ...` line and field, and blank lines made of 16 spaces. Its `evaluate.py` /
/// `commomsense_evaluate.py` `generate_prompt` (the eval prompt) differs again: one trailing
/// space in the no-input variant, none in the input variant, and truly empty blank lines.
/// LLM-Adapters `finetune.py` `generate_and_tokenize_prompt`: `tokenize(full_prompt)` with the
/// default special tokens (BOS), truncation to `cutoff_len`, then the EOS *id* appended when the
/// last id is not already EOS and the length is below `cutoff_len`; with
/// `train_on_inputs=False` the first `len(tokenize(generate_prompt({..., "output": ""}),
/// add_eos_token=False))` labels become -100. (LLM-Adapters' own default is
/// `train_on_inputs=True`, i.e. no masking; our default is to mask, `maskPrompt`.)
/// The eval scripts call `evaluate(instruction)` with no `input`, so their prompt is always the
/// no-input variant; we include `input` when a record has one.
///
/// **`raw`** — `{text}` records: stripped, all tokens trained, BOS/EOS as the `ndlinear`
/// reference's text branch adds them.
///
/// **`chat`** — the model's own Jinja chat template (`Chat`, from `chat_template.jinja`,
/// tokenizer_config.json or GGUF metadata), rendered as transformers' `apply_chat_template`
/// does. An instruction record (GSM8K and CSQA converted as above) becomes one user message,
/// `instruction`, or `instruction + "\n\n" + input` when `input` is non-empty (no stripping),
/// and, for training, one assistant message, `output` (an `answer` is not appended: the chat
/// format is the format). prompt = render([user], add_generation_prompt=True); full =
/// render([user, assistant]); the target is `full` minus the `prompt` prefix (a template that
/// rewrites earlier turns so that `full` does not start with `prompt` is an error naming the
/// record). The text already holds BOS and end-of-turn tokens, so it is tokenized without
/// special tokens and no EOS is appended (`apply_chat_template(tokenize=True)`); generation
/// stops at the template's end-of-turn token (`Chat.endOfTurnTokenId`).
///
/// **`auto`** — per record: pre-tokenized → used as is; `{text}` → `raw`; everything else
/// (instruction, GSM8K converted to instruction/output/answer, CSQA) → `ndlinear`, except an
/// instruction record without `answer` (plain Alpaca data), which `ndlinear` cannot render
/// (the reference skips it) → `alpaca`.
public enum PromptTemplate: String, CaseIterable, Sendable {
    case ndlinear
    case alpaca
    case llmAdapters = "llm-adapters"
    case raw
    case chat
    case auto

    /// Parses a template name (case-insensitive; `_` and `-` are interchangeable).
    public init(name: String) throws {
        guard let t = PromptTemplate.named(name) else { throw DataError.unknownTemplate(name) }
        self = t
    }

    /// How one record is turned into tokens after `auto` and the record kind are resolved.
    public enum Mode: String, Sendable, Equatable {
        case ndlinear, alpaca, llmAdapters = "llm-adapters", raw, chat, pretokenized
        /// A conversation (`messages`, conversational prompt/completion): rendered whole by the
        /// chat template, trained on its assistant spans (`ChatRecords`).
        case conversation
        /// TRL's string prompt/completion: prompt + completion + EOS tokenized as one text,
        /// the prompt's tokens masked.
        case promptCompletion = "prompt-completion"

        /// The rendered text already holds the special tokens (a chat template writes BOS and
        /// turn markers), so it is tokenized with `addSpecialTokens: false` and gets no EOS.
        public var textHasSpecialTokens: Bool { self == .chat || self == .conversation }
    }

    /// The mode used for `example`: `mode(for: example.kind)`, except that `auto` renders an
    /// instruction record that has no `answer` with `alpaca`.
    public func mode(for example: Example) -> Mode {
        if example.kind == .promptCompletion { return example.conversation == nil ? .promptCompletion : .conversation }
        let m = mode(for: example.kind)
        if self == .auto, m == .ndlinear, example.answer == nil { return .alpaca }
        return m
    }

    /// The mode used for a record of `kind` (that has an answer): pre-tokenized records are
    /// always used as is, and `{text}` records always go through `raw` (as the ndlinear
    /// reference's text branch does); `raw` on an instruction-style record is an error at
    /// render time.
    public func mode(for kind: Example.Kind) -> Mode {
        switch kind {
        case .tokenized: return .pretokenized
        case .text: return .raw
        case .messages: return .conversation
        case .promptCompletion: return .promptCompletion
        case .instruction, .gsm8k, .csqa:
            switch self {
            case .ndlinear, .auto: return .ndlinear
            case .alpaca: return .alpaca
            case .llmAdapters: return .llmAdapters
            case .raw: return .raw
            case .chat: return .chat
            }
        }
    }

    // MARK: Rendering

    /// The text of one record split into the masked prompt and the trained target (the EOS is
    /// added at tokenization, not here; `chat` text carries its own end-of-turn token).
    public struct Rendered: Sendable, Equatable {
        public var prompt: String
        public var target: String
        public var mode: Mode
        /// prompt + target, the text tokenized as one piece.
        public var full: String { prompt + target }
    }

    /// Renders a record for training. Throws `templateMismatch` when the record lacks what the
    /// template needs (`ndlinear` needs an `answer`; `raw` needs a `{text}` record; `chat` needs
    /// a chat template whose full conversation extends its prompt) and for pre-tokenized
    /// records, which have no text; `DataError.tokenizer` for `chat` without a chat template.
    public func render(_ example: Example, chat: Chat? = nil) throws -> Rendered {
        let mode = mode(for: example)
        switch mode {
        case .chat:
            let (prompt, target) = try Self.requireChat(chat).texts(for: example, template: rawValue)
            return Rendered(prompt: prompt, target: target, mode: .chat)
        case .promptCompletion:
            return Rendered(prompt: example.prompt, target: example.completion, mode: .promptCompletion)
        case .conversation:
            throw DataError.templateMismatch(example.location, template: rawValue, kind: example.kind.rawValue,
                                             reason: "a conversation is not split into one prompt and one target: `tokenize` trains its assistant turns")
        case .pretokenized:
            throw DataError.templateMismatch(example.location, template: rawValue, kind: example.kind.rawValue,
                                             reason: "pre-tokenized records have no text to render")
        case .raw:
            guard example.kind == .text else {
                throw DataError.templateMismatch(example.location, template: rawValue, kind: example.kind.rawValue,
                                                 reason: "`raw` needs {text} records; use ndlinear, alpaca or auto")
            }
            return Rendered(prompt: "", target: PyText.strip(example.text), mode: .raw)
        case .ndlinear:
            guard let answer = example.answer else {
                throw DataError.templateMismatch(example.location, template: rawValue, kind: example.kind.rawValue,
                                                 reason: "`ndlinear` needs an `answer` field (the reference skips such records)")
            }
            return Rendered(prompt: Self.ndlinearPrompt(instruction: example.instruction),
                            target: PyText.strip(example.output) + "\n\n### Final Answer:\n\\boxed{" + PyText.strip(answer) + "}",
                            mode: .ndlinear)
        case .alpaca, .llmAdapters:
            let exact = mode == .llmAdapters
            return Rendered(prompt: Self.alpacaTrainingPrompt(instruction: example.instruction, input: example.input, exact: exact),
                            target: example.output, mode: mode)
        }
    }

    /// The prompt a model is given at evaluation time (the prompt part only; generation
    /// continues from here). `ndlinear`: the training prompt. `alpaca`: the training prompt
    /// with an empty output. `llm-adapters`: LLM-Adapters `evaluate.py`'s `generate_prompt`,
    /// whose whitespace differs from its `finetune.py`. `raw`: the stripped text. `chat`: the
    /// rendered user turn with the generation prompt (the training prompt).
    public func evalPrompt(for example: Example, chat: Chat? = nil) throws -> String {
        switch mode(for: example) {
        case .chat:
            return try Self.requireChat(chat).texts(for: example, template: rawValue, withAssistant: false).prompt
        case .conversation:
            return try ChatRecords.evalPrompt(example.conversation!, chat: try Self.requireChat(chat))
        case .promptCompletion:
            return example.prompt
        case .pretokenized:
            throw DataError.templateMismatch(example.location, template: rawValue, kind: example.kind.rawValue,
                                             reason: "pre-tokenized records have no prompt text")
        case .raw:
            guard example.kind == .text else {
                throw DataError.templateMismatch(example.location, template: rawValue, kind: example.kind.rawValue,
                                                 reason: "`raw` needs {text} records")
            }
            return PyText.strip(example.text)
        case .ndlinear:
            return Self.ndlinearPrompt(instruction: example.instruction)
        case .alpaca:
            return Self.alpacaTrainingPrompt(instruction: example.instruction, input: example.input, exact: false)
        case .llmAdapters:
            return Self.llmAdaptersEvalPrompt(instruction: example.instruction, input: example.input)
        }
    }

    /// Strings that mark the start of a new template section; generation stops at the first
    /// one (and the text from it on is dropped). They are chosen so that none occurs in a
    /// well-formed target: `### Final Answer` is part of the ndlinear target and not listed.
    public func stopStrings(for example: Example) -> [String] {
        stopStrings(for: mode(for: example))
    }

    /// Stop strings for a record of `kind` (that has an answer).
    public func stopStrings(for kind: Example.Kind) -> [String] {
        stopStrings(for: mode(for: kind))
    }

    /// Stop strings of a resolved mode.
    public func stopStrings(for mode: Mode) -> [String] {
        switch mode {
        case .ndlinear: return ["### Instruction", "### Solution"]
        case .alpaca, .llmAdapters: return ["### Instruction", "### Input", "### Response"]
        case .raw, .chat, .pretokenized, .conversation, .promptCompletion: return []
        }
    }

    /// `chat`, or the error saying the model has no chat template.
    static func requireChat(_ chat: Chat?) throws -> Chat {
        guard let chat else {
            throw DataError.tokenizer("template `chat` needs the model's chat template (chat_template.jinja, `chat_template` in "
                                      + "tokenizer_config.json or GGUF `tokenizer.chat_template`), and this model has none")
        }
        return chat
    }

    // MARK: The chat template

    /// The model's chat template with the special-token strings transformers renders it with
    /// (the tokenizer's `bos_token` / `eos_token`; an absent one is undefined in the template).
    public struct Chat: Sendable, Equatable {
        public var template: ChatTemplate
        public var bosToken: String?
        public var eosToken: String?
        /// The text of the end-of-turn token (`<|im_end|>`, `<|eot_id|>`; `endOfTurnTokenId`),
        /// trained with each assistant message of a conversation; nil when there is none.
        public var endOfTurn: String?

        public init(template: ChatTemplate, bosToken: String? = nil, eosToken: String? = nil, endOfTurn: String? = nil) {
            self.template = template
            self.bosToken = bosToken
            self.eosToken = eosToken
            self.endOfTurn = endOfTurn
        }

        /// With the tokenizer's BOS and EOS token strings and the template's end-of-turn token.
        public init(template: ChatTemplate, tokenizer: (any Tokenizer)?) {
            self.init(template: template, bosToken: tokenizer?.bosTokenId.flatMap { tokenizer?.token($0) },
                      eosToken: tokenizer?.eosTokenId.flatMap { tokenizer?.token($0) })
            if let tokenizer, let id = endOfTurnTokenId(tokenizer: tokenizer) {
                endOfTurn = tokenizer.decode([id], skipSpecialTokens: false)
            }
        }

        func render(_ messages: [ChatMessage], generationPrompt: Bool) throws -> String {
            try template.render(messages: messages, addGenerationPrompt: generationPrompt, bosToken: bosToken, eosToken: eosToken)
        }

        /// The user message of a record: `instruction`, plus `"\n\n" + input` when there is one.
        static func userMessage(_ example: Example) -> ChatMessage {
            ChatMessage(role: "user", content: example.instruction + (example.input.isEmpty ? "" : "\n\n" + example.input))
        }

        /// prompt = [user] with the generation prompt; target = [user, assistant `output`]
        /// without it, minus the prompt prefix (empty when `withAssistant` is false). Template
        /// failures and a conversation that does not start with the prompt are
        /// `templateMismatch` errors naming the record.
        func texts(for example: Example, template name: String, withAssistant: Bool = true) throws -> (prompt: String, target: String) {
            func mismatch(_ reason: String) -> DataError {
                DataError.templateMismatch(example.location, template: name, kind: example.kind.rawValue, reason: reason)
            }
            let user = Self.userMessage(example)
            do {
                let prompt = try render([user], generationPrompt: true)
                guard withAssistant else { return (prompt, "") }
                let full = try render([user, ChatMessage(role: "assistant", content: example.output)], generationPrompt: false)
                guard full.unicodeScalars.starts(with: prompt.unicodeScalars) else {
                    throw mismatch("the chat template renders [user, assistant] so that it does not start with its rendering of "
                                   + "[user] + generation prompt (it rewrites earlier turns), so the prompt cannot be masked")
                }
                return (prompt, String(String.UnicodeScalarView(full.unicodeScalars.dropFirst(prompt.unicodeScalars.count))))
            } catch let error as ChatTemplateError where !error.isLimit {
                throw mismatch("\(error)")
            }   // a runaway template (a limit reached) stops the run: every record would hit it
        }

        /// The token that ends an assistant turn (`<|im_end|>`, `<|eot_id|>`): what the template
        /// writes right after the assistant's text, when that starts with one special token of
        /// `tokenizer` (an id that `decode(skipSpecialTokens: true)` drops). Nil otherwise.
        public func endOfTurnTokenId(tokenizer: any Tokenizer) -> Int? {
            let probe = "FINETUNE_END_OF_TURN_PROBE"
            let messages = [ChatMessage(role: "user", content: "Hi"), ChatMessage(role: "assistant", content: probe)]
            guard let text = try? render(messages, generationPrompt: false),
                  let end = text.range(of: probe, options: .backwards)?.upperBound,
                  let id = try? tokenizer.encode(String(text[end...]), addSpecialTokens: false).first else { return nil }
            let piece = tokenizer.decode([id], skipSpecialTokens: false)
            guard !piece.isEmpty, tokenizer.decode([id], skipSpecialTokens: true).isEmpty,
                  text[end...].hasPrefix(piece) else { return nil }
            return id
        }
    }

    // MARK: The exact strings

    static func ndlinearPrompt(instruction: String) -> String {
        "### Instruction:\n" + PyText.strip(instruction) + "\n\n### Solution:\n"
    }

    /// `input` counts as present when non-empty (Python truthiness of `data_point["input"]`).
    static func alpacaTrainingPrompt(instruction: String, input: String, exact: Bool) -> String {
        if exact {
            // LLM-Adapters finetune.py generate_prompt, with output "" (its user prompt).
            let pad = String(repeating: " ", count: 16)
            if !input.isEmpty {
                return "Below is an instruction that describes a task, paired with an input that provides further context. "
                    + "Write a response that appropriately completes the request. \n\n"
                    + pad + "### Instruction:\n" + pad + instruction + "\n" + pad + "\n"
                    + pad + "### Input:\n" + pad + input + "\n" + pad + "\n"
                    + pad + "### Response:\n" + pad
            }
            return "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n\n"
                + pad + "### Instruction:\n" + pad + instruction + "\n" + pad + "\n"
                + pad + "### Response:\n" + pad
        }
        if !input.isEmpty {
            return "Below is an instruction that describes a task, paired with an input that provides further context. "
                + "Write a response that appropriately completes the request.\n\n"
                + "### Instruction:\n" + instruction + "\n\n"
                + "### Input:\n" + input + "\n\n"
                + "### Response:\n"
        }
        return "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
            + "### Instruction:\n" + instruction + "\n\n"
            + "### Response:\n"
    }

    /// LLM-Adapters evaluate.py / commomsense_evaluate.py generate_prompt.
    static func llmAdaptersEvalPrompt(instruction: String, input: String) -> String {
        let pad = String(repeating: " ", count: 16)
        if !input.isEmpty {
            return "Below is an instruction that describes a task, paired with an input that provides further context. "
                + "Write a response that appropriately completes the request.\n\n"
                + pad + "### Instruction:\n" + pad + instruction + "\n\n"
                + pad + "### Input:\n" + pad + input + "\n\n"
                + pad + "### Response:\n" + pad
        }
        return "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n\n"
            + pad + "### Instruction:\n" + pad + instruction + "\n\n"
            + pad + "### Response:\n" + pad
    }
}
