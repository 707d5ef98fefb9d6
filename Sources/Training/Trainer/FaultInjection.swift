import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Injected faults

/// Fault injection for the crash-safety tests: `FINETUNE_FAULT=sigkill-at-step:N` (after the
/// step's backward) or `sigkill-in-checkpoint:N` (halfway through writing checkpoint N),
/// optionally `@R` to fire on rank R only (default: every rank).
struct InjectedFault {
    enum Kind: String { case atStep = "sigkill-at-step", inCheckpoint = "sigkill-in-checkpoint" }
    let kind: String
    let step: Int
    let rank: Int?

    /// The fault `FINETUNE_FAULT` asks for, if any.
    static func fromEnvironment(_ env: [String: String] = ProcessInfo.processInfo.environment) -> InjectedFault? {
        guard var f = env["FINETUNE_FAULT"] else { return nil }
        var rank: Int?
        if let at = f.lastIndex(of: "@") { rank = Int(f[f.index(after: at)...]); f = String(f[..<at]) }
        guard let colon = f.lastIndex(of: ":"), let n = Int(f[f.index(after: colon)...]) else { return nil }
        return InjectedFault(kind: String(f[..<colon]), step: n, rank: rank)
    }

    /// Kills this process with SIGKILL when the fault is `kind` at `step` on `rank`.
    func fire(_ kind: Kind, step: Int, rank: Int) {
        guard self.kind == kind.rawValue, self.step == step, self.rank == nil || self.rank == rank else { return }
        kill(getpid(), SIGKILL)
    }
}

// MARK: - Stop requests

/// SIGINT/SIGTERM set a flag; the trainer finishes the current step, checkpoints and exits.
enum StopSignal {
    private static let flag: UnsafeMutablePointer<Int32> = {
        let p = UnsafeMutablePointer<Int32>.allocate(capacity: 1)
        p.pointee = 0
        return p
    }()

    static var requested: Bool { flag.pointee != 0 }

    /// Installs the handlers (until `uninstall`).
    static func install() {
        _ = flag   // initialised here, never lazily inside a handler
        // A parent that spawned us from a thread with SIGINT/SIGTERM blocked (Foundation's
        // Process from a GCD thread does) passes that mask on; unblock so the handlers run.
        var unblock = sigset_t()
        sigemptyset(&unblock); sigaddset(&unblock, SIGINT); sigaddset(&unblock, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        signal(SIGINT) { _ in StopSignal.flag.pointee = 1 }
        signal(SIGTERM) { _ in StopSignal.flag.pointee = 1 }
    }

    static func uninstall() { signal(SIGINT, SIG_DFL); signal(SIGTERM, SIG_DFL) }
}
