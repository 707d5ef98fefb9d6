import Foundation
import LLMCore
import Tokenize

// MARK: - One data file, as training sees it

/// A data file read and tokenized exactly as `finetune train` trains on it: `loadExamples`,
/// the template (`prepareExamples`: rendering, masking, truncation to the max length, records
/// with no trained token dropped and counted), and, when `vocabSize` is given, every id checked
/// against the model's vocabulary. `finetune train` and `finetune prepare` both read their data
/// through this one function.
public struct PreparedFile: Sendable {
    public var loaded: LoadedData
    public var prepared: PreparedData

    /// The tokenized records, in file order.
    public var examples: [TokenizedExample] { prepared.examples }

    /// Reads and tokenizes `path`; warnings (skipped, truncated, dropped records) go to `warn`.
    /// - Throws: `DataError` naming the file and record; `vocabSize` violations as `badField`.
    public init(path: String, template: PromptTemplate, tokenizer: (any Tokenizer)?, chat: PromptTemplate.Chat?,
                options: TokenizeOptions, strict: Bool, vocabSize: Int? = nil, warn: (String) -> Void) throws {
        loaded = try loadExamples(from: URL(fileURLWithPath: path), strict: strict)
        loaded.warnings.forEach(warn)
        prepared = try prepareExamples(loaded.examples, template: template, tokenizer: tokenizer, options: options, strict: strict, chat: chat)
        prepared.warnings.forEach(warn)
        // Ids index embedding rows and logit columns: every one (pre-tokenized records' labels
        // included) is checked against the model before the first step.
        if let vocabSize {
            for (example, source) in zip(prepared.examples, prepared.sourceIndex) {
                try checkTokenIds(example, vocabSize: vocabSize, at: loaded.examples[source].location)
            }
        }
    }

    /// One line of counts: records, tokens, trained tokens, truncated, dropped (and skipped).
    public var summary: String {
        "\(loaded.file): \(prepared.examples.count) records, \(prepared.tokenCount) tokens, \(prepared.trainedTokenCount) trained tokens, "
            + "\(prepared.truncated) truncated, \(prepared.droppedNoTarget) dropped (no trained token)"
            + (loaded.skipped + prepared.skipped > 0 ? ", \(loaded.skipped + prepared.skipped) skipped" : "")
    }

    /// The records as the pre-tokenized JSONL `train` reads: one `{"input_ids": [...],
    /// "labels": [...]}` per line, written atomically to `url`.
    public func writeJSONL(to url: URL) throws {
        var out = ""
        for e in prepared.examples {
            out += "{\"input_ids\": [" + e.inputIds.map(String.init).joined(separator: ", ") + "], \"labels\": ["
                + e.labels.map(String.init).joined(separator: ", ") + "]}\n"
        }
        do { try AtomicFile.write(Data(out.utf8), to: url) } catch {
            throw TrainingError.system("\(url.path): cannot write: \(ErrorText.reason(error, path: url.path))")
        }
    }
}
