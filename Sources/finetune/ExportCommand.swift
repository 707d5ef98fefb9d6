import Adapters
import ArgumentParser
import Foundation
import LLMCore

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Convert an adapter between PEFT LoRA, PEFT LoKr and the NdLinear-LoRA reference layout.",
        discussion: """
        peft-lora takes a LoRA adapter; peft-lokr and ndlinear-reference take an NdLinear-LoRA adapter \
        (written as LoKr: lokr_w1 = W0, lokr_w2 = W1, alpha = r·α). The adapter's module shapes are \
        checked against --model (a model directory or its config.json); without --model they are \
        inferred from the adapter's tensors where that is possible.
        """)

    @Option(help: "The adapter to convert (PEFT LoRA, PEFT LoKr or NdLinear-LoRA reference directory, or .safetensors).")
    var adapter: String
    @Option(help: "peft-lora, peft-lokr, ndlinear-reference, or gguf-lora (a llama.cpp LoRA file; LoRA adapters only).") var format: String
    @Option(help: "Output directory; for gguf-lora the file itself when it ends in .gguf, else OUTPUT/adapter.gguf.") var output: String
    @Option(help: "The base model directory, its config.json, or its .gguf (module shapes, base_model_name_or_path).") var model: String?
    @Option(help: "NdLinear α when the adapter files carry none (the reference's checkpoints; default 1.0).") var adapterAlpha: Float?
    @Flag(help: "Print a JSON summary on stdout.") var json = false

    func run() throws {
        try reportingErrors {
            if format == "gguf-lora" { return try exportGGUFLoRA() }
            guard let fmt = AdapterFormat(rawValue: format) else {
                throw InputError("--format '\(format)': expected \(AdapterFormat.allCases.map(\.rawValue).joined(separator: ", ")) or gguf-lora")
            }
            let adapterURL = URL(fileURLWithPath: adapter)
            let outURL = URL(fileURLWithPath: output)
            if adapterURL.resolvingSymlinksInPath().standardizedFileURL.path == outURL.resolvingSymlinksInPath().standardizedFileURL.path {
                throw InputError("--output \(output) is the --adapter directory; write the converted adapter elsewhere")
            }
            let config = try model.map { try ModelConfig.load(modelPath: $0) }
            let inferred = config == nil
            let shapes = try config ?? AdapterIO.inferModelConfig(adapterAt: adapterURL)
            let set = try AdapterIO.load(adapterURL, config: shapes, ndlinearAlpha: adapterAlpha)
            if inferred {
                // The inferred model ends at the last adapted layer; the real one may go on, so
                // name the adapted layers explicitly rather than claim "every layer".
                set.spec?.targets.layers = Set(set.adapters.compactMap { Projection.parse($0.weightName)?.layer })
            }
            var base = set.baseModelName
            if let model {
                var isDir: ObjCBool = false
                _ = FileManager.default.fileExists(atPath: model, isDirectory: &isDir)
                base = isDir.boolValue ? model : URL(fileURLWithPath: model).deletingLastPathComponent().path
            }
            var extra: [String: Any] = ["finetune_adapter_type": set.kind?.rawValue ?? "unknown"]
            if fmt == .ndlinearReference { extra = [:] }
            try AdapterIO.save(set, format: fmt, to: outURL, baseModel: base, extra: extra, config: config)
            note("wrote \(fmt.rawValue) adapter (\(set.adapters.count) modules, \(set.parameterCount) parameters) to \(output)"
                 + (inferred ? " (module shapes inferred from the adapter; pass --model to check them against the base)" : ""))
            if json {
                struct Out: Encodable {
                    let output: String; let format: String; let adapter_type: String; let modules: Int; let parameters: Int
                    let base_model: String?; let shapes_inferred: Bool
                }
                try printJSON(Out(output: output, format: fmt.rawValue, adapter_type: set.kind?.rawValue ?? "unknown",
                                  modules: set.adapters.count, parameters: set.parameterCount, base_model: base, shapes_inferred: inferred))
            }
        }
    }

    /// `--format gguf-lora`: a llama.cpp LoRA adapter file for the GGUF base.
    func exportGGUFLoRA() throws {
        guard let model else { throw InputError("--format gguf-lora needs --model (the base .gguf, model directory or config.json)") }
        let config = try ModelConfig.load(modelPath: model)
        let set = try AdapterIO.load(URL(fileURLWithPath: adapter), config: config, ndlinearAlpha: adapterAlpha)
        let out = output.lowercased().hasSuffix(".gguf") ? URL(fileURLWithPath: output) : URL(fileURLWithPath: output).appendingPathComponent("adapter.gguf")
        let r = try GGUFExport.writeLoRA(set, config: config, baseName: URL(fileURLWithPath: model).lastPathComponent, to: out)
        note("wrote llama.cpp LoRA adapter (\(r.modules) modules, alpha \(r.alpha)) to \(out.path); run it with llama-cli -m \(model) --lora \(out.path)")
        if json {
            struct Out: Encodable { let output: String; let format: String; let modules: Int; let alpha: Float }
            try printJSON(Out(output: out.path, format: "gguf-lora", modules: r.modules, alpha: r.alpha))
        }
    }
}
