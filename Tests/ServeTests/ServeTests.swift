import Adapters
import AsyncHTTPClient
import Foundation
import HummingbirdTesting
import LLMCore
import NIOCore
import NIOHTTP1
import Testing
import TestSupport
import Tokenize
@testable import Serve

/// The tests' HTTP client. `HTTPClient.shared` gives up on a read after 90 s of silence, and in a
/// whole `swift test` on 2 cores this process's async tasks can wait minutes for a cooperative
/// thread (other suites block theirs on child processes), so a streamed reply would time out
/// although the server sent it.
let testHTTPClient = HTTPClient(eventLoopGroupProvider: .singleton,
                                configuration: HTTPClient.Configuration(timeout: .init(connect: .seconds(30), read: .seconds(600))))

// MARK: - Harness

extension JSONValue {
    /// Element `i` of an array (nil otherwise).
    subscript(_ i: Int) -> JSONValue? { array.flatMap { i < $0.count ? $0[i] : nil } }
}

/// Lines the server logs, kept for assertions.
final class LogLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func append(_ s: String) { lock.lock(); lines.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}

/// A live server on a free port and an HTTP client for it.
struct ServeClient: Sendable {
    let base: String
    let log: LogLines

    struct Reply { let status: Int; let body: String; var json: JSONValue? { try? JSONValue.parse(Data(body.utf8)) } }

    func send(_ method: HTTPMethod, _ path: String, body: String? = nil, headers: [(String, String)] = []) async throws -> Reply {
        var r = HTTPClientRequest(url: base + path)
        r.method = method
        if let body { r.body = .bytes(ByteBuffer(string: body)); r.headers.add(name: "Content-Type", value: "application/json") }
        for (k, v) in headers { r.headers.add(name: k, value: v) }
        let resp = try await testHTTPClient.execute(r, timeout: .seconds(600))
        let bytes = try await resp.body.collect(upTo: 64 << 20)
        return Reply(status: Int(resp.status.code), body: String(buffer: bytes))
    }

    func post(_ path: String, _ object: JSONValue, headers: [(String, String)] = []) async throws -> Reply {
        try await send(.POST, path, body: object.serialized(pretty: false), headers: headers)
    }
}

/// Runs `body` against a server over `weights` with `adapters` (name → directory) loaded.
func withServer(_ weights: ModelWeights, tokenizer: (any Tokenizer)? = nil, chat: ChatPrompter? = nil,
                adapters: [(String, URL)] = [], options: ServerOptions = ServerOptions(), maxBatch: Int = 16, maxQueue: Int = 64,
                _ body: @Sendable (ServeClient, ModelServer) async throws -> Void) async throws {
    let engine = Engine(model: TransformerModel(weights: weights), tokenizer: tokenizer, maxBatch: maxBatch, maxQueue: maxQueue)
    engine.start()
    defer { engine.drain(timeout: 0) }
    var options = options
    options.port = 0
    let registry = AdapterRegistry(config: weights.config, baseName: options.baseName)
    for (name, dir) in adapters { try registry.load(name: name, path: dir.path) }
    let log = LogLines()
    let server = ModelServer(engine: engine, adapters: registry, chat: chat, options: options, log: { log.append($0) })
    try await server.application().test(.live) { client in
        try await body(ServeClient(base: "http://127.0.0.1:\(client.port!)", log: log), server)
    }
}

