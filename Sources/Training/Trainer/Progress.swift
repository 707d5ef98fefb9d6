import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Progress of training and evaluation on stderr: one live line redrawn in place on a
/// terminal; otherwise a logged line whenever one is due (every `--log-every` steps; every 10%
/// of the items or 30 s). Notes (validation losses, early stopping) end the live line first.
public final class ProgressPrinter {
    let log: (String) -> Void
    let tty: Bool
    /// Ranks other than 0 print nothing.
    let quiet: Bool
    var live = false
    var lastPrinted = Date.distantPast
    var lastDone = 0

    public init(log: @escaping (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) },
                quiet: Bool = false, tty: Bool = isatty(STDERR_FILENO) != 0) {
        self.log = log; self.quiet = quiet; self.tty = tty
    }

    /// Shows `line`: redrawn in place on a terminal, else logged when `due`.
    public func show(_ line: String, due: Bool) {
        guard !quiet else { return }
        if tty {
            FileHandle.standardError.write(Data(("\r\u{1B}[2K" + line).utf8))
            live = true
        } else if due {
            log(line)
            lastPrinted = Date()
        }
    }

    public func note(_ s: String) {
        guard !quiet else { return }
        finish()
        log(s)
    }

    /// Ends the live line.
    public func finish() {
        if live { FileHandle.standardError.write(Data("\n".utf8)); live = false }
    }

    static func duration(_ s: Double) -> String {
        guard s.isFinite else { return "?" }
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%dh%02dm", t / 3600, t % 3600 / 60) : String(format: "%dm%02ds", t / 60, t % 60)
    }
}

// MARK: - The two kinds of line

extension ProgressPrinter {
    /// A training step; without a terminal every `every` steps, and the first and the last.
    func update(_ m: StepMetrics, total: Int, every: Int, rate: Double, stepsDone: Int) {
        let remaining = Double(total - m.step) * m.elapsed_s / Double(max(stepsDone, 1))
        let line = String(format: "step %d/%d  loss %.4f  lr %.2e  |g| %.3f  %.0f tok/s  ETA %@  RSS %.0f MB",
                          m.step, total, m.loss, m.lr, m.grad_norm, rate, Self.duration(remaining), peakRSSMegabytes())
        show(line, due: m.step % every == 0 || m.step == total || m.step == 1)
    }

    /// Evaluation items; without a terminal every 10% of the items or 30 s, and the last.
    public func update(_ p: EvalProgress) {
        let rate = Double(p.generatedTokens) / max(p.elapsedSeconds, 1e-9)
        let eta = p.done > 0 ? p.elapsedSeconds * Double(p.total - p.done) / Double(p.done) : .nan
        let line = String(format: "%d/%d items, %d tokens, %.1f tokens/s, ETA %@", p.done, p.total, p.generatedTokens, rate,
                          eta.isFinite ? String(format: "%.0f s", eta) : "?")
        let step = max(1, p.total / 10)
        show(line, due: p.done / step > lastDone / step || Date().timeIntervalSince(lastPrinted) > 30 || p.done == p.total)
        lastDone = p.done
    }
}
