import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Communicator

/// What data-parallel training needs from a distributed runtime (issue 11): who we are, a
/// deterministic sum over all ranks, a broadcast, and a way to stop the whole job.
///
/// Every collective must be called by every rank in the same order; the trainer guarantees
/// that by taking each decision (stop, validate, checkpoint) from values that are identical on
/// all ranks (the reduced buffer, the step number, the config).
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Processes of this job on this host (for the default thread count), when known.
    var localSize: Int { get }
    /// Element-wise sum over all ranks, in place; afterwards every rank holds the same bits.
    /// The order of the additions is fixed by the ranks (never by timing), so a run is
    /// reproducible for a given number of ranks.
    func allReduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int)
    /// Copies `root`'s buffer to every rank.
    func broadcast(_ buffer: UnsafeMutablePointer<Double>, count: Int, root: Int)
    func barrier()
    /// Ends every rank of the job with `code` (MPI_Abort); for a failure only one rank sees.
    func abort(code: Int32) -> Never
    /// Leaves the job cleanly (MPI_Finalize); call once, on every rank, before exiting.
    func finalize()
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }
    public var isDistributed: Bool { size > 1 }
}

/// The default: one process, no MPI anywhere (collectives are no-ops).
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var localSize: Int { 1 }
    public func allReduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) {}
    public func broadcast(_ buffer: UnsafeMutablePointer<Double>, count: Int, root: Int) {}
    public func barrier() {}
    public func abort(code: Int32) -> Never { exit(code) }
    public func finalize() {}
}

// MARK: - Errors

public enum DistributedError: Error, CustomStringConvertible {
    /// A launcher started us as one of `size` processes but MPI cannot be used.
    case cannotJoin(launcher: String, size: Int?, reason: String)
    /// `rank` failed during a phase every rank agreed on; its own message is printed by that
    /// rank, this one exits quietly with the same status.
    case peerFailed(rank: Int, status: Int32)
    /// This rank is the one that reports a failure all ranks agreed on.
    case failedHere(rank: Int, underlying: Error, status: Int32)

    public var description: String {
        switch self {
        case let .cannotJoin(launcher, size, reason):
            return "launched by \(launcher)\(size.map { " as one of \($0) processes" } ?? "") but cannot join the MPI job: \(reason). "
                + "Install Open MPI (apt-get install openmpi-bin libopenmpi-dev), set FINETUNE_MPI_LIBRARY to its libmpi.so, "
                + "or run without the launcher; refusing to start \(size.map(String.init) ?? "several") independent trainings"
        case let .peerFailed(rank, _): return "rank \(rank) failed"
        case let .failedHere(rank, e, _): return "rank \(rank): \(e)"
        }
    }
}

// MARK: - Joining a job

/// How the process was started, read from the environment the launchers set.
public struct Launcher: Sendable, Equatable {
    public var name: String
    /// Processes in the job when the launcher says (PMIx alone does not).
    public var size: Int?
    public var localSize: Int?
    /// This process's rank when the launcher says.
    public var rank: Int?

    /// Open MPI's mpirun (OMPI_COMM_WORLD_SIZE), MPICH/Hydra or Slurm PMI-1/2 (PMI_SIZE),
    /// PMIx (PMIX_RANK: Slurm `srun --mpi=pmix`, Open MPI 5's prterun); nil otherwise, and then
    /// MPI is never loaded. Plain Slurm tasks without PMI are not detected: use `srun --mpi=pmix`.
    public static func detect(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Launcher? {
        let local = env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? env["MPI_LOCALNRANKS"].flatMap(Int.init)
        let rank = (env["OMPI_COMM_WORLD_RANK"] ?? env["PMI_RANK"] ?? env["PMIX_RANK"]).flatMap(Int.init)
        if let s = env["OMPI_COMM_WORLD_SIZE"].flatMap(Int.init) {
            return Launcher(name: "mpirun (OMPI_COMM_WORLD_SIZE=\(s))", size: s, localSize: local, rank: rank)
        }
        if let s = env["PMI_SIZE"].flatMap(Int.init) { return Launcher(name: "a PMI launcher (PMI_SIZE=\(s))", size: s, localSize: local, rank: rank) }
        if env["PMIX_RANK"] != nil {
            let s = env["SLURM_STEP_NUM_TASKS"].flatMap(Int.init) ?? env["SLURM_NTASKS"].flatMap(Int.init)
            return Launcher(name: "a PMIx launcher (PMIX_RANK)", size: s, localSize: local, rank: rank)
        }
        return nil
    }
}

public enum Distributed {
    /// Joins the MPI job when a launcher started us, else returns `SingleProcess` without
    /// touching MPI. Under a launcher of more than one process, failing to join is an error
    /// (N unsynchronised trainings writing one output directory would be worse than none).
    public static func join(environment env: [String: String] = ProcessInfo.processInfo.environment) throws -> any Communicator {
        guard let launcher = detect(env) else { return SingleProcess() }
        do {
            let mpi = try OpenMPI.initialize(libraryOverride: env["FINETUNE_MPI_LIBRARY"], localSize: launcher.localSize)
            if let s = launcher.size, s != mpi.size {
                let reason = "the launcher says \(s) processes but MPI sees \(mpi.size) (not started by an Open MPI-compatible launcher? \(mpi.library) was loaded)"
                if mpi.size == 1 { mpi.finalize() }
                throw DistributedError.cannotJoin(launcher: launcher.name, size: launcher.size, reason: reason)
            }
            return mpi
        } catch let e as DistributedError {
            throw e
        } catch {
            if launcher.size == 1 {
                FileHandle.standardError.write(Data("warning: \(launcher.name) but MPI is unavailable (\(error)); running as one process\n".utf8))
                return SingleProcess()
            }
            throw DistributedError.cannotJoin(launcher: launcher.name, size: launcher.size, reason: "\(error)")
        }
    }

