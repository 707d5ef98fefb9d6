import AsyncHTTPClient
import Foundation
import LLMCore
import NIOCore
import Testing
import TestSupport
import Tokenize
@testable import Serve

/// `python3` with the `openai` package importable (the openai-client test runs only then).
let pythonOpenAI: Bool = {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3", "-c", "import openai"]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return false }
    p.waitUntilExit()
    return p.terminationStatus == 0
}()

let stories = TestPaths.models.appendingPathComponent("stories260K")
let simpleTemplate = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"

/// Runs `exe args` with `input` on stdin; returns (status, stdout, stderr).
func run(_ exe: URL, _ args: [String], input: String) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = exe
    p.arguments = args
    let i = Pipe(), o = Pipe(), e = Pipe()
    p.standardInput = i; p.standardOutput = o; p.standardError = e
    try p.run()
    i.fileHandleForWriting.write(Data(input.utf8))
    try i.fileHandleForWriting.close()
    let out = o.fileHandleForReading.readDataToEndOfFile(), err = e.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
}

@Suite("finetune serve / chat as processes, and the official openai client", .serialized)
struct ServeProcessTests {
    /// Starts `finetune serve args --port 0`, sends one streaming completion, sends SIGTERM after
    /// its first chunk, and returns the streamed body, the exit and everything on stderr.
    func serveAndTerminate(_ args: [String], model: String, prompt: JSONValue, maxTokens: Int) async throws
        -> (body: String, exited: Bool, status: Int32, err: String) {
        let exe = try #require(finetuneExecutable(), "the finetune executable is built beside the tests")
        let p = Process()
        p.executableURL = exe
        p.arguments = ["serve", "--port", "0", "--threads", "1"] + args
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        // "finetune serve: listening on http://127.0.0.1:PORT — …"
        var text = ""
        while !text.contains(" — ") {
            let d = err.fileHandleForReading.availableData
            if d.isEmpty { break }
            text += String(decoding: d, as: UTF8.self)
        }
        let port = try #require(text.range(of: "127.0.0.1:").map { Int(text[$0.upperBound...].prefix { $0.isNumber }) } ?? nil, "\(text)")
        var r = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/completions")
        r.method = .POST
        r.body = .bytes(ByteBuffer(string: completionBody(model: model, prompt: prompt, maxTokens: maxTokens, stream: true).serialized(pretty: false)))
        let resp = try await testHTTPClient.execute(r, timeout: .seconds(600))
        #expect(resp.status.code == 200)
        var body = "", signalled = false
        for try await part in resp.body {
            body += String(buffer: part)
            if !signalled { kill(p.processIdentifier, SIGTERM); signalled = true }
        }
        p.waitUntilExit()
        let rest = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (body, p.terminationReason == .exit, p.terminationStatus, text + rest)
    }

    @Test("SIGTERM: the running stream finishes with [DONE], then the server exits 0")
    func sigtermDrains() async throws {
        let r = try await serveAndTerminate(["--model", stories.path], model: "stories260K", prompt: .string("Once upon a time"), maxTokens: 300)
        #expect(r.exited && r.status == 0, "\(r.err)")
        let s = try parseSSE(r.body)
        #expect(s.done && s.finish != nil, "\(r.body.suffix(300))")
        #expect(r.err.contains("serve: cmpl-") && r.err.contains("finetune serve: stopped"), "\(r.err)")
    }

    @Test("SIGTERM with --drain-seconds 0: a long completion is cut (finish_reason length), [DONE], exit 0")
    func sigtermDrainIsBounded() async throws {
        // Random weights from a bare config: a long context and no end-of-sequence token.
        let dir = try temporaryDirectory("serve-drain")
        var config = try String(contentsOf: Tiny.model.directory.appendingPathComponent("config.json"), encoding: .utf8)
        config = config.replacingOccurrences(of: "\"max_position_embeddings\": 128", with: "\"max_position_embeddings\": 8192")
            .replacingOccurrences(of: "\"eos_token_id\": 2,", with: "")
        try config.write(to: dir.appendingPathComponent("config.json"), atomically: true, encoding: .utf8)
        let r = try await serveAndTerminate(["--model", dir.appendingPathComponent("config.json").path, "--drain-seconds", "0",
                                             "--max-tokens", "8000", "--served-name", "m"], model: "m", prompt: .array([.int(5)]), maxTokens: 8000)
        #expect(r.exited && r.status == 0, "\(r.err)")
        let s = try parseSSE(r.body)
        #expect(s.done && s.finish == "length", "\(r.body.suffix(300))")
        #expect(ids(s.text).count < 8000)
    }

    @Test("greedy completions equal the `finetune generate --adapter` executable's output for every adapter kind")
    func equalsGenerateCommand() async throws {
        let exe = try #require(finetuneExecutable(), "the finetune executable is built beside the tests")
        let (prompts, _) = try Tiny.golden()
        try await withServer(try Tiny.model.load(), adapters: Tiny.adapters) { c, _ in
            for (name, dir) in [("base", nil)] + Tiny.adapters.map({ ($0.0, Optional($0.1)) }) {
                for p in prompts {
                    let g = try run(exe, ["generate", "--model", Tiny.model.directory.path, "--prompt-ids", p.map(String.init).joined(separator: ","),
                                          "--max-new-tokens", "12", "--json", "--threads", "1"] + (dir.map { ["--adapter", $0.path] } ?? []), input: "")
                    #expect(g.status == 0, "\(g.err)")
                    let expected = try JSONValue.parse(Data(g.out.utf8))["ids"]?.array?.compactMap(\.int)
                    let r = try await c.post("/v1/completions", completionBody(model: name, prompt: .array(p.map { .int($0) }), maxTokens: 12))
                    #expect(ids(r.json?["choices"]?[0]?["text"]?.string ?? "") == expected, "\(name)")
                }
            }
        }
    }

