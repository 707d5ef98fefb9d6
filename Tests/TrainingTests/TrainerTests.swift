import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport
@testable import Training

/// `finetune train` against the fixtures' 6-step AdamW trajectories, gradient accumulation
/// semantics, and crash-safe checkpoint/resume.
@Suite struct TrainerTests {
    struct Trajectory: Decodable {
        struct Step: Decodable { let step: Int; let loss: Double; let grad_norm_before_clip: Double; let lr: Double }
        struct Run: Decodable { let steps: [Step] }
        let lora: Run
        let ndlinear: Run
    }

    enum Kind: String, CaseIterable, CustomStringConvertible { case lora, ndlinear; var description: String { rawValue } }
    static var cases: [(FixtureModel, Kind)] { FixtureModel.allCases.flatMap { f in Kind.allCases.map { (f, $0) } } }

    /// The trajectory's hyperparameters (fixtures README): AdamW lr 1e-2, betas 0.9/0.999,
    /// eps 1e-8, weight decay 0.01, linear schedule with 2 warmup steps, clip 1.0, batch 2.
    static func fixtureConfig(_ f: FixtureModel, _ k: Kind, data: URL, output: URL) -> TrainConfig {
        var c = TrainConfig(model: f.directory.path, data: data.path, output: output.path)
        c.adapterType = AdapterKind(rawValue: k.rawValue)!
        c.r = 4
        c.alpha = k == .lora ? 8 : 2
        c.adapterInit = f.directory.appendingPathComponent("train/\(k.rawValue)_start.safetensors").path
        c.steps = 6; c.batchSize = 2; c.lr = 1e-2; c.weightDecay = 0.01; c.adamBetas = [0.9, 0.999]; c.adamEps = 1e-8
        c.schedule = .linear; c.warmupSteps = 2; c.maxGradNorm = 1; c.shuffle = false
        return c
    }

    static func metrics(_ dir: URL) throws -> [JSONValue] {
        try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n").map { try JSONValue.parse(Data($0.utf8)) }
    }

    static func adapterValues(_ dir: URL, config: ModelConfig) throws -> [[Float]] {
        try AdapterIO.load(dir, config: config).parameters.map(\.value.array)
    }

    @Test(arguments: cases)
    func reproducesTrajectory(_ f: FixtureModel, _ k: Kind) throws {
        let out = try temporaryDirectory("traj")
        defer { try? FileManager.default.removeItem(at: out) }
        let weights = try f.load()
        let trainer = try Trainer(config: Self.fixtureConfig(f, k, data: try f.batchJSONL(), output: out), weights: weights, tokenizer: nil)
        trainer.log = { _ in }
        _ = try trainer.run()
        let traj = try JSONDecoder().decode(Trajectory.self, from: Data(contentsOf: f.directory.appendingPathComponent("train/trajectory.json")))
        let expected = k == .lora ? traj.lora.steps : traj.ndlinear.steps
        let rows = try Self.metrics(out).filter { $0["loss"] != nil }
        #expect(rows.count == 6)
        for (row, e) in zip(rows, expected) {
            #expect(row["step"]?.int == e.step)
            #expect(abs(row["loss"]!.double! - e.loss) <= 1e-4, "\(f) \(k) step \(e.step) loss \(row["loss"]!.double!) vs \(e.loss)")
            #expect(abs(row["lr"]!.double! - e.lr) <= 1e-12)
            #expect(abs(row["grad_norm"]!.double! - e.grad_norm_before_clip) <= 1e-4 * e.grad_norm_before_clip)
        }
        // The final adapter against the *_end file, tensor by tensor.
        let ours = try AdapterIO.load(out.appendingPathComponent("adapter"), config: weights.config)
        let end = try AdapterIO.load(f.directory.appendingPathComponent("train/\(k.rawValue)_end.safetensors"), config: weights.config,
                                     ndlinearAlpha: 2, loraAlpha: 8)
        #expect(ours.adapters.count == end.adapters.count)
        for (a, b) in zip(ours.parameters, end.parameters) {
            let exp = b.value.array
            #expect(maxAbsDiff(a.value.array, exp) <= 1e-4 * maxAbs(exp), "\(f) \(k) final \(a.role)")
        }
    }

