import Foundation

/// Failures of a training or evaluation run, each with what went wrong and where.
public enum TrainingError: Error, CustomStringConvertible {
    /// A flag or configuration value that cannot work (bad input).
    case invalidOption(String)
    case diverged(step: Int, what: String)
    /// A checkpoint that cannot be resumed from (bad input: missing, torn or of another run).
    case checkpoint(String)
    /// Data that cannot be trained or scored on (bad input).
    case data(String)
    case interrupted(step: Int, checkpoint: String)
    /// The system failed us (a rename, a write): not the user's input.
    case system(String)

    public var description: String {
        switch self {
        case let .invalidOption(s): return s
        case let .diverged(step, what): return "training diverged at step \(step): \(what)"
        case let .checkpoint(s): return "checkpoint: \(s)"
        case let .data(s): return s
        case let .interrupted(step, ckpt): return "interrupted after step \(step); checkpoint written to \(ckpt) (continue with --resume)"
        case let .system(s): return s
        }
    }
}

/// The exit status of `finetune` for an error (CLI.md "Exit status"): 130 for an interrupt
/// (checkpoint written), 1 for a run that failed (diverged) or a system failure, 2 for bad
/// input or usage — every other error: flags, configuration, data, model and adapter files.
public func exitStatus(for error: Error) -> Int32 {
    guard let e = error as? TrainingError else { return 2 }
    switch e {
    case .interrupted: return 130
    case .diverged, .system: return 1
    case .invalidOption, .checkpoint, .data: return 2
    }
}
