import Adapters
import Foundation
import LLMCore

// MARK: - Rows of metrics.jsonl

/// One optimizer step's numbers (a metrics.jsonl row).
public struct StepMetrics: Codable, Sendable {
    public var step: Int
    public var loss: Double
    public var lr: Double
    public var grad_norm: Double
    /// Target tokens of the step (the loss's denominator) and all real tokens processed.
    public var target_tokens: Int
    public var tokens: Int
    public var tokens_per_s: Double
    public var elapsed_s: Double
    public var epoch: Double
}

public struct ValidationMetrics: Codable, Sendable {
    public var step: Int
    public var val_loss: Double
    public var val_ppl: Double
    public var val_tokens: Int
    /// Before step 1: the base model's loss beside the initial adapter's.
    public var base_val_loss: Double?

    init(step: Int, loss: Double, tokens: Int) {
        self.step = step; val_loss = loss; val_ppl = exp(loss); val_tokens = tokens
    }
}

/// The validation loss before the first step, with the initial adapter and without it.
public struct InitialValidation: Codable, Sendable, Equatable {
    public var adapter_val_loss: Double
    public var base_val_loss: Double

    /// Far above the base: more than 1.5× and more than 0.5 nats higher.
    public var isFarAboveBase: Bool { adapter_val_loss > 1.5 * base_val_loss && adapter_val_loss > base_val_loss + 0.5 }

    /// The warning `train` prints when the initial adapter wrecks the base model, naming what to change.
    public func warning(adapterType: AdapterKind) -> String? {
        guard isFarAboveBase else { return nil }
        let fix = adapterType == .ndlinear
            ? "--ndlinear-init zero starts NdLinear-LoRA as the base model (the reference initialisation randomises both factors)"
            : "check --adapter-init and --alpha"
        return String(format: "the initial adapter raises the validation loss from %.4f (base model) to %.4f before any step; ", base_val_loss, adapter_val_loss) + fix
    }
}

/// What a finished run reports.
public struct TrainSummary: Sendable {
    public var steps: Int
    public var finalLoss: Double?
    public var valLossBefore: Double?
    public var valLossAfter: Double?
    public var bestValLoss: Double?
    public var bestStep: Int?
    public var wallSeconds: Double
    public var tokensPerSecond: Double
    public var adapterDirectory: URL
    public var stoppedEarly: Bool
}

/// Appends JSON rows to metrics.jsonl, flushed per row so a crash loses nothing written.
final class MetricsWriter {
    let handle: FileHandle
    let url: URL
    init(url: URL) throws {
        self.url = url
        if !FileManager.default.fileExists(atPath: url.path) { FileManager.default.createFile(atPath: url.path, contents: nil) }
        handle = try FileHandle(forWritingTo: url)
        try handle.seekToEnd()
    }
    deinit { try? handle.close() }
    func append<T: Encodable>(_ row: T) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        // Non-finite numbers (a validation loss of inf) are written as JSON strings, not refused.
        enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        do { try handle.write(contentsOf: try enc.encode(row) + Data("\n".utf8)) } catch {
            throw TrainingError.system("\(url.path): cannot append a row: \(ErrorText.reason(error, path: url.path))")
        }
    }
}

// MARK: - run.json

extension Trainer {
    /// `run.json`: the resolved configuration and what followed from it (steps, examples,
    /// parameters, ranks, the CPU and kernels).
    func writeRunJSON() throws {
        struct Run: Encodable {
            let config: TrainConfig
            let resolved: Resolved
            struct Resolved: Encodable {
                let total_steps: Int, warmup_steps: Int, train_examples: Int, validation_examples: Int
                let trainable_parameters: Int, adapter_modules: Int, threads: Int, base_dtype: String
                let ranks: Int, global_batch: Int
                /// Records --max-length cut, and records dropped with no trained token.
                let truncated_records: Int, dropped_records: Int
                /// The CPU, the ISA level and the GEMM library this run used.
                let cpu: CPUReport
                /// The validation loss before step 1, with the initial adapter and the base alone.
                let initial_validation: InitialValidation?
            }
        }
        let run = Run(config: config, resolved: .init(
            total_steps: totalSteps, warmup_steps: schedule.warmupSteps, train_examples: data.train.count,
            validation_examples: data.val.count, trainable_parameters: adapters.parameterCount, adapter_modules: adapters.adapters.count,
            threads: BLAS.threads, base_dtype: model.weights.storageDType.torchName, ranks: comm.size, global_batch: globalBatch,
            truncated_records: data.truncatedRecords, dropped_records: data.droppedRecords, cpu: CPU.report,
            initial_validation: initialValidation))
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        enc.keyEncodingStrategy = .convertToSnakeCase
        let url = outputDir.appendingPathComponent("run.json")
        let data: Data
        do { data = try enc.encode(run) } catch {
            // A value no flag check caught (e.g. a NaN): name the file and the field.
            throw TrainingError.invalidOption("\(url.path): \(ErrorText.reason(error))")
        }
        do { try AtomicFile.write(data, to: url) } catch {
            throw TrainingError.system("\(url.path): cannot write: \(ErrorText.reason(error, path: url.path))")
        }
    }
}
