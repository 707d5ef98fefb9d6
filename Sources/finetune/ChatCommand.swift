import ArgumentParser
import Foundation
import LLMCore
import Serve
import Tokenize

struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Chat with the model (and an adapter) in the terminal, with its chat template, streaming the reply.",
        discussion: """
            Each line is a user message; the conversation is kept. /reset forgets it (the --system message \
            stays), /exit (or end of input) quits. Reads stdin when it is not a terminal, so a conversation \
            can be piped in; replies go to stdout, one line after each reply.
            """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var adapter: AdapterOptions
    @Option(help: "A system message that starts the conversation.") var system: String?
    @OptionGroup var chatTemplateOptions: ChatTemplateOptions
    @Option(help: "New tokens per reply at most.") var maxTokens = 512
    @Option(help: "Sampling temperature (0 = greedy).") var temperature: Float = 0
    @Option(help: "Nucleus sampling mass.") var topP: Float = 1
    @Option(help: "Sampling seed (each reply uses seed + its turn number).") var seed: UInt64 = 0

    func validate() throws {
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be ≥ 1") }
        guard temperature >= 0, topP > 0, topP <= 1 else { throw ValidationError("--temperature must be ≥ 0 and --top-p in (0, 1]") }
    }

    func run() throws {
        try reportingErrors {
            let weights = try model.load()
            guard let tok = try model.tokenizer() else { throw InputError("--model \(model.model): chat needs the model's tokenizer, and it has none") }
            let prompter = try loadChatPrompter(model: model.model, file: chatTemplateOptions.chatTemplate, tokenizer: tok, required: true)!
            let adapters = try adapter.load(config: weights.config)
            let engine = Engine(model: TransformerModel(weights: weights), tokenizer: tok, maxBatch: 1, maxQueue: 1)
            engine.start()
            defer { engine.drain(timeout: 0) }
            let interactive = isatty(STDIN_FILENO) != 0
            let base = system.map { [ChatMessage(role: "system", content: $0)] } ?? []
            var messages = base
            var turn: UInt64 = 0
            if interactive { note("Chatting with \(model.model)\(adapter.adapter.map { " + \($0)" } ?? ""). /reset clears the conversation, /exit quits.") }
            while true {
                if interactive { write("> ") }
                guard let line = readLine(strippingNewline: true) else { break }
                let text = line.trimmingCharacters(in: .whitespaces)
                if text == "/exit" || text == "/quit" { break }
                if text == "/reset" { messages = base; note("(conversation cleared)"); continue }
                if text.isEmpty { continue }
                let ids = try prompter.ids(for: messages + [ChatMessage(role: "user", content: line)])
                guard ids.count < engine.context else {
                    note("error: the conversation is \(ids.count) tokens, beyond the model's context of \(engine.context): /reset to start over")
                    continue
                }
                let request = GenerationRequest(id: "chat-\(turn)", prompt: ids, maxTokens: maxTokens,
                                                sampling: SamplingOptions(temperature: temperature, topP: topP, seed: seed &+ turn),
                                                adapter: adapters)
                turn += 1
                let finished = DispatchSemaphore(value: 0)
                nonisolated(unsafe) var reply = "", failure: String?
                try engine.submit(request) { event in
                    switch event {
                    case let .text(s): reply += s; write(s)
                    case .done: finished.signal()
                    case let .failed(m): failure = m; finished.signal()
                    }
                }
                finished.wait()
                write("\n")
                if let failure { throw InputError("generation failed: \(failure)") }
                messages += [ChatMessage(role: "user", content: line), ChatMessage(role: "assistant", content: reply)]
            }
        }
    }

    private func write(_ s: String) { FileHandle.standardOutput.write(Data(s.utf8)) }
}

/// The chat template for `serve` / `chat`: `--chat-template FILE` (the shared option), else the
/// model's own, bound to its tokenizer. Nil when there is none and it is not `required` (or there is no tokenizer).
func loadChatPrompter(model: String, file: String?, tokenizer: (any Tokenizer)?, required: Bool) throws -> ChatPrompter? {
    let template: ChatTemplate?
    if let file {
        template = try ChatTemplateOptions.load(file)
    } else {
        do { template = try loadChatTemplate(from: URL(fileURLWithPath: model)) } catch {
            throw InputError("the chat template of \(model) cannot be used: \(error)")
        }
    }
    guard let tokenizer else {
        if file != nil { throw InputError("--chat-template \(file!): \(model) has no tokenizer to encode the rendered chat") }
        return nil
    }
    guard let template else {
        if required { throw InputError("\(model) has no chat template (chat_template.jinja, tokenizer_config.json's chat_template, or GGUF tokenizer.chat_template): pass --chat-template FILE") }
        return nil
    }
    return ChatPrompter(template: template, tokenizer: tokenizer)
}
