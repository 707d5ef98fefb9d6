import CBackend
import Foundation

// MARK: - What the CPU can run

/// The instruction-set level the engine's kernels and the GEMM library run at: chosen from
/// cpuid features (never from a table of CPU models), capped by `FINETUNE_ISA`.
public enum ISALevel: Int, Comparable, Sendable, CaseIterable, CustomStringConvertible {
    /// Baseline x86-64 (SSE2…): the portable Swift kernels.
    case baseline = 0
    /// AVX2 + FMA (Haswell and later, every AMD Zen).
    case avx2 = 1
    /// AVX-512 F/DQ/BW/VL with the ZMM state enabled by the OS (Skylake-SP and later, Zen 4).
    case avx512 = 2

    public static func < (a: ISALevel, b: ISALevel) -> Bool { a.rawValue < b.rawValue }

    /// The name `FINETUNE_ISA` and `bench --json` use.
    public var description: String {
        switch self { case .baseline: "sse"; case .avx2: "avx2"; case .avx512: "avx512" }
    }

    /// Parses a `FINETUNE_ISA` value.
    public init?(name: String) {
        switch name.lowercased() {
        case "avx512", "avx-512": self = .avx512
        case "avx2": self = .avx2
        case "sse", "baseline", "x86-64": self = .baseline
        default: return nil
        }
    }
}

/// The GEMM library the engine's `BLAS.gemm` calls.
public enum GEMMBackend: String, Sendable, CaseIterable, CustomStringConvertible {
    /// OpenBLAS, its kernel set (`OPENBLAS_CORETYPE`) chosen from the ISA level before it loads.
    case openblas
    /// oneDNN's `dnnl_sgemm` (Debian's libdnnl2, loaded at run time), which picks its kernels
    /// from cpuid itself: the default at AVX-512 (`preferredBackend`).
    case onednn
    public var description: String { rawValue }
}

/// Errors in choosing the ISA level or the GEMM library (bad input: exit 2).
public enum CPUConfigError: Error, CustomStringConvertible, Equatable {
    case badISA(source: String, value: String)
    case badBackend(source: String, value: String)
    case libraryUnavailable(GEMMBackend, String)
    case alreadyChosen(requested: String, active: String)

    public var description: String {
        switch self {
        case .badISA(let s, let v): "\(s) '\(v)': expected avx512, avx2 or sse"
        case .badBackend(let s, let v): "\(s) '\(v)': expected auto, openblas or onednn"
        case .libraryUnavailable(let b, let m): "--gemm \(b): \(m)"
        case .alreadyChosen(let r, let a): "the GEMM backend is already \(a) in this process; \(r) cannot be chosen now"
        }
    }
}

/// The CPU's features, the ISA level and the GEMM library, decided once per process before the
/// first GEMM: `CPU.configure` (the command line's `--gemm`, `FINETUNE_GEMM`, `FINETUNE_ISA`),
/// or on first use with the environment's choice.
public enum CPU {
    /// cpuid's answer (features count only where the OS enables their register state).
    public static let features: ft_cpu_t = {
        var f = ft_cpu_t()
        ft_cpu_detect(&f)
        return f
    }()

    /// The highest level this CPU and OS run.
    public static let detectedISA: ISALevel = {
        let f = features
        if f.avx512f != 0, f.avx512dq != 0, f.avx512bw != 0, f.avx512vl != 0, f.avx2 != 0, f.fma != 0 { return .avx512 }
        if f.avx2 != 0, f.fma != 0 { return .avx2 }
        return .baseline
    }()

    /// The CPU's brand string ("AMD EPYC 9R14 …", "Intel(R) Xeon(R) …").
    public static var modelName: String {
        var f = features
        let brand = withUnsafeBytes(of: &f.brand) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return brand.trimmingCharacters(in: .whitespaces)
    }

