import ArgumentParser
import Foundation
import LLMCore
import Tokenize
import Training

struct PrepareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prepare",
        abstract: "Write what `train` would train on: one {\"input_ids\", \"labels\"} line per record.",
        discussion: """
        Reads --data (and --val-data) exactly as `finetune train` does — the same loader, template, \
        masking, --max-length truncation (the beginning kept) and dropping of records left with no \
        trained token — and writes the token ids and labels (-100: not trained) as the pre-tokenized \
        JSONL that `train --data` reads, so training on OUT.jsonl trains on the same tokens. Prints \
        records, tokens, trained tokens, truncated and dropped records per file. The tokenizer (and the \
        chat template) come from --model, or from --tokenizer (a tokenizer directory or file; no weights).
        """)

    @Option(help: "Data: JSON array or JSONL (messages, prompt/completion, instruction/input/output/answer, question/answer, text, CSQA, input_ids/labels).")
    var data: String
    @Option(help: "Validation data, written to --val-output.") var valData: String?
    @Option(help: "A model directory or .gguf whose tokenizer and chat template are used.") var model: String?
    @Option(help: "A tokenizer directory or file (tokenizer.json, tokenizer.model, ...; no weights needed).") var tokenizer: String?
    @OptionGroup var templateOptions: TemplateOptions
    @OptionGroup var chatTemplateOptions: ChatTemplateOptions
    @Flag(help: "Train on the prompt tokens too (as train --no-mask-prompt).") var noMaskPrompt = false
    @Option(help: "Output JSONL for --data.") var output: String
    @Option(help: "Output JSONL for --val-data (default: --output with .val.jsonl).") var valOutput: String?
    @Flag(help: "Print the counts as one JSON object on stdout.") var json = false

    func validate() throws {
        guard (model == nil) != (tokenizer == nil) else { throw ValidationError("give exactly one of --model or --tokenizer") }
        guard templateOptions.maxLength >= 1 else { throw ValidationError("--max-length must be ≥ 1, got \(templateOptions.maxLength)") }
        if valOutput != nil && valData == nil { throw ValidationError("--val-output needs --val-data") }
    }

    /// Where --val-data's records go.
    var valPath: String? {
        guard valData != nil else { return nil }
        if let valOutput { return valOutput }
        let base = output.hasSuffix(".jsonl") ? String(output.dropLast(6)) : output
        return base + ".val.jsonl"
    }

    func run() throws {
        try reportingErrors {
            let source = model ?? tokenizer!
            let tok: (any Tokenizer)?
            var vocabSize: Int?
            if let model {
                tok = try ModelPath(model).tokenizer()
                vocabSize = try ModelConfig.load(modelPath: model).vocabSize
            } else {
                tok = try loadTokenizer(from: URL(fileURLWithPath: source))
            }
            let chat = try chatTemplateOptions.chat(template: templateOptions.template, source: source, tokenizer: tok)
            let options = TokenizeOptions(maskPrompt: !noMaskPrompt, maxLength: templateOptions.maxLength)
            struct Counts: Encodable {
                let file: String, output: String, records: Int, tokens: Int, trained_tokens: Int, truncated: Int, dropped: Int, skipped: Int
            }
            var counts: [Counts] = []
            for (input, out) in [(data, output)] + (valData.map { [($0, valPath!)] } ?? []) {
                let file = try PreparedFile(path: input, template: templateOptions.template, tokenizer: tok, chat: chat, options: options,
                                            strict: templateOptions.strict, vocabSize: vocabSize) { note("warning: \($0)") }
                guard !file.examples.isEmpty else { throw InputError("\(input): no usable records (all skipped or dropped)") }
                try file.writeJSONL(to: URL(fileURLWithPath: out))
                note(file.summary + " → \(out)")
                let p = file.prepared
                counts.append(Counts(file: input, output: out, records: p.examples.count, tokens: p.tokenCount, trained_tokens: p.trainedTokenCount,
                                     truncated: p.truncated, dropped: p.droppedNoTarget, skipped: file.loaded.skipped + p.skipped))
            }
            if json { try printJSON(counts.count == 1 ? ["data": counts[0]] : ["data": counts[0], "val_data": counts[1]]) }
        }
    }
}
