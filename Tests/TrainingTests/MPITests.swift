import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport
@testable import Training

/// Data-parallel training over MPI (issue 11): `mpirun -np N finetune train` equals one process
/// with the same global batch, failures stop every rank with one message naming the rank, and
/// a checkpoint of an N-rank run resumes on any number of ranks. Runs the built `finetune`
/// under `mpirun --allow-run-as-root --oversubscribe`; the tests that launch it are skipped
/// (`.requires(Assets.mpirun)`, with the reason) when `mpirun` is not on PATH. Serialized: each
/// case already runs 2–4 processes on a small machine.
@Suite(.serialized) struct MPITests {
    typealias Kind = TrainerTests.Kind

    /// `mpirun` and `finetune` (a test calling this carries `.requires(Assets.mpirun)`).
    static func tools() throws -> (mpirun: URL, finetune: URL) {
        (try Assets.mpirun.url(), try #require(finetuneExecutable(), "finetune executable not built"))
    }

    /// Runs `finetune args` as `ranks` MPI processes; `env` is exported to every rank.
    static func mpi(_ ranks: Int, _ args: [String], env: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
        let t = try tools()
        var a = ["--allow-run-as-root", "--oversubscribe", "-np", "\(ranks)"]
        for k in env.keys.sorted() { a += ["-x", k] }
        return try runProcess(t.mpirun, a + [t.finetune.path] + args, environment: env)
    }

    /// The fixture trajectory's flags (TrainerTests.fixtureConfig) with `--batch-size 1`: two
    /// ranks of one row each make the fixture's global batch of 2.
    static func fixtureArgs(_ f: FixtureModel, _ k: Kind, data: URL, output: URL) -> [String] {
        ["train", "--model", f.directory.path, "--data", data.path, "--output", output.path,
         "--adapter-type", k.rawValue, "--r", "4", "--alpha", k == .lora ? "8" : "2",
         "--adapter-init", f.directory.appendingPathComponent("train/\(k.rawValue)_start.safetensors").path,
         "--steps", "6", "--batch-size", "1", "--lr", "1e-2", "--weight-decay", "0.01", "--adam-betas", "0.9,0.999",
         "--adam-eps", "1e-8", "--schedule", "linear", "--warmup-steps", "2", "--max-grad-norm", "1", "--no-shuffle", "--log-every", "1"]
    }

    static func losses(_ dir: URL) throws -> [Double] { try TrainerTests.metrics(dir).compactMap { $0["loss"]?.double } }

    // MARK: - Acceptance

    /// 2 ranks reproduce the single-process 6-step trajectory and final adapter within the
    /// fixture tolerances; rank 0 alone writes the outputs and prints progress.
    @Test(.requires(Assets.mpirun), arguments: TrainerTests.cases)
    func twoRanksReproduceTrajectory(_ f: FixtureModel, _ k: Kind) throws {
        let out = try temporaryDirectory("mpi-traj")
        defer { try? FileManager.default.removeItem(at: out) }
        let run = out.appendingPathComponent("run")
        let r = try Self.mpi(2, Self.fixtureArgs(f, k, data: try f.batchJSONL(), output: run))
        #expect(r.status == 0, "\(r.err)")
        #expect(r.err.components(separatedBy: "training \(k.rawValue) (").count == 2, "one progress header (rank 0 only): \(r.err)")
        #expect(r.err.contains("on 2 ranks (global batch 2 rows)"))
        let traj = try JSONDecoder().decode(TrainerTests.Trajectory.self,
                                            from: Data(contentsOf: f.directory.appendingPathComponent("train/trajectory.json")))
        let expected = k == .lora ? traj.lora.steps : traj.ndlinear.steps
        let rows = try TrainerTests.metrics(run).filter { $0["loss"] != nil }
        #expect(rows.count == 6)
        for (row, e) in zip(rows, expected) {
            #expect(row["step"]?.int == e.step)
            #expect(abs(row["loss"]!.double! - e.loss) <= 1e-4, "\(f) \(k) step \(e.step) loss \(row["loss"]!.double!) vs \(e.loss)")
            #expect(abs(row["lr"]!.double! - e.lr) <= 1e-12)
            #expect(abs(row["grad_norm"]!.double! - e.grad_norm_before_clip) <= 1e-4 * e.grad_norm_before_clip)
        }
        let config = try f.load().config
        let ours = try AdapterIO.load(run.appendingPathComponent("adapter"), config: config)
        let end = try AdapterIO.load(f.directory.appendingPathComponent("train/\(k.rawValue)_end.safetensors"), config: config,
                                     ndlinearAlpha: 2, loraAlpha: 8)
        #expect(ours.adapters.count == end.adapters.count)
        for (a, b) in zip(ours.parameters, end.parameters) {
            #expect(maxAbsDiff(a.value.array, b.value.array) <= 1e-4 * maxAbs(b.value.array), "\(f) \(k) final \(a.role)")
        }
        let written = Set(try FileManager.default.contentsOfDirectory(atPath: run.path))
        #expect(written == ["adapter", "metrics.jsonl", "run.json", "loss.svg"], "\(written)")
        let resolved = try JSONValue.parse(Data(contentsOf: run.appendingPathComponent("run.json")))["resolved"]
        #expect(resolved?["ranks"]?.int == 2 && resolved?["global_batch"]?.int == 2)
    }

    /// GSM8K-style text through the real tokenizer, shuffled, with dropout and a validation set
    /// (3 examples over 4 ranks: one rank scores none): 4 ranks × 2 rows equal 1 rank × 2 rows
    /// × 4 accumulation steps for 20 steps, per-step and validation losses within 1e-4.
    @Test(.requires(Assets.mpirun)) func fourRanksEqualOneRankWithTheSameGlobalBatch() throws {
        let exe = try Self.tools().finetune
        let data = TestPaths.fixtures.appendingPathComponent("data")
        let out = try temporaryDirectory("mpi-4")
        defer { try? FileManager.default.removeItem(at: out) }
        let one = out.appendingPathComponent("one"), four = out.appendingPathComponent("four")
        let args = ["train", "--model", TestPaths.models.appendingPathComponent("stories260K").path,
                    "--data", data.appendingPathComponent("gsm8k_test_20.jsonl").path,
                    "--val-data", data.appendingPathComponent("gsm8k_head.jsonl").path,
                    "--adapter-type", "ndlinear", "--max-length", "64", "--no-mask-prompt", "--steps", "20", "--lr", "1e-2",
                    "--dropout", "0.1", "--eval-every", "10", "--batch-size", "2", "--log-every", "50"]
        let a = try runProcess(exe, args + ["--grad-accum", "4", "--output", one.path])
        #expect(a.status == 0, "\(a.err)")
        let b = try Self.mpi(4, args + ["--output", four.path])
        #expect(b.status == 0, "\(b.err)")
        let ma = try TrainerTests.metrics(one), mb = try TrainerTests.metrics(four)
        let la = ma.compactMap { $0["loss"]?.double }, lb = mb.compactMap { $0["loss"]?.double }
        let va = ma.compactMap { $0["val_loss"]?.double }, vb = mb.compactMap { $0["val_loss"]?.double }
        #expect(la.count == 20 && lb.count == 20 && va.count == 3 && vb.count == 3, "\(la.count) \(lb.count) \(va.count) \(vb.count)")
        let worst = zip(la + va, lb + vb).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= 1e-4, "1 rank \(la) \(va)\n4 ranks \(lb) \(vb)")
        #expect(ma.compactMap { $0["target_tokens"]?.int } == mb.compactMap { $0["target_tokens"]?.int })
        #expect(ma.compactMap { $0["tokens"]?.int } == mb.compactMap { $0["tokens"]?.int })
        let config = try ModelWeights.load(directory: TestPaths.models.appendingPathComponent("stories260K")).config
        for (x, y) in zip(try TrainerTests.adapterValues(one.appendingPathComponent("adapter"), config: config),
                          try TrainerTests.adapterValues(four.appendingPathComponent("adapter"), config: config)) {
            #expect(maxAbsDiff(x, y) <= 1e-4 * max(maxAbs(x), 1e-6))
        }
    }

