import Adapters
import ArgumentParser
import Foundation
import LLMCore
import Training

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure training, prefill or decode speed in-process (warm-up, then the median step).",
        discussion: "Build in release mode (swift build -c release) for meaningful figures.")

    @OptionGroup var model: ModelOptions
    @Option(help: "train, prefill, decode, gemm (the GEMM library alone on the model's GEMM shapes, its own threads), or bandwidth (the machine's read GB/s with --threads, decode's bound; ignores the model).") var mode: String = "train"
    @Option(help: "none, lora, dora or ndlinear.") var adapterType: String = "ndlinear"
    @Option(name: .customLong("r"), help: "LoRA rank.") var rank = 8
    @Option(help: "Projections to adapt.") var targetModules: String = "all-linear"
    @Option(help: "Random-weight dtype for a bare config.json: bf16 (default, as checkpoints ship) or f32.") var dtype: String = "bf16"
    @Option(help: "Sequence length (decode: the prefilled context).") var seq = 256
    @Option(help: "Batch size.") var batchSize = 1
    @Option(help: "Timed steps (decode: decoded tokens).") var steps = 3
    @Flag(help: "Per-layer activation recomputation.") var checkpointing = false
    @Option(help: "Prefill: all (logits at every position, as training and the PyTorch reference) or last (generation's prefill: last position only, KV cache filled).")
    var logits: String = "all"
    @Option(help: "Train: fraction (0 ≤ F < 1) of each row's first positions masked as prompt: no target, so no logits computed for them.")
    var promptFraction: Double = 0
    @Flag(help: "One JSON object on stdout.") var json = false

    func run() throws {
        try reportingErrors {
            guard let benchMode = BenchMode(rawValue: mode) else { throw InputError("--mode '\(mode)': expected train, prefill, decode, gemm or bandwidth") }
            guard logits == "all" || logits == "last" else { throw InputError("--logits '\(logits)': expected all or last") }
            guard seq > 0, batchSize > 0, steps > 0 else { throw InputError("--seq, --batch-size and --steps must be positive") }
            guard promptFraction >= 0, promptFraction < 1 else { throw InputError("--prompt-fraction \(promptFraction): expected 0 ≤ F < 1") }
            var o = BenchOptions(mode: benchMode)
            o.seq = seq; o.batch = batchSize; o.steps = steps; o.checkpointing = checkpointing
            o.lastLogitsOnly = logits == "last"
            o.promptFraction = promptFraction
            let r: BenchResult
            if benchMode == .bandwidth {
                try model.apply()
                r = Benchmark.runBandwidth(options: o, modelName: model.model)
            } else if benchMode == .gemm, model.model.hasSuffix(".json") {
                try model.apply()  // threads; a bare config needs no weights for GEMM shapes
                let config = try ModelConfig.load(URL(fileURLWithPath: model.model))
                try Benchmark.check(config: config, options: o)
                r = Benchmark.runGEMM(config: config, options: o, modelName: model.model)
            } else {
                // Every size from the flags is checked against the model's config (its context,
                // and the memory the run would allocate) before the weights are loaded.
                guard !["lora", "dora"].contains(adapterType) || rank > 0 else { throw InputError("--r \(rank): must be positive") }
                let config = try ModelConfig.load(modelPath: model.model)
                var spec: AdapterSpec?
                if adapterType != "none" {
                    guard let kind = AdapterKind(rawValue: adapterType) else { throw InputError("--adapter-type '\(adapterType)': expected none, lora, dora or ndlinear") }
                    spec = AdapterSpec(kind: kind, targets: try TargetSelection.parse(modules: targetModules, layers: nil), rank: rank)
                    try spec!.targets.validate(for: config)
                }
                guard let trainable = spec.map({ TrainPlan.trainableParameters(spec: $0, model: config) }) ?? 0 else {
                    throw InputError("--r \(rank): the adapter's parameter count overflows a 64-bit count")
                }
                try Benchmark.check(config: config, options: o, trainableParameters: trainable)
                let weights = try model.load(randomDType: try parseDType(dtype, flag: "--dtype"))
                let adapters = try spec.map { try AdapterSet.create(spec: $0, config: weights.config, seed: 0) }
                let m = TransformerModel(weights: weights, adapters: adapters)
                r = try Benchmark.run(model: m, adapters: adapters, options: o, modelName: model.model)
            }
            if json { try printJSON(r); return }
            print(CPU.summary)
            if benchMode == .bandwidth {
                print(String(format: "read bandwidth: %.1f GB/s with %d threads (median of %d passes over 1 GiB)", r.gb_per_s ?? 0, r.threads, r.steps))
                return
            }
            print(String(format: "%@ %@ [%@, %@]: %.1f tokens/s, %.3f s/step, %.1f GFLOP/s, peak RSS %.0f MB%@",
                         r.mode, r.model, r.dtype, r.adapter, r.tokens_per_s, r.seconds_per_step, r.gflops, r.peak_rss_mb,
                         r.gb_per_s.map { String(format: ", %.1f GB/s of weights", $0) } ?? ""))
            if let e = r.engine_gflops { print(String(format: "  library threads %.1f GFLOP/s, engine split %.1f GFLOP/s", r.gflops, e)) }
        }
    }
}