    static func detect(_ env: [String: String]) -> Launcher? { Launcher.detect(env) }

    /// The exit status `finetune` uses for an error (`exitStatus(for:)`, as the CLI's error
    /// reporting does), and the status a failed rank passed on.
    public static func status(for error: Error) -> Int32 {
        switch error {
        case let e as DistributedError:
            switch e {
            case .cannotJoin: return 2
            case let .peerFailed(_, s), let .failedHere(_, _, s): return s
            }
        default: return exitStatus(for: error)
        }
    }

    /// Runs `body` on every rank, then one collective: when it threw on any rank (or this
    /// rank's `fingerprint` differs from rank 0's), every rank throws — the lowest failing rank
    /// `failedHere` (it prints the one message), the others `peerFailed` (quiet). With one
    /// process the error passes through unchanged.
    public static func agree<T>(_ comm: any Communicator, fingerprint: UInt64? = nil, mismatch: (() -> Error)? = nil,
                                _ body: () throws -> T) throws -> T {
        var result: Result<T, Error>
        do { result = .success(try body()) } catch { result = .failure(error) }
        guard comm.isDistributed else { return try result.get() }
        // Slot r: [status of rank r (0 = fine), fingerprint high 32 bits, low 32 bits].
        let n = comm.size * 3
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: n)
        defer { buf.deallocate() }
        buf.initialize(repeating: 0, count: n)
        let me = comm.rank * 3
        if case let .failure(e) = result { buf[me] = Double(status(for: e)) }
        let fp = fingerprint ?? 0
        buf[me + 1] = Double(fp >> 32); buf[me + 2] = Double(fp & 0xFFFF_FFFF)
        comm.allReduceSum(buf, count: n)
        // Every rank judges every rank's fingerprint, so the status of a mismatch must not
        // depend on who judges it.
        let mismatchError = mismatch?() ?? TrainingError.data("rank \(comm.rank)'s inputs differ from rank 0's")
        let mismatchStatus = status(for: mismatchError)
        if case .success = result, fingerprint != nil, buf[me + 1] != buf[1] || buf[me + 2] != buf[2] {
            result = .failure(mismatchError)
            buf[me] = Double(mismatchStatus)
        }
        // Every rank sees the same statuses; fingerprint mismatches are judged locally, so
        // recompute who failed from what everyone can see.
        var failed: [(rank: Int, status: Int32)] = []
        for r in 0..<comm.size {
            let st = Int32(buf[r * 3])
            let differs = fingerprint != nil && (buf[r * 3 + 1] != buf[1] || buf[r * 3 + 2] != buf[2])
            if st != 0 { failed.append((r, st)) } else if differs { failed.append((r, mismatchStatus)) }
        }
        guard let first = failed.first else { return try result.get() }
        if first.rank == comm.rank, case let .failure(e) = result {
            throw DistributedError.failedHere(rank: comm.rank, underlying: e, status: first.status)
        }
        throw DistributedError.peerFailed(rank: first.rank, status: first.status)
    }

    /// Ends this process after `error` in a distributed run, so that the job prints one
    /// message naming the rank and every rank stops:
    /// - failures all ranks agreed on: the reporting rank prints, all leave via MPI_Finalize;
    /// - `collective` errors (every rank throws the same one at the same step, e.g. divergence
    ///   or an interrupt): rank 0 prints, all leave via MPI_Finalize;
    /// - anything else happened on this rank alone: print "rank R: …" and MPI_Abort the job.
    public static func exit(after error: Error, comm: any Communicator, collective: (Error) -> Bool) -> Never {
        let code = status(for: error)
        func say(_ s: String) { FileHandle.standardError.write(Data("error: \(s)\n".utf8)) }
        switch error {
        case DistributedError.peerFailed:
            break
        case let DistributedError.failedHere(rank, e, _):
            say("rank \(rank): \(e)")
        default:
            if collective(error) {
                if comm.isRoot { say("\(error)") }
            } else {
                say("rank \(comm.rank): \(error)")
                comm.abort(code: code)
            }
        }
        comm.finalize()
        Foundation.exit(code)
    }
}