    /// Rank 1 is SIGKILLed during step 4 of a 2-rank run that checkpoints every 3 steps: the job
    /// exits non-zero naming rank 1, the step-3 checkpoint is intact, and `--resume` with ONE
    /// rank (same global batch) ends where an uninterrupted 1-rank run ends.
    @Test(.requires(Assets.mpirun)) func killedRankThenResumeWithOneRank() throws {
        let exe = try Self.tools().finetune
        let f = FixtureModel.qwen2Tiny
        let data = try f.batchJSONL()
        let out = try temporaryDirectory("mpi-kill")
        defer { try? FileManager.default.removeItem(at: out) }
        let straight = out.appendingPathComponent("straight"), killed = out.appendingPathComponent("killed")
        // TrainerTests' crash-safety flags (shuffled, dropout 0.1, --save-every 3) without
        // their --batch-size: data position and dropout seeds must carry over.
        func with(_ o: URL) -> [String] {
            var a = TrainerTests.cliArgs(f, data: data, output: o)
            if let i = a.firstIndex(of: "--batch-size") { a.removeSubrange(i...(i + 1)) }
            return a
        }
        let s = try runProcess(exe, with(straight) + ["--global-batch", "2"])
        #expect(s.status == 0, "\(s.err)")
        let crash = try Self.mpi(2, with(killed) + ["--batch-size", "1"], env: ["FINETUNE_FAULT": "sigkill-at-step:4@1"])
        #expect(crash.status != 0)
        #expect(crash.err.contains("rank 1"), "the message names the dead rank: \(crash.err)")
        #expect(try TrainerTests.metrics(killed).compactMap { $0["step"]?.int }.max() == 3)
        let ck = killed.appendingPathComponent("checkpoints")
        #expect(try FileManager.default.contentsOfDirectory(atPath: ck.path).filter { !$0.hasPrefix(".") } == ["step-3"])
        #expect(FileManager.default.fileExists(atPath: ck.appendingPathComponent("step-3/COMPLETE").path))
        let resumed = try runProcess(exe, with(killed) + ["--global-batch", "2", "--resume", killed.path])
        #expect(resumed.status == 0, "\(resumed.err)")
        #expect(!resumed.err.contains("warning"), "same global batch: no warning: \(resumed.err)")
        let a = try Self.losses(straight), b = try Self.losses(killed)
        #expect(a.count == 6 && b.count == 6)
        #expect(zip(a, b).allSatisfy { abs($0 - $1) <= 1e-4 }, "straight \(a) vs killed+resumed \(b)")
        let config = try f.load().config
        for (x, y) in zip(try TrainerTests.adapterValues(straight.appendingPathComponent("adapter"), config: config),
                          try TrainerTests.adapterValues(killed.appendingPathComponent("adapter"), config: config)) {
            #expect(maxAbsDiff(x, y) <= 1e-4 * max(maxAbs(x), 1e-6))
        }
    }

