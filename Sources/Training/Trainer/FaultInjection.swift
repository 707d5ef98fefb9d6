import Foundation
import LLMCore
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Injected faults

/// Fault injection for the crash-safety tests: `FINETUNE_FAULT=sigkill-at-step:N` (after the
/// step's backward), `sigkill-in-checkpoint:N` (halfway through writing checkpoint N) or
/// `enospc-in-checkpoint:N` (checkpoint N's optimizer file fails half-way with "no space left
/// on device", as on a full disk), optionally `@R` to fire on rank R only (default: every rank).
struct InjectedFault {
    enum Kind: String {
        case atStep = "sigkill-at-step", inCheckpoint = "sigkill-in-checkpoint", enospcInCheckpoint = "enospc-in-checkpoint"
    }
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

    func matches(_ kind: Kind, step: Int, rank: Int) -> Bool {
        self.kind == kind.rawValue && self.step == step && (self.rank == nil || self.rank == rank)
    }

    /// Kills this process with SIGKILL when the fault is `kind` at `step` on `rank`.
    func fire(_ kind: Kind, step: Int, rank: Int) {
        if matches(kind, step: step, rank: rank) { kill(getpid(), SIGKILL) }
    }

    /// Writes `data` to `url` atomically (`AtomicFile`), except under `enospc-in-checkpoint` at
    /// `step`: half of the bytes reach the temporary file, then the write fails with the error
    /// a full disk gives (`FileHandle` reports ENOSPC as `CocoaError.fileWriteOutOfSpace`, no path).
    static func write(_ data: Data, to url: URL, fault: InjectedFault?, step: Int, rank: Int) throws {
        guard let fault, fault.matches(.enospcInCheckpoint, step: step, rank: rank) else { return try AtomicFile.write(data, to: url) }
        try AtomicFile.stream(to: url) { handle in
            try handle.write(contentsOf: data.prefix(data.count / 2))
            throw CocoaError(.fileWriteOutOfSpace, userInfo: [NSUnderlyingErrorKey: NSError(domain: NSPOSIXErrorDomain, code: Int(ENOSPC))])
        }
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
