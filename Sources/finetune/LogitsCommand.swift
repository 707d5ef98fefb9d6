import ArgumentParser
import Foundation
import LLMCore

struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Compute logits (and the loss when labels are given) for token ids in a safetensors file.",
        discussion: """
        IN holds input_ids I64 [B,T] and optionally attention_mask I64 [B,T] and labels I64 [B,T] \
        (unshifted, -100 ignored). OUT gets logits F32 [B,T,V] and, with labels, loss F32 [1]: the \
        mean over target tokens after the causal shift, as transformers computes it.
        """)

    @OptionGroup var model: ModelOptions
    @OptionGroup var adapter: AdapterOptions
    @Option(help: "Input safetensors with input_ids (I64 [B,T]).") var input: String
    @Option(help: "Output safetensors for logits F32 [B,T,V] (+ loss).") var output: String
    @Flag(help: "Also print a JSON summary on stdout.") var json = false

    func run() throws {
        try reportingErrors {
            let weights = try model.load()
            let file = try SafetensorsFile(path: input)
            let ids = try file.tensor("input_ids")
            guard ids.shape.count == 2 else { throw InputError("\(input): input_ids must be [B,T], found \(ids.shape)") }
            let (B, T) = (ids.shape[0], ids.shape[1])
            func optional(_ name: String) throws -> [Int]? {
                guard let t = file[name] else { return nil }
                guard t.shape == ids.shape else { throw InputError("\(input): \(name) has shape \(t.shape), expected \(ids.shape) like input_ids") }
                return t.ints()
            }
            let mask = try optional("attention_mask"), labels = try optional("labels")
            let adapters = try adapter.load(config: weights.config)
            let m = TransformerModel(weights: weights, adapters: adapters)
            let inputBatch = ModelInput(batch: B, seqLen: T, tokens: ids.ints(), attentionMask: mask)
            let acts = Activations(config: weights.config, batch: B, seqLen: T)
            try m.forward(inputBatch, acts: acts, training: false)
            let logits = acts.logits.array
            try m.checkFiniteLogits([logits])  // NaN logits name the tensor that caused them
            var entries = [SafetensorsEntry(name: "logits", shape: [B, T, weights.config.vocabSize], floats: logits)]
            var loss: Double?
            if let labels {
                let targets = shiftedTargets(labels: labels.map { Int32(clamping: $0) }, batch: B, seqLen: T)
                let (sum, count) = m.loss(acts: acts, targets: targets)
                loss = count > 0 ? sum / Double(count) : .nan
                entries.append(SafetensorsEntry(name: "loss", shape: [1], floats: [Float(loss!)]))
            }
            try SafetensorsWriter.write(entries, metadata: ["format": "pt"], to: URL(fileURLWithPath: output))
            note("wrote logits [\(B), \(T), \(weights.config.vocabSize)]\(loss.map { String(format: ", loss %.6f", $0) } ?? "") to \(output)")
            if json {
                struct Out: Encodable { let output: String; let shape: [Int]; let loss: Double? }
                try printJSON(Out(output: output, shape: [B, T, weights.config.vocabSize], loss: loss))
            }
        }
    }
}
