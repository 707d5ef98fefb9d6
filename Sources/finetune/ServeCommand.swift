import ArgumentParser
import Foundation
import LLMCore
import Serve
import Tokenize

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the model and its adapters over an OpenAI-compatible HTTP API (continuous batching; each request picks its adapter).",
        discussion: """
            Routes: GET /health, GET /v1/models, POST /v1/completions, POST /v1/chat/completions, \
            POST /v1/adapters {"name", "path"}, DELETE /v1/adapters/NAME. A request's "model" is the base \
            (its name in /v1/models) or an adapter NAME. SIGTERM/SIGINT: stop accepting, finish what runs \
            (at most --drain-seconds), exit 0.
            """)

    @OptionGroup var model: ModelOptions
    @Option(name: .customLong("adapter"), help: "An adapter to serve as NAME=DIR (repeatable): PEFT LoRA/DoRA, PEFT LoKr or NdLinear-LoRA reference.")
    var adapters: [String] = []
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0: any free port, printed at start).") var port = 8080
    @Option(help: "Rows decoded together at most (continuous batching).") var maxBatch = 16
    @Option(help: "The largest max_tokens a request may ask for, and the default.") var maxTokens = 2048
    @Option(help: "Requests waiting for a row at most; more get 503.") var maxQueue = 64
    @Option(help: "Request bodies above this many bytes get 413.") var maxBodyBytes = 4 << 20
    @Option(help: "Require 'Authorization: Bearer KEY' on /v1 routes.") var apiKey: String?
    @OptionGroup var chatTemplateOptions: ChatTemplateOptions
    @Option(help: "Name of the base model in /v1/models (default: the model directory's or file's name).") var servedName: String?
    @Option(help: "On SIGTERM, seconds running completions may take to finish before they are cut (finish_reason length).")
    var drainSeconds: Double = 30

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
        guard maxBatch >= 1 else { throw ValidationError("--max-batch must be ≥ 1") }
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be ≥ 1") }
        guard maxQueue >= 0 else { throw ValidationError("--max-queue must be ≥ 0") }
        guard maxBodyBytes >= 1024 else { throw ValidationError("--max-body-bytes must be ≥ 1024") }
        guard drainSeconds >= 0 else { throw ValidationError("--drain-seconds must be ≥ 0") }
        if let apiKey { guard !apiKey.isEmpty else { throw ValidationError("--api-key must not be empty") } }
    }

    func run() throws {
        try reportingErrors {
            let specs = try adapters.map { spec -> (String, String) in
                guard let eq = spec.firstIndex(of: "="), eq != spec.startIndex, spec.index(after: eq) != spec.endIndex else {
                    throw InputError("--adapter '\(spec)': expected NAME=DIR")
                }
                return (String(spec[..<eq]), String(spec[spec.index(after: eq)...]))
            }
            let weights = try model.load()
            let tok = try model.tokenizer()
            let chat = try loadChatPrompter(model: model.model, file: chatTemplateOptions.chatTemplate, tokenizer: tok, required: false)
            var options = ServerOptions()
            options.host = host; options.port = port; options.apiKey = apiKey; options.maxTokens = maxTokens
            options.maxBodyBytes = maxBodyBytes; options.drainSeconds = drainSeconds
            options.baseName = servedName ?? Self.defaultName(model.model)
            let registry = AdapterRegistry(config: weights.config, baseName: options.baseName)
            for (name, dir) in specs {
                do { try registry.load(name: name, path: dir) } catch let e as APIError {
                    throw InputError("--adapter \(name)=\(dir): \(e.message)")
                }
            }
            // The KV caches of a full batch at the longest completions: warned about, not refused
            // (most requests are far shorter than the context).
            let positions = min(weights.config.maxPositionEmbeddings, Checked.add(maxTokens, 512) ?? Int.max)
            if let one = weights.config.kvCacheBytes(capacity: positions), let all = Checked.mul(one, maxBatch),
               let problem = SystemMemory.shortfall(all) {
                note("warning: --max-batch \(maxBatch) rows of \(positions) positions need \(SystemMemory.format(all)) of KV cache; \(problem)")
            }
            let engine = Engine(model: TransformerModel(weights: weights), tokenizer: tok, maxBatch: maxBatch, maxQueue: maxQueue)
            let server = ModelServer(engine: engine, adapters: registry, chat: chat, options: options)
            let listing = ([options.baseName] + registry.names).joined(separator: ", ")
            let host = self.host
            let done = DispatchSemaphore(value: 0)
            nonisolated(unsafe) var failure: Error?
            Task {
                do {
                    try await server.run { port in
                        note("finetune serve: listening on http://\(host):\(port) — models: \(listing)\(chat == nil ? " (no chat template)" : "")")
                    }
                } catch { failure = error }
                done.signal()
            }
            done.wait()
            if let failure { throw InputError("serve: \(failure)") }
            note("finetune serve: stopped")
        }
    }

    /// The base model's name: the directory's (or GGUF file's, without `.gguf`) last component.
    static func defaultName(_ path: String) -> String {
        let url = URL(fileURLWithPath: path).standardizedFileURL
        let last = url.lastPathComponent.lowercased().hasSuffix(".gguf") ? url.deletingPathExtension().lastPathComponent : url.lastPathComponent
        return last == "config.json" ? url.deletingLastPathComponent().lastPathComponent : last
    }
}
