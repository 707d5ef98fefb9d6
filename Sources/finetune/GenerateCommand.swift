import ArgumentParser
import Foundation
import LLMCore
import Tokenize
import Training

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text with a KV cache (greedy by default; temperature/top-p sampling with a seed).")

    @OptionGroup var model: ModelOptions
    @OptionGroup var adapter: AdapterOptions
    @Option(help: "Prompt text (encoded with the model's tokenizer, BOS added as the tokenizer defines).") var prompt: String?
    @Option(help: "Prompt token ids, used verbatim (no BOS added); needs no tokenizer.") var promptIds: String?
    @Option(help: "Maximum new tokens.") var maxNewTokens = 64
    @Option(help: "Sampling temperature (0 = greedy).") var temperature: Float = 0
    @Option(help: "Nucleus sampling mass.") var topP: Float = 1
    @Option(help: "Sampling seed.") var seed: UInt64 = 0
    @Flag(help: "Render --prompt as a user message with the chat template (the model's, or --chat-template) and its generation prompt; stop at the end-of-turn token.")
    var chat = false
    @Option(help: "With --chat: a system message before the prompt.") var system: String?
    @OptionGroup var chatTemplateOptions: ChatTemplateOptions
    @Flag(help: "Print {\"ids\": [...], \"text\": ...} on stdout.") var json = false

    func validate() throws {
        guard (prompt == nil) != (promptIds == nil) else { throw ValidationError("give exactly one of --prompt or --prompt-ids") }
        guard maxNewTokens >= 0 else { throw ValidationError("--max-new-tokens must be ≥ 0") }
        guard temperature >= 0, topP > 0, topP <= 1 else { throw ValidationError("--temperature must be ≥ 0 and --top-p in (0, 1]") }
        if (chat || chatTemplateOptions.chatTemplate != nil) && prompt == nil { throw ValidationError("--chat and --chat-template need --prompt (text)") }
        if system != nil && !chat && chatTemplateOptions.chatTemplate == nil { throw ValidationError("--system needs --chat") }
    }

    func run() throws {
        try reportingErrors {
            // The prompt and --max-new-tokens size the KV cache: checked against the model's
            // context and the memory available before the weights are loaded.
            let config = try ModelConfig.load(modelPath: model.model)
            let tok = try model.tokenizer()
            var ids: [Int]
            var endOfTurn: [Int] = []
            if let promptIds {
                ids = try parseIntList(promptIds, flag: "--prompt-ids")
            } else {
                guard let tok else { throw InputError("--prompt needs a tokenizer in \(model.model); use --prompt-ids") }
                if chat || chatTemplateOptions.chatTemplate != nil {
                    // The chat template writes BOS and the turn markers itself.
                    let c = try chatTemplateOptions.chat(template: .chat, source: model.model, tokenizer: tok)!
                    let messages = (system.map { [ChatMessage(role: "system", content: $0)] } ?? []) + [ChatMessage(role: "user", content: prompt!)]
                    let text: String
                    do {
                        text = try c.template.render(messages: messages, addGenerationPrompt: true, bosToken: c.bosToken, eosToken: c.eosToken)
                    } catch let e as ChatTemplateError { throw InputError("--chat: the chat template cannot render the prompt: \(e)") }
                    ids = try tok.encode(text, addSpecialTokens: false)
                    endOfTurn = c.endOfTurnTokenId(tokenizer: tok).map { [$0] } ?? []
                } else {
                    ids = try tok.encode(prompt!, addSpecialTokens: true)
                }
            }
            try checkFits(prompt: ids.count, config: config)
            let weights = try model.load()
            let m = TransformerModel(weights: weights, adapters: try adapter.load(config: weights.config))
            let stops = Set(weights.config.eosTokenIds + (tok?.eosTokenIds ?? []) + endOfTurn)
            let t0 = Date()
            let out = try m.generate(prompts: [ids], maxNewTokens: maxNewTokens, stopTokens: stops,
                                     sampling: SamplingOptions(temperature: temperature, topP: topP, seed: seed))[0]
            let dt = Date().timeIntervalSince(t0)
            let text = tok?.decode(out, skipSpecialTokens: true)
            if json {
                struct Out: Encodable {
                    let ids: [Int]; let text: String?
                    enum CodingKeys: String, CodingKey { case ids, text }
                    func encode(to e: Encoder) throws {
                        var c = e.container(keyedBy: CodingKeys.self)
                        try c.encode(ids, forKey: .ids)
                        try c.encode(text, forKey: .text) // null when there is no tokenizer
                    }
                }
                try printJSON(Out(ids: out, text: text))
            } else {
                print(text ?? out.map(String.init).joined(separator: " "))
            }
            note(String(format: "%d tokens in %.2f s (%.1f tokens/s)", out.count, dt, Double(out.count) / max(dt, 1e-9)))
        }
    }

    /// The prompt plus `--max-new-tokens` must fit the model's context (`max_position_embeddings`)
    /// and their KV cache the memory this process can use.
    func checkFits(prompt: Int, config: ModelConfig) throws {
        let context = config.maxPositionEmbeddings
        guard let positions = Checked.add(prompt, maxNewTokens), positions <= context else {
            throw InputError("--max-new-tokens \(maxNewTokens): the prompt's \(prompt) token\(prompt == 1 ? "" : "s") plus \(maxNewTokens) new ones "
                + "exceed the model's context of \(context) positions (max_position_embeddings); at most \(max(0, context - prompt)) here")
        }
        let need = config.kvCacheBytes(capacity: positions)
        if let problem = SystemMemory.shortfall(need) {
            throw InputError("--max-new-tokens \(maxNewTokens): the KV cache of \(positions) positions needs \(SystemMemory.format(need)); \(problem)")
        }
    }
}
