import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport
@testable import Training

/// Issue 20, classes 1–4, through the library and the command line: sizes from model files,
/// numbers from flags, token ids from data files and checkpoint state are checked before they
/// size an allocation or index memory, and refused (exit 2) with the file, the field or flag
/// and what was expected. CLI runs that would allocate terabytes if a check regressed run
/// under a 4 GB address-space limit (`ulimit -v`), so a regression fails the test instead of
/// exhausting the machine; every refusal comes in well under a second.
@Suite struct HostileInputTests {
    static func exe() throws -> URL { try #require(finetuneExecutable(), "the finetune executable is built beside the tests") }
    static let stories = TestPaths.models.appendingPathComponent("stories260K")

    /// `finetune args` in a child process whose address space is limited to `kb` KiB.
    static func runLimited(_ args: [String], kb: Int = 4_000_000) throws -> (status: Int32, out: String, err: String) {
        // (and at most 120 s: a check that regressed into a run that never ends fails, not hangs)
        try runProcess(URL(fileURLWithPath: "/bin/sh"), ["-c", "ulimit -v \(kb); exec timeout 120 \"$0\" \"$@\"", try exe().path] + args)
    }

    /// Runs `args` (bounded by `runLimited`'s address-space limit and timeout), expects exit 2,
    /// and returns stderr.
    static func refused(_ args: [String], _ comment: Comment? = nil) throws -> String {
        let r = try runLimited(args)
        #expect(r.status == 2, "exit \(r.status): \(r.err)")
        #expect(!r.err.contains("Fatal error") && !r.err.contains("DecodingError"), "\(r.err)")
        return r.err
    }

    /// 20 GSM8K records (the issue's D: the fixture's records, repeated).
    static func gsm8k() throws -> URL {
        let lines = try String(contentsOf: TestPaths.fixtures.appendingPathComponent("data/gsm8k_head.jsonl"), encoding: .utf8)
            .split(separator: "\n").filter { !$0.isEmpty }
        return try writeDataTempFile((0..<20).map { lines[$0 % lines.count] + "\n" }.joined(), name: "gsm8k.jsonl")
    }

    /// A copy of stories260K with `changes` in its config.json.
    static func storiesCopy(_ changes: [String: Any]) throws -> URL {
        let dir = try temporaryDirectory("hostile-stories")
        for name in try FileManager.default.contentsOfDirectory(atPath: stories.path) {
            try FileManager.default.copyItem(at: stories.appendingPathComponent(name), to: dir.appendingPathComponent(name))
        }
        let url = dir.appendingPathComponent("config.json")
        var obj = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        for (k, v) in changes { obj[k] = v }
        try JSONSerialization.data(withJSONObject: obj).write(to: url)
        return dir
    }

    // MARK: 1. Sizes from files

    @Test func zeroLayersIsRefusedBeforeTraining() throws {
        let m = try Self.storiesCopy(["num_hidden_layers": 0])
        let err = try Self.refused(["train", "--model", m.path, "--data", try Self.gsm8k().path, "--output", m.appendingPathComponent("run").path,
                                    "--adapter-type", "lora", "--steps", "1"])
        #expect(err.contains("config.json: 'num_hidden_layers' is 0; expected 1...16384"), "\(err)")
    }

    @Test func inspectOfAnAbsurdConfigAnswersAtOnce() throws {
        let m = try Self.storiesCopy(["hidden_size": 1 << 40, "head_dim": 1 << 37])
        let err = try Self.refused(["inspect", "--model", m.appendingPathComponent("config.json").path])
        #expect(err.contains("'hidden_size' is 1099511627776; expected 1...1048576"), "\(err)")
        // The largest config the bounds allow: a correct (huge) count, no trap.
        let big = try Self.storiesCopy(["hidden_size": 1 << 20, "intermediate_size": 1 << 22, "num_hidden_layers": 1 << 10,
                                        "vocab_size": 1 << 24, "num_attention_heads": 1 << 13, "num_key_value_heads": 1 << 13, "head_dim": 1 << 7])
        let r = try Self.runLimited(["inspect", "--model", big.appendingPathComponent("config.json").path, "--json", "--adapter-type", "lora"])
        #expect(r.status == 0, "\(r.err)")
        let json = try JSONValue.parse(Data(r.out.utf8))
        #expect(json["total_parameters"]?.int == (1 << 10) * (4 * (1 << 40) + 3 * (1 << 42) + 2 * (1 << 20)) + (1 << 44) + (1 << 20))
        // Flags that overflow the estimate are named.
        let seq = try Self.refused(["inspect", "--model", big.appendingPathComponent("config.json").path, "--seq", "100000000", "--batch-size", "100000"])
        #expect(seq.contains("--seq 100000000 × --batch-size 100000: the activation estimate overflows"), "\(seq)")
    }

    /// A bare config.json with vocab 10^12 made `generate` allocate 128 TB; a config within
    /// the bounds but beyond the machine is refused with the estimate and what is available.
    @Test func generateOnAnAbsurdBareConfigIsRefused() throws {
        let m = try Self.storiesCopy(["vocab_size": 1_000_000_000_000])
        let err = try Self.refused(["generate", "--model", m.appendingPathComponent("config.json").path, "--prompt-ids", "1,2,3", "--max-new-tokens", "2"])
        #expect(err.contains("'vocab_size' is 1000000000000; expected 1...16777216"), "\(err)")
        let big = try Self.storiesCopy(["vocab_size": 1 << 24, "hidden_size": 1 << 20, "head_dim": 8])
        let mem = try Self.refused(["generate", "--model", big.appendingPathComponent("config.json").path, "--prompt-ids", "1", "--max-new-tokens", "1"])
        #expect(mem.contains("random bfloat16 weights for this config") && mem.contains("TB; this process can use")
                && mem.contains("(the address-space limit (ulimit -v))"), "\(mem)")
    }

