import Foundation
import LLMCore
import Testing
import Tokenize
import TestSupport
@testable import Training

/// `finetune prepare`: the goldens through the command, and one code path with `train`.
@Suite("finetune prepare")
struct PrepareTests {
    static func finetune(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        let exe = try #require(finetuneExecutable(), "the finetune executable is built beside the tests")
        return try runProcess(exe, args)
    }

    static func lines(_ url: URL) throws -> [JSONValue] {
        try String(contentsOf: url, encoding: .utf8).split(separator: "\n").map { try JSONValue.parse(Data($0.utf8)) }
    }

    /// The command reproduces the goldens' input_ids and labels for every template, from a
    /// tokenizer directory (`--tokenizer`, no weights) and `--chat-template`.
    @Test(.requires(Assets.shared), arguments: ChatDataTests.templateNames)
    func commandReproducesGoldens(_ name: String) throws {
        let cases = try ChatDataTests.goldens().filter { $0.template == name }
        let dir = try temporaryDirectory("prepare")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("chat.jsonl")
        try ChatDataTests.jsonl(cases.map(\.messages)).write(to: data, atomically: true, encoding: .utf8)
        let r = try Self.finetune(["prepare", "--data", data.path, "--tokenizer", ChatDataTests.tokenizerDirectory(name).path,
                                   "--chat-template", try ChatDataTests.templateFile(name).path,
                                   "--max-length", "4096", "--output", dir.appendingPathComponent("out.jsonl").path, "--json"])
        #expect(r.status == 0, "\(r.err)")
        let rows = try Self.lines(dir.appendingPathComponent("out.jsonl"))
        #expect(rows.count == cases.count)
        for (row, g) in zip(rows, cases) {
            #expect(row["input_ids"]?.array?.compactMap(\.int) == g.inputIds, "\(name)")
            #expect(row["labels"]?.array?.compactMap(\.int) == g.labels, "\(name)")
        }
        // The counts, printed and as JSON.
        let counts = try JSONValue.parse(Data(r.out.utf8))["data"]
        let tokens = cases.reduce(0) { $0 + $1.inputIds.count }
        let trained = cases.reduce(0) { $0 + $1.labels.dropFirst().filter { $0 != -100 }.count }
        #expect(counts?["records"]?.int == 3 && counts?["tokens"]?.int == tokens && counts?["trained_tokens"]?.int == trained)
        #expect(counts?["truncated"]?.int == 0 && counts?["dropped"]?.int == 0)
        #expect(r.err.contains("3 records, \(tokens) tokens, \(trained) trained tokens, 0 truncated, 0 dropped"))
    }