    /// Gradient accumulation: the loss is the mean over ALL target tokens of the accumulated
    /// batch. 2 micro-batches of 1 == one batch of 2, whether or not the rows have equal
    /// target counts (the fixture rows have 11 and 7), and that differs from the mean of means.
    @Test(arguments: [true, false])
    func accumulationEqualsLargeBatch(_ equalCounts: Bool) throws {
        let f = FixtureModel.llamaTiny
        var data = try f.batchJSONL()
        if equalCounts {
            // Two rows with the same number of targets: row 0 and row 0 reversed.
            let line = try String(contentsOf: data, encoding: .utf8).split(separator: "\n")[0]
            let j = try JSONValue.parse(Data(line.utf8))
            let ids = j["input_ids"]!.array!.map { $0.int! }, labels = j["labels"]!.array!.map { $0.int! }
            let text = "{\"input_ids\": \(ids), \"labels\": \(labels)}\n{\"input_ids\": \(Array(ids.reversed())), \"labels\": \(labels)}\n"
            data = FileManager.default.temporaryDirectory.appendingPathComponent("eq-\(UUID().uuidString).jsonl")
            try text.write(to: data, atomically: true, encoding: .utf8)
        }
        let out = try temporaryDirectory("accum")
        defer { try? FileManager.default.removeItem(at: out) }
        var c = Self.fixtureConfig(f, .lora, data: data, output: out)
        c.steps = 1; c.warmupSteps = 0
        let t = try Trainer(config: c, weights: try f.load(), tokenizer: nil)
        func grads(_ micro: [[[Int]]]) throws -> (loss: Double, grads: [[Float]]) {
            let r = try t.accumulateGradients(micro)
            return (r.lossSum / Double(r.normalizer), t.adapters.parameters.map(\.grad.array))
        }
        let big = try grads([[[0], [1]]])         // one micro-batch of 2
        let acc = try grads([[[0]], [[1]]])       // 2 micro-batches of 1
        #expect(abs(big.loss - acc.loss) < 1e-6)
        for (a, b) in zip(big.grads, acc.grads) { #expect(maxAbsDiff(a, b) <= 1e-5 * max(maxAbs(b), 1e-12)) }
        // The mean of per-micro-batch means differs exactly when the target counts differ.
        let l0 = try grads([[[0]]]).loss, l1 = try grads([[[1]]]).loss
        let meanOfMeans = (l0 + l1) / 2
        if equalCounts { #expect(abs(acc.loss - meanOfMeans) < 1e-6) } else { #expect(abs(acc.loss - meanOfMeans) > 1e-3) }
    }

    /// Packing two examples into one row (segment-isolated attention, positions restarting at 0)
    /// gives the same loss and adapter gradients as the same two examples as padded rows.
    @Test(arguments: [Kind.lora, Kind.ndlinear])
    func packedRowEqualsPaddedRows(_ k: Kind) throws {
        let f = FixtureModel.qwen3Tiny
        let data = try f.batchJSONL()
        let out = try temporaryDirectory("pack")
        defer { try? FileManager.default.removeItem(at: out) }
        var c = Self.fixtureConfig(f, k, data: data, output: out)
        c.steps = 1; c.warmupSteps = 0
        let padded = try Trainer(config: c, weights: try f.load(), tokenizer: nil)
        c.packing = true; c.maxLength = 64
        let packed = try Trainer(config: c, weights: try f.load(), tokenizer: nil)
        let a = try padded.accumulateGradients([[[0], [1]]])
        let b = try packed.accumulateGradients([[[0, 1]]])
        #expect(a.normalizer == b.normalizer && a.tokens == b.tokens)
        #expect(abs(a.lossSum - b.lossSum) <= 1e-5 * abs(a.lossSum), "padded \(a.lossSum) packed \(b.lossSum)")
        for (x, y) in zip(padded.adapters.parameters, packed.adapters.parameters) {
            let ref = x.grad.array
            #expect(maxAbs(ref) > 0)
            #expect(maxAbsDiff(ref, y.grad.array) <= 1e-5 * maxAbs(ref), "\(k) \(x.role)")
        }
    }

    /// SIGINT finishes the step, writes a complete checkpoint, exits 130, and --resume accepts it.
    /// The child is started from a test thread (whose signal mask the child inherits), so this
    /// also checks that the trainer unblocks SIGINT itself. stderr goes to a file, not a pipe,
    /// so nothing blocks while we poll.
    @Test func sigintCheckpointsAndExits() throws {
        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let f = FixtureModel.llamaTiny
        let out = try temporaryDirectory("sigint")
        defer { try? FileManager.default.removeItem(at: out) }
        let errURL = out.appendingPathComponent("stderr.txt")
        FileManager.default.createFile(atPath: errURL.path, contents: nil)
        let p = Process()
        p.executableURL = exe
        p.arguments = ["train", "--model", f.directory.path, "--data", try f.batchJSONL().path, "--output", out.appendingPathComponent("run").path,
                       "--adapter-type", "lora", "--r", "4", "--steps", "1000000", "--batch-size", "1", "--log-every", "1"]
        p.standardError = try FileHandle(forWritingTo: errURL)
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        let metrics = out.appendingPathComponent("run/metrics.jsonl")
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline, ((try? String(contentsOf: metrics, encoding: .utf8))?.split(separator: "\n").count ?? 0) < 3 {
            usleep(20_000)
        }
        kill(p.processIdentifier, SIGINT)
        p.waitUntilExit()
        let err = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
        #expect(p.terminationReason == .exit && p.terminationStatus == 130, "\(err)")
        #expect(err.contains("interrupted after step"), "\(err)")
        let ck = try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("run/checkpoints").path).filter { $0.hasPrefix("step-") }
        #expect(ck.count == 1, "\(ck)")
        if let d = ck.first {
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("run/checkpoints/\(d)/COMPLETE").path))
            let step = Int(d.dropFirst(5))!
            let r = try runProcess(exe, ["train", "--model", f.directory.path, "--data", try f.batchJSONL().path, "--output", out.appendingPathComponent("run").path,
                                         "--adapter-type", "lora", "--r", "4", "--steps", "\(step + 2)", "--batch-size", "1",
                                         "--resume", out.appendingPathComponent("run").path])
            #expect(r.status == 0, "\(r.err)")
            #expect(try Self.metrics(out.appendingPathComponent("run")).compactMap { $0["step"]?.int }.max() == step + 2)
        }
    }

    static func cliArgs(_ f: FixtureModel, data: URL, output: URL, steps: Int = 6) -> [String] {
        ["train", "--model", f.directory.path, "--data", data.path, "--output", output.path,
         "--adapter-type", "ndlinear", "--alpha", "2", "--adapter-init", f.directory.appendingPathComponent("train/ndlinear_start.safetensors").path,
         "--steps", "\(steps)", "--batch-size", "1", "--lr", "1e-2", "--weight-decay", "0.01", "--warmup-steps", "2",
         "--save-every", "3", "--dropout", "0.1", "--log-every", "1"]
    }

    /// 6 steps straight == 3 steps, SIGKILL during the 4th, --resume, 3 more: identical losses
    /// and final adapter (batch 1 with shuffling and dropout, so data position and RNG matter).
    @Test func sigkillThenResumeContinuesExactly() throws {
        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let f = FixtureModel.qwen2Tiny
        let data = try f.batchJSONL()
        let straight = try temporaryDirectory("straight"), killed = try temporaryDirectory("killed")
        defer { try? FileManager.default.removeItem(at: straight); try? FileManager.default.removeItem(at: killed) }
        #expect(try runProcess(exe, Self.cliArgs(f, data: data, output: straight)).status == 0)
        let crash = try runProcess(exe, Self.cliArgs(f, data: data, output: killed), environment: ["FINETUNE_FAULT": "sigkill-at-step:4"])
        #expect(crash.status == -SIGKILL, "the run must die by SIGKILL: \(crash.err)")
        #expect(try Self.metrics(killed).compactMap { $0["step"]?.int }.max() == 3)
        let resumed = try runProcess(exe, Self.cliArgs(f, data: data, output: killed) + ["--resume", killed.path])
        #expect(resumed.status == 0, "\(resumed.err)")
        let a = try Self.metrics(straight).compactMap { $0["loss"]?.double }, b = try Self.metrics(killed).compactMap { $0["loss"]?.double }
        #expect(a.count == 6 && a == b, "straight \(a) vs resumed \(b)")
        let config = try f.load().config
        #expect(try Self.adapterValues(straight.appendingPathComponent("adapter"), config: config)
                == Self.adapterValues(killed.appendingPathComponent("adapter"), config: config))
    }

    /// A kill in the middle of writing a checkpoint leaves no checkpoint that --resume accepts;
    /// resuming uses the previous complete one and still ends where the straight run ends.
    @Test func killDuringCheckpointWriteNeverYieldsACorruptCheckpoint() throws {
        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let f = FixtureModel.llama3Tiny
        let data = try f.batchJSONL()
        let straight = try temporaryDirectory("straight2"), killed = try temporaryDirectory("killed2")
        defer { try? FileManager.default.removeItem(at: straight); try? FileManager.default.removeItem(at: killed) }
        #expect(try runProcess(exe, Self.cliArgs(f, data: data, output: straight, steps: 9)).status == 0)
        let crash = try runProcess(exe, Self.cliArgs(f, data: data, output: killed, steps: 9), environment: ["FINETUNE_FAULT": "sigkill-in-checkpoint:6"])
        #expect(crash.status == -SIGKILL)
        let ckdir = killed.appendingPathComponent("checkpoints")
        let names = try FileManager.default.contentsOfDirectory(atPath: ckdir.path)
        #expect(names.contains("step-3") && !names.contains("step-6"), "\(names)")
        #expect(names.contains { $0.hasPrefix(".step-6") }, "the half-written checkpoint stays a hidden temporary")
        let resumed = try runProcess(exe, Self.cliArgs(f, data: data, output: killed, steps: 9) + ["--resume", killed.path])
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(resumed.err.contains("step-3"), "resumed from the last complete checkpoint")
        let a = try Self.metrics(straight).compactMap { $0["loss"]?.double }, b = try Self.metrics(killed).compactMap { $0["loss"]?.double }
        #expect(a.count == 9 && a == b)
        // Resuming from the torn directory itself is refused with a clear message.
        let torn = names.first { $0.hasPrefix(".step-6") }.map { ckdir.appendingPathComponent($0) }
        if let torn, FileManager.default.fileExists(atPath: torn.path) {
            let r = try runProcess(exe, Self.cliArgs(f, data: data, output: try temporaryDirectory("x"), steps: 9) + ["--resume", torn.path])
            #expect(r.status != 0 && r.err.contains("no complete checkpoint"))
        }
    }

    /// A checkpoint write that fails part-way for lack of space (`enospc-in-checkpoint:6`: half
    /// the optimizer file written, then ENOSPC as FileHandle reports it) stops the run with exit
    /// 1 naming the intact previous checkpoint; the torn one is removed, and --resume from the
    /// previous one ends where the straight run ends.
    @Test func checkpointWriteFailingForLackOfSpaceKeepsThePreviousCheckpoint() throws {
        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let f = FixtureModel.llamaTiny
        let data = try f.batchJSONL()
        let straight = try temporaryDirectory("straight3"), full = try temporaryDirectory("enospc")
        defer { try? FileManager.default.removeItem(at: straight); try? FileManager.default.removeItem(at: full) }
        #expect(try runProcess(exe, Self.cliArgs(f, data: data, output: straight, steps: 9)).status == 0)
        let failed = try runProcess(exe, Self.cliArgs(f, data: data, output: full, steps: 9), environment: ["FINETUNE_FAULT": "enospc-in-checkpoint:6"])
        let ckdir = full.appendingPathComponent("checkpoints")
        #expect(failed.status == 1, "\(failed.err)")
        #expect(failed.err.contains("cannot write checkpoint step-6 in \(ckdir.path): no space left on device; the previous checkpoint "
            + "\(ckdir.appendingPathComponent("step-3").path) is intact; free space and continue with --resume \(full.path)"), "\(failed.err)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: ckdir.path) == ["step-3"], "no torn checkpoint or temporary is left")
        #expect(try Self.metrics(full).compactMap { $0["step"]?.int }.max() == 6)
        let resumed = try runProcess(exe, Self.cliArgs(f, data: data, output: full, steps: 9) + ["--resume", full.path])
        #expect(resumed.status == 0 && resumed.err.contains("step-3"), "\(resumed.err)")
        let a = try Self.metrics(straight).compactMap { $0["loss"]?.double }, b = try Self.metrics(full).compactMap { $0["loss"]?.double }
        #expect(a.count == 9 && a == b, "straight \(a) vs resumed \(b)")
    }

    @Test func divergenceStopsWithExitOneNamingTheStep() throws {
        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let f = FixtureModel.llamaTiny
        let out = try temporaryDirectory("nan")
        defer { try? FileManager.default.removeItem(at: out) }
        // An absurd learning rate blows the adapter up within a few steps.
        let r = try runProcess(exe, ["train", "--model", f.directory.path, "--data", try f.batchJSONL().path, "--output", out.path,
                                     "--adapter-type", "lora", "--r", "4", "--steps", "40", "--lr", "1e30", "--max-grad-norm", "0",
                                     "--save-every", "1", "--batch-size", "2"])
        #expect(r.status == 1, "\(r.err)")
        #expect(r.err.contains("diverged at step"), "\(r.err)")
        #expect(r.err.contains("last good checkpoint"))
    }

    @Test func scheduleMatchesTransformers() {
        let lin = LRSchedule(kind: .linear, baseLR: 0.01, warmupSteps: 2, totalSteps: 6)
        #expect((1...6).map { lin.lr(step: $0) } == [0, 0.005, 0.01, 0.0075, 0.005, 0.0025])
        let cos = LRSchedule(kind: .cosine, baseLR: 1, warmupSteps: 0, totalSteps: 4)
        #expect(abs(cos.lr(step: 3) - 0.5) < 1e-12 && cos.lr(step: 1) == 1)
        #expect(LRSchedule.warmup(ratio: 0.03, totalSteps: 100) == 3)
        #expect(LRSchedule(kind: .constant, baseLR: 2, warmupSteps: 4, totalSteps: 10).lr(step: 3) == 1)
    }
}