    /// GGUF `llama.block_count` = 2^31 allocated GBs before the tensors were checked.
    @Test func ggufWithALyingBlockCountIsRefused() throws {
        let dir = try temporaryDirectory("hostile-gguf")
        let url = dir.appendingPathComponent("tiny.gguf")
        _ = try GGUFExport.writeMergedModel(try FixtureModel.llamaTiny.load(), adapters: nil, base: nil, dtype: .f32, to: url)
        var data = try Data(contentsOf: url)
        let key = try #require(data.range(of: Data("llama.block_count".utf8)))
        let type = data[key.upperBound..<(key.upperBound + 4)].withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        #expect(type == 4, "a u32 value")
        data.replaceSubrange((key.upperBound + 4)..<(key.upperBound + 8), with: [0, 0, 0, 0x80])   // 2^31
        try data.write(to: url)
        for args in [["inspect", "--model", url.path], ["generate", "--model", url.path, "--prompt-ids", "1"]] {
            let err = try Self.refused(args)
            #expect(err.contains("metadata 'llama.block_count' is 2147483648 but the file holds tensors for 2 blocks"), "\(err)")
        }
    }

    // MARK: 2. Numbers from the user

    @Test func hugeRankIsRefusedWithTheEstimate() throws {
        let out = try temporaryDirectory("hostile-r")
        let err = try Self.refused(["train", "--model", Self.stories.path, "--data", try Self.gsm8k().path, "--output", out.appendingPathComponent("run").path,
                                    "--adapter-type", "lora", "--r", "100000000", "--steps", "1"])
        #expect(err.contains("--r 100000000: the adapter's 578000000000 parameters with their gradients and AdamW moments need 9.25 TB; this process can use"), "\(err)")
        let overflow = try Self.refused(["train", "--model", Self.stories.path, "--data", try Self.gsm8k().path, "--output", out.appendingPathComponent("run").path,
                                         "--adapter-type", "lora", "--r", "\(Int.max)", "--steps", "1"])
        #expect(overflow.contains("--r \(Int.max): the adapter's parameter count overflows"), "\(overflow)")
        let inspect = try Self.refused(["inspect", "--model", Self.stories.path, "--adapter-type", "lora", "--r", "\(Int.max)"])
        #expect(inspect.contains("--r \(Int.max): the adapter's parameter count overflows"), "\(inspect)")
    }