    /// `--max-length` in prepare: truncated and dropped records are counted.
    @Test(.requires(Assets.shared)) func truncatedAndDroppedAreCounted() throws {
        let dir = try temporaryDirectory("prepare")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("chat.jsonl")
        let long = String(repeating: "word ", count: 60)
        try #"""
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\#(long)"}]}
            {"messages": [{"role": "user", "content": "\#(long)"}, {"role": "assistant", "content": "late"}]}
            {"prompt": "2+2=", "completion": "4"}
            """#.write(to: data, atomically: true, encoding: .utf8)
        let r = try Self.finetune(["prepare", "--data", data.path, "--tokenizer", TestPaths.shared("data/tokenizers/smollm2").path,
                                   "--chat-template", try ChatDataTests.templateFile("smollm2").path, "--max-length", "32", "--output", dir.appendingPathComponent("out.jsonl").path, "--json"])
        #expect(r.status == 0, "\(r.err)")
        let counts = try JSONValue.parse(Data(r.out.utf8))["data"]
        #expect(counts?["records"]?.int == 2 && counts?["truncated"]?.int == 1 && counts?["dropped"]?.int == 1)
        #expect(try Self.lines(dir.appendingPathComponent("out.jsonl")).allSatisfy { ($0["input_ids"]?.array?.count ?? 99) <= 32 })
        #expect(r.err.contains("chat.jsonl:2: no trained token left"))
    }

    /// Bad flags and files name the flag or file and exit 2.
    @Test(.requires(Assets.shared)) func badInputExitsTwoNamingIt() throws {
        let dir = try temporaryDirectory("prepare")
        defer { try? FileManager.default.removeItem(at: dir) }
        let data = dir.appendingPathComponent("chat.jsonl")
        try #"{"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}"#.write(to: data, atomically: true, encoding: .utf8)
        let tok = TestPaths.shared("data/tokenizers/smollm2").path
        let out = dir.appendingPathComponent("out.jsonl").path
        let bad = try Self.finetune(["prepare", "--data", data.path, "--tokenizer", tok, "--output", out, "--strict"])
        #expect(bad.status == 2)
        #expect(bad.err.contains("\(data.path):1: field `messages[1].role`: expected one of system, user, assistant, tool, found `robot`"))
        #expect(!FileManager.default.fileExists(atPath: out))
        let missing = try Self.finetune(["prepare", "--data", data.path, "--tokenizer", tok, "--output", out,
                                         "--chat-template", dir.appendingPathComponent("none.jinja").path])
        #expect(missing.status == 2)
        #expect(missing.err.contains("--chat-template \(dir.appendingPathComponent("none.jinja").path): cannot read"))
        let broken = dir.appendingPathComponent("broken.jinja")
        try "{% for m in messages %}".write(to: broken, atomically: true, encoding: .utf8)
        let syntax = try Self.finetune(["prepare", "--data", data.path, "--tokenizer", tok, "--output", out, "--chat-template", broken.path])
        #expect(syntax.status == 2)
        #expect(syntax.err.contains("--chat-template \(broken.path): chat template line 1"))
        let both = try Self.finetune(["prepare", "--data", data.path, "--output", out])
        #expect(both.status == 2 && both.err.contains("give exactly one of --model or --tokenizer"))
    }

    /// One code path: training on `prepare`'s output gives the same losses, step by step, as
    /// training on the raw chat file (a tiny model, the toy tokenizer and chat template).
    @Test func trainingOnPreparedOutputEqualsTrainingOnTheRawFile() throws {
        let dir = try temporaryDirectory("prepare-train")
        defer { try? FileManager.default.removeItem(at: dir) }
        let raw = dir.appendingPathComponent("chat.jsonl")
        try #"""
            {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+3?"}, {"role": "assistant", "content": "5"}, {"role": "user", "content": "times 4?"}, {"role": "assistant", "content": "20"}]}
            {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi", "weight": 0}, {"role": "user", "content": "Louder"}, {"role": "assistant", "content": "HI"}]}
            {"prompt": [{"role": "user", "content": "Capital of France?"}], "completion": [{"role": "assistant", "content": "Paris"}]}
            {"prompt": "1, 2, 3,", "completion": " 4"}
            {"messages": [{"role": "user", "content": "Last?"}, {"role": "assistant", "content": "Yes, the last one."}]}
            """#.write(to: raw, atomically: true, encoding: .utf8)
        let f = FixtureModel.qwen2Tiny
        let tokenizer = ToyTokenizer()
        func losses(_ data: URL, tokenizer: (any Tokenizer)?, chat: PromptTemplate.Chat?, _ tag: String) throws -> [Double] {
            var c = TrainConfig(model: f.directory.path, data: data.path, output: dir.appendingPathComponent(tag).path)
            c.r = 4; c.steps = 4; c.batchSize = 2; c.lr = 1e-2; c.maxLength = 64; c.seed = 7
            let trainer = try Trainer(config: c, weights: try f.load(), tokenizer: tokenizer, chat: chat)
            trainer.log = { _ in }
            _ = try trainer.run()
            return try TrainerTests.metrics(dir.appendingPathComponent(tag)).compactMap { $0["loss"]?.double }
        }
        let fromRaw = try losses(raw, tokenizer: tokenizer, chat: ChatDataTests.toyChat, "raw")
        let prepared = dir.appendingPathComponent("prepared.jsonl")
        let file = try PreparedFile(path: raw.path, template: .auto, tokenizer: tokenizer, chat: ChatDataTests.toyChat,
                                    options: TokenizeOptions(maxLength: 64), strict: true, vocabSize: 320, warn: { _ in })
        #expect(file.prepared.truncated == 1)   // --max-length 64 cuts the first record after its first answer
        try file.writeJSONL(to: prepared)
        let fromPrepared = try losses(prepared, tokenizer: nil, chat: nil, "prepared")
        #expect(fromRaw.count == 4)
        #expect(fromRaw == fromPrepared)
        let run = try JSONValue.parse(Data(contentsOf: dir.appendingPathComponent("raw/run.json")))
        #expect(run["resolved"]?["truncated_records"]?.int == file.prepared.truncated)
        #expect(run["resolved"]?["dropped_records"]?.int == 0)
    }
}
