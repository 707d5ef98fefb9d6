import Adapters
import Foundation
import Hummingbird
import LLMCore
import Logging
import ServiceLifecycle
import Tokenize

/// What `finetune serve` was asked for, beyond the model.
public struct ServerOptions: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    /// Required as `Authorization: Bearer KEY` on every `/v1` route when set.
    public var apiKey: String?
    /// The largest `max_tokens` a request may ask for, and the default.
    public var maxTokens = 2048
    /// Request bodies above this many bytes get 413.
    public var maxBodyBytes = 4 << 20
    /// SIGTERM: how long running completions may take to finish before they are cut.
    public var drainSeconds: Double = 30
    /// The name the base model is listed and requested under.
    public var baseName = "base"
    public init() {}
}

/// The adapters a server holds, by name; loaded at start and at run time, each checked against
/// the base model's shapes (`AdapterIO.load`).
public final class AdapterRegistry: @unchecked Sendable {
    public struct Entry {
        public let set: AdapterSet
        public let path: String
        public let created: Int
    }
    private let lock = NSLock()
    private var entries: [String: Entry] = [:]
    let config: ModelConfig
    let baseName: String

    public init(config: ModelConfig, baseName: String) {
        self.config = config; self.baseName = baseName
    }

    /// Loads the adapter at `path` under `name`. Throws `APIError` (400) for a bad name, a name
    /// in use, or an adapter that does not fit the base (the message names the file and field).
    @discardableResult
    public func load(name: String, path: String) throws -> Entry {
        let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "._-:"))
        guard !name.isEmpty, name.count <= 128, name.unicodeScalars.allSatisfy(allowed.contains) else {
            throw APIError.invalid("adapter name '\(name)': expected 1–128 letters, digits, '.', '_', '-' or ':'", param: "name")
        }
        guard name != baseName else { throw APIError.invalid("adapter name '\(name)' is the base model's name", param: "name", code: "adapter_exists") }
        guard entry(name) == nil else { throw APIError.invalid("an adapter named '\(name)' is already loaded; DELETE it first", param: "name", code: "adapter_exists") }
        let set: AdapterSet
        do { set = try AdapterIO.load(URL(fileURLWithPath: path), config: config) } catch {
            throw APIError.invalid("adapter '\(name)' cannot be used with this model: \(error)", param: "path", code: "invalid_adapter")
        }
        let e = Entry(set: set, path: path, created: Int(Date().timeIntervalSince1970))
        lock.lock(); defer { lock.unlock() }
        guard entries[name] == nil else { throw APIError.invalid("an adapter named '\(name)' is already loaded", param: "name", code: "adapter_exists") }
        entries[name] = e
        return e
    }

    /// Removes an adapter (rows already using it finish with it). False when there is none.
    public func remove(_ name: String) -> Bool {
        lock.lock(); defer { lock.unlock() }
        return entries.removeValue(forKey: name) != nil
    }

    public func entry(_ name: String) -> Entry? {
        lock.lock(); defer { lock.unlock() }
        return entries[name]
    }

    public var names: [String] {
        lock.lock(); defer { lock.unlock() }
        return entries.keys.sorted()
    }
}

extension APIError: HTTPResponseError {
    public var status: HTTPResponse.Status { HTTPResponse.Status(code: statusCode) }
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        ModelServer.json(body, status: status)
    }
}

/// The OpenAI-compatible HTTP API over an `Engine` (Hummingbird 2): `GET /health`,
/// `GET /v1/models`, `POST /v1/completions`, `POST /v1/chat/completions`, `POST /v1/adapters`,
/// `DELETE /v1/adapters/{name}`.
public final class ModelServer: @unchecked Sendable {
    public let engine: Engine
    public let adapters: AdapterRegistry
    public let chat: ChatPrompter?
    public let options: ServerOptions
    private let started = Int(Date().timeIntervalSince1970)
    /// Where the one line per request goes (stderr by default).
    private let log: @Sendable (String) -> Void