    @Test func maxNewTokensBeyondTheContextIsRefused() throws {
        let err = try Self.refused(["generate", "--model", Self.stories.path, "--prompt-ids", "1", "--max-new-tokens", "1000000000000"])
        #expect(err.contains("--max-new-tokens 1000000000000: the prompt's 1 token plus 1000000000000 new ones exceed the model's context of 512 positions (max_position_embeddings); at most 511"), "\(err)")
        let overflow = try Self.refused(["generate", "--model", Self.stories.path, "--prompt-ids", "1,2", "--max-new-tokens", "\(Int.max)"])
        #expect(overflow.contains("--max-new-tokens \(Int.max)"), "\(overflow)")
        // Up to the context is fine.
        let r = try Self.runLimited(["generate", "--model", Self.stories.path, "--prompt-ids", "1", "--max-new-tokens", "3"])
        #expect(r.status == 0, "\(r.err)")
    }

    @Test func epochsThatOverflowAreRefused() throws {
        let out = try temporaryDirectory("hostile-epochs")
        let err = try Self.refused(["train", "--model", Self.stories.path, "--data", try Self.gsm8k().path, "--output", out.appendingPathComponent("run").path,
                                    "--epochs", "1000000000000000000"])
        #expect(err.contains("--epochs 1000000000000000000: 1000000000000000000 passes over 20 training examples overflow a 64-bit count"), "\(err)")
    }

    @Test func benchSequenceBeyondTheContextOrMemoryIsRefused() throws {
        let err = try Self.refused(["bench", "--model", Self.stories.path, "--seq", "1000000000"])
        #expect(err.contains("--seq 1000000000: more positions than the model's context of 512 (max_position_embeddings)"), "\(err)")
        let decode = try Self.refused(["bench", "--model", Self.stories.path, "--mode", "decode", "--seq", "500", "--steps", "100"])
        #expect(decode.contains("--seq 500 + --steps 100 (+ 1 warm-up)"), "\(decode)")
        let mem = try Self.refused(["bench", "--model", Self.stories.path, "--seq", "512", "--batch-size", "1000000"])
        #expect(mem.contains("--seq 512 × --batch-size 1000000: bench --mode train needs about") && mem.contains("this process can use"), "\(mem)")
        // A 8B config's random bf16 weights (16 GB) do not fit in 4 GB of address space.
        let cfg = TestPaths.fixtures.appendingPathComponent("model-configs/llama-3-8b.json").path
        let weights = try Self.refused(["bench", "--model", cfg, "--mode", "decode", "--seq", "16", "--steps", "1"])
        #expect(weights.contains("random bfloat16 weights for this config (8030261248 parameters) need 16.06 GB"), "\(weights)")
    }

