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
    /// Training examples of the data the position counts in (absent in older checkpoints).
    var train_examples: Int?
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

    /// A checkpoint's `trainer_state.json`, its JSON checked field by field: a missing file,
    /// invalid JSON, a missing field or one of the wrong type is an error naming the file and
    /// the field.
    static func readState(_ url: URL) throws -> TrainerState {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TrainingError.checkpoint("\(url.path): missing (a checkpoint holds adapter/, optimizer.safetensors and trainer_state.json)")
        }
        // Our own reader first: Foundation's decoder reports a number out of its type's range
        // (a negative seed, a step of 1e30) as "not valid JSON", without the field.
        guard let json = try? JSONValue.parse(data) else { throw TrainingError.checkpoint("\(url.path): not valid JSON") }
        guard let obj = json.object else { throw TrainingError.checkpoint("\(url.path): expected a JSON object of trainer state") }
        if let problem = fieldProblem(obj) { throw TrainingError.checkpoint("\(url.path): \(problem)") }
        do {
            return try JSONDecoder().decode(TrainerState.self, from: data)
        } catch let e as DecodingError {
            throw TrainingError.checkpoint("\(url.path): \(describe(e))")
        } catch {
            throw TrainingError.checkpoint("\(url.path): cannot be read: \(error)")
        }
    }

    /// The first field of a trainer state that is missing or not of its type, described.
    static func fieldProblem(_ obj: [String: JSONValue], prefix: String = "") -> String? {
        enum Kind { case int, uint64, number, string, position }
        let fields: [(String, Kind, required: Bool)] = prefix.isEmpty
            ? [("step", .int, true), ("position", .position, true), ("optimizer_step", .int, true), ("total_steps", .int, true),
               ("seed", .uint64, true), ("best_val_loss", .number, false), ("best_step", .int, false), ("bad_evals", .int, true),
               ("rng", .string, true), ("global_batch", .int, false), ("ranks", .int, false), ("train_examples", .int, false)]
            : [("epoch", .int, true), ("offset", .int, true), ("consumed", .int, true)]
        for (key, kind, required) in fields {
            let name = prefix + key
            guard let v = obj[key], !v.isNull else {
                if required { return "field `\(name)` is missing" }
                continue
            }
            let found = "found \(v.serialized(pretty: false))"
            switch kind {
            case .int:
                guard v.int != nil else { return "field `\(name)`: expected an integer, \(found)" }
            case .uint64:
                let ok: Bool
                switch v {
                case let .int(i): ok = i >= 0
                case let .double(d): ok = d >= 0 && d == d.rounded() && d < 18_446_744_073_709_551_616
                default: ok = false
                }
                guard ok else { return "field `\(name)`: expected an integer in 0...\(UInt64.max), \(found)" }
            case .number:
                guard v.double != nil else { return "field `\(name)`: expected a number, \(found)" }
            case .string:
                guard v.string != nil else { return "field `\(name)`: expected a string, \(found)" }
            case .position:
                guard let p = v.object else { return "field `\(name)`: expected an object {epoch, offset, consumed}, \(found)" }
                if let problem = fieldProblem(p, prefix: name + ".") { return problem }
            }
        }
        return nil
    }

    /// A decoding error as "field `position.offset`: expected an integer" (no Swift dump).
    static func describe(_ e: DecodingError) -> String {
        func field(_ path: [CodingKey], _ last: CodingKey? = nil) -> String {
            (path + (last.map { [$0] } ?? [])).map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
                .joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
        }
        func what(_ type: Any.Type) -> String {
            switch type {
            case is Int.Type: return "an integer"
            case is UInt64.Type: return "an integer in 0...\(UInt64.max)"
            case is Double.Type: return "a number"
            case is String.Type: return "a string"
            case is DataPosition.Type: return "an object {epoch, offset, consumed}"
            default: return "a value of type \(type)"
            }
        }
        switch e {
        case let .typeMismatch(type, c):
            return "field `\(field(c.codingPath))`: expected \(what(type))"
        case let .valueNotFound(type, c):
            return "field `\(field(c.codingPath))`: expected \(what(type)), found null"
        case let .keyNotFound(key, c):
            return "field `\(field(c.codingPath, key))` is missing"
        case let .dataCorrupted(c):
            if c.codingPath.isEmpty { return "not valid JSON" }
            return "field `\(field(c.codingPath))`: \(c.debugDescription)"
        @unknown default:
            return "cannot be read"
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
        do {
            try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
            try saveAdapter(to: tmp.appendingPathComponent("adapter"))
            let (m, v) = optimizer.moments
            var entries: [SafetensorsEntry] = []
            for (i, p) in adapters.parameters.enumerated() {
                entries.append(SafetensorsEntry(name: "m.\(i)", shape: p.shape, floats: m[i]))
                entries.append(SafetensorsEntry(name: "v.\(i)", shape: p.shape, floats: v[i]))
            }
            try InjectedFault.write(SafetensorsWriter.serialize(entries), to: tmp.appendingPathComponent("optimizer.safetensors"),
                                    fault: fault, step: step, rank: comm.rank)
            fault?.fire(.inCheckpoint, step: step, rank: comm.rank)
            let state = TrainerState(step: step, position: stream.position, optimizer_step: optimizer.step, total_steps: totalSteps,
                                     seed: config.seed, best_val_loss: bestVal?.loss, best_step: bestVal?.step, bad_evals: badEvals,
                                     rng: "data order = f(seed, epoch); dropout masks = f(seed, step, global micro-batch index)",
                                     global_batch: globalBatch, ranks: comm.size, train_examples: trainCount)
            let enc = JSONEncoder()
            enc.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(try enc.encode(state), to: tmp.appendingPathComponent("trainer_state.json"))
            try AtomicFile.write("step \(step)\n", to: tmp.appendingPathComponent(Checkpoints.marker))
        } catch {
            // A write failed part-way (a full disk, a quota): the half-built checkpoint goes, the
            // complete ones stay, and the run stops saying which one to resume from.
            try? fm.removeItem(at: tmp)
            let previous = Checkpoints.list(outputDir).last.map { "the previous checkpoint \($0.url.path) is intact; free space and continue with --resume \(outputDir.path)" }
                ?? "no earlier checkpoint exists"
            throw TrainingError.system("cannot write checkpoint step-\(step) in \(root.path): \(ErrorText.describe(error)); \(previous)")
        }
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
    /// from the newest complete checkpoint of a run directory. Everything is read and checked
    /// against this run (its data, model and adapter) before anything is restored; what does
    /// not fit is an error naming the file, the field and what was expected.
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
        let stateURL = ckpt.appendingPathComponent("trainer_state.json")
        let state = try Checkpoints.readState(stateURL)
        try checkState(state, file: stateURL.path)
        let (values, m, v) = try readAdapterAndMoments(ckpt)

        if let g = state.global_batch, g != globalBatch {
            log("warning: \(ckpt.path) was trained with a global batch of \(g) rows, this run uses \(globalBatch)"
                + " (\(comm.size) rank\(comm.size == 1 ? "" : "s")); the continuation differs from the original run. "
                + "Keep it with --global-batch \(g)")
        }
        if state.seed != config.seed, config.shuffle {
            log("warning: \(ckpt.path) was trained with --seed \(state.seed), this run uses \(config.seed): the rest of the "
                + "epoch follows another order (examples repeat or are skipped). Keep it with --seed \(state.seed)")
        }
        for (p, q) in zip(adapters.parameters, values) { for j in 0..<p.count { p.value[j] = q[j] } }
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

    /// Checks a checkpoint's trainer state against itself and this run: steps within the run,
    /// the data position inside this data, the optimizer's step and the validation record
    /// consistent with the step.
    func checkState(_ s: TrainerState, file: String) throws {
        func bad(_ field: String, _ expected: String) -> TrainingError {
            .checkpoint("\(file): field `\(field)`: expected \(expected)")
        }
        guard s.total_steps >= 1 else { throw bad("total_steps", "a step count ≥ 1, found \(s.total_steps)") }
        guard s.step >= 0, s.step <= s.total_steps else { throw bad("step", "a step in 0...\(s.total_steps) (total_steps), found \(s.step)") }
        guard s.total_steps == totalSteps || config.steps != nil else {
            throw TrainingError.checkpoint("\(file) was written by a run of \(s.total_steps) steps; this one has \(totalSteps) (same data and flags expected)")
        }
        guard s.step <= totalSteps else {
            throw bad("step", "at most this run's \(totalSteps) steps (--steps \(totalSteps)), found \(s.step)")
        }
        guard s.optimizer_step == s.step else {
            throw bad("optimizer_step", "\(s.step) (one optimizer update per step), found \(s.optimizer_step)")
        }
        if let n = s.train_examples, n != trainCount {
            throw TrainingError.checkpoint("\(file): field `train_examples`: the checkpoint was trained on \(n) training examples, "
                + "--data \(config.data) gives \(trainCount); resume with the data (and --val-split) it was trained on")
        }
        if let p = stream.problem(with: s.position) {
            let data = p.field == "position.epoch" ? "" : " (--data \(config.data) gives \(trainCount) training examples; resume with the data the checkpoint was trained on)"
            throw TrainingError.checkpoint("\(file): field `\(p.field)`: expected \(p.expected)\(data)")
        }
        switch (s.best_val_loss, s.best_step) {
        case (nil, nil): break
        case let (l?, b?):
            guard l.isFinite else { throw bad("best_val_loss", "a finite number, found \(l)") }
            guard b >= 0, b <= s.step else { throw bad("best_step", "a step in 0...\(s.step), found \(b)") }
        default:
            throw bad(s.best_step == nil ? "best_step" : "best_val_loss", "both best_val_loss and best_step, or neither")
        }
        guard s.bad_evals >= 0, s.bad_evals <= s.step else { throw bad("bad_evals", "a count in 0...\(s.step), found \(s.bad_evals)") }
        if let g = s.global_batch, g < 1 { throw bad("global_batch", "a row count ≥ 1, found \(g)") }
        if let r = s.ranks, r < 1 { throw bad("ranks", "a rank count ≥ 1, found \(r)") }
    }

    /// The checkpoint's adapter values and AdamW moments, each checked against this run's
    /// adapter: the same kind, modules and shapes, finite values, non-negative second moments.
    func readAdapterAndMoments(_ ckpt: URL) throws -> (values: [[Float]], m: [[Float]], v: [[Float]]) {
        let fm = FileManager.default
        let adapterURL = ckpt.appendingPathComponent("adapter"), optURL = ckpt.appendingPathComponent("optimizer.safetensors")
        for u in [adapterURL, optURL] where !fm.fileExists(atPath: u.path) {
            throw TrainingError.checkpoint("\(u.path): missing (a checkpoint holds adapter/, optimizer.safetensors and trainer_state.json)")
        }
        let saved: AdapterSet
        do { saved = try AdapterIO.load(adapterURL, config: model.config) } catch {
            throw TrainingError.checkpoint("\(adapterURL.path): the checkpoint's adapter cannot be read: \(error)")
        }
        let ours = adapters.parameters, theirs = saved.parameters
        let ourModules = adapters.adapters.map(\.modulePath), theirModules = saved.adapters.map(\.modulePath)
        let mismatch: String?
        if saved.kind != adapters.kind || ourModules != theirModules {
            mismatch = "\(saved.kind?.rawValue ?? "?") on \(theirModules.count) modules, this run's \(adapters.kind?.rawValue ?? "?") on \(ourModules.count)"
                + (ourModules.count == theirModules.count ? " others" : "")
        } else if ours.count != theirs.count {
            mismatch = "\(theirs.count) parameter tensors, this run's \(ours.count)"
        } else if let k = ours.indices.first(where: { ours[$0].shape != theirs[$0].shape }) {
            mismatch = "parameter \(k) has shape \(theirs[k].shape), this run's \(ours[k].shape)"
        } else {
            mismatch = nil
        }
        if let mismatch {
            throw TrainingError.checkpoint("\(adapterURL.path): the checkpoint's adapter does not match this run's (\(mismatch)); "
                + "expected the --adapter-type, --r, --target-modules and --layers it was trained with")
        }
        var values: [[Float]] = []
        for (k, q) in theirs.enumerated() {
            let a = (0..<q.count).map { q.value[$0] }
            guard a.allSatisfy(\.isFinite) else {
                throw TrainingError.checkpoint("\(adapterURL.path): parameter \(k) (\(theirModules[min(k, theirModules.count - 1)]) …) holds NaN or Inf values")
            }
            values.append(a)
        }
        let opt: SafetensorsFile
        do { opt = try SafetensorsFile(url: optURL) } catch { throw TrainingError.checkpoint("\(error)") }
        let expectedNames = Set((0..<ours.count).flatMap { ["m.\($0)", "v.\($0)"] })
        if let extra = opt.names.first(where: { !expectedNames.contains($0) }) {
            throw TrainingError.checkpoint("\(optURL.path): tensor '\(extra)': expected only m.0…m.\(ours.count - 1) and v.0…v.\(ours.count - 1) (one pair per adapter parameter)")
        }
        func moments(_ prefix: String) throws -> [[Float]] {
            try ours.enumerated().map { i, p in
                let name = "\(prefix).\(i)"
                guard let t = opt[name] else {
                    throw TrainingError.checkpoint("\(optURL.path): tensor '\(name)' is missing (expected one per adapter parameter, \(ours.count) in all)")
                }
                guard t.shape == p.shape, t.dtype == .f32 else {
                    throw TrainingError.checkpoint("\(optURL.path): tensor '\(name)' is \(t.dtype.rawValue) \(t.shape), expected F32 \(p.shape) (adapter parameter \(i))")
                }
                let f = t.floats()
                guard f.allSatisfy({ $0.isFinite && (prefix == "m" || $0 >= 0) }) else {
                    throw TrainingError.checkpoint("\(optURL.path): tensor '\(name)': expected finite values\(prefix == "v" ? " ≥ 0 (second moments)" : "")")
                }
                return f
            }
        }
        return (values, try moments("m"), try moments("v"))
    }
}