    // MARK: - Failures before training

    /// A global batch smaller than the ranks, or data that differ between ranks, stop every
    /// rank before the first step with one message naming the rank; nothing is written.
    @Test(.requires(Assets.mpirun)) func emptyOrMismatchedShardStopsEveryRankWithOneMessage() throws {
        let f = FixtureModel.llamaTiny
        let data = try f.batchJSONL()
        let out = try temporaryDirectory("mpi-shard")
        defer { try? FileManager.default.removeItem(at: out) }
        let base = ["train", "--model", f.directory.path, "--adapter-type", "lora", "--r", "4", "--steps", "2"]
        let r = try Self.mpi(2, base + ["--data", data.path, "--global-batch", "1", "--output", out.appendingPathComponent("a").path])
        #expect(r.status == 2, "bad input (CLI.md exit status): \(r.err)")
        #expect(r.err.components(separatedBy: "error: ").count == 2, "one message: \(r.err)")
        #expect(r.err.contains("error: rank 0: a global batch of 1 rows over 2 ranks leaves rank 1 without data"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("a/metrics.jsonl").path))

        // MPMD: rank 1 reads a different file (as a host with a stale copy would).
        let other = out.appendingPathComponent("other.jsonl")
        try String(try String(contentsOf: data, encoding: .utf8).split(separator: "\n")[0] + "\n").write(to: other, atomically: true, encoding: .utf8)
        let t = try Self.tools()
        let o = out.appendingPathComponent("b").path
        let m = try runProcess(t.mpirun, ["--allow-run-as-root", "--oversubscribe", "-np", "1", t.finetune.path] + base + ["--data", data.path, "--output", o]
                               + [":", "-np", "1", t.finetune.path] + base + ["--data", other.path, "--output", o])
        #expect(m.status == 2, "bad input (CLI.md exit status): \(m.err)")
        #expect(m.err.components(separatedBy: "error: ").count == 2, "one message: \(m.err)")
        #expect(m.err.contains("error: rank 1: the tokenized training/validation data on this rank differ from rank 0's"), "\(m.err)")
    }

