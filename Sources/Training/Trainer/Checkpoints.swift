import Adapters
import Foundation
import LLMCore
#if canImport(Glibc)
import Glibc
#endif

/// The trainer state a checkpoint holds besides the adapter and optimizer moments.
struct TrainerState: Codable {
    var step: Int
    var position: DataPosition
    var optimizer_step: Int
    var total_steps: Int
    var seed: UInt64
    var best_val_loss: Double?
    var best_step: Int?
    var bad_evals: Int
    /// Dropout masks are a pure function of (seed, step, micro-batch); recorded for the reader.
    var rng: String
    /// Rows per optimizer step over all ranks, and the ranks that wrote it (absent in older
    /// checkpoints). The data position is global, so any number of ranks can continue.
    var global_batch: Int?
    var ranks: Int?
}

/// Checkpoint layout: `checkpoints/step-N/{adapter/, optimizer.safetensors, trainer_state.json, COMPLETE}`.
/// A checkpoint is built in a hidden temporary directory and renamed into place only after
/// every file (and the COMPLETE marker, written last) is on disk, so a crash at any moment
/// leaves either a whole checkpoint or none; `--resume` accepts only directories with COMPLETE.
enum Checkpoints {
    static let marker = "COMPLETE"

    static func directory(_ output: URL) -> URL { output.appendingPathComponent("checkpoints") }

    /// Complete checkpoints of a run, oldest first.
    static func list(_ output: URL) -> [(step: Int, url: URL)] {
        let dir = directory(output)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.compactMap { n -> (Int, URL)? in
            guard n.hasPrefix("step-"), let s = Int(n.dropFirst(5)) else { return nil }
            let u = dir.appendingPathComponent(n)
            return FileManager.default.fileExists(atPath: u.appendingPathComponent(marker).path) ? (s, u) : nil
        }.sorted { $0.0 < $1.0 }
    }

    /// Drops metrics rows after `step` (a resumed run rewrites them), atomically.
    static func truncateMetrics(_ url: URL, afterStep step: Int) throws {
        guard let data = FileManager.default.contents(atPath: url.path) else { return }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: true)
        let kept = lines.filter { line in
            guard let j = try? JSONValue.parse(Data(line.utf8)), let s = j["step"]?.int else { return false }
            return s <= step
        }
        if kept.count != lines.count {
            try AtomicFile.write(kept.map { $0 + "\n" }.joined(), to: url)
        }
    }
}

extension Trainer {
    func latestCheckpoint() -> URL? { Checkpoints.list(outputDir).last?.url }

    /// Writes the adapter (PEFT LoRA, or LoKr for NdLinear-LoRA) with what it was trained from.
    func saveAdapter(to dir: URL) throws {
        var extra: [String: Any] = ["finetune_adapter_type": adapters.kind!.rawValue]
        if adapters.kind == .ndlinear {
            switch plan.adapter {
            case let .fresh(spec): extra["ndlinear_init"] = spec.ndlinearInit.rawValue
            case let .initialValues(path, _, _): extra["ndlinear_init"] = "from \(path)"
            }
        }
        try AdapterIO.save(adapters, format: AdapterIO.defaultFormat(for: adapters), to: dir, baseModel: config.model, extra: extra)
    }

