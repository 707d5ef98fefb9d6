import Adapters
import ArgumentParser
import Foundation
import LLMCore
import Training

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a LoRA or NdLinear-LoRA adapter on a frozen model.",
        discussion: """
        Writes OUTPUT/adapter/ (a PEFT directory: LORA, or LOKR for NdLinear-LoRA), OUTPUT/metrics.jsonl \
        (one row per optimizer step, plus val_loss rows), OUTPUT/checkpoints/step-N/, OUTPUT/run.json \
        and OUTPUT/loss.svg. SIGINT/SIGTERM finish the step, checkpoint and exit; --resume continues.
        Data-parallel over MPI: `mpirun -np N finetune train ...` (or `srun --mpi=pmix`); each rank \
        runs its share of every global batch (--global-batch, default batch-size × grad-accum × N) \
        and rank 0 alone writes the outputs.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Training data: JSON array or JSONL (instruction/input/output/answer, question/answer, text, input_ids/labels, CSQA).") var data: String
    @Option(help: "Validation data file.") var valData: String?
    @Option(help: "Output directory.") var output: String
    @Option(help: "lora or ndlinear.") var adapterType: String = "ndlinear"
    @Option(name: .customLong("r"), help: "LoRA rank.") var rank: Int = 8
    @Option(help: "LoRA lora_alpha (default 2r) or NdLinear α (default 1.0).") var alpha: Float?
    @Option(help: "Dropout on the adapter input.") var dropout: Float = 0
    @Flag(help: "rsLoRA scaling alpha/√r.") var rslora = false
    @Option(help: "NdLinear init: reference (both factors U(±1/√fan_in)) or zero (W0 = 0).") var ndlinearInit: String = "reference"
    @Option(help: "Projections to adapt (q_proj,k_proj,... or all-linear).") var targetModules: String = "all-linear"
    @Option(help: "Layers to adapt, e.g. 0-3,7 (default all).") var layers: String?
    @Option(help: "Start from an existing adapter's values (directory or .safetensors).") var adapterInit: String?
    @Option(help: "NdLinear α for --adapter-init files that carry none.") var adapterAlpha: Float?
    @Option(help: "ndlinear, alpaca, llm-adapters, raw, chat (the model's own chat template) or auto.") var template: String = "auto"
    @Option(help: "Truncate examples to this many tokens.") var maxLength: Int = 512
    @Flag(help: "Train on the prompt tokens too.") var noMaskPrompt = false
    @Flag(help: "Pack several examples per sequence (attention stays within each).") var packing = false
    @Option(help: "Passes over the data (default 1).") var epochs: Int?
    @Option(help: "Optimizer steps (instead of --epochs).") var steps: Int?
    @Option(help: "Sequences per micro-batch.") var batchSize: Int = 1
    @Option(help: "Micro-batches per optimizer step.") var gradAccum: Int = 1
    @Option(help: "Rows per optimizer step over all MPI ranks (default batch-size × grad-accum × ranks); each rank runs its share in micro-batches of --batch-size.") var globalBatch: Int?
    @Option(help: "Peak learning rate.") var lr: Double = 1e-4
    @Option(help: "Decoupled weight decay.") var weightDecay: Double = 0
    @Option(help: "AdamW betas B1,B2.") var adamBetas: String = "0.9,0.999"
    @Option(help: "AdamW epsilon.") var adamEps: Double = 1e-8
    @Option(help: "constant, linear or cosine.") var schedule: String = "linear"
    @Option(help: "Warmup steps (lr is 0 at the first).") var warmupSteps: Int?
    @Option(help: "Warmup as a fraction of the steps.") var warmupRatio: Double?
    @Option(help: "Clip the global gradient norm (0: off).") var maxGradNorm: Double = 1.0
    @Option(help: "Seed for init, shuffling, splits and dropout.") var seed: UInt64 = 42
    @Flag(help: "Keep file order.") var noShuffle = false
    @Option(help: "Hold out this fraction of --data for validation.") var valSplit: Double?
    @Flag(help: "Recompute each layer's forward in backward (less memory, same gradients).") var checkpointing = false
    @Option(help: "Checkpoint every N steps.") var saveEvery: Int?
    @Option(help: "Validation loss every N steps.") var evalEvery: Int?
    @Option(help: "Keep only the newest N checkpoints (and the best by validation).") var keepCheckpoints: Int?
    @Option(help: "Stop after N validations without improvement.") var earlyStoppingPatience: Int?
    @Option(help: "Validate on at most N examples.") var valLimit: Int?
    @Option(help: "Continue from a checkpoint directory or a run's output directory.") var resume: String?
    @Flag(help: "A malformed data record is fatal (default: skipped and counted).") var strict = false
    @Option(help: "Without a terminal, print progress every N steps.") var logEvery: Int = 10
    @Flag(help: "Print a JSON summary on stdout.") var json = false

    func trainConfig() throws -> TrainConfig {
        var c = TrainConfig(model: modelOptions.model, data: data, output: output)
        c.valData = valData; c.adapterType = adapterType; c.r = rank; c.alpha = alpha; c.dropout = dropout
        c.rslora = rslora; c.ndlinearInit = ndlinearInit; c.targetModules = targetModules; c.layers = layers
        c.adapterInit = adapterInit; c.adapterAlpha = adapterAlpha; c.template = template; c.maxLength = maxLength
        c.maskPrompt = !noMaskPrompt; c.packing = packing; c.epochs = epochs; c.steps = steps
        c.batchSize = batchSize; c.gradAccum = gradAccum; c.globalBatch = globalBatch; c.lr = lr; c.weightDecay = weightDecay
        c.adamBetas = try adamBetas.split(separator: ",").map {
            guard let v = Double($0.trimmingCharacters(in: .whitespaces)) else { throw InputError("--adam-betas '\(adamBetas)': expected B1,B2") }
            return v
        }
        c.adamEps = adamEps; c.schedule = schedule; c.warmupSteps = warmupSteps; c.warmupRatio = warmupRatio
        c.maxGradNorm = maxGradNorm; c.seed = seed; c.shuffle = !noShuffle; c.valSplit = valSplit
        c.checkpointing = checkpointing; c.threads = modelOptions.threads; c.saveEvery = saveEvery; c.evalEvery = evalEvery
        c.keepCheckpoints = keepCheckpoints; c.earlyStoppingPatience = earlyStoppingPatience; c.valLimit = valLimit
        c.resume = resume; c.strict = strict; c.logEvery = logEvery
        return c
    }

    func run() throws {
        // Under mpirun/srun join the job (MPI is never loaded otherwise).
        let comm: any Communicator
        do { comm = try Distributed.join() } catch {
            if (Launcher.detect()?.rank ?? 0) == 0 { note("error: \(error)") }   // once per job, not once per rank
            throw ExitCode(2)
        }
        guard comm.isDistributed else { return try reportingErrors { try train(comm) } }
        // Ranks sharing a host split its cores unless --threads says otherwise.
        if modelOptions.threads == nil {
            BLAS.setThreads(max(1, ProcessInfo.processInfo.activeProcessorCount / comm.localSize))
        }
        do {
            try train(comm)
        } catch {
            // Divergence and interrupts happen on every rank at the same step: reported once.
            Distributed.exit(after: error, comm: comm) { e in
                guard let t = e as? TrainingError else { return false }
                switch t { case .diverged, .interrupted: return true; default: return false }
            }
        }
        comm.finalize()
    }

    func train(_ comm: any Communicator) throws {
        // Set-up failures on any rank stop every rank here, with one message.
        let trainer = try Distributed.agree(comm) { () throws -> Trainer in
            let config = try trainConfig()
            try config.validate()
            let weights = try modelOptions.load()
            if comm.isRoot { note(CPU.summary) }
            let tokenizer = try modelOptions.tokenizer()
            let chat = try modelOptions.chat(template: config.template, tokenizer: tokenizer)
            return try Trainer(config: config, weights: weights, tokenizer: tokenizer, chat: chat, communicator: comm)
        }
        let s = try trainer.run()
        guard comm.isRoot else { return }
        var lines = [String(format: "done: %d steps in %.1f s, %.0f tokens/s", s.steps, s.wallSeconds, s.tokensPerSecond)]
        if let l = s.finalLoss { lines.append(String(format: "final training loss %.4f", l)) }
        if let b = s.valLossBefore, let a = s.valLossAfter {
            lines.append(String(format: "validation loss %.4f → %.4f (perplexity %.2f → %.2f)", b, a, exp(b), exp(a)))
        } else if let a = s.valLossAfter {
            lines.append(String(format: "validation loss %.4f", a))
        }
        if let b = s.bestValLoss, let st = s.bestStep { lines.append(String(format: "best validation loss %.4f at step %d", b, st)) }
        lines.append("adapter: \(s.adapterDirectory.path)")
        for l in lines { note(l) }
        if json {
            struct Out: Encodable {
                let steps: Int; let final_loss: Double?; let val_loss_before: Double?; let val_loss_after: Double?
                let wall_s: Double; let tokens_per_s: Double; let adapter: String; let stopped_early: Bool
            }
            try printJSON(Out(steps: s.steps, final_loss: s.finalLoss, val_loss_before: s.valLossBefore, val_loss_after: s.valLossAfter,
                              wall_s: s.wallSeconds, tokens_per_s: s.tokensPerSecond, adapter: s.adapterDirectory.path, stopped_early: s.stoppedEarly))
        }
    }
}