    public init(engine: Engine, adapters: AdapterRegistry, chat: ChatPrompter?, options: ServerOptions,
                log: @escaping @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }) {
        self.engine = engine; self.adapters = adapters; self.chat = chat; self.options = options; self.log = log
    }

    // MARK: Running

    /// The Hummingbird application (the engine must be started; `run` does both).
    public func application(onRunning: @escaping @Sendable (Int) -> Void = { _ in }) -> some ApplicationProtocol {
        var logger = Logger(label: "finetune-serve")
        logger.logLevel = .error
        return Application(router: router(), configuration: .init(address: .hostname(options.host, port: options.port), serverName: "finetune"),
                           onServerRunning: { channel in onRunning(channel.localAddress?.port ?? 0) }, logger: logger)
    }

    /// Serves until SIGTERM or SIGINT: then no new completion is accepted (503), running and
    /// queued ones finish (cut with `length` after `drainSeconds`), and it returns.
    public func run(onRunning: @escaping @Sendable (Int) -> Void) async throws {
        engine.start()
        let drain = DrainService(engine: engine, seconds: options.drainSeconds)
        // Graceful shutdown runs in reverse order: the engine drains before the server closes.
        let group = ServiceGroup(configuration: .init(services: [application(onRunning: onRunning), drain],
                                                      gracefulShutdownSignals: [.sigterm, .sigint],
                                                      logger: Logger(label: "finetune-serve")))
        try await group.run()
    }

    // MARK: Routes

    func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: JSONErrorMiddleware())
        router.get("health") { [self] _, _ -> Response in
            let (queued, running) = engine.load
            return Self.json(.object(["status": .string("ok"), "queued": .int(queued), "running": .int(running)]))
        }
        let v1 = router.group("v1")
        v1.get("models") { [self] request, _ -> Response in
            try authorize(request)
            var data: [JSONValue] = [Self.modelObject(options.baseName, created: started, parent: nil)]
            for name in adapters.names {
                if let e = adapters.entry(name) { data.append(Self.modelObject(name, created: e.created, parent: options.baseName)) }
            }
            return Self.json(.object(["object": .string("list"), "data": .array(data)]))
        }
        v1.post("completions") { [self] request, _ in try await completion(request, chat: false) }
        v1.post("chat/completions") { [self] request, _ in try await completion(request, chat: true) }
        v1.post("adapters") { [self] request, _ -> Response in
            try authorize(request)
            let o = try requestObject(try await body(request))
            guard let name = o["name"]?.string else { throw APIError.invalid("'name' must be a string", param: "name") }
            guard let path = o["path"]?.string else { throw APIError.invalid("'path' must be a string (an adapter directory on the server)", param: "path") }
            let e = try adapters.load(name: name, path: path)
            log("serve: adapter \(name) loaded from \(path) (\(e.set.kind?.rawValue ?? "empty"), \(e.set.adapters.count) projections)")
            return Self.json(Self.modelObject(name, created: e.created, parent: options.baseName))
        }
        v1.delete("adapters/:name") { [self] request, context -> Response in
            try authorize(request)
            let name = context.parameters.get("name") ?? ""
            guard adapters.remove(name) else {
                throw APIError(status: 404, message: "no adapter named '\(name)' is loaded", param: "name", code: "model_not_found")
            }
            log("serve: adapter \(name) removed")
            return Self.json(.object(["id": .string(name), "object": .string("model"), "deleted": .bool(true)]))
        }
        return router
    }

    static func modelObject(_ id: String, created: Int, parent: String?) -> JSONValue {
        var o: [String: JSONValue] = ["id": .string(id), "object": .string("model"), "created": .int(created), "owned_by": .string("finetune")]
        if let parent { o["parent"] = .string(parent) }
        return .object(o)
    }

    static func json(_ v: JSONValue, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(string: v.serialized(pretty: false))))
    }

    private func authorize(_ request: Request) throws {
        guard let key = options.apiKey else { return }
        guard request.headers[.authorization] == "Bearer \(key)" else {
            throw APIError(status: 401, message: "a valid API key is required: send 'Authorization: Bearer KEY'",
                           type: "authentication_error", code: "invalid_api_key")
        }
    }

    private func body(_ request: Request) async throws -> Data {
        do {
            return Data(buffer: try await request.body.collect(upTo: options.maxBodyBytes))
        } catch let e as HTTPResponseError where e.status == .contentTooLarge {
            throw APIError(status: 413, message: "the request body is larger than this server's limit of \(options.maxBodyBytes) bytes",
                           code: "request_too_large")
        }
    }

    // MARK: Completions

    private func completion(_ request: Request, chat isChat: Bool) async throws -> Response {
        let t0 = Date()
        let id = (isChat ? "chatcmpl-" : "cmpl-") + String(UInt64.random(in: 0...UInt64.max), radix: 16)
        var modelName = "-"
        do {
            try authorize(request)
            let o = try requestObject(try await body(request))
            let p = try CompletionParameters(o, maxTokensLimit: options.maxTokens)
            let requested = p.model ?? options.baseName
            var adapter: AdapterSet?
            if requested != options.baseName {
                guard let e = adapters.entry(requested) else {
                    throw APIError(status: 404, message: "the model '\(requested)' does not exist: GET /v1/models lists the base and the loaded adapters",
                                   param: "model", code: "model_not_found")
                }
                adapter = e.set
            }
            modelName = requested
            let prompt = try isChat ? chatPrompt(o) : completionPrompt(o, tokenizer: engine.tokenizer)
            if let bad = prompt.first(where: { $0 < 0 || $0 >= engine.model.config.vocabSize }) {
                throw APIError.invalid("token id \(bad) is outside the vocabulary [0, \(engine.model.config.vocabSize))", param: "prompt")
            }
            guard prompt.count < engine.context else {
                throw APIError.invalid(EngineError.promptTooLong(tokens: prompt.count, context: engine.context).description,
                                       param: isChat ? "messages" : "prompt", code: "context_length_exceeded")
            }
            var req = GenerationRequest(id: id, prompt: prompt, maxTokens: p.maxTokens ?? options.maxTokens,
                                        sampling: p.sampling, stop: p.stop, adapter: adapter)
            req.ignoreEOS = p.ignoreEOS
            let (events, handle) = try submit(req)
            let reply = Reply(id: id, model: requested, chat: isChat, created: Int(t0.timeIntervalSince1970))
            if p.stream {
                return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                                body: ResponseBody { [self] writer in
                    defer { handle.cancel() }
                    var outcome = "cancelled (client gone)", done: Completion?
                    defer {
                        logLine(id: id, model: requested, status: 200, t0: t0, tokens: (prompt.count, done?.completionTokens ?? handle.generated),
                                note: outcome)
                    }
                    if isChat { try await writer.write(ByteBuffer(string: reply.sse(reply.chunk(text: nil, role: true)))) }
                    for await event in events {
                        switch event {
                        case let .text(s):
                            try await writer.write(ByteBuffer(string: reply.sse(reply.chunk(text: s))))
                        case let .done(c):
                            var out = reply.sse(reply.chunk(text: nil, finish: c.finishReason))
                            if p.includeUsage { out += reply.sse(reply.usageChunk(c)) }
                            try await writer.write(ByteBuffer(string: out + "data: [DONE]\n\n"))
                            done = c; outcome = "finish=\(c.finishReason.rawValue)"
                        case let .failed(m):
                            let e = APIError(status: 500, message: "generation failed: \(m)", type: "server_error", code: "generation_failed")
                            try await writer.write(ByteBuffer(string: "data: \(e.body.serialized(pretty: false))\n\n"))
                            outcome = "failed: \(m)"
                        }
                    }
                    try await writer.finish(nil)
                })
            }
            defer { handle.cancel() }
            var text = ""
            for await event in events {
                switch event {
                case let .text(s): text += s
                case let .done(c):
                    logLine(id: id, model: requested, status: 200, t0: t0, tokens: (c.promptTokens, c.completionTokens),
                            note: "finish=\(c.finishReason.rawValue)")
                    return Self.json(reply.whole(text: text, completion: c))
                case let .failed(m):
                    throw APIError(status: 500, message: "generation failed: \(m)", type: "server_error", code: "generation_failed")
                }
            }
            throw APIError(status: 500, message: "the completion was cancelled", type: "server_error", code: "cancelled")
        } catch let e as APIError {
            logLine(id: id, model: modelName, status: e.statusCode, t0: t0, tokens: (0, 0), note: e.message)
            throw e
        }
    }

    private func submit(_ r: GenerationRequest) throws -> (AsyncStream<GenerationEvent>, GenerationHandle) {
        do { return try engine.stream(r) } catch let e as EngineError {
            switch e {
            case .queueFull, .shuttingDown:
                throw APIError(status: 503, message: e.description, type: "server_error", code: e == .shuttingDown ? "shutting_down" : "queue_full")
            case .promptTooLong, .emptyPrompt:
                throw APIError.invalid(e.description, param: "prompt", code: "context_length_exceeded")
            }
        }
    }

    private func chatPrompt(_ o: [String: JSONValue]) throws -> [Int] {
        let messages = try chatMessages(o)
        guard let chat else {
            throw APIError.invalid("this model has no chat template (and no tokenizer to use one): use /v1/completions, or start the server with --chat-template FILE",
                                   param: "messages", code: "no_chat_template")
        }
        do { return try chat.ids(for: messages) } catch {
            throw APIError.invalid("the chat template cannot render these messages: \(error)", param: "messages")
        }
    }

    private func logLine(id: String, model: String, status: Int, t0: Date, tokens: (in: Int, out: Int), note: String) {
        let ms = Date().timeIntervalSince(t0) * 1000
        let speed = String(format: "%.0f ms %.1f tokens/s", ms, Double(tokens.out) / max(ms / 1000, 1e-9))
        log("serve: \(id) model=\(model) status=\(status) in=\(tokens.in) out=\(tokens.out) \(speed) \(printableNote(note))")
    }

    private func printableNote(_ s: String) -> String {
        String(s.unicodeScalars.prefix(300).map { $0.properties.generalCategory == .control ? " " : Character($0) })
    }
}

