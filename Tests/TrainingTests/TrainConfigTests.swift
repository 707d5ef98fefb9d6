import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport
@testable import Training

/// The training configuration: typed choices that keep their strings, defaults filled in one
/// place, every flag checked before any data is read, flags that `--adapter-init` overrides
/// refused by name, and bad input exiting 2 through the CLI.
@Suite struct TrainConfigTests {
    static func exe() throws -> URL { try #require(finetuneExecutable(), "the finetune executable is built beside the tests") }

    /// A data file that exists (resolve checks that the inputs exist, after every flag).
    static func config(data: URL? = nil) throws -> TrainConfig {
        TrainConfig(model: FixtureModel.llamaTiny.directory.path, data: try (data ?? FixtureModel.llamaTiny.batchJSONL()).path,
                    output: FileManager.default.temporaryDirectory.appendingPathComponent("never-written").path)
    }

    // MARK: Typed values, same strings

    @Test func resolvedConfigKeepsTheStringsOfRunJSON() throws {
        let plan = try Self.config().resolve()
        #expect(plan.config.r == 8 && plan.config.targetModules == "all-linear" && plan.config.ndlinearInit == .zero)
        guard case let .fresh(spec) = plan.adapter else { Issue.record("a fresh adapter expected"); return }
        #expect(spec.kind == .ndlinear && spec.alpha == 1 && spec.rank == 8 && spec.ndlinearInit == .zero)
        let enc = JSONEncoder()
        enc.keyEncodingStrategy = .convertToSnakeCase
        let json = try JSONValue.parse(try enc.encode(plan.config))
        #expect(json["adapter_type"]?.string == "ndlinear" && json["schedule"]?.string == "linear")
        #expect(json["template"]?.string == "auto" && json["ndlinear_init"]?.string == "zero")
        #expect(json["target_modules"]?.string == "all-linear" && json["r"]?.int == 8)
        let dec = JSONDecoder()
        dec.keyDecodingStrategy = .convertFromSnakeCase
        #expect(try dec.decode(TrainConfig.self, from: try enc.encode(plan.config)) == plan.config)

        // LoRA's α defaults to 2r; an unknown name is an error naming the field and the names.
        var lora = try Self.config()
        lora.adapterType = .lora; lora.r = 4
        guard case let .fresh(loraSpec) = try lora.resolve().adapter else { Issue.record("a fresh adapter expected"); return }
        #expect(loraSpec.alpha == 8)
        let bad = String(decoding: try enc.encode(plan.config), as: UTF8.self).replacingOccurrences(of: "\"linear\"", with: "\"warm\"")
        #expect { try dec.decode(TrainConfig.self, from: Data(bad.utf8)) } throws: { e in
            "\(e)".contains("schedule 'warm': expected constant, linear or cosine")
        }
        #expect(try LRScheduleKind("Cosine", flag: "--schedule") == .cosine)
        #expect(try PromptTemplate("LLM_Adapters", flag: "--template") == .llmAdapters)
        #expect(throws: TrainingError.self) { try AdapterKind("vera", flag: "--adapter-type") }
    }

    // MARK: Checked before the data

    /// A typo in `--target-modules` is reported before anything is read: with a data file that
    /// would fail to load (strict, malformed) and with one that does not exist.
    @Test func badTargetModuleFailsBeforeTheData() throws {
        let dir = try temporaryDirectory("bad-target")
        defer { try? FileManager.default.removeItem(at: dir) }
        let malformed = dir.appendingPathComponent("malformed.jsonl")
        try "{not json\n".write(to: malformed, atomically: true, encoding: .utf8)
        var c = try Self.config(data: malformed)
        c.strict = true
        c.targetModules = "q_proj,q_prj"
        let weights = try FixtureModel.llamaTiny.load()
        #expect { try Trainer(config: c, weights: weights, tokenizer: nil) } throws: { e in
            "\(e)".contains("--target-modules: unknown module 'q_prj'")
        }
        c.targetModules = "q_proj"
        #expect(throws: DataError.self) { try Trainer(config: c, weights: weights, tokenizer: nil) }   // the data were the next problem

