import ArgumentParser
import Foundation
import LLMCore
import Tokenize
import Training

/// `--chat-template FILE`: a Jinja chat template used instead of the model's, in every
/// command that renders conversations (train, eval, prepare, generate; serve).
struct ChatTemplateOptions: ParsableArguments {
    @Option(help: "A .jinja chat template to use instead of the model's own (for --template chat and for messages / prompt-completion records).")
    var chatTemplate: String?

    /// The chat template, bound to `tokenizer`: the `--chat-template` file when given; else
    /// the one that comes with `source` (a model directory, .gguf or tokenizer directory/file)
    /// — required with `--template chat`, and read when present with `auto` (which renders
    /// `messages` and conversational prompt/completion records with it); nil otherwise.
    func chat(template: PromptTemplate, source: String, tokenizer: (any Tokenizer)?) throws -> PromptTemplate.Chat? {
        if let file = chatTemplate { return PromptTemplate.Chat(template: try Self.load(file), tokenizer: tokenizer) }
        switch template {
        case .chat: return try ModelPath(source).chat(template: .chat, tokenizer: tokenizer)
        // `auto` needs the template only for conversations: a model without one (or with one
        // this engine cannot read) still trains instruction data; conversations then stop
        // with the error saying the template is missing.
        case .auto:
            do {
                return try loadChatTemplate(from: URL(fileURLWithPath: source)).map { PromptTemplate.Chat(template: $0, tokenizer: tokenizer) }
            } catch {
                note("warning: the chat template of \(source) cannot be used (\(errorMessage(error))); "
                     + "messages and prompt/completion records need --chat-template")
                return nil
            }
        default: return nil
        }
    }

    /// Reads and parses a template file; errors name the flag and the file.
    static func load(_ file: String) throws -> ChatTemplate {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: file)) } catch {
            throw InputError("--chat-template \(file): cannot read: \(ErrorText.reason(error, path: file))")
        }
        guard let source = String(data: data, encoding: .utf8) else {
            throw InputError("--chat-template \(file): not UTF-8 text (expected a Jinja chat template)")
        }
        do { return try ChatTemplate(source: source, origin: file) } catch let e as ChatTemplateError {
            throw InputError("--chat-template \(file): \(e)")
        }
    }
}
