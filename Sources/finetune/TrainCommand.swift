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
        OUTPUT must be new or empty: a directory holding an earlier run (or anything else) is refused \
        unless --resume continues that run or --overwrite replaces it, so a failed run never destroys a finished one.
        Data-parallel over MPI: `mpirun -np N finetune train ...` (or `srun --mpi=pmix`); each rank \
        runs its share of every global batch (--global-batch, default batch-size × grad-accum × N) \
        and rank 0 alone writes the outputs.
        """)

    @OptionGroup var modelOptions: ModelOptions
    @Option(help: "Training data: JSON array or JSONL (instruction/input/output/answer, question/answer, text, messages, prompt/completion, input_ids/labels, CSQA).") var data: String
    @Option(help: "Validation data file.") var valData: String?
    @Option(help: "Output directory.") var output: String
    // Adapter. The shape flags that --adapter-init overrides have no value unless given
    // (their defaults are filled in by TrainConfig.resolve), so that giving one is refused.
    @Option(help: "The adapter to train (dora: LoRA with a trained magnitude per output row, PEFT use_dora).") var adapterType: AdapterKind = TrainConfig.defaults.adapterType
    @Option(name: .customLong("r"), help: "LoRA/DoRA rank (default \(TrainConfig.Defaults.rank)).") var rank: Int?
    @Option(help: "LoRA/DoRA lora_alpha (default 2r) or NdLinear α (default 1.0).") var alpha: Float?
    @Option(help: "Dropout on the adapter input.") var dropout: Float = TrainConfig.defaults.dropout
    @Flag(help: "rsLoRA scaling alpha/√r.") var rslora = false
    @Option(help: "NdLinear init: zero (W0 = 0, the adapter starts as the base model) or reference (both factors U(±1/√fan_in), as the published script) (default \(TrainConfig.Defaults.ndlinearInit.rawValue): the reference init can raise a model's loss tenfold before the first step, e.g. Qwen2.5-0.5B 0.90 → 12.5).")
    var ndlinearInit: NdLinearInit?
    @Option(help: "Projections to adapt (q_proj,k_proj,... or all-linear; default \(TrainConfig.Defaults.targetModules)).") var targetModules: String?
    @Option(help: "Layers to adapt, e.g. 0-3,7 (default all).") var layers: String?
    @Option(help: "Start from an existing adapter's values (directory or .safetensors); its files decide the modules, layers, rank and scaling.")
    var adapterInit: String?
    @Option(help: "NdLinear α for --adapter-init files that carry none.") var adapterAlpha: Float?
    // Data.
    @OptionGroup var templateOptions: TemplateOptions
    @OptionGroup var chatTemplateOptions: ChatTemplateOptions
    @Flag(help: "Train on the prompt tokens too.") var noMaskPrompt = false
    @Flag(help: "Pack several examples per sequence (attention stays within each).") var packing = false
    // Optimisation.
    @Option(help: "Passes over the data (default 1).") var epochs: Int?
    @Option(help: "Optimizer steps (instead of --epochs).") var steps: Int?
    @Option(help: "Sequences per micro-batch.") var batchSize: Int = TrainConfig.defaults.batchSize
    @Option(help: "Micro-batches per optimizer step.") var gradAccum: Int = TrainConfig.defaults.gradAccum
    @Option(help: "Rows per optimizer step over all MPI ranks (default batch-size × grad-accum × ranks); each rank runs its share in micro-batches of --batch-size.") var globalBatch: Int?
    @Option(help: "Peak learning rate.") var lr: Double = TrainConfig.defaults.lr
    @Option(help: "Decoupled weight decay.") var weightDecay: Double = TrainConfig.defaults.weightDecay
    @Option(help: "AdamW betas B1,B2.") var adamBetas: String = TrainConfig.defaults.adamBetas.map { "\($0)" }.joined(separator: ",")
    @Option(help: "AdamW epsilon.") var adamEps: Double = TrainConfig.defaults.adamEps
    @Option(help: "Learning-rate schedule after the warmup.") var schedule: LRScheduleKind = TrainConfig.defaults.schedule
    @Option(help: "Warmup steps (lr is 0 at the first).") var warmupSteps: Int?
    @Option(help: "Warmup as a fraction of the steps.") var warmupRatio: Double?
    @Option(help: "Clip the global gradient norm (0: off).") var maxGradNorm: Double = TrainConfig.defaults.maxGradNorm
    @Option(help: "Seed for init, shuffling, splits and dropout.") var seed: UInt64 = TrainConfig.defaults.seed
    @Flag(help: "Keep file order.") var noShuffle = false
    // Validation, checkpoints, output.
    @Option(help: "Hold out this fraction of --data for validation.") var valSplit: Double?
    @Flag(help: "Recompute each layer's forward in backward (less memory, same gradients).") var checkpointing = false
    @Option(help: "Checkpoint every N steps.") var saveEvery: Int?
    @Option(help: "Validation loss every N steps.") var evalEvery: Int?
    @Option(help: "Keep only the newest N checkpoints (and the best by validation).") var keepCheckpoints: Int?
    @Option(help: "Stop after N validations without improvement.") var earlyStoppingPatience: Int?
    @Option(help: "Validate on at most N examples.") var valLimit: Int?
    @Option(help: "Continue from a checkpoint directory or a run's output directory.") var resume: String?
    @Flag(help: "Train into a non-empty --output: remove the earlier run's metrics.jsonl, run.json, loss.svg, adapter/ and checkpoints/ there (other files stay) before the first step. Without it (or --resume) a non-empty --output is refused.")
    var overwrite = false
    @Option(help: "Without a terminal, print progress every N steps.") var logEvery: Int = TrainConfig.defaults.logEvery
    @Flag(help: "Print a JSON summary on stdout.") var json = false

    func trainConfig() throws -> TrainConfig {
        var c = TrainConfig(model: modelOptions.model, data: data, output: output)
        c.valData = valData; c.adapterType = adapterType; c.r = rank; c.alpha = alpha; c.dropout = dropout
        c.rslora = rslora; c.ndlinearInit = ndlinearInit; c.targetModules = targetModules; c.layers = layers
        c.adapterInit = adapterInit; c.adapterAlpha = adapterAlpha
        c.template = templateOptions.template; c.maxLength = templateOptions.maxLength; c.strict = templateOptions.strict
        c.maskPrompt = !noMaskPrompt; c.packing = packing; c.epochs = epochs; c.steps = steps
        c.batchSize = batchSize; c.gradAccum = gradAccum; c.globalBatch = globalBatch; c.lr = lr; c.weightDecay = weightDecay
        c.adamBetas = try parseDoubleList(adamBetas, flag: "--adam-betas")
        c.adamEps = adamEps; c.schedule = schedule; c.warmupSteps = warmupSteps; c.warmupRatio = warmupRatio
        c.maxGradNorm = maxGradNorm; c.seed = seed; c.shuffle = !noShuffle; c.valSplit = valSplit
        c.checkpointing = checkpointing; c.threads = modelOptions.threads; c.saveEvery = saveEvery; c.evalEvery = evalEvery
        c.keepCheckpoints = keepCheckpoints; c.earlyStoppingPatience = earlyStoppingPatience; c.valLimit = valLimit
        c.resume = resume; c.overwrite = overwrite; c.logEvery = logEvery
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
            // Every flag is checked before the model is loaded or the data read.
            let plan = try trainConfig().resolve()
            // An earlier run in --output is refused before the model is loaded.
            try Trainer.checkOutputDirectory(plan.config)
            let weights = try modelOptions.load()
            if comm.isRoot { note(CPU.summary) }
            let tokenizer = try modelOptions.tokenizer()
            let chat = try chatTemplateOptions.chat(template: plan.config.template, source: modelOptions.model, tokenizer: tokenizer)
            return try Trainer(plan: plan, weights: weights, tokenizer: tokenizer, chat: chat, communicator: comm)
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
