import Adapters
import ArgumentParser
import Foundation
import LLMCore

struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge an adapter into its base model and write a Hugging Face model directory.",
        discussion: """
        Each adapted weight is merged in f32 (W + ΔW) and rounded once to --dtype (default: the base's \
        stored dtype). config.json keeps every key but the dtype; tokenizer and generation files are \
        copied; weights above --max-shard-size are split into shards with model.safetensors.index.json. \
        Prints, per merged tensor, the largest change and (bf16/f16) the largest rounding error.
        """)

    @Option(help: "The base model directory, or a .gguf file (then --output is a .gguf file: a GGUF copy of the base with the adapter merged).") var model: String
    @Option(help: "The adapter to merge (PEFT LoRA, PEFT LoKr or NdLinear-LoRA reference).") var adapter: String
    @Option(help: "NdLinear α when the adapter files carry none (the reference's checkpoints; default 1.0).") var adapterAlpha: Float?
    @Option(help: "Output directory.") var output: String
    @Option(help: "bf16, f16 or f32 (default: the base's stored dtype); for a GGUF base also q8_0, q4_0, q4_1 (default: each tensor's own type if f32/f16/bf16, else f16).") var dtype: String?
    @Option(help: "Largest weight file before sharding, as transformers' max_shard_size: bytes or 500MB, 5GB, 2GiB ...")
    var maxShardSize: String = "5GB"
    @Option(help: "Threads for the merge GEMMs.") var threads: Int?
    @Flag(help: "Print a JSON summary on stdout.") var json = false

    func run() throws {
        try reportingErrors {
            if let t = threads, t > 0 { BLAS.setThreads(t) }
            if model.lowercased().hasSuffix(".gguf") { return try mergeIntoGGUF() }
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: model, isDirectory: &isDir), isDir.boolValue else {
                throw InputError("--model \(model): merge needs a model directory with weights (config.json and safetensors)")
            }
            let outDType = try dtype.map { try parseDType($0, flag: "--dtype") }
            guard let shard = AdapterMerge.parseSize(maxShardSize) else {
                throw InputError("--max-shard-size '\(maxShardSize)': expected a byte count or a size like 500MB, 5GB, 2GiB")
            }
            let modelURL = URL(fileURLWithPath: model)
            let weights = try ModelWeights.load(directory: modelURL)
            let set = try AdapterIO.load(URL(fileURLWithPath: adapter), config: weights.config, ndlinearAlpha: adapterAlpha)
            let report = try AdapterMerge.writeModel(weights, adapters: set, modelDirectory: modelURL, to: URL(fileURLWithPath: output),
                                                     dtype: outDType, maxShardSize: shard)
            let rounding = report.dtype != DType.f32.torchName
            for t in report.merged {
                note("merged \(t.name): max |ΔW| " + String(format: "%.6g", t.maxChange)
                     + (rounding ? ", max \(report.dtype) rounding error " + String(format: "%.3g", t.maxRoundingError) : ""))
            }
            note("wrote \(report.merged.count) merged tensors (\(set.kind?.rawValue ?? "?") adapter) as \(report.dtype) to \(output): "
                 + (report.sharded ? "\(report.files.count) shards + model.safetensors.index.json" : "model.safetensors")
                 + String(format: "; max |ΔW| %.6g", report.maxChange)
                 + (rounding ? String(format: ", max rounding error %.3g vs the f32 merge", report.maxRoundingError) : ""))
            if json { try printJSON(report) }
        }
    }

    /// A GGUF base: a GGUF copy with every metadata key and unadapted tensor copied as is.
    func mergeIntoGGUF() throws {
        let outDType = try dtype.map { try parseDType($0, flag: "--dtype", gguf: true) }
        guard output.lowercased().hasSuffix(".gguf") else { throw InputError("--output \(output): with a .gguf base the output is a .gguf file") }
        let base = try GGUFFile(path: model)
        let weights = try ModelWeights.load(gguf: model)
        let set = try AdapterIO.load(URL(fileURLWithPath: adapter), config: weights.config, ndlinearAlpha: adapterAlpha)
        let report = try GGUFExport.writeMergedModel(weights, adapters: set, base: base, dtype: outDType, to: URL(fileURLWithPath: output))
        note("wrote \(report.merged.count) merged tensors (\(set.kind?.rawValue ?? "?") adapter) as \(report.dtype) into a GGUF copy of the base: \(output)"
             + String(format: "; max |ΔW| %.6g, max rounding error %.3g vs the f32 merge", report.maxChange, report.maxRoundingError))
        if json { try printJSON(report) }
    }
}