        let missing = dir.appendingPathComponent("missing.jsonl").path
        let r = try runProcess(try Self.exe(), ["train", "--model", FixtureModel.llamaTiny.directory.path, "--data", missing,
                                                "--output", dir.appendingPathComponent("run").path, "--target-modules", "q_prj"])
        #expect(r.status == 2 && r.err.contains("--target-modules: unknown module 'q_prj'") && !r.err.contains("missing.jsonl"), "\(r.err)")
        // Layers beyond the model are caught once its config is known, still before the data.
        c.layers = "0-7"
        #expect { try Trainer(config: c, weights: weights, tokenizer: nil) } throws: { e in "\(e)".contains("--layers") }
    }

    /// With `--adapter-init DIR`, each flag its files override is refused by name.
    @Test(arguments: ["--target-modules", "--layers", "--r", "--rslora", "--ndlinear-init"])
    func adapterInitRefusesOverriddenFlags(_ flag: String) throws {
        var c = try Self.config()
        c.adapterType = .lora
        c.adapterInit = FixtureModel.llamaTiny.directory.appendingPathComponent("lora").path
        #expect(throws: Never.self) { try c.resolve() }
        switch flag {
        case "--target-modules": c.targetModules = "q_proj"
        case "--layers": c.layers = "0"
        case "--r": c.r = 8
        case "--rslora": c.rslora = true
        default: c.ndlinearInit = .zero
        }
        #expect { try c.resolve() } throws: { e in
            guard case let TrainingError.invalidOption(m) = e else { return false }
            return m.hasPrefix("\(flag) cannot be given with --adapter-init")
        }
    }

    /// A bare `.safetensors` carries no α: `--r` sets LoRA's default α (2r) there, so it is
    /// accepted; the other shape flags are not.
    @Test func bareSafetensorsAcceptsRankForItsAlpha() throws {
        var c = try Self.config()
        c.adapterType = .lora
        c.adapterInit = FixtureModel.llamaTiny.directory.appendingPathComponent("train/lora_start.safetensors").path
        c.r = 4
        guard case let .initialValues(_, _, loraAlpha) = try c.resolve().adapter else { Issue.record("initial values expected"); return }
        #expect(loraAlpha == 8)
        c.targetModules = "all-linear"
        #expect(throws: TrainingError.self) { try c.resolve() }
    }

    // MARK: Exit status 2 for bad input

    @Test func badInputExitsTwo() throws {
        let dir = try temporaryDirectory("exit-two")
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = FixtureModel.llamaTiny
        let base = ["train", "--model", f.directory.path, "--data", try f.batchJSONL().path, "--output", dir.appendingPathComponent("run").path]
        func expectTwo(_ args: [String], naming needle: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let r = try runProcess(try Self.exe(), args)
            #expect(r.status == 2, "\(args): status \(r.status): \(r.err)", sourceLocation: sourceLocation)
            #expect(r.err.contains(needle), "\(r.err)", sourceLocation: sourceLocation)
        }
        // A value the trainer refuses (TrainingError.invalidOption used to exit 1).
        try expectTwo(base + ["--lr=-1"], naming: "--lr -1.0: must be a finite number")
        try expectTwo(base + ["--adapter-init", f.directory.appendingPathComponent("lora").path, "--adapter-type", "lora", "--rslora"],
                      naming: "--rslora cannot be given with --adapter-init")
        // An unknown name: the flag and the valid names.
        try expectTwo(base + ["--schedule", "warm"], naming: "--schedule")
        try expectTwo(base + ["--schedule", "warm"], naming: "'constant', 'linear' or 'cosine'")
        // Usage errors (ArgumentParser's 64) and an unreadable --config (used to exit 1).
        try expectTwo(base + ["--no-such-flag"], naming: "--no-such-flag")
        try expectTwo(base + ["--config", dir.appendingPathComponent("none.yaml").path], naming: "--config")
        // Bad file content: no record with a target (TrainingError.data used to exit 1).
        let empty = dir.appendingPathComponent("no-targets.jsonl")
        try "{\"input_ids\": [1, 2, 3], \"labels\": [-100, -100, -100]}\n".write(to: empty, atomically: true, encoding: .utf8)
        try expectTwo(["train", "--model", f.directory.path, "--data", empty.path, "--output", dir.appendingPathComponent("run2").path],
                      naming: "no usable training examples")
    }
}