    /// Feature names present, in cpuid's order, for reports.
    public static var flagNames: [String] {
        let f = features
        let all: [(String, Int32)] = [
            ("avx2", f.avx2), ("fma", f.fma), ("f16c", f.f16c), ("avx512f", f.avx512f), ("avx512dq", f.avx512dq),
            ("avx512bw", f.avx512bw), ("avx512vl", f.avx512vl), ("avx512_bf16", f.avx512_bf16),
            ("avx512_vnni", f.avx512_vnni), ("avx512_fp16", f.avx512_fp16), ("avx_vnni", f.avx_vnni),
            ("amx_tile", f.amx_tile), ("amx_bf16", f.amx_bf16), ("amx_int8", f.amx_int8),
        ]
        return all.filter { $0.1 != 0 }.map(\.0)
    }

    /// The OpenBLAS kernel set for an ISA level on this CPU: the newest whose instructions the
    /// level allows. Below AVX2 a CPU that has no more keeps OpenBLAS's own choice (at most
    /// AVX there); a cap to `sse` on a newer CPU forces the SSE kernels.
    public static func openBLASCoretype(for isa: ISALevel, capped: Bool, avx512BF16: Bool) -> String? {
        switch isa {
        case .avx512: avx512BF16 ? "COOPERLAKE" : "SKYLAKEX"
        case .avx2: "HASWELL"
        case .baseline: capped ? "NEHALEM" : nil
        }
    }

    /// oneDNN's `dnnl_cpu_isa_t` cap for an ISA level (0: no cap).
    static func oneDNNCap(for isa: ISALevel) -> Int32 {
        switch isa {
        case .avx512: 0
        case .avx2: 0x7       // dnnl_cpu_isa_avx2
        case .baseline: 0x1   // dnnl_cpu_isa_sse41
        }
    }

    /// What the environment asks for: `FINETUNE_ISA` (a cap) and `FINETUNE_GEMM`.
    public static func environmentRequest(_ env: [String: String] = ProcessInfo.processInfo.environment) throws -> (isaCap: ISALevel?, backend: GEMMBackend?) {
        var cap: ISALevel?
        if let v = env["FINETUNE_ISA"], !v.isEmpty {
            guard let l = ISALevel(name: v) else { throw CPUConfigError.badISA(source: "FINETUNE_ISA", value: v) }
            cap = l
        }
        return (cap, try parseBackend(env["FINETUNE_GEMM"], source: "FINETUNE_GEMM"))
    }

    /// `auto` (or nil/empty) → nil: the engine's own choice.
    public static func parseBackend(_ v: String?, source: String) throws -> GEMMBackend? {
        guard let v, !v.isEmpty, v != "auto" else { return nil }
        guard let b = GEMMBackend(rawValue: v.lowercased()) else { throw CPUConfigError.badBackend(source: source, value: v) }
        return b
    }

    /// The engine's choice when nobody asks, by measurement (BENCHMARKS.md, issue 18): at AVX-512
    /// oneDNN's sgemm beats OpenBLAS's AVX-512 kernels (Intel Xeon 4th/5th gen: 292–341 against
    /// 260–282 GFLOP/s on the step's shapes; AMD Zen 4: training steps 5–7% faster); at AVX2
    /// OpenBLAS's Haswell kernels match or beat it (Zen 4 capped at AVX2: qwen3-0.6b's step 25%
    /// slower with oneDNN). Without libdnnl2 it is OpenBLAS everywhere.
    public static func preferredBackend(isa: ISALevel) -> GEMMBackend { isa == .avx512 ? .onednn : .openblas }

    // MARK: Process state

    /// The active plan (set by `configure`, or on first use from the environment).
    public struct Plan: Sendable {
        public var isa: ISALevel
        public var backend: GEMMBackend
        /// The kernel set the library runs: OpenBLAS's core name, or oneDNN's ISA.
        public var libraryKernels: String
        /// Whether `FINETUNE_ISA` lowered the level.
        public var capped: Bool
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var active: Plan?

    /// The ISA level our own kernels run at.
    public static var isa: ISALevel { plan.isa }

