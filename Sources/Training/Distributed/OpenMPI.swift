import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Open MPI, loaded with `dlopen` only when a launcher started us (the one file that talks to
/// MPI; ARCHITECTURE.md rule 2: `Int32` conversions live here).
///
/// Why at run time rather than a linked system-library target: the build and `swift test` need
/// no MPI headers or libraries; a single-process run never maps libmpi (nor its hwloc/PMIx
/// start-up); and "built without MPI" becomes a run-time fact that `Distributed.join` reports
/// as a refusal instead of N independent trainings. The price is binding to Open MPI's ABI,
/// which is stable across 3.x–5.x (`libmpi.so.40`): the predefined handles `MPI_COMM_WORLD`,
/// `MPI_DOUBLE` are the addresses of the exported globals `ompi_mpi_comm_world`,
/// `ompi_mpi_double`, and `MPI_STATUS_IGNORE` is a null pointer. MPICH-ABI libraries (integer
/// handles) are detected and refused with a clear message.
final class OpenMPI: Communicator {
    let rank: Int
    let size: Int
    let localSize: Int
    /// The library that was loaded (for messages).
    let library: String
    private var finalized = false

    // The C signatures, with MPI_Comm and MPI_Datatype as Open MPI's handle pointers.
    typealias Comm = OpaquePointer
    typealias Datatype = OpaquePointer
    typealias SendFn = @convention(c) (UnsafeRawPointer?, Int32, Datatype?, Int32, Int32, Comm?) -> Int32
    typealias RecvFn = @convention(c) (UnsafeMutableRawPointer?, Int32, Datatype?, Int32, Int32, Comm?, UnsafeMutableRawPointer?) -> Int32
    typealias BcastFn = @convention(c) (UnsafeMutableRawPointer?, Int32, Datatype?, Int32, Comm?) -> Int32
    typealias BarrierFn = @convention(c) (Comm?) -> Int32
    typealias AbortFn = @convention(c) (Comm?, Int32) -> Int32
    typealias FinalizeFn = @convention(c) () -> Int32
    private let world: Comm
    private let double: Datatype
    private let send: SendFn
    private let recv: RecvFn
    private let bcast: BcastFn
    private let barrierFn: BarrierFn
    private let abortFn: AbortFn
    private let finalizeFn: FinalizeFn
    /// Scratch for the tree reduction's incoming halves, grown on demand.
    private var scratch: UnsafeMutablePointer<Double>?
    private var scratchCount = 0

    struct LoadError: Error, CustomStringConvertible { let description: String }

    /// Loads libmpi (FINETUNE_MPI_LIBRARY, else `libmpi.so.40`, else `libmpi.so`), calls
    /// `MPI_Init_thread(MPI_THREAD_FUNNELED)` — only the main thread talks to MPI; GEMM and
    /// kernel threads never do — and reads rank and size of `MPI_COMM_WORLD`.
    static func initialize(libraryOverride: String?, localSize: Int?) throws -> OpenMPI {
        let names = libraryOverride.map { [$0] } ?? ["libmpi.so.40", "libmpi.so"]
        var handle: UnsafeMutableRawPointer?
        var errors: [String] = []
        var loaded = ""
        for n in names {
            // RTLD_GLOBAL: Open MPI's own plugins (mca_*.so) resolve symbols against libmpi.
            if let h = dlopen(n, RTLD_NOW | RTLD_GLOBAL) { handle = h; loaded = n; break }
            errors.append(String(cString: dlerror()))
        }
        guard let handle else { throw LoadError(description: "cannot load libmpi: " + errors.joined(separator: "; ")) }
        func sym<T>(_ name: String, as: T.Type) throws -> T {
            guard let p = dlsym(handle, name) else { throw LoadError(description: "\(loaded) has no symbol \(name)") }
            return unsafeBitCast(p, to: T.self)
        }
        guard dlsym(handle, "ompi_mpi_comm_world") != nil else {
            throw LoadError(description: "\(loaded) is not Open MPI (no ompi_mpi_comm_world); only Open MPI's ABI is supported")
        }
        let world = OpaquePointer(dlsym(handle, "ompi_mpi_comm_world")!)
        let double = OpaquePointer(try sym("ompi_mpi_double", as: UnsafeMutableRawPointer.self))
        typealias InitializedFn = @convention(c) (UnsafeMutablePointer<Int32>?) -> Int32
        typealias InitThreadFn = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?, Int32, UnsafeMutablePointer<Int32>?) -> Int32
        typealias CommIntFn = @convention(c) (Comm?, UnsafeMutablePointer<Int32>?) -> Int32
        let initialized = try sym("MPI_Initialized", as: InitializedFn.self)
        let initThread = try sym("MPI_Init_thread", as: InitThreadFn.self)
        let commRank = try sym("MPI_Comm_rank", as: CommIntFn.self)
        let commSize = try sym("MPI_Comm_size", as: CommIntFn.self)
        var flag: Int32 = 0
        _ = initialized(&flag)
        if flag == 0 {
            var provided: Int32 = 0
            let funneled: Int32 = 1   // MPI_THREAD_FUNNELED (same value in every implementation)
            let rc = initThread(nil, nil, funneled, &provided)
            guard rc == 0 else { throw LoadError(description: "MPI_Init_thread failed with code \(rc)") }
        }
        var r: Int32 = 0, s: Int32 = 0
        guard commRank(world, &r) == 0, commSize(world, &s) == 0 else { throw LoadError(description: "MPI_Comm_rank/size failed") }
        return try OpenMPI(rank: Int(r), size: Int(s), localSize: localSize ?? 1, library: loaded, world: world, double: double,
                           send: sym("MPI_Send", as: SendFn.self), recv: sym("MPI_Recv", as: RecvFn.self),
                           bcast: sym("MPI_Bcast", as: BcastFn.self), barrier: sym("MPI_Barrier", as: BarrierFn.self),
                           abort: sym("MPI_Abort", as: AbortFn.self), finalize: sym("MPI_Finalize", as: FinalizeFn.self))
    }

    private init(rank: Int, size: Int, localSize: Int, library: String, world: Comm, double: Datatype,
                 send: @escaping SendFn, recv: @escaping RecvFn, bcast: @escaping BcastFn,
                 barrier: @escaping BarrierFn, abort: @escaping AbortFn, finalize: @escaping FinalizeFn) {
        self.rank = rank; self.size = size; self.localSize = max(1, localSize); self.library = library
        self.world = world; self.double = double
        self.send = send; self.recv = recv; self.bcast = bcast
        self.barrierFn = barrier; self.abortFn = abort; self.finalizeFn = finalize
    }

    deinit { scratch?.deallocate() }

    /// MPI's default error handler aborts the job on a failed call; a non-zero code here means
    /// that handler was replaced, and we still must not continue with a half-reduced buffer.
    private func check(_ rc: Int32, _ what: String) {
        guard rc != 0 else { return }
        FileHandle.standardError.write(Data("error: rank \(rank): \(what) failed with MPI error \(rc)\n".utf8))
        abort(code: 1)
    }

    /// Messages are at most 2³¹−1 elements (MPI's `int` count); larger buffers go in pieces.
    private static let chunk = Int(Int32.max)

    /// A binomial tree towards rank 0 with a fixed pairing — at round k, rank r (a multiple of
    /// 2^(k+1)) adds the partial sum of rank r + 2^k — then a broadcast of the result. The
    /// additions happen in the same order whatever the timing, so the result depends only on
    /// the number of ranks; the broadcast gives every rank the same bits. (MPI_Allreduce makes
    /// neither promise in general.) Cost: ⌈log₂ N⌉ receives and one broadcast of `count`
    /// doubles at rank 0, O(count) memory.
    func allReduceSum(_ buffer: UnsafeMutablePointer<Double>, count: Int) {
        guard size > 1, count > 0 else { return }
        if scratchCount < count {
            scratch?.deallocate()
            scratch = .allocate(capacity: count); scratchCount = count
        }
        let tmp = scratch!
        var mask = 1
        while mask < size {
            if rank & mask != 0 {
                var off = 0
                while off < count {
                    let n = min(Self.chunk, count - off)
                    check(send(buffer + off, Int32(n), double, Int32(rank - mask), 11, world), "MPI_Send")
                    off += n
                }
                break
            } else if rank + mask < size {
                var off = 0
                while off < count {
                    let n = min(Self.chunk, count - off)
                    check(recv(tmp + off, Int32(n), double, Int32(rank + mask), 11, world, nil), "MPI_Recv")
                    off += n
                }
                for i in 0..<count { buffer[i] += tmp[i] }
            }
            mask <<= 1
        }
        broadcast(buffer, count: count, root: 0)
    }

    func broadcast(_ buffer: UnsafeMutablePointer<Double>, count: Int, root: Int) {
        guard size > 1 else { return }
        var off = 0
        while off < count {
            let n = min(Self.chunk, count - off)
            check(bcast(buffer + off, Int32(n), double, Int32(root), world), "MPI_Bcast")
            off += n
        }
    }

    func barrier() { check(barrierFn(world), "MPI_Barrier") }

    func abort(code: Int32) -> Never {
        _ = abortFn(world, code)
        Foundation.exit(code)
    }

    func finalize() {
        guard !finalized else { return }
        finalized = true
        _ = finalizeFn()
    }
}