    /// A batch whose activations cannot fit is refused before the arena is allocated, naming
    /// the flags, with the estimate.
    @Test func trainingStepBeyondMemoryIsRefused() throws {
        let out = try temporaryDirectory("hostile-batch")
        let err = try Self.refused(["train", "--model", Self.stories.path, "--data", try Self.gsm8k().path, "--output", out.appendingPathComponent("run").path,
                                    "--packing", "--batch-size", "100000", "--steps", "1"])
        #expect(err.contains("--batch-size 100000 × --max-length 512 (packed rows): a training step needs 5.49 TB (activations 5.49 TB"), "\(err)")

        // The library check, and the checked counts behind it.
        var c = TrainConfig(model: "m", data: "d", output: "o")
        c.batchSize = 1 << 40
        let plan = TrainPlan(config: c, adapter: .fresh(AdapterSpec(kind: .lora)))
        let config = try FixtureModel.llamaTiny.load().config
        #expect { try plan.checkMemory(model: config, seqLen: 1 << 30, trainableParameters: 0) } throws: { e in
            "\(e)".contains("--batch-size 1099511627776 × 1073741824 tokens") && exitStatus(for: e) == 2
        }
        try TrainPlan(config: TrainConfig(model: "m", data: "d", output: "o"), adapter: .fresh(AdapterSpec(kind: .lora)))
            .checkMemory(model: config, seqLen: 128, trainableParameters: 1000)
        let spec = AdapterSpec(kind: .lora, rank: 8)
        #expect(TrainPlan.trainableParameters(spec: spec, model: config) == AdapterSet.parameterCount(spec: spec, config: config))
        let nd = AdapterSpec(kind: .ndlinear)
        #expect(TrainPlan.trainableParameters(spec: nd, model: config) == AdapterSet.parameterCount(spec: nd, config: config))
        #expect(TrainPlan.trainableParameters(spec: AdapterSpec(kind: .lora, rank: Int.max / 2), model: config) == nil)
    }

    /// The steps of an epochs-mode run without packing are counted arithmetically (any
    /// --epochs that does not overflow answers at once) and agree with counting the rows.
    @Test func stepCountWithoutPackingIsArithmetic() throws {
        let data = try writeDataTempFile((0..<7).map { "{\"input_ids\": [1, \($0 + 2), 3, 4]}\n" }.joined(), name: "seven.jsonl")
        for (epochs, batch, accum) in [(1, 1, 1), (3, 2, 1), (2, 3, 2), (5, 7, 1), (1, 10, 1)] {
            var c = TrainConfig(model: FixtureModel.llamaTiny.directory.path, data: data.path, output: try temporaryDirectory("steps").path)
            c.adapterType = .lora; c.epochs = epochs; c.batchSize = batch; c.gradAccum = accum
            let t = try Trainer(config: c, weights: try FixtureModel.llamaTiny.load(), tokenizer: nil)
            var s = DataStream(count: 7, seed: c.seed, shuffle: true, epochs: epochs)
            let packer = try RowPacker(lengths: Array(repeating: 4, count: 7), packLength: nil)
            var counted = 0
            while !s.exhausted { _ = packer.nextRows(from: &s, count: batch * accum); counted += 1 }
            #expect(t.totalSteps == counted, "epochs \(epochs), rows per step \(batch * accum)")
        }
        // Packing counts rows one by one: an epoch count it cannot plan is refused by name.
        var c = TrainConfig(model: FixtureModel.llamaTiny.directory.path, data: data.path, output: try temporaryDirectory("steps").path)
        c.packing = true; c.epochs = 1_000_000_000
        #expect { try Trainer(config: c, weights: try FixtureModel.llamaTiny.load(), tokenizer: nil) } throws: { e in
            "\(e)".contains("--epochs 1000000000 with --packing: 7000000000 examples to pack") && "\(e)".contains("give --steps instead")
        }
    }

    // MARK: 3. Token ids

    /// A label ≥ vocab segfaulted in cross-entropy; now it is refused at load with file, line
    /// and field.
    @Test func labelsAndIdsOutsideTheVocabularyAreRefusedAtLoad() throws {
        let data = try writeDataTempFile("""
            {"input_ids":[1,5,6,7,8],"labels":[-100,5,6,7,8]}
            {"input_ids":[1,5,6,7,8],"labels":[-100,5,6,100000,8]}

            """, name: "ids.jsonl")
        let out = try temporaryDirectory("hostile-ids")
        let err = try Self.refused(["train", "--model", Self.stories.path, "--data", data.path, "--output", out.appendingPathComponent("run").path,
                                    "--steps", "2", "--batch-size", "2"])
        #expect(err.contains("\(data.path):2: field `labels[3]`: expected a token id in [0, 512) (the model's vocabulary) or -100, found 100000"), "\(err)")

        let weights = try FixtureModel.llamaTiny.load()   // vocab 320
        for (line, field, found) in [
            (#"{"input_ids":[1,5,320,7]}"#, "input_ids[2]", "320"),
            (#"{"input_ids":[1,5,6,7],"labels":[-100,5,6,1000000000]}"#, "labels[3]", "1000000000"),
        ] {
            let d = try writeDataTempFile("{\"input_ids\":[1,2,3]}\n" + line + "\n", name: "bad.jsonl")
            let c = TrainConfig(model: FixtureModel.llamaTiny.directory.path, data: d.path, output: out.path)
            #expect { try Trainer(config: c, weights: weights, tokenizer: nil) } throws: { e in
                guard case let .badField(loc, f, expected)? = e as? DataError else { return false }
                return loc.file == d.path && loc.line == 2 && f == field && expected.hasSuffix("found \(found)") && exitStatus(for: e) == 2
            }
        }
        // Negative labels other than -100 (kept out of the loader by its own check) are
        // refused by the vocabulary check too.
        #expect(throws: DataError.self) {
            try checkTokenIds(TokenizedExample(inputIds: [1, 2], labels: [1, -7]), vocabSize: 10, at: RecordLocation(file: "x", line: 1))
        }
        try checkTokenIds(TokenizedExample(inputIds: [1, 2], labels: [-100, 9]), vocabSize: 10, at: RecordLocation(file: "x", line: 1))
    }

    // MARK: 4. Checkpoint state

    /// Eight pre-tokenized records for llama-tiny, or their first `n`.
    static func records(_ n: Int = 8) throws -> URL {
        try writeDataTempFile((0..<n).map { "{\"input_ids\": [1, \($0 + 10), \($0 + 20), \($0 + 30), 2]}\n" }.joined(), name: "records.jsonl")
    }

    static func runConfig(data: URL, output: URL, steps: Int = 4, rank: Int = 2) -> TrainConfig {
        var c = TrainConfig(model: FixtureModel.llamaTiny.directory.path, data: data.path, output: output.path)
        c.adapterType = .lora; c.r = rank; c.steps = steps; c.batchSize = 2; c.saveEvery = 2; c.lr = 1e-2; c.logEvery = 100
        return c
    }

    /// A 4-step run with checkpoints at steps 2 and 4 (made once per test process).
    static let finishedRun: URL = {
        let out = try! temporaryDirectory("hostile-ckpt")
        let t = try! Trainer(config: runConfig(data: try! records(), output: out), weights: try! FixtureModel.llamaTiny.load(), tokenizer: nil)
        t.log = { _ in }
        _ = try! t.run()
        return out
    }()

    /// Corruptions of a checkpoint (step 2 of the finished run) and what the resume says.
    enum Corruption: String, CaseIterable, CustomStringConvertible {
        case shorterData, shorterDataOldCheckpoint, stepIsAString, negativeStep, stepBeyondTotal, stepBeyondThisRun
        case optimizerStep, consumed, negativeEpoch, bestStepAlone, negativeBadEvals, positionMissing, negativeSeed
        case hugeStep, positionNotAnObject, notJSON, stateMissing, adapterMissing, optimizerMissing, otherRank
        case momentShape, momentExtra, momentNegative, momentMissing
        var description: String { rawValue }
    }

    static func expectation(_ c: Corruption) -> String {
        switch c {
        case .shorterData: return "trainer_state.json: field `train_examples`: the checkpoint was trained on 8 training examples, --data"
        case .shorterDataOldCheckpoint: return "trainer_state.json: field `position.offset`: expected an offset into the epoch's 3 training examples (0..<3), found 4"
        case .stepIsAString: return "trainer_state.json: field `step`: expected an integer, found \"two\""
        case .negativeStep: return "trainer_state.json: field `step`: expected a step in 0...4 (total_steps), found -4"
        case .stepBeyondTotal: return "trainer_state.json: field `step`: expected a step in 0...4 (total_steps), found 600"
        case .stepBeyondThisRun: return "trainer_state.json: field `step`: expected at most this run's 1 steps (--steps 1), found 2"
        case .optimizerStep: return "trainer_state.json: field `optimizer_step`: expected 2 (one optimizer update per step), found 9"
        case .consumed: return "trainer_state.json: field `position.consumed`: expected epoch × examples + offset = 0 × 8 + 4, found 5"
        case .negativeEpoch: return "trainer_state.json: field `position.epoch`: expected an epoch ≥ 0, found -1"
        case .bestStepAlone: return "trainer_state.json: field `best_val_loss`: expected both best_val_loss and best_step, or neither"
        case .negativeBadEvals: return "trainer_state.json: field `bad_evals`: expected a count in 0...2, found -1"
        case .positionMissing: return "trainer_state.json: field `position` is missing"
        case .negativeSeed: return "trainer_state.json: field `seed`: expected an integer in 0...18446744073709551615, found -1"
        case .hugeStep: return "trainer_state.json: field `step`: expected an integer, found 1e+30"
        case .positionNotAnObject: return "trainer_state.json: field `position`: expected an object {epoch, offset, consumed}, found 5"
        case .notJSON: return "trainer_state.json: not valid JSON"
        case .stateMissing: return "trainer_state.json: missing (a checkpoint holds adapter/, optimizer.safetensors and trainer_state.json)"
        case .adapterMissing: return "step-2/adapter: missing"
        case .optimizerMissing: return "step-2/optimizer.safetensors: missing"
        case .otherRank: return "the checkpoint's adapter does not match this run's (parameter 0 has shape [2, 64], this run's [4, 64])"
        case .momentShape: return "optimizer.safetensors: tensor 'm.0' is F32 [1, 1], expected F32 [2, 64] (adapter parameter 0)"
        case .momentExtra: return "optimizer.safetensors: tensor 'm.99': expected only m.0…m."
        case .momentNegative: return "optimizer.safetensors: tensor 'v.1': expected finite values ≥ 0 (second moments)"
        case .momentMissing: return "optimizer.safetensors: tensor 'v.3' is missing"
        }
    }

    /// A copy of the finished run with checkpoint step-2 corrupted; the config to resume it.
    static func corrupted(_ c: Corruption) throws -> (run: URL, config: TrainConfig) {
        let run = try temporaryDirectory("hostile-resume")
        try FileManager.default.removeItem(at: run)
        try FileManager.default.copyItem(at: finishedRun, to: run)
        let ckpt = run.appendingPathComponent("checkpoints/step-2")
        let stateURL = ckpt.appendingPathComponent("trainer_state.json"), optURL = ckpt.appendingPathComponent("optimizer.safetensors")
        var state = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: stateURL)) as? [String: Any])
        var data = try records()
        var config = runConfig(data: data, output: run)
        func moments(_ edit: (inout [String: (shape: [Int], floats: [Float])]) -> Void) throws {
            let f = try SafetensorsFile(url: optURL)
            var t: [String: (shape: [Int], floats: [Float])] = Dictionary(uniqueKeysWithValues: f.tensors.map { ($0.name, (shape: $0.shape, floats: $0.floats())) })
            edit(&t)
            try SafetensorsWriter.write(t.sorted { $0.key < $1.key }.map { SafetensorsEntry(name: $0.key, shape: $0.value.shape, floats: $0.value.floats) }, to: optURL)
        }
        switch c {
        case .shorterData: data = try records(3)
        case .shorterDataOldCheckpoint: data = try records(3); state["train_examples"] = nil
        case .stepIsAString: state["step"] = "two"
        case .negativeStep: state["step"] = -4
        case .stepBeyondTotal: state["step"] = 600
        case .stepBeyondThisRun: config.steps = 1
        case .optimizerStep: state["optimizer_step"] = 9
        case .consumed: state["position"] = (state["position"] as! [String: Any]).merging(["consumed": 5]) { $1 }
        case .negativeEpoch: state["position"] = (state["position"] as! [String: Any]).merging(["epoch": -1]) { $1 }
        case .hugeStep: state["step"] = 1e30
        case .positionNotAnObject: state["position"] = 5
        case .bestStepAlone: state["best_step"] = 1
        case .negativeBadEvals: state["bad_evals"] = -1
        case .positionMissing: state["position"] = nil
        case .negativeSeed: state["seed"] = -1
        case .notJSON: try Data("{\"step\": ".utf8).write(to: stateURL)
        case .stateMissing: try FileManager.default.removeItem(at: stateURL)
        case .adapterMissing: try FileManager.default.removeItem(at: ckpt.appendingPathComponent("adapter"))
        case .optimizerMissing: try FileManager.default.removeItem(at: optURL)
        case .otherRank: config.r = 4
        case .momentShape: try moments { $0["m.0"] = ([1, 1], [0]) }
        case .momentExtra: try moments { $0["m.99"] = ([1], [0]) }
        case .momentNegative: try moments { $0["v.1"]!.floats[0] = -1 }
        case .momentMissing: try moments { $0["v.3"] = nil }
        }
        if ![.notJSON, .stateMissing].contains(c) { try JSONSerialization.data(withJSONObject: state).write(to: stateURL) }
        config.data = data.path
        config.resume = ckpt.path
        return (run, config)
    }

    /// Each corruption is refused before anything is restored, naming the file and the field
    /// (exit 2); the checkpoint itself, untouched, resumes.
    @Test(arguments: Corruption.allCases)
    func corruptCheckpointIsRefusedByName(_ c: Corruption) throws {
        let (run, config) = try Self.corrupted(c)
        defer { try? FileManager.default.removeItem(at: run) }
        let weights = try FixtureModel.llamaTiny.load()
        #expect {
            let t = try Trainer(config: config, weights: weights, tokenizer: nil)
            t.log = { _ in }
            _ = try t.run()
        } throws: { e in
            guard case .checkpoint? = e as? TrainingError, exitStatus(for: e) == 2 else { return false }
            return "\(e)".contains(Self.expectation(c))
        }
    }

    @Test func intactCheckpointResumes() throws {
        let run = try temporaryDirectory("hostile-resume-ok")
        try FileManager.default.removeItem(at: run)
        try FileManager.default.copyItem(at: Self.finishedRun, to: run)
        var config = Self.runConfig(data: try Self.records(), output: run, steps: 6)
        config.resume = run.appendingPathComponent("checkpoints/step-4").path
        let t = try Trainer(config: config, weights: try FixtureModel.llamaTiny.load(), tokenizer: nil)
        var lines: [String] = []
        t.log = { lines.append($0) }
        #expect(try t.run().steps == 6)
        #expect(lines.contains { $0.contains("resumed from") && $0.contains("at step 4") }, "\(lines)")
    }

    /// The issue's reproduction through the CLI: resuming with a shorter data file than the
    /// checkpoint had consumed trapped in `DataStream`; now exit 2 naming the field.
    @Test func resumeWithShorterDataExitsTwo() throws {
        let run = try temporaryDirectory("hostile-cli-resume")
        try FileManager.default.removeItem(at: run)
        try FileManager.default.copyItem(at: Self.finishedRun, to: run)
        let ckpt = run.appendingPathComponent("checkpoints/step-2")
        let args = ["train", "--model", FixtureModel.llamaTiny.directory.path, "--output", run.path, "--adapter-type", "lora", "--r", "2",
                    "--steps", "4", "--batch-size", "2", "--resume", ckpt.path]
        let err = try Self.refused(args + ["--data", try Self.records(3).path])
        #expect(err.contains("field `train_examples`: the checkpoint was trained on 8 training examples"), "\(err)")
        let stateURL = ckpt.appendingPathComponent("trainer_state.json")
        let text = try String(contentsOf: stateURL, encoding: .utf8)
        try text.replacingOccurrences(of: "\"step\" : 2", with: "\"step\" : \"two\"").write(to: stateURL, atomically: true, encoding: .utf8)
        let typed = try Self.refused(args + ["--data", try Self.records().path])
        #expect(typed.contains("trainer_state.json: field `step`: expected an integer"), "\(typed)")
    }
}