    /// The active plan, made from the environment if nothing configured one (a bad environment
    /// value then stops the process with its message: the CLI validates it first, with exit 2).
    public static var plan: Plan {
        lock.lock(); defer { lock.unlock() }
        if let p = active { return p }
        do { return try makeLocked(backend: nil) } catch { fatalError("\(error)") }
    }

    /// Chooses the ISA level and the GEMM library for this process. `backend` (the `--gemm`
    /// flag; nil for auto) wins over `FINETUNE_GEMM`. Once a library is loaded it stays: asking
    /// for another one later is an error.
    @discardableResult
    public static func configure(backend requested: GEMMBackend?) throws -> Plan {
        lock.lock(); defer { lock.unlock() }
        if let p = active {
            let want = try requested ?? environmentRequest().backend
            if let w = want, w != p.backend { throw CPUConfigError.alreadyChosen(requested: w.rawValue, active: p.backend.rawValue) }
            return p
        }
        return try makeLocked(backend: requested)
    }

    private static func makeLocked(backend requested: GEMMBackend?) throws -> Plan {
        let env = try environmentRequest()
        let isa = min(detectedISA, env.isaCap ?? .avx512)
        let explicit = requested ?? env.backend
        var backend = explicit ?? preferredBackend(isa: isa)
        var err = [CChar](repeating: 0, count: 512)
        // OpenBLAS is always loaded: sgemv (decode's LoRA and attention) and the default GEMMs.
        let coretype = openBLASCoretype(for: isa, capped: isa < detectedISA, avx512BF16: features.avx512_bf16 != 0)
        let ok = coretype.map { ft_openblas_load($0, &err, Int32(err.count)) } ?? ft_openblas_load(nil, &err, Int32(err.count))
        guard ok == 0 else { throw CPUConfigError.libraryUnavailable(.openblas, String(cString: err)) }
        var kernels = String(cString: ft_openblas_corename())
        if let user = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"], !user.isEmpty { kernels += " (OPENBLAS_CORETYPE=\(user))" }
        if backend == .onednn {
            if ft_onednn_load(oneDNNCap(for: isa), &err, Int32(err.count)) == 0 {
                kernels = oneDNNISAName(ft_onednn_isa())
            } else if explicit == .onednn {
                throw CPUConfigError.libraryUnavailable(.onednn, String(cString: err))
            } else {
                backend = .openblas  // auto without libdnnl2
            }
        }
        let p = Plan(isa: isa, backend: backend, libraryKernels: kernels, capped: isa < detectedISA)
        active = p
        return p
    }

    static func oneDNNISAName(_ v: Int32) -> String {
        switch v {
        case 0x1: "sse41"; case 0x3: "avx"; case 0x7: "avx2"; case 0x407: "avx2_vnni"
        case 0x27: "avx512_core"; case 0x67: "avx512_core_vnni"; case 0xe7: "avx512_core_bf16"
        case 0x3e7: "avx512_core_amx"
        default: String(format: "0x%x", v)
        }
    }

    /// One line for the start of `train`, `eval`, `serve` output.
    public static var summary: String {
        let p = plan
        return "cpu: \(modelName.isEmpty ? "unknown" : modelName) · isa \(p.isa)\(p.capped ? " (capped by FINETUNE_ISA; CPU has \(detectedISA))" : "")"
            + " · gemm \(p.backend) (\(p.libraryKernels)) · \(BLAS.threads) threads"
    }

    /// The `"cpu"` object of `bench --json` and `run.json`.
    public static var report: CPUReport {
        let p = plan
        return CPUReport(model: modelName, isa: p.isa.description, detected_isa: detectedISA.description,
                         gemm_backend: p.backend.rawValue, gemm_kernels: p.libraryKernels, threads: BLAS.threads,
                         flags: flagNames)
    }
}

/// What `bench --json` and `run.json` say about the CPU and the kernels chosen for it.
public struct CPUReport: Codable, Sendable, Equatable {
    public var model: String
    public var isa: String
    public var detected_isa: String
    public var gemm_backend: String
    public var gemm_kernels: String
    public var threads: Int
    public var flags: [String]
}
