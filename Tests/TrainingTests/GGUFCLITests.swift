import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport

/// `--model file.gguf` through the CLI: train, inspect, export --format gguf-lora, merge into a
/// GGUF copy. Uses a fixture written as GGUF (f16 base) so it runs in seconds.
@Suite struct GGUFCLITests {
    @Test func trainExportAndMergeAgainstAGGUFBase() throws {
        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let f = FixtureModel.qwen2Tiny
        let dir = try temporaryDirectory("gguf-cli")
        defer { try? FileManager.default.removeItem(at: dir) }
        let base = dir.appendingPathComponent("base.gguf")
        _ = try GGUFExport.writeMergedModel(try f.load(), adapters: nil, base: nil, dtype: .f16, to: base)
        let data = try f.batchJSONL()
        let run = dir.appendingPathComponent("run")
        let t = try runProcess(exe, ["train", "--model", base.path, "--data", data.path, "--output", run.path, "--adapter-type", "lora",
                                     "--r", "4", "--steps", "3", "--batch-size", "2", "--lr", "1e-2"])
        #expect(t.status == 0, "\(t.err)")
        let losses = try String(contentsOf: run.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
            .compactMap { try? JSONValue.parse(Data($0.utf8))["loss"]?.double }
        #expect(losses.count == 3 && losses.last! < losses.first!, "\(losses)")

        let i = try runProcess(exe, ["inspect", "--model", base.path, "--adapter-type", "lora", "--json"])
        #expect(i.status == 0 && i.out.contains("\"layers\""), "\(i.err)")

        let lora = dir.appendingPathComponent("adapter-lora.gguf")
        let e = try runProcess(exe, ["export", "--adapter", run.appendingPathComponent("adapter").path, "--format", "gguf-lora",
                                     "--model", base.path, "--output", lora.path])
        #expect(e.status == 0, "\(e.err)")
        let g = try GGUFFile(path: lora.path)
        #expect(try g.string("adapter.type") == "lora" && g["blk.0.attn_q.weight.lora_a"] != nil && g["blk.1.ffn_down.weight.lora_b"] != nil)

        let merged = dir.appendingPathComponent("merged.gguf")
        let m = try runProcess(exe, ["merge", "--model", base.path, "--adapter", run.appendingPathComponent("adapter").path, "--output", merged.path])
        #expect(m.status == 0, "\(m.err)")
        #expect(try GGUFFile(path: merged.path)["blk.0.attn_q.weight"]?.dtype == .f16)
        // A non-LoRA adapter is refused for gguf-lora with the way out named.
        let nd = try runProcess(exe, ["export", "--adapter", f.directory.appendingPathComponent("ndlinear").path, "--format", "gguf-lora",
                                      "--model", base.path, "--output", lora.path])
        #expect(nd.status != 0 && nd.err.contains("merge"), "\(nd.err)")
    }
}
