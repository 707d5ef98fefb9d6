import Foundation
import LLMCore
import Testing
import TestSupport

/// `finetune export` and `finetune merge` end to end, read back by `finetune logits`.
@Suite struct CLIInteropTests {
    static func exe() throws -> URL { try #require(finetuneExecutable(), "the finetune executable is built beside the tests") }

    /// Runs finetune, expecting success; returns stdout.
    @discardableResult
    static func ok(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let r = try runProcess(try exe(), args)
        #expect(r.status == 0, "finetune \(args.joined(separator: " ")): \(r.err)", sourceLocation: sourceLocation)
        return r.out
    }

    /// Runs finetune, expecting a failure whose stderr names `needle`.
    static func fails(_ args: [String], naming needle: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try runProcess(try exe(), args)
        #expect(r.status != 0, sourceLocation: sourceLocation)
        #expect(r.err.contains(needle), "stderr: \(r.err)", sourceLocation: sourceLocation)
    }

    /// `finetune logits` of the fixture batch on `model` (+ `adapter`), masked like the fixtures.
    static func logits(_ f: FixtureModel, model: URL, adapter: URL? = nil, tmp: URL) throws -> (values: [Float], include: (Int) -> Bool) {
        let out = tmp.appendingPathComponent("logits-\(UUID().uuidString).safetensors")
        var args = ["logits", "--model", model.path, "--input", f.directory.appendingPathComponent("expected.safetensors").path, "--output", out.path]
        if let adapter { args += ["--adapter", adapter.path] }
        try ok(args)
        let mask = try f.expected().tensor("attention_mask").ints()
        let V = 320
        return (try SafetensorsFile(url: out).tensor("logits").floats(), { mask[$0 / V] == 1 })
    }

    @Test(arguments: FixtureModel.allCases)
    func exportedAdaptersGiveTheFixtureLogits(_ f: FixtureModel) throws {
        let tmp = try temporaryDirectory("cli-export-\(f)")
        defer { try? FileManager.default.removeItem(at: tmp) }
        let nd = f.directory.appendingPathComponent("ndlinear"), lora = f.directory.appendingPathComponent("lora")
        let lokr = tmp.appendingPathComponent("lokr"), ref = tmp.appendingPathComponent("ref"), peft = tmp.appendingPathComponent("lora")
        let summary = try Self.ok(["export", "--adapter", nd.path, "--format", "peft-lokr", "--output", lokr.path, "--model", f.directory.path, "--json"])
        let json = try JSONValue.parse(Data(summary.utf8))
        #expect(json["format"]?.string == "peft-lokr")
        #expect(json["modules"]?.int == 14)
        #expect(json["shapes_inferred"]?.bool == false)
        // Without --model the shapes come from the adapter itself.
        let inferred = try Self.ok(["export", "--adapter", lokr.path, "--format", "ndlinear-reference", "--output", ref.path, "--json"])
        #expect(try JSONValue.parse(Data(inferred.utf8))["shapes_inferred"]?.bool == true)
        try Self.ok(["export", "--adapter", lora.path, "--format", "peft-lora", "--output", peft.path, "--model", f.directory.appendingPathComponent("config.json").path])

        let expectedND = try f.expected("ndlinear").tensor("logits").floats()
        for dir in [lokr, ref] {
            let (l, include) = try Self.logits(f, model: f.directory, adapter: dir, tmp: tmp)
            #expect(maxAbsDiff(l, expectedND, include: include) <= 1e-4, "\(f) \(dir.lastPathComponent)")
        }
        let (l, include) = try Self.logits(f, model: f.directory, adapter: peft, tmp: tmp)
        #expect(maxAbsDiff(l, try f.expected("lora").tensor("logits").floats(), include: include) <= 1e-4)
        let a = try SafetensorsFile(url: lora.appendingPathComponent("adapter_model.safetensors"))
        let b = try SafetensorsFile(url: peft.appendingPathComponent("adapter_model.safetensors"))
        #expect(a.names.sorted() == b.names.sorted())
        #expect(a.tensors.allSatisfy { b[$0.name]?.floats() == $0.floats() })
        let cfg = try JSONValue.parse(Data(contentsOf: peft.appendingPathComponent("adapter_config.json")))
        #expect(cfg["base_model_name_or_path"]?.string == f.directory.standardizedFileURL.path)
    }

    @Test func exportFailuresNameTheProblem() throws {
        let f = FixtureModel.llamaTiny
        let tmp = try temporaryDirectory("cli-export-bad")
        defer { try? FileManager.default.removeItem(at: tmp) }
        let lora = f.directory.appendingPathComponent("lora").path
        try Self.fails(["export", "--adapter", lora, "--format", "peft-lokr", "--output", tmp.appendingPathComponent("x").path],
                       naming: "peft-lokr export needs NdLinear-LoRA adapters")
        try Self.fails(["export", "--adapter", lora, "--format", "gguf", "--output", tmp.appendingPathComponent("y").path],
                       naming: "--format 'gguf'")
        try Self.fails(["export", "--adapter", lora, "--format", "peft-lora", "--output", lora], naming: "is the --adapter directory")
        try Self.fails(["export", "--adapter", lora, "--format", "peft-lora", "--output", tmp.appendingPathComponent("z").path,
                        "--model", tmp.appendingPathComponent("missing").path], naming: "--model")
        // An adapter of another model's shapes is caught against --model.
        try Self.fails(["export", "--adapter", FixtureModel.llama3Tiny.directory.appendingPathComponent("lora").path, "--format", "peft-lora",
                        "--output", tmp.appendingPathComponent("w").path, "--model", f.directory.path], naming: "lora_A.weight")
        // Nothing in a directory without adapter tensors tells the shapes: --model is needed.
        let empty = tmp.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        try SafetensorsWriter.write([SafetensorsEntry(name: "x", shape: [1], floats: [0])], to: empty.appendingPathComponent("adapter_model.safetensors"))
        try #"{"peft_type": "LORA", "r": 4, "lora_alpha": 8}"#.write(to: empty.appendingPathComponent("adapter_config.json"), atomically: true, encoding: .utf8)
        try Self.fails(["export", "--adapter", empty.path, "--format", "peft-lora", "--output", tmp.appendingPathComponent("v").path],
                       naming: "pass --model")
    }

    /// f32 merge through the CLI gives PEFT's merged logits; merging in the base's own dtype
    /// with a small --max-shard-size writes shards + index, reports the rounding, and loads.
    @Test(arguments: FixtureModel.allCases)
    func mergeThroughTheCLI(_ f: FixtureModel) throws {
        let tmp = try temporaryDirectory("cli-merge-\(f)")
        defer { try? FileManager.default.removeItem(at: tmp) }
        let lora = f.directory.appendingPathComponent("lora")
        let f32 = tmp.appendingPathComponent("f32"), native = tmp.appendingPathComponent("native")
        let r1 = try JSONValue.parse(Data(try Self.ok(["merge", "--model", f.directory.path, "--adapter", lora.path,
                                                       "--output", f32.path, "--dtype", "f32", "--json"]).utf8))
        #expect(r1["dtype"]?.string == "float32")
        #expect(r1["merged"]?.array?.count == 14)
        #expect(r1["max_rounding_error"]?.double == 0)
        #expect((r1["max_change"]?.double ?? 0) > 0)
        var (l, include) = try Self.logits(f, model: f32, tmp: tmp)
        let mergedLogits = try f.expected("lora").tensor("merged_logits").floats()
        #expect(maxAbsDiff(l, mergedLogits, include: include) <= 1e-4)

        let base = try f.load().storageDType
        let run = try runProcess(try Self.exe(), ["merge", "--model", f.directory.path, "--adapter", lora.path,
                                                  "--output", native.path, "--max-shard-size", "40KB", "--json"])
        #expect(run.status == 0, "\(run.err)")
        let r2 = try JSONValue.parse(Data(run.out.utf8))
        #expect(r2["dtype"]?.string == base.torchName)
        #expect(r2["sharded"]?.bool == true)
        #expect(FileManager.default.fileExists(atPath: native.appendingPathComponent("model.safetensors.index.json").path))
        #expect(run.err.contains("max |ΔW|"))
        if base == .f32 {
            #expect(r2["max_rounding_error"]?.double == 0)
        } else {
            #expect((r2["max_rounding_error"]?.double ?? 0) > 0)
            #expect(run.err.contains("rounding error"))
        }
        (l, include) = try Self.logits(f, model: native, tmp: tmp)
        // Rounded weights move the logits a little, but far less than the adapter itself does.
        let baseLogits = try f.expected().tensor("logits").floats()
        #expect(maxAbsDiff(l, mergedLogits, include: include) < 0.2 * maxAbsDiff(baseLogits, mergedLogits, include: include))
    }

    @Test func mergeRefusesBadTargets() throws {
        let f = FixtureModel.llamaTiny
        let lora = f.directory.appendingPathComponent("lora").path
        // On a copy, so that a regression could never overwrite the fixtures.
        let copy = try temporaryDirectory("cli-own")
        defer { try? FileManager.default.removeItem(at: copy) }
        for n in ["config.json", "model.safetensors"] {
            try FileManager.default.copyItem(at: f.directory.appendingPathComponent(n), to: copy.appendingPathComponent(n))
        }
        try Self.fails(["merge", "--model", copy.path, "--adapter", lora, "--output", copy.path + "/"], naming: "the model directory itself")
        try Self.fails(["merge", "--model", f.directory.appendingPathComponent("config.json").path, "--adapter", lora, "--output", "/tmp/never"],
                       naming: "merge needs a model directory")
        try Self.fails(["merge", "--model", f.directory.path, "--adapter", lora, "--output", "/tmp/never", "--dtype", "int8"], naming: "--dtype 'int8'")
        try Self.fails(["merge", "--model", f.directory.path, "--adapter", lora, "--output", "/tmp/never", "--max-shard-size", "big"],
                       naming: "--max-shard-size 'big'")
        #expect(!FileManager.default.fileExists(atPath: "/tmp/never"))
    }
}
