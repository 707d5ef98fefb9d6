import Foundation

/// Failures of a training or evaluation run, each with what went wrong and where.
public enum TrainingError: Error, CustomStringConvertible {
    case invalidOption(String)
    case diverged(step: Int, what: String)
    case checkpoint(String)
    case data(String)
    case interrupted(step: Int, checkpoint: String)

    public var description: String {
        switch self {
        case let .invalidOption(s): return s
        case let .diverged(step, what): return "training diverged at step \(step): \(what)"
        case let .checkpoint(s): return "checkpoint: \(s)"
        case let .data(s): return s
        case let .interrupted(step, ckpt): return "interrupted after step \(step); checkpoint written to \(ckpt) (continue with --resume)"
        }
    }
}