    /// Under a launcher of 2 processes, a `finetune` that cannot load MPI refuses to start
    /// rather than run 2 independent trainings (no mpirun needed: the launcher's variable is
    /// set by hand and the library pointed at nothing).
    @Test func launcherWithoutMPIRefusesToStart() throws {
        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let f = FixtureModel.llamaTiny
        let out = try temporaryDirectory("mpi-none")
        defer { try? FileManager.default.removeItem(at: out) }
        let r = try runProcess(exe, ["train", "--model", f.directory.path, "--data", try f.batchJSONL().path, "--output", out.path, "--steps", "1"],
                               environment: ["OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0", "FINETUNE_MPI_LIBRARY": "/nonexistent/libmpi.so"])
        #expect(r.status == 2)
        #expect(r.err.contains("cannot join the MPI job") && r.err.contains("refusing to start 2 independent trainings"), "\(r.err)")
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("metrics.jsonl").path))
        // Other subcommands are not data-parallel and refuse under a launcher too.
        let g = try runProcess(exe, ["generate", "--model", f.directory.path, "--prompt-ids", "1,2", "--max-new-tokens", "1"],
                               environment: ["OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"])
        #expect(g.status == 2 && g.err.contains("only `finetune train` runs under MPI"), "\(g.err)")
    }

    // MARK: - Units

    @Test func shardsAreContiguousAndCoverEveryRow() {
        for n in 0...9 {
            for size in 1...4 {
                let parts = (0..<size).map { Trainer.shard(n, rank: $0, size: size) }
                #expect(parts.map(\.count).reduce(0, +) == n)
                #expect(zip(parts, parts.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
                #expect((parts.map(\.count).max() ?? 0) - (parts.map(\.count).min() ?? 0) <= 1)
            }
        }
    }

    @Test func launcherDetection() {
        #expect(Launcher.detect([:]) == nil)
        #expect(Launcher.detect(["OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_SIZE": "2", "OMPI_COMM_WORLD_RANK": "3"])
                .map { [$0.size, $0.localSize, $0.rank] } == [4, 2, 3])
        #expect(Launcher.detect(["PMI_SIZE": "8", "PMI_RANK": "1"])?.size == 8)
        #expect(Launcher.detect(["PMIX_RANK": "0", "SLURM_STEP_NUM_TASKS": "16"])?.size == 16)
        #expect(Launcher.detect(["SLURM_NTASKS": "4"]) == nil, "plain Slurm tasks without PMI are not an MPI job")
    }
}