/// The llama-tiny fixture with its PEFT LoRA and NdLinear-LoRA adapters.
enum Tiny {
    static let model = FixtureModel.llamaTiny
    static let adapters: [(String, URL)] = [("lora", model.directory.appendingPathComponent("lora")),
                                            ("nd", model.directory.appendingPathComponent("ndlinear")),
                                            ("dora", model.directory.appendingPathComponent("dora"))]
    static let names = ["base", "lora", "nd", "dora"]
    /// The golden prompts and 12 greedy tokens of the base ("base") and each adapter.
    static func golden() throws -> (prompts: [[Int]], greedy: [String: [[Int]]]) {
        let e = try model.expected()
        let p = try e.tensor("prompt"), g = try e.tensor("greedy")
        func rows(_ v: [Int], _ n: Int) -> [[Int]] { stride(from: 0, to: v.count, by: n).map { Array(v[$0..<($0 + n)]) } }
        return (rows(p.ints(), p.shape[1]),
                ["base": rows(g.ints(), 12), "lora": rows(try model.expected("lora").tensor("greedy").ints(), 12),
                 "nd": rows(try model.expected("ndlinear").tensor("greedy").ints(), 12),
                 "dora": rows(try model.expected("dora").tensor("greedy").ints(), 12)])
    }
}

func completionBody(model: String, prompt: JSONValue, maxTokens: Int, stream: Bool = false, extra: [String: JSONValue] = [:]) -> JSONValue {
    var o: [String: JSONValue] = ["model": .string(model), "prompt": prompt, "max_tokens": .int(maxTokens), "temperature": .int(0),
                                  "stream": .bool(stream)]
    o.merge(extra) { $1 }
    return .object(o)
}

/// The text of a streamed reply (completions' `text` or chat's `delta.content`), its finish
/// reason, and whether it ended with `data: [DONE]`.
func parseSSE(_ body: String) throws -> (text: String, finish: String?, done: Bool, usage: JSONValue?) {
    var text = "", finish: String?, done = false, usage: JSONValue?
    for event in body.components(separatedBy: "\n\n") where !event.isEmpty {
        #expect(event.hasPrefix("data: "), "\(event)")
        let payload = String(event.dropFirst(6))
        if payload == "[DONE]" { done = true; continue }
        let v = try JSONValue.parse(Data(payload.utf8))
        if let u = v["usage"], !u.isNull { usage = u }
        guard let c = v["choices"]?.array?.first else { continue }
        text += c["text"]?.string ?? c["delta"]?["content"]?.string ?? ""
        if let f = c["finish_reason"]?.string { finish = f }
    }
    return (text, finish, done, usage)
}

func ids(_ text: String) -> [Int] { text.split(separator: " ").compactMap { Int($0) } }

// MARK: - Tests

@Suite("finetune serve: OpenAI API, continuous batching, per-row adapters", .serialized)
struct ServeTests {
    @Test("GET /v1/models lists the base and every adapter; /health answers")
    func modelsListed() async throws {
        var options = ServerOptions(); options.baseName = "llama-tiny"
        try await withServer(try Tiny.model.load(), adapters: Tiny.adapters, options: options) { c, _ in
            let r = try await c.send(.GET, "/v1/models")
            #expect(r.status == 200)
            let names = r.json?["data"]?.array?.compactMap { $0["id"]?.string }
            #expect(names == ["llama-tiny", "dora", "lora", "nd"])
            #expect(r.json?["object"]?.string == "list")
            let h = try await c.send(.GET, "/health")
            #expect(h.status == 200 && h.json?["status"]?.string == "ok")
        }
    }

    @Test("greedy completions per adapter equal the golden greedy tokens and `generate` with that adapter")
    func greedyPerAdapter() async throws {
        let (prompts, golden) = try Tiny.golden()
        let weights = try Tiny.model.load()
        try await withServer(weights, adapters: Tiny.adapters) { c, server in
            for name in Tiny.names {
                let set = name == "base" ? nil : server.adapters.entry(name)!.set
                let reference = TransformerModel(weights: weights, adapters: set)
                for (k, p) in prompts.enumerated() {
                    let r = try await c.post("/v1/completions", completionBody(model: name, prompt: .array(p.map { .int($0) }), maxTokens: 12))
                    #expect(r.status == 200, "\(r.body)")
                    let got = ids(r.json?["choices"]?[0]?["text"]?.string ?? "")
                    let generated = try reference.generate(prompts: [p], maxNewTokens: 12, stopTokens: Set(weights.config.eosTokenIds))[0]
                    #expect(got == golden[name]![k], "\(name) prompt \(k)")
                    #expect(got == generated, "\(name) prompt \(k)")
                    let choice = r.json?["choices"]?[0]
                    #expect(choice?["finish_reason"]?.string == "length")
                    #expect(r.json?["usage"]?["prompt_tokens"]?.int == p.count && r.json?["usage"]?["completion_tokens"]?.int == 12)
                }
            }
        }
    }