    @Test("serve refuses a malformed --adapter and an adapter of another model before listening (exit 2, naming it)")
    func badAdapterFlags() throws {
        let exe = try #require(finetuneExecutable(), "the finetune executable is built beside the tests")
        let malformed = try run(exe, ["serve", "--model", stories.path, "--adapter", "nodir"], input: "")
        #expect(malformed.status == 2 && malformed.err.contains("--adapter 'nodir': expected NAME=DIR"), "\(malformed.err)")
        let lora = Tiny.model.directory.appendingPathComponent("lora").path
        let other = try run(exe, ["serve", "--model", stories.path, "--adapter", "tiny=\(lora)"], input: "")
        #expect(other.status == 2 && other.err.contains("--adapter tiny=\(lora)") && !other.err.contains("listening"), "\(other.err)")
    }

    @Test("finetune chat: replies stream to stdout with history; /reset forgets; equal to generate on the templated prompt")
    func chatCommand() throws {
        let exe = try #require(finetuneExecutable(), "the finetune executable is built beside the tests")
        let dir = try temporaryDirectory("chat")
        let template = dir.appendingPathComponent("t.jinja")
        try simpleTemplate.write(to: template, atomically: true, encoding: .utf8)
        let r = try run(exe, ["chat", "--model", stories.path, "--chat-template", template.path, "--max-tokens", "24", "--threads", "1"],
                        input: "Hello\nTell me more\n/reset\nHello\n/exit\nnot read\n")
        #expect(r.status == 0, "\(r.err)")
        // In-process reference: the same template and greedy decoding.
        let tok = try loadTokenizer(from: stories)
        let prompter = ChatPrompter(template: try ChatTemplate(source: simpleTemplate), tokenizer: tok)
        let model = TransformerModel(weights: try ModelWeights.load(directory: stories))
        func reply(_ messages: [ChatMessage]) throws -> String {
            let out = try model.generate(prompts: [try prompter.ids(for: messages)], maxNewTokens: 24, stopTokens: [2])[0]
            return tok.decode(out, skipSpecialTokens: true)
        }
        let first = try reply([ChatMessage(role: "user", content: "Hello")])
        let second = try reply([ChatMessage(role: "user", content: "Hello"), ChatMessage(role: "assistant", content: first),
                                ChatMessage(role: "user", content: "Tell me more")])
        #expect(!first.isEmpty && first != second)
        // Each reply ends with a newline; after /reset the conversation starts over.
        #expect(r.out == first + "\n" + second + "\n" + first + "\n")
    }

    @Test("the official openai Python client: models, completions per adapter, streaming, chat, error classes",
          .enabled(if: pythonOpenAI, "python3 with the openai package is not installed (pip install openai); the openai-client test is skipped"))
    func openAIClient() async throws {
        let script = TestPaths.repoRoot.appendingPathComponent("scripts/serve_openai_client.py").path
        let env = URL(fileURLWithPath: "/usr/bin/env")
        let (prompts, golden) = try Tiny.golden()
        var options = ServerOptions()
        options.apiKey = "k"
        try await withServer(try Tiny.model.load(), adapters: Tiny.adapters, options: options) { c, _ in
            let r = try run(env, ["python3", script, "--base-url", c.base + "/v1", "--models", "base,lora,nd,dora",
                                  "--prompt-ids", prompts[0].map(String.init).joined(separator: ","), "--max-tokens", "12", "--api-key", "k"], input: "")
            #expect(r.status == 0, "\(r.err)")
            let o = try JSONValue.parse(Data(r.out.utf8))
            #expect(o["models"]?.array?.compactMap(\.string) == ["base", "dora", "lora", "nd"])
            for name in Tiny.names { #expect(ids(o["completions"]?[name]?.string ?? "") == golden[name]![0], "\(name)") }
            #expect(o["errors"]?["404"]?.string == "model_not_found")
            #expect(o["errors"]?["400"]?.string == "temperature")
            #expect(o["errors"]?["401"]?.string == "invalid_api_key")
        }
        let tok = try loadTokenizer(from: stories)
        let chat = ChatPrompter(template: try ChatTemplate(source: simpleTemplate), tokenizer: tok)
        try await withServer(try ModelWeights.load(directory: stories), tokenizer: tok, chat: chat) { c, _ in
            let r = try run(env, ["python3", script, "--base-url", c.base + "/v1", "--models", "base", "--prompt", "Once upon a time",
                                  "--max-tokens", "30", "--chat"], input: "")
            #expect(r.status == 0, "\(r.err)")
            let o = try JSONValue.parse(Data(r.out.utf8))
            let whole = try await c.post("/v1/completions", completionBody(model: "base", prompt: .string("Once upon a time"), maxTokens: 30))
            #expect(o["completions"]?["base"]?.string == whole.json?["choices"]?[0]?["text"]?.string)
            #expect(o["chat"]?.string?.isEmpty == false)
        }
    }
}
