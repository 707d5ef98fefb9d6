import Adapters
import ArgumentParser
import Foundation
import LLMCore
import Training

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Architecture, parameter counts, adapter shapes and training memory, from the config alone.",
        discussion: "Never allocates weights: a Llama-3-8B config.json is inspected instantly.")

    @Option(help: "A model directory or a config.json.") var model: String
    @Option(help: "Adapter kind to plan: lora, dora or ndlinear.") var adapterType: String = "ndlinear"
    @Option(name: .customLong("r"), help: "LoRA rank.") var rank = 8
    @Option(help: "Projections to adapt (q_proj,...,down_proj or all-linear).") var targetModules: String = "all-linear"
    @Option(help: "Layers to adapt, e.g. 0-3,7 (default all).") var layers: String?
    @OptionGroup var adapter: AdapterOptions
    @Option(help: "Sequence length for the memory estimate.") var seq = 512
    @Option(help: "Batch size for the memory estimate.") var batchSize = 1
    @Flag(help: "One JSON object on stdout.") var json = false

    struct Module: Encodable { let name: String; let in_features: Int; let out_features: Int; let shapes: [[Int]]; let parameters: Int; let factors: [[Int]]? }
    struct Report: Encodable {
        let architecture: String; let family: String; let layers: Int; let hidden_size: Int; let intermediate_size: Int
        let heads: Int; let kv_heads: Int; let head_dim: Int; let vocab_size: Int; let tie_word_embeddings: Bool
        let dtype: String?; let total_parameters: Int; let adapter_type: String; let trainable_parameters: Int
        let modules: [Module]; let memory_bytes: [String: Int]
    }

    func run() throws {
        try reportingErrors {
            guard seq > 0, batchSize > 0 else { throw InputError("--seq and --batch-size must be positive") }
            guard rank > 0 else { throw InputError("--r \(rank): must be positive") }
            let config = try ModelConfig.load(modelPath: model)
            guard let kind = AdapterKind(rawValue: adapterType) else { throw InputError("--adapter-type '\(adapterType)': expected lora, dora or ndlinear") }
            let targets = try TargetSelection.parse(modules: targetModules, layers: layers)
            try targets.validate(for: config)
            var modules: [Module] = []
            var trainable: Int
            var kindName = kind.rawValue
            if let loaded = try adapter.load(config: config) {
                // Report the adapter actually on disk.
                kindName = loaded.kind?.rawValue ?? kindName
                for a in loaded.adapters {
                    let factors = (a as? NdLinearAdapter).map { [[$0.inFactors.0, $0.inFactors.1], [$0.outFactors.0, $0.outFactors.1]] }
                    modules.append(Module(name: a.modulePath, in_features: a.inFeatures, out_features: a.outFeatures,
                                          shapes: a.parameters.map(\.shape), parameters: a.parameterCount, factors: factors))
                }
                trainable = loaded.parameterCount
            } else {
                let spec = AdapterSpec(kind: kind, targets: targets, rank: rank)
                for (l, p) in targets.targets(for: config) {
                    let (o, i) = config.shape(of: p)
                    let name = p.modulePath(layer: l)
                    switch kind {
                    case .lora, .dora:
                        // DoRA: LoRA's A and B plus one magnitude per output row.
                        let dora = kind == .dora
                        guard let n = Checked.add(Checked.mul(rank, i + o), dora ? o : 0) else { throw InputError("--r \(rank): the adapter's parameter count overflows a 64-bit count") }
                        modules.append(Module(name: name, in_features: i, out_features: o, shapes: [[rank, i], [o, rank]] + (dora ? [[o]] : []),
                                              parameters: n, factors: nil))
                    case .ndlinear:
                        let (a, b) = balancedFactors(i), (c, d) = balancedFactors(o)
                        modules.append(Module(name: name, in_features: i, out_features: o, shapes: [[c, a], [d, b]], parameters: c * a + d * b, factors: [[a, b], [c, d]]))
                    }
                }
                guard let n = TrainPlan.trainableParameters(spec: spec, model: config) else {
                    throw InputError("--r \(rank): the adapter's parameter count overflows a 64-bit count")
                }
                trainable = n
            }
            let total = config.parameterCount
            // The estimates a training run checks before it allocates (TrainPlan.checkMemory),
            // with checked arithmetic: a size that overflows is named, never trapped on.
            guard let weightBytes = config.weightBytes(dtype: config.dtype ?? .bf16),
                  let adapterBytes = Checked.mul(trainable, TrainPlan.bytesPerTrainableParameter) else {
                throw InputError("\(model): the parameter counts overflow a 64-bit count of bytes")
            }
            guard let acts = config.activationBytes(batch: batchSize, seqLen: seq, checkpointing: false),
                  let actsCheckpointing = config.activationBytes(batch: batchSize, seqLen: seq, checkpointing: true) else {
                throw InputError("--seq \(seq) × --batch-size \(batchSize): the activation estimate overflows a 64-bit count of bytes")
            }
            let memory: [String: Int] = [
                "base_weights": weightBytes,
                "adapter_params_grads_adam": adapterBytes,
                "activations": acts,
                "activations_checkpointing": actsCheckpointing,
            ]
            let report = Report(
                architecture: config.architecture, family: config.family.rawValue, layers: config.numLayers,
                hidden_size: config.hiddenSize, intermediate_size: config.intermediateSize, heads: config.numHeads,
                kv_heads: config.numKVHeads, head_dim: config.headDim, vocab_size: config.vocabSize,
                tie_word_embeddings: config.tieWordEmbeddings, dtype: config.dtype?.torchName, total_parameters: total,
                adapter_type: kindName, trainable_parameters: trainable, modules: modules, memory_bytes: memory)
            if json { try printJSON(report); return }
            func fmt(_ x: Int) -> String {
                let f = NumberFormatter(); f.numberStyle = .decimal; return f.string(from: NSNumber(value: x)) ?? "\(x)"
            }
            print("\(config.architecture) (\(config.family.rawValue)): \(config.numLayers) layers, hidden \(config.hiddenSize), MLP \(config.intermediateSize), heads \(config.numHeads)/\(config.numKVHeads) kv, head_dim \(config.headDim), vocab \(config.vocabSize)\(config.tieWordEmbeddings ? ", tied embeddings" : "")")
            print("total parameters: \(fmt(total))")
            print("adapter: \(kindName), \(modules.count) modules, trainable parameters: \(fmt(trainable)) (\(String(format: "%.4f", 100 * Double(trainable) / Double(total)))%)")
            var seen = Set<String>()
            for m in modules {
                let proj = String(m.name.split(separator: ".").last!)
                if seen.insert(proj + "\(m.shapes)").inserted {
                    let f = m.factors.map { " factors \($0[0][0])×\($0[0][1]) → \($0[1][0])×\($0[1][1])" } ?? ""
                    print("  \(proj): [\(m.out_features), \(m.in_features)] adapter \(m.shapes)\(f), \(m.parameters) params")
                }
            }
            let gb = { (b: Int) in String(format: "%.2f GB", Double(b) / 1e9) }
            print("memory (seq \(seq), batch \(batchSize)): weights \(gb(memory["base_weights"]!)), adapter+grads+AdamW \(gb(memory["adapter_params_grads_adam"]!)), activations \(gb(memory["activations"]!)) (\(gb(memory["activations_checkpointing"]!)) with --checkpointing)")
        }
    }
}