    @Test("12 concurrent requests with mixed adapters (4 rows at a time) each equal their sequential answer")
    func concurrentMixedAdapters() async throws {
        let (prompts, golden) = try Tiny.golden()
        // Prompts of different lengths and lengths of output, so rows join and leave mid-batch.
        let jobs: [(model: String, prompt: [Int], maxTokens: Int, stream: Bool)] = (0..<12).map { i in
            (Tiny.names[i % 4], Array(prompts[i % 2].prefix(3 + i % 3)), 4 + (i * 5) % 9, i % 3 == 1)
        }
        try await withServer(try Tiny.model.load(), adapters: Tiny.adapters, maxBatch: 4) { c, _ in
            @Sendable func run(_ j: (model: String, prompt: [Int], maxTokens: Int, stream: Bool)) async throws -> [Int] {
                let r = try await c.post("/v1/completions", completionBody(model: j.model, prompt: .array(j.prompt.map { .int($0) }),
                                                                           maxTokens: j.maxTokens, stream: j.stream))
                #expect(r.status == 200, "\(r.body)")
                return ids(j.stream ? try parseSSE(r.body).text : r.json?["choices"]?[0]?["text"]?.string ?? "")
            }
            var sequential: [[Int]] = []
            for j in jobs { sequential.append(try await run(j)) }
            let concurrent = try await withThrowingTaskGroup(of: (Int, [Int]).self) { group in
                for (i, j) in jobs.enumerated() { group.addTask { (i, try await run(j)) } }
                var out = [[Int]](repeating: [], count: jobs.count)
                for try await (i, r) in group { out[i] = r }
                return out
            }
            for i in jobs.indices {
                #expect(concurrent[i] == sequential[i], "request \(i) (\(jobs[i].model))")
                #expect(sequential[i].count == jobs[i].maxTokens)
            }
            // The full golden prompts ride along too: each row keeps its own adapter in a mixed batch.
            let full = try await withThrowingTaskGroup(of: (String, Int, [Int]).self) { group in
                for name in Tiny.names {
                    for (k, p) in prompts.enumerated() {
                        group.addTask { (name, k, try await run((name, p, 12, k == 1))) }
                    }
                }
                var out: [(String, Int, [Int])] = []
                for try await r in group { out.append(r) }
                return out
            }
            for (name, k, got) in full { #expect(got == golden[name]![k], "\(name) prompt \(k)") }
        }
    }

    @Test("streamed text equals the non-streamed text (completions and chat), SSE ends with [DONE]")
    func streamingEqualsWhole() async throws {
        let dir = TestPaths.models.appendingPathComponent("stories260K")
        let tok = try loadTokenizer(from: dir)
        let weights = try ModelWeights.load(directory: dir)
        let chat = ChatPrompter(template: try ChatTemplate(source: "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"),
                                tokenizer: tok)
        try await withServer(weights, tokenizer: tok, chat: chat) { c, _ in
            for (prompt, stop) in [("Once upon a time", nil), ("The little dog", "."), ("Lily and Ben", "the")] as [(String, String?)] {
                var extra: [String: JSONValue] = ["stream_options": .object(["include_usage": .bool(true)])]
                if let stop { extra["stop"] = .string(stop) }
                let whole = try await c.post("/v1/completions", completionBody(model: "base", prompt: .string(prompt), maxTokens: 60, extra: extra))
                let streamed = try await c.post("/v1/completions", completionBody(model: "base", prompt: .string(prompt), maxTokens: 60, stream: true, extra: extra))
                #expect(whole.status == 200 && streamed.status == 200)
                let s = try parseSSE(streamed.body)
                let text = whole.json?["choices"]?[0]?["text"]?.string
                #expect(s.text == text && s.done)
                #expect(s.finish == whole.json?["choices"]?[0]?["finish_reason"]?.string)
                #expect(s.usage == whole.json?["usage"])
                if let stop {
                    #expect(!(text ?? stop).contains(stop), "the stop string is not returned")
                } else {
                    // Without a stop string the text is `generate`'s.
                    let ids = try tok.encode(prompt, addSpecialTokens: true)
                    let out = try TransformerModel(weights: weights).generate(prompts: [ids], maxNewTokens: 60, stopTokens: [2])[0]
                    #expect(text == tok.decode(out, skipSpecialTokens: true))
                }
            }
            let messages: JSONValue = .array([.object(["role": .string("user"), "content": .string("Tell me a story")])])
            let body: [String: JSONValue] = ["model": .string("base"), "messages": messages, "max_tokens": .int(40), "temperature": .int(0)]
            let whole = try await c.post("/v1/chat/completions", .object(body))
            var sb = body; sb["stream"] = .bool(true)
            let streamed = try await c.post("/v1/chat/completions", .object(sb))
            #expect(whole.status == 200, "\(whole.body)")
            #expect(whole.json?["object"]?.string == "chat.completion")
            #expect(whole.json?["choices"]?[0]?["message"]?["role"]?.string == "assistant")
            let s = try parseSSE(streamed.body)
            #expect(s.text == whole.json?["choices"]?[0]?["message"]?["content"]?.string && s.done)
            #expect(!s.text.isEmpty)
        }
    }

    @Test("errors: 400 malformed JSON / bad field / max_tokens / context, 401, 404, 413, 503, with OpenAI JSON bodies")
    func errors() async throws {
        var options = ServerOptions()
        options.apiKey = "sekret"; options.maxTokens = 50; options.maxBodyBytes = 4096
        let auth = [("Authorization", "Bearer sekret")]
        let weights = try Tiny.model.load()
        @Sendable func check(_ r: ServeClient.Reply, _ status: Int, param: String? = nil, code: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(r.status == status, "\(r.body)", sourceLocation: sourceLocation)
            let e = r.json?["error"]
            #expect(e?["message"]?.string?.isEmpty == false, "\(r.body)", sourceLocation: sourceLocation)
            #expect(e?["type"]?.string != nil && e?["param"] != nil && e?["code"] != nil, "\(r.body)", sourceLocation: sourceLocation)
            if let param { #expect(e?["param"]?.string == param, sourceLocation: sourceLocation) }
            if let code { #expect(e?["code"]?.string == code, sourceLocation: sourceLocation) }
        }
        let ok = completionBody(model: "base", prompt: .array([.int(5), .int(6)]), maxTokens: 3)
        try await withServer(weights, adapters: Tiny.adapters, options: options) { c, _ in
            check(try await c.post("/v1/completions", ok), 401, code: "invalid_api_key")
            check(try await c.post("/v1/completions", ok, headers: [("Authorization", "Bearer wrong")]), 401)
            check(try await c.send(.GET, "/v1/models"), 401)
            check(try await c.send(.GET, "/v1/nothing-here", headers: auth), 404, code: "not_found")
            #expect(try await c.post("/v1/completions", ok, headers: auth).status == 200)
            check(try await c.send(.POST, "/v1/completions", body: "{\"model\": ", headers: auth), 400, code: "invalid_json")
            check(try await c.send(.POST, "/v1/completions", body: "[1, 2]", headers: auth), 400, code: "invalid_json")
            check(try await c.post("/v1/completions", completionBody(model: "base", prompt: .array([.int(5)]), maxTokens: 3,
                                                                    extra: ["temperature": .string("hot")]), headers: auth), 400, param: "temperature")
            check(try await c.post("/v1/completions", completionBody(model: "base", prompt: .array([.int(5)]), maxTokens: 51), headers: auth),
                  400, param: "max_tokens")
            check(try await c.post("/v1/completions", completionBody(model: "base", prompt: .array([.int(5000)]), maxTokens: 3), headers: auth),
                  400, param: "prompt")
            check(try await c.post("/v1/completions", .object(["model": .string("base")]), headers: auth), 400, param: "prompt")
            let long = JSONValue.array((0..<128).map { .int($0 % 300 + 3) })
            check(try await c.post("/v1/completions", completionBody(model: "base", prompt: long, maxTokens: 3), headers: auth),
                  400, code: "context_length_exceeded")
            check(try await c.post("/v1/completions", completionBody(model: "nope", prompt: .array([.int(5)]), maxTokens: 3), headers: auth),
                  404, param: "model", code: "model_not_found")
            check(try await c.post("/v1/chat/completions", .object(["model": .string("base"), "messages": .array([.object(["role": .string("user"), "content": .string("hi")])])]),
                                   headers: auth), 400, code: "no_chat_template")
            let big = String(repeating: "x", count: 5000)
            check(try await c.post("/v1/completions", completionBody(model: "base", prompt: .string(big), maxTokens: 3), headers: auth),
                  413, code: "request_too_large")
            // Adapters at run time: a bad one is refused by name, a good one is listed and used, then deleted.
            check(try await c.post("/v1/adapters", .object(["name": .string("x"), "path": .string("/nonexistent")]), headers: auth), 400, param: "path")
            check(try await c.post("/v1/adapters", .object(["name": .string("lora"), "path": .string(Tiny.adapters[0].1.path)]), headers: auth),
                  400, code: "adapter_exists")
            let qwenLoRA = FixtureModel.qwen2Tiny.directory.appendingPathComponent("lora").path
            check(try await c.post("/v1/adapters", .object(["name": .string("qwen"), "path": .string(qwenLoRA)]), headers: auth),
                  400, code: "invalid_adapter")
            let added = try await c.post("/v1/adapters", .object(["name": .string("lora2"), "path": .string(Tiny.adapters[0].1.path)]), headers: auth)
            #expect(added.status == 200 && added.json?["id"]?.string == "lora2", "\(added.body)")
            let (prompts, golden) = try Tiny.golden()
            let r = try await c.post("/v1/completions", completionBody(model: "lora2", prompt: .array(prompts[0].map { .int($0) }), maxTokens: 12), headers: auth)
            #expect(ids(r.json?["choices"]?[0]?["text"]?.string ?? "") == golden["lora"]![0])
            #expect(try await c.send(.DELETE, "/v1/adapters/lora2", headers: auth).status == 200)
            check(try await c.send(.DELETE, "/v1/adapters/lora2", headers: auth), 404)
            check(try await c.post("/v1/completions", completionBody(model: "lora2", prompt: .array([.int(5)]), maxTokens: 3), headers: auth), 404)
        }
        // A queue of length 0 takes nothing: 503.
        try await withServer(weights, maxQueue: 0) { c, _ in
            check(try await c.post("/v1/completions", ok), 503, code: "queue_full")
        }
        // The log has one line per request, with its id, model, tokens and speed.
        try await withServer(weights) { c, _ in
            _ = try await c.post("/v1/completions", ok)
            let lines = c.log.all.filter { $0.hasPrefix("serve: cmpl-") }
            #expect(lines.count == 1 && lines[0].contains("model=base") && lines[0].contains("in=2 out=3") && lines[0].contains("tokens/s"), "\(lines)")
        }
    }

    @Test("a client that disconnects mid-stream frees its row")
    func disconnectFreesRow() async throws {
        // Random weights, a long context and no end-of-sequence token: the row would run 4000 tokens.
        var config = try ModelConfig.load(modelPath: Tiny.model.directory.path)
        config.maxPositionEmbeddings = 4096
        config.eosTokenIds = []
        let weights = try ModelWeights.random(config: config, dtype: .f32, seed: 1)
        var options = ServerOptions()
        options.maxTokens = 4000
        try await withServer(weights, options: options) { c, server in
            var r = HTTPClientRequest(url: c.base + "/v1/completions")
            r.method = .POST
            r.body = .bytes(ByteBuffer(string: completionBody(model: "base", prompt: .array([.int(5)]), maxTokens: 4000, stream: true).serialized()))
            let client = HTTPClient(eventLoopGroupProvider: .singleton)
            let resp = try await client.execute(r, timeout: .seconds(600))
            var seen = 0
            for try await part in resp.body {
                seen += part.readableBytes
                if seen > 0 { break }
            }
            try await client.shutdown()   // closes the connection mid-stream
            // The row leaves the batch (polled; the bound only stops a broken build from hanging).
            var waited = 0
            while server.engine.load.running > 0 && waited < 6000 { try await Task.sleep(for: .milliseconds(10)); waited += 1 }
            #expect(server.engine.load.running == 0 && server.engine.load.queued == 0)
            let line = c.log.all.first { $0.hasPrefix("serve: cmpl-") }
            #expect(line?.contains("cancelled") == true, "\(c.log.all)")
            let out = line.flatMap { l in l.range(of: "out=").map { Int(l[$0.upperBound...].prefix { $0.isNumber }) ?? -1 } } ?? -1
            #expect(out >= 0 && out < 4000, "\(line ?? "")")
        }
    }
}

@Suite("Serve engine and text stream")
struct EngineTests {
    /// Runs `requests` on `engine` at once; returns each one's text and completion.
    func runAll(_ engine: Engine, _ requests: [GenerationRequest]) throws -> [(text: String, completion: Completion?)] {
        final class Box: @unchecked Sendable { var out: [(String, Completion?)] = []; let lock = NSLock() }
        let box = Box()
        box.out = requests.map { _ in ("", nil) }
        let group = DispatchGroup()
        for (i, r) in requests.enumerated() {
            group.enter()
            try engine.submit(r) { event in
                box.lock.lock(); defer { box.lock.unlock() }
                switch event {
                case let .text(s): box.out[i].0 += s
                case let .done(c): box.out[i].1 = c; group.leave()
                case .failed: group.leave()
                }
            }
        }
        group.wait()
        return box.out.map { ($0.0, $0.1) }
    }

    @Test("prompts longer than the prefill budget run in chunks beside decoding rows, with the golden greedy tokens")
    func chunkedPrefill() throws {
        let (prompts, golden) = try Tiny.golden()
        let engine = Engine(model: TransformerModel(weights: try Tiny.model.load()), tokenizer: nil, maxBatch: 4, prefillTokenBudget: 4)
        engine.start()
        defer { engine.drain(timeout: 0) }
        let out = try runAll(engine, prompts.enumerated().map { GenerationRequest(id: "\($0.offset)", prompt: $0.element, maxTokens: 12) })
        for k in prompts.indices {
            #expect(out[k].completion?.ids == golden["base"]![k], "prompt \(k)")
            #expect(out[k].completion?.finishReason == .length && out[k].completion?.promptTokens == prompts[k].count)
        }
    }

    @Test("forwardCached with per-sequence adapters equals each sequence alone under that adapter (prefill GEMM and decode GEMV)")
    func perRowForward() throws {
        let weights = try Tiny.model.load()
        let sets: [AdapterSet?] = [nil] + (try Tiny.adapters.map { try AdapterIO.load($0.1, config: weights.config) })
        let prompts = (0..<sets.count).map { i in (0..<(5 + 3 * i)).map { ($0 * 31 + i * 7) % 300 + 3 } }
        let mixed = TransformerModel(weights: weights)
        let caches = prompts.map { KVCache(config: weights.config, capacity: $0.count + 1) }
        let alone = sets.map { TransformerModel(weights: weights, adapters: $0) }
        let aloneCaches = prompts.map { KVCache(config: weights.config, capacity: $0.count + 1) }
        // Step 1: every prompt at once (many rows); step 2: one token each (few rows).
        for step in 0..<2 {
            let tokens = step == 0 ? prompts : prompts.indices.map { [($0 * 13) % 300 + 3] }
            let got = try mixed.forwardCached(tokens.indices.map { CachedSequence(tokens: tokens[$0], cache: caches[$0], adapters: sets[$0]) },
                                              allPositions: true)
            var offset = 0
            for i in tokens.indices {
                let want = try alone[i].forwardCached([CachedSequence(tokens: tokens[i], cache: aloneCaches[i])], allPositions: true)
                for (k, row) in want.enumerated() {
                    #expect(maxAbsDiff(got[offset + k], row) <= 1e-4, "step \(step), sequence \(i) (\(Tiny.adapters.indices.contains(i - 1) ? Tiny.adapters[i - 1].0 : "base")), row \(k)")
                }
                offset += want.count
            }
        }
        #expect(mixed.adapters == nil)
    }

    @Test("each row samples with its own options and seed: equal to `generate` with that seed, batched or not")
    func perRowSampling() throws {
        let (prompts, _) = try Tiny.golden()
        let weights = try Tiny.model.load()
        let engine = Engine(model: TransformerModel(weights: weights), tokenizer: nil, maxBatch: 4)
        engine.start()
        defer { engine.drain(timeout: 0) }
        let options = [SamplingOptions(temperature: 0.9, topP: 0.95, seed: 7), SamplingOptions(temperature: 1.2, topP: 1, seed: 11),
                       SamplingOptions(temperature: 0, topP: 1, seed: 0)]
        let requests = options.enumerated().map { i, o in GenerationRequest(id: "\(i)", prompt: prompts[i % 2], maxTokens: 12, sampling: o) }
        let together = try runAll(engine, requests)
        let reference = TransformerModel(weights: weights)
        for (i, r) in requests.enumerated() {
            let expected = try reference.generate(prompts: [r.prompt], maxNewTokens: 12, stopTokens: [2], sampling: r.sampling)[0]
            #expect(together[i].completion?.ids == expected, "request \(i)")
        }
        #expect(together[0].completion?.ids != together[1].completion?.ids)
    }

    @Test("text pieces hold whole characters when a character's bytes span tokens; stop strings cut across pieces")
    func textStream() throws {
        let tok = try loadTokenizer(from: stories)
        let text = "Lily saw a ☃ and a 🐶. The end."
        let ids = try tok.encode(text, addSpecialTokens: false)
        #expect(ids.count > text.count / 2)
        var stream = TextStream(tokenizer: tok, stop: [])
        var pieces: [String] = []
        for id in ids { pieces.append(stream.push(id).text) }
        pieces.append(stream.finish())
        #expect(pieces.joined() == tok.decode(ids, skipSpecialTokens: true))
        #expect(!pieces.joined().contains("\u{FFFD}") && pieces.allSatisfy { !$0.contains("\u{FFFD}") })
        // A stop string: the text before it, nothing after, and no piece shows part of it.
        var s2 = TextStream(tokenizer: tok, stop: ["and a 🐶", "zzz"])
        var out = "", stopped = false
        for id in ids where !stopped {
            let r = s2.push(id)
            out += r.text
            stopped = r.stopped
        }
        #expect(stopped && out == "Lily saw a ☃ ", "\(out)")
    }
}