    /// Writes `checkpoints/step-N` atomically and prunes old ones (`--keep-checkpoints`),
    /// never the best-by-validation one. Only rank 0 writes (every rank holds the same state).
    @discardableResult
    func saveCheckpoint() throws -> URL {
        let fm = FileManager.default
        let root = Checkpoints.directory(outputDir)
        let final = root.appendingPathComponent("step-\(step)")
        guard comm.isRoot else { return final }
        try fm.createDirectory(at: root, withIntermediateDirectories: true)
        let tmp = root.appendingPathComponent(".step-\(step).tmp-\(getpid())")
        try? fm.removeItem(at: tmp)
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        try saveAdapter(to: tmp.appendingPathComponent("adapter"))
        let (m, v) = optimizer.moments
        var entries: [SafetensorsEntry] = []
        for (i, p) in adapters.parameters.enumerated() {
            entries.append(SafetensorsEntry(name: "m.\(i)", shape: p.shape, floats: m[i]))
            entries.append(SafetensorsEntry(name: "v.\(i)", shape: p.shape, floats: v[i]))
        }
        try SafetensorsWriter.write(entries, to: tmp.appendingPathComponent("optimizer.safetensors"))
        fault?.fire(.inCheckpoint, step: step, rank: comm.rank)
        let state = TrainerState(step: step, position: stream.position, optimizer_step: optimizer.step, total_steps: totalSteps,
                                 seed: config.seed, best_val_loss: bestVal?.loss, best_step: bestVal?.step, bad_evals: badEvals,
                                 rng: "data order = f(seed, epoch); dropout masks = f(seed, step, global micro-batch index)",
                                 global_batch: globalBatch, ranks: comm.size)
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try enc.encode(state), to: tmp.appendingPathComponent("trainer_state.json"))
        try AtomicFile.write("step \(step)\n", to: tmp.appendingPathComponent(Checkpoints.marker))
        if fm.fileExists(atPath: final.path) { try fm.removeItem(at: final) }
        guard rename(tmp.path, final.path) == 0 else {
            throw TrainingError.system("checkpoint: cannot move \(tmp.path) to \(final.path): \(String(cString: strerror(errno)))")
        }
        // Make the rename durable.
        let fd = open(root.path, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
        if let keep = config.keepCheckpoints {
            let all = Checkpoints.list(outputDir)
            for (s, url) in all.dropLast(keep) where s != bestVal?.step {
                try? fm.removeItem(at: url)
            }
        }
        return final
    }

    /// Restores adapter, optimizer, data position and step from a checkpoint directory, or
    /// from the newest complete checkpoint of a run directory.
    func resume(from path: String) throws {
        let url = URL(fileURLWithPath: path)
        let fm = FileManager.default
        var ckpt = url
        if !fm.fileExists(atPath: url.appendingPathComponent(Checkpoints.marker).path) {
            guard let last = Checkpoints.list(url).last?.url else {
                throw TrainingError.checkpoint("--resume \(path): no complete checkpoint (a directory with \(Checkpoints.marker)) there or under \(path)/checkpoints")
            }
            ckpt = last
        }
        let stateData = try Data(contentsOf: ckpt.appendingPathComponent("trainer_state.json"))
        let state = try JSONDecoder().decode(TrainerState.self, from: stateData)
        guard state.total_steps == totalSteps || config.steps != nil else {
            throw TrainingError.checkpoint("\(ckpt.path) was written by a run of \(state.total_steps) steps; this one has \(totalSteps) (same data and flags expected)")
        }
        if let g = state.global_batch, g != globalBatch {
            log("warning: \(ckpt.path) was trained with a global batch of \(g) rows, this run uses \(globalBatch)"
                + " (\(comm.size) rank\(comm.size == 1 ? "" : "s")); the continuation differs from the original run. "
                + "Keep it with --global-batch \(g)")
        }
        let saved = try AdapterIO.load(ckpt.appendingPathComponent("adapter"), config: model.config)
        let ours = adapters.parameters, theirs = saved.parameters
        guard ours.count == theirs.count, zip(ours, theirs).allSatisfy({ $0.shape == $1.shape }) else {
            throw TrainingError.checkpoint("\(ckpt.path): its adapter does not match this run's adapter configuration")
        }
        for (p, q) in zip(ours, theirs) { for j in 0..<p.count { p.value[j] = q.value[j] } }
        let opt = try SafetensorsFile(url: ckpt.appendingPathComponent("optimizer.safetensors"))
        let m = try (0..<ours.count).map { try opt.tensor("m.\($0)").floats() }
        let v = try (0..<ours.count).map { try opt.tensor("v.\($0)").floats() }
        try optimizer.restore(step: state.optimizer_step, m: m, v: v)
        step = state.step
        stream.position = state.position
        if let l = state.best_val_loss, let s = state.best_step { bestVal = (l, s) }
        badEvals = state.bad_evals
        // Stale temporaries from an interrupted checkpoint write.
        let root = Checkpoints.directory(outputDir)
        for n in (try? fm.contentsOfDirectory(atPath: root.path)) ?? [] where n.hasPrefix(".step-") {
            try? fm.removeItem(at: root.appendingPathComponent(n))
        }
        log("resumed from \(ckpt.path) at step \(step) (epoch \(state.position.epoch), example \(state.position.offset))")
    }
}
