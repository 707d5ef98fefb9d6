import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport
@testable import Training

/// Issue 20, classes 5–8 through the built `finetune`: runaway templates and configs stop with
/// an error naming the file; a non-empty output directory is never written over without
/// `--resume`/`--overwrite`; every error names its file, field or flag (no Foundation dumps,
/// no binary); non-finite weights are named by tensor; and the exit codes are the contract's.
@Suite struct HostileCLITests {
    static func exe() throws -> URL { try #require(finetuneExecutable(), "the finetune executable is built beside the tests") }
    static let stories = TestPaths.models.appendingPathComponent("stories260K")
    static let data = TestPaths.fixtures.appendingPathComponent("data/gsm8k_head.jsonl")

    /// `finetune args` in a child limited to 4 GB of address space and 120 s (a hang ends in
    /// timeout's exit 124, which no expectation accepts; no timing thresholds in tests).
    static func run(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
        try runProcess(URL(fileURLWithPath: "/bin/sh"), ["-c", "ulimit -v 4000000; exec timeout 120 \"$0\" \"$@\"", try exe().path] + args)
    }

    /// Runs `args`; expects `status` and a one-line error without a Foundation
    /// dump; returns stderr.
    @discardableResult
    static func expect(_ status: Int32, _ args: [String], naming needles: [String],
                       sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let r = try run(args)
        #expect(r.status == status, "exit \(r.status): \(r.err)", sourceLocation: sourceLocation)
        for bad in ["NSCocoaErrorDomain", "DecodingError", "EncodingError", "Fatal error", "UserInfo="] {
            #expect(!r.err.contains(bad), "\(r.err)", sourceLocation: sourceLocation)
        }
        for n in needles { #expect(r.err.contains(n), "missing '\(n)' in: \(r.err)", sourceLocation: sourceLocation) }
        return r.err
    }

    /// A copy of stories260K (links to its files) with extra files.
    static func storiesCopy(_ files: [String: String] = [:]) throws -> URL {
        let dir = try temporaryDirectory("hostile-cli")
        for name in try FileManager.default.contentsOfDirectory(atPath: stories.path) {
            try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent(name), withDestinationURL: stories.appendingPathComponent(name))
        }
        for (name, text) in files { try text.write(to: dir.appendingPathComponent(name), atomically: true, encoding: .utf8) }
        return dir
    }

    /// A copy of stories260K whose `tensor` holds `value` at element 5.
    static func storiesWithNonFinite(_ tensor: String, _ value: Float) throws -> URL {
        let dir = try temporaryDirectory("hostile-nan")
        for name in try FileManager.default.contentsOfDirectory(atPath: stories.path) where name != "model.safetensors" {
            try FileManager.default.createSymbolicLink(at: dir.appendingPathComponent(name), withDestinationURL: stories.appendingPathComponent(name))
        }
        let f = try SafetensorsFile(url: stories.appendingPathComponent("model.safetensors"))
        let entries = try f.names.sorted().map { n -> SafetensorsEntry in
            let t = try f.tensor(n)
            var v = t.floats()
            if n == tensor { v[5] = value }
            return SafetensorsEntry(name: n, shape: t.shape, floats: v)
        }
        try SafetensorsWriter.write(entries, to: dir.appendingPathComponent("model.safetensors"))
        return dir
    }

    // MARK: 5. Templates and configs that run away

    @Test func runawayChatTemplateStopsNamingTheTemplateFile() throws {
        let m = try Self.storiesCopy(["chat_template.jinja":
            "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}"])
        defer { try? FileManager.default.removeItem(at: m) }
        try Self.expect(2, ["train", "--model", m.path, "--data", Self.data.path, "--output", m.appendingPathComponent("run").path,
                            "--template", "chat", "--steps", "1"],
                        naming: ["chat template \(m.appendingPathComponent("chat_template.jinja").path) line 1", "longer than 64 MiB"])
        #expect(!FileManager.default.fileExists(atPath: m.appendingPathComponent("run/metrics.jsonl").path))
    }

    @Test func yamlAliasBombInConfigStopsNamingTheFile() throws {
        let dir = try temporaryDirectory("hostile-yaml")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bomb = dir.appendingPathComponent("bomb.yaml")
        try ConfigFileLimitTests.bomb.write(to: bomb, atomically: true, encoding: .utf8)
        try Self.expect(2, ["train", "--config", bomb.path, "--model", Self.stories.path, "--data", Self.data.path,
                            "--output", dir.appendingPathComponent("run").path],
                        naming: ["--config \(bomb.path): 'e' (line 5) expands to more than 10000 values"])
    }

    // MARK: 6. A failed run never destroys the previous one

    @Test func nonEmptyOutputIsRefusedUnlessResumeOrOverwrite() throws {
        let dir = try temporaryDirectory("hostile-out")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("run")
        let base = ["train", "--model", Self.stories.path, "--data", Self.data.path, "--output", out.path, "--adapter-type", "lora",
                    "--r", "2", "--batch-size", "1"]
        let first = try Self.run(base + ["--steps", "2", "--save-every", "1"])
        #expect(first.status == 0, "\(first.err)")
        func snapshot() throws -> [String: Data] {
            try ["run.json", "metrics.jsonl", "adapter/adapter_model.safetensors", "checkpoints/step-2/trainer_state.json"].reduce(into: [:]) {
                $0[$1] = try Data(contentsOf: out.appendingPathComponent($1))
            }
        }
        let before = try snapshot()

        // The issue's reproduction: a rerun that diverges. Refused before anything is written.
        try Self.expect(2, base + ["--steps", "3", "--lr", "1e30", "--max-grad-norm", "0"],
                        naming: ["--output \(out.path) already holds an earlier run", "--resume \(out.path)", "--overwrite"])
        #expect(try snapshot() == before, "the finished run is untouched")
        // A --resume from elsewhere does not license writing over it either.
        let elsewhere = dir.appendingPathComponent("other")
        try FileManager.default.createDirectory(at: elsewhere, withIntermediateDirectories: true)
        try Self.expect(2, base + ["--steps", "3", "--resume", elsewhere.path], naming: ["is not the run --resume \(elsewhere.path) continues"])
        #expect(try snapshot() == before)

        // --overwrite replaces it: the diverging run names no checkpoint of the old run as "last good".
        let err = try Self.expect(1, base + ["--steps", "40", "--lr", "1e30", "--max-grad-norm", "0", "--overwrite"],
                                  naming: ["diverged at step"])
        #expect(!err.contains("step-2"), "\(err)")
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("checkpoints/step-2").path))
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("adapter").path))

        // An empty directory is fine; a file is not a directory.
        let empty = dir.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        #expect(try Self.run(["train", "--model", Self.stories.path, "--data", Self.data.path, "--output", empty.path, "--steps", "1"]).status == 0)
        let file = dir.appendingPathComponent("file.txt")
        try "x".write(to: file, atomically: true, encoding: .utf8)
        try Self.expect(2, ["train", "--model", Self.stories.path, "--data", Self.data.path, "--output", file.path, "--steps", "1"],
                        naming: ["--output \(file.path) is a file"])
        try Self.expect(2, ["train", "--model", Self.stories.path, "--data", Self.data.path, "--output", file.appendingPathComponent("run").path,
                            "--steps", "1"], naming: ["--output \(file.appendingPathComponent("run").path): cannot create the directory: \(file.path) is a file"])
    }

    @Test func resumeIntoItsOwnRunIsAllowed() throws {
        let out = try temporaryDirectory("hostile-resume")
        defer { try? FileManager.default.removeItem(at: out) }
        let base = ["train", "--model", Self.stories.path, "--data", Self.data.path, "--output", out.path, "--adapter-type", "lora",
                    "--r", "2", "--batch-size", "1", "--save-every", "1"]
        #expect(try Self.run(base + ["--steps", "2"]).status == 0)
        let r = try Self.run(base + ["--steps", "3", "--resume", out.appendingPathComponent("checkpoints/step-2").path])
        #expect(r.status == 0, "\(r.err)")
        let steps = try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
            .compactMap { try? JSONValue.parse(Data($0.utf8))["step"]?.int }
        #expect(steps == [1, 2, 3], "\(steps)")
    }

    @Test func quickstartAndScriptsDoNotRerunIntoAFinishedRun() throws {
        // Every `finetune train` in scripts/ writes into a directory the script just removed (or
        // a fresh one): none needs --overwrite. This guards that against edits.
        let scripts = TestPaths.repoRoot.appendingPathComponent("scripts")
        for name in try FileManager.default.contentsOfDirectory(atPath: scripts.path) where name.hasSuffix(".sh") {
            let text = try String(contentsOf: scripts.appendingPathComponent(name), encoding: .utf8)
            guard text.contains(" train ") && text.contains("--output") else { continue }
            #expect(text.contains("rm -rf") || text.contains("--overwrite") || text.contains("--resume"), "\(name)")
        }
    }

    // MARK: 7. Messages that name the file, field or flag

    @Test func foundationErrorsBecomeMessagesNamingTheFile() throws {
        let dir = try temporaryDirectory("hostile-msg")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("a-file")
        try "x".write(to: file, atomically: true, encoding: .utf8)
        let m = Self.stories.path
        // A directory as --data.
        try Self.expect(2, ["train", "--model", m, "--data", dir.path, "--output", dir.appendingPathComponent("r1").path],
                        naming: ["--data \(dir.path): is a directory; expected a JSON or JSONL data file"])
        try Self.expect(2, ["eval", "--model", m, "--data", dir.path, "--limit", "1"], naming: ["\(dir.path): cannot read data file: is a directory"])
        try Self.expect(2, ["eval", "--score", dir.path], naming: ["\(dir.path): cannot read: is a directory"])
        // Non-finite numbers in flags.
        try Self.expect(2, ["train", "--model", m, "--data", Self.data.path, "--output", dir.appendingPathComponent("r2").path, "--alpha", "nan"],
                        naming: ["--alpha nan: must be a finite number"])
        try Self.expect(2, ["train", "--model", m, "--data", Self.data.path, "--output", dir.appendingPathComponent("r3").path, "--weight-decay", "inf"],
                        naming: ["--weight-decay inf: must be a finite number ≥ 0"])
        // Output paths under a file.
        let lora = try Self.run(["train", "--model", m, "--data", Self.data.path, "--output", dir.appendingPathComponent("lora").path,
                                 "--adapter-type", "lora", "--r", "2", "--steps", "1"])
        #expect(lora.status == 0, "\(lora.err)")
        let adapter = dir.appendingPathComponent("lora/adapter").path
        try Self.expect(2, ["merge", "--model", m, "--adapter", adapter, "--output", file.appendingPathComponent("merged").path],
                        naming: ["cannot create the directory: \(file.path) is a file, not a directory"])
        try Self.expect(2, ["export", "--adapter", adapter, "--format", "peft-lora", "--output", file.appendingPathComponent("x").path],
                        naming: ["\(file.path) is a file, not a directory"])
        try Self.expect(2, ["eval", "--model", m, "--data", Self.data.path, "--limit", "1", "--max-new-tokens", "2",
                            "--output", file.appendingPathComponent("p.jsonl").path],
                        naming: ["\(file.appendingPathComponent("p.jsonl").path): cannot write: \(file.path) is a file, not a directory"])
    }

    @Test func schemaErrorsInValidJSONAreNotCalledInvalidJSON() throws {
        let dir = try temporaryDirectory("hostile-schema")
        defer { try? FileManager.default.removeItem(at: dir) }
        let d = dir.appendingPathComponent("d.jsonl")
        try "{\"foo\": 1}\n{\"foo\": 2}\n".write(to: d, atomically: true, encoding: .utf8)
        let err = try Self.expect(2, ["train", "--model", Self.stories.path, "--data", d.path, "--output", dir.appendingPathComponent("r").path],
                                  naming: ["\(d.path):1: malformed record: none of the 2 record(s) has a supported layout (the JSON is valid)",
                                           "unrecognized record with keys [foo]"])
        #expect(!err.contains("invalid JSON"), "\(err)")
        // Broken JSON is still called that.
        try "{\"foo\": \n".write(to: d, atomically: true, encoding: .utf8)
        try Self.expect(2, ["train", "--model", Self.stories.path, "--data", d.path, "--output", dir.appendingPathComponent("r").path],
                        naming: ["invalid JSON"])
    }

    @Test func lyingGGUFKeyLengthPrintsNoBinary() throws {
        let dir = try temporaryDirectory("hostile-gguf")
        defer { try? FileManager.default.removeItem(at: dir) }
        var bytes = Data("GGUF".utf8)
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        u32(3); u64(0); u64(1)
        u64(1000); bytes.append(contentsOf: (0..<1024).map { UInt8($0 % 256) }); u32(99)
        let g = dir.appendingPathComponent("lying.gguf")
        try bytes.write(to: g)
        let err = try Self.expect(2, ["inspect", "--model", g.path], naming: ["\(g.path): metadata '<key at byte 24>'", "not printable text"])
        #expect(err.utf8.count < 400 && !err.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" }, "\(err)")
    }

    @Test func nonFiniteBaseWeightsAreNamedByTensor() throws {
        let tensor = "model.layers.1.self_attn.q_proj.weight"
        let m = try Self.storiesWithNonFinite(tensor, .nan)
        defer { try? FileManager.default.removeItem(at: m) }
        let named = ["\(m.path)/model.safetensors: the base model's tensor '\(tensor)' holds NaN at element 5; expected finite numbers"]
        try Self.expect(2, ["train", "--model", m.path, "--data", Self.data.path, "--output", m.appendingPathComponent("run").path,
                            "--adapter-type", "lora", "--steps", "2"], naming: named + ["found when the loss of step 1 was nan"])
        try Self.expect(2, ["generate", "--model", m.path, "--prompt", "Once upon", "--max-new-tokens", "4"],
                        naming: named + ["found because the logits were not finite"])
        try Self.expect(2, ["eval", "--model", m.path, "--data", Self.data.path, "--limit", "1", "--max-new-tokens", "2"], naming: named)
        try Self.expect(2, ["eval", "--model", m.path, "--data", Self.data.path, "--metric", "loss"], naming: named + ["found because the loss was nan"])
        let ids = TestPaths.fixtures.appendingPathComponent("llama-tiny/expected.safetensors")  // ids < 320 fit stories' 512
        try Self.expect(2, ["logits", "--model", m.path, "--input", ids.path, "--output", m.appendingPathComponent("logits.safetensors").path],
                        naming: named + ["found because the logits were not finite"])
        #expect(!FileManager.default.fileExists(atPath: m.appendingPathComponent("logits.safetensors").path))
        // Merging an adapter into that tensor would copy the NaN: refused, nothing written.
        let config = try ModelConfig.load(m.appendingPathComponent("config.json"))
        let set = try AdapterSet.create(spec: AdapterSpec(kind: .lora, targets: TargetSelection(modules: [.q]), rank: 2, alpha: 4, dropout: 0,
                                                          useRSLoRA: false, ndlinearInit: .reference), config: config, seed: 1)
        let adapter = m.appendingPathComponent("adapter")
        try AdapterIO.save(set, format: .peftLoRA, to: adapter, baseModel: nil)
        try Self.expect(2, ["merge", "--model", m.path, "--adapter", adapter.path, "--output", m.appendingPathComponent("merged").path],
                        naming: named + ["merging would copy it"])
        #expect(!FileManager.default.fileExists(atPath: m.appendingPathComponent("merged/model.safetensors").path))
    }

    @Test(arguments: [Float.nan, Float.infinity])
    func nonFiniteAdaptersAreRefusedWhereverRead(_ value: Float) throws {
        let dir = try temporaryDirectory("hostile-nan-adapter")
        defer { try? FileManager.default.removeItem(at: dir) }
        let config = try ModelConfig.load(Self.stories.appendingPathComponent("config.json"))
        let set = try AdapterSet.create(spec: AdapterSpec(kind: .lora, targets: TargetSelection(), rank: 2, alpha: 4, dropout: 0,
                                                          useRSLoRA: false, ndlinearInit: .reference), config: config, seed: 1)
        let victim = set.adapters[3]
        victim.parameters[0].value[7] = value
        let adapter = dir.appendingPathComponent("adapter")
        try AdapterIO.save(set, format: .peftLoRA, to: adapter, baseModel: nil)
        let module = String(victim.weightName.dropLast(".weight".count))
        let named = ["\(adapter.path): the adapter's tensor '\(module).\(victim.parameters[0].role)' holds \(value.isNaN ? "NaN" : "+Inf") at element 7"]
        let merged = dir.appendingPathComponent("merged")
        try Self.expect(2, ["merge", "--model", Self.stories.path, "--adapter", adapter.path, "--output", merged.path], naming: named)
        #expect(!FileManager.default.fileExists(atPath: merged.appendingPathComponent("model.safetensors").path), "no all-NaN tensor written")
        try Self.expect(2, ["generate", "--model", Self.stories.path, "--adapter", adapter.path, "--prompt-ids", "1,2", "--max-new-tokens", "2"], naming: named)
        try Self.expect(2, ["export", "--adapter", adapter.path, "--format", "peft-lora", "--output", dir.appendingPathComponent("x").path], naming: named)
        try Self.expect(2, ["train", "--model", Self.stories.path, "--data", Self.data.path, "--output", dir.appendingPathComponent("r").path,
                            "--adapter-type", "lora", "--adapter-init", adapter.path, "--steps", "1"], naming: named)
    }

    // MARK: 8. Exit codes

    @Test func everyCommandsHelpStatesTheExitCodes() throws {
        for cmd in ["", "train", "generate", "logits", "inspect", "bench", "tokenize", "eval", "export", "merge", "report"] {
            let r = try Self.run((cmd.isEmpty ? [] : [cmd]) + ["--help"])
            #expect(r.status == 0, "\(cmd): \(r.err)")
            #expect(r.out.contains("EXIT STATUS:") && r.out.contains("  2    bad input or usage") && r.out.contains("  130  interrupted"),
                    "\(cmd) --help: \(r.out.suffix(400))")
        }
        let train = try Self.run(["train", "--help"])
        #expect(train.out.contains("--overwrite") && train.out.contains("non-empty"))
    }

    @Test func usageErrorsExitTwo() throws {
        try Self.expect(2, ["train", "--model", Self.stories.path, "--data", Self.data.path, "--output", "/nonexistent/never", "--no-such-flag"],
                        naming: ["--no-such-flag"])
        try Self.expect(2, ["train", "--no-such-flag"], naming: ["--model"])
        try Self.expect(2, ["no-such-command"], naming: ["no-such-command"])
        try Self.expect(2, ["generate", "--model", Self.stories.path, "--prompt-ids", "1", "--max-new-tokens", "many"], naming: ["many"])
        try Self.expect(2, ["generate", "--model", Self.stories.path], naming: ["--prompt"])
    }
}