/// Response bodies of one completion (whole or as SSE chunks).
struct Reply {
    let id: String, model: String, chat: Bool, created: Int

    private func envelope(_ object: String, choices: [JSONValue]) -> [String: JSONValue] {
        ["id": .string(id), "object": .string(object), "created": .int(created), "model": .string(model), "choices": .array(choices)]
    }

    static func usage(_ c: Completion) -> JSONValue {
        .object(["prompt_tokens": .int(c.promptTokens), "completion_tokens": .int(c.completionTokens),
                 "total_tokens": .int(c.promptTokens + c.completionTokens)])
    }

    func whole(text: String, completion c: Completion) -> JSONValue {
        var choice: [String: JSONValue] = ["index": .int(0), "finish_reason": .string(c.finishReason.rawValue)]
        if chat {
            choice["message"] = .object(["role": .string("assistant"), "content": .string(text)])
        } else {
            choice["text"] = .string(text)
            choice["logprobs"] = .null
        }
        var o = envelope(chat ? "chat.completion" : "text_completion", choices: [.object(choice)])
        o["usage"] = Self.usage(c)
        return .object(o)
    }

    /// A streamed piece (`text`), the opening chat chunk (`role`), or the closing one (`finish`).
    func chunk(text: String?, role: Bool = false, finish: FinishReason? = nil) -> JSONValue? {
        if !chat && text == nil && finish == nil { return nil }
        var choice: [String: JSONValue] = ["index": .int(0), "finish_reason": finish.map { .string($0.rawValue) } ?? .null]
        if chat {
            var delta: [String: JSONValue] = [:]
            if role { delta["role"] = .string("assistant"); delta["content"] = .string("") }
            if let text { delta["content"] = .string(text) }
            choice["delta"] = .object(delta)
        } else {
            choice["text"] = .string(text ?? "")
            choice["logprobs"] = .null
        }
        return .object(envelope(chat ? "chat.completion.chunk" : "text_completion", choices: [.object(choice)]))
    }

    func usageChunk(_ c: Completion) -> JSONValue {
        var o = envelope(chat ? "chat.completion.chunk" : "text_completion", choices: [])
        o["usage"] = Self.usage(c)
        return .object(o)
    }

    func sse(_ v: JSONValue?) -> String { v.map { "data: \($0.serialized(pretty: false))\n\n" } ?? "" }
}

/// Unknown routes and methods answer with an OpenAI JSON error body too.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do { return try await next(request, context) } catch let e as HTTPError {
            throw APIError(status: Int(e.status.code), message: e.body ?? "\(request.method) \(request.uri.path): \(e.status.reasonPhrase)",
                           code: e.status == .notFound ? "not_found" : nil)
        }
    }
}

/// Drains the engine when the service group shuts down (before the HTTP server closes, so
/// running streams end with their last chunk).
struct DrainService: Service {
    let engine: Engine
    let seconds: Double

    func run() async throws {
        try? await gracefulShutdown()
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            Thread { [engine, seconds] in
                engine.drain(timeout: seconds)
                c.resume()
            }.start()
        }
    }
}
