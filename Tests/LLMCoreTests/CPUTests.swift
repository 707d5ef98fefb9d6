import Foundation
import LLMCore
import Testing
import TestSupport

/// The ISA level and GEMM library chosen from cpuid (`CPU`), and the golden tests run again
/// under every backend and ISA level this machine supports.
@Suite struct CPUTests {
    @Test func isaNamesAndEnvironment() throws {
        #expect(ISALevel(name: "AVX512") == .avx512 && ISALevel(name: "avx2") == .avx2 && ISALevel(name: "sse") == .baseline)
        #expect(ISALevel(name: "avx3") == nil)
        #expect(ISALevel.allCases.allSatisfy { ISALevel(name: $0.description) == $0 })
        let ok = try CPU.environmentRequest(["FINETUNE_ISA": "avx2", "FINETUNE_GEMM": "onednn"])
        #expect(ok.isaCap == .avx2 && ok.backend == .onednn)
        let none = try CPU.environmentRequest(["FINETUNE_ISA": "", "FINETUNE_GEMM": "auto"])
        #expect(none.isaCap == nil && none.backend == nil)
        #expect(throws: CPUConfigError.badISA(source: "FINETUNE_ISA", value: "avx3")) { try CPU.environmentRequest(["FINETUNE_ISA": "avx3"]) }
        #expect(throws: CPUConfigError.badBackend(source: "--gemm", value: "mkl")) { try CPU.parseBackend("mkl", source: "--gemm") }
    }

    @Test func openBLASKernelsFollowTheLevel() {
        #expect(CPU.openBLASCoretype(for: .avx512, capped: false, avx512BF16: true) == "COOPERLAKE")
        #expect(CPU.openBLASCoretype(for: .avx512, capped: false, avx512BF16: false) == "SKYLAKEX")
        #expect(CPU.openBLASCoretype(for: .avx2, capped: true, avx512BF16: true) == "HASWELL")
        #expect(CPU.openBLASCoretype(for: .baseline, capped: true, avx512BF16: false) == "NEHALEM")
        #expect(CPU.openBLASCoretype(for: .baseline, capped: false, avx512BF16: false) == nil)
    }

    /// cpuid's answer agrees with the kernel's (`/proc/cpuinfo` lists a feature only where the
    /// CPU has it and the kernel enabled its state), feature by feature.
    @Test func featuresMatchProcCpuinfo() throws {
        let text = try String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix("flags") })
        let kernel = Set(line.split(separator: ":")[1].split(separator: " ").map(String.init))
        let ours = Set(CPU.flagNames)
        let checked: Set<String> = ["avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_bf16",
                                    "avx512_vnni", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"]
        #expect(ours == kernel.intersection(checked), "cpuid \(ours.sorted()) vs /proc/cpuinfo \(kernel.intersection(checked).sorted())")
        let expected: ISALevel = ["avx512f", "avx512dq", "avx512bw", "avx512vl"].allSatisfy(kernel.contains) ? .avx512
            : ["avx2", "fma"].allSatisfy(kernel.contains) ? .avx2 : .baseline
        #expect(CPU.detectedISA == expected)
    }

    /// The active plan is what the environment asked for: the level (capped by FINETUNE_ISA),
    /// the library, and OpenBLAS's kernel set matched to the level. Runs in every child process
    /// of `goldenTestsPassUnderEveryBackendAndLevel` too, so a child that silently ignored its
    /// variables fails.
    @Test func activePlanMatchesEnvironment() throws {
        let env = ProcessInfo.processInfo.environment
        let request = try CPU.environmentRequest()
        let plan = CPU.plan
        #expect(plan.isa == min(CPU.detectedISA, request.isaCap ?? .avx512))
        let preferred = CPU.preferredBackend(isa: plan.isa)
        #expect(plan.backend == request.backend ?? (preferred == .onednn && Self.oneDNNInstalled ? .onednn : .openblas))
        guard plan.backend == .openblas, (env["OPENBLAS_CORETYPE"] ?? "").isEmpty else { return }
        let want = CPU.openBLASCoretype(for: plan.isa, capped: plan.capped, avx512BF16: CPU.features.avx512_bf16 != 0)
        if let want { #expect(plan.libraryKernels.lowercased() == want.lowercased()) }
    }

    // MARK: - The command line

    /// The choice is the first line of `train`, in `run.json` and in `bench --json`; FINETUNE_ISA
    /// caps it; bad values are bad input (exit 2) naming the variable or flag.
    @Test(.enabled(if: CPU.detectedISA >= .avx2))
    func commandLineReportsAndValidatesTheChoice() throws {
        let exe = try #require(finetuneExecutable(), "the finetune executable is built beside the tests")
        let f = FixtureModel.qwen2Tiny
        let out = try temporaryDirectory("cpu-train")
        defer { try? FileManager.default.removeItem(at: out) }
        let train = try runProcess(exe, ["train", "--model", f.directory.path, "--data", try f.batchJSONL().path, "--output", out.path,
                                         "--adapter-type", "lora", "--steps", "2", "--gemm", "openblas"],
                                   environment: ["FINETUNE_ISA": "avx2", "OPENBLAS_CORETYPE": ""])
        #expect(train.status == 0, "\(train.err)")
        let first = train.err.split(separator: "\n").first.map(String.init) ?? ""
        #expect(first.hasPrefix("cpu: ") && first.contains("isa avx2") && first.contains("gemm openblas (Haswell)"), "first line: \(first)")
        let run = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("run.json"))) as? [String: Any]
        let cpu = (run?["resolved"] as? [String: Any])?["cpu"] as? [String: Any]
        #expect(cpu?["isa"] as? String == "avx2" && cpu?["gemm_backend"] as? String == "openblas"
                && cpu?["gemm_kernels"] as? String == "Haswell" && cpu?["detected_isa"] as? String == CPU.detectedISA.description,
                "run.json cpu: \(String(describing: cpu))")

        let config = TestPaths.fixtures.appendingPathComponent("model-configs/smollm2-135m.json").path
        let bench = ["bench", "--model", config, "--mode", "gemm", "--seq", "4", "--steps", "1", "--json"]
        for gemm in Self.oneDNNInstalled ? ["openblas", "onednn"] : ["openblas"] {
            let r = try runProcess(exe, bench + ["--gemm", gemm], environment: ["FINETUNE_ISA": ""])
            #expect(r.status == 0, "\(r.err)")
            let json = try JSONSerialization.jsonObject(with: Data(r.out.utf8)) as? [String: Any]
            let c = json?["cpu"] as? [String: Any]
            #expect(c?["isa"] as? String == CPU.detectedISA.description && c?["gemm_backend"] as? String == gemm
                    && (c?["threads"] as? Int ?? 0) >= 1 && !(c?["model"] as? String ?? "").isEmpty, "bench cpu: \(String(describing: c))")
        }
        let badISA = try runProcess(exe, bench, environment: ["FINETUNE_ISA": "avx3"])
        #expect(badISA.status == 2 && badISA.err.contains("FINETUNE_ISA 'avx3'"), "\(badISA.status) \(badISA.err)")
        let badGEMM = try runProcess(exe, bench + ["--gemm", "mkl"])
        #expect(badGEMM.status == 2 && badGEMM.err.contains("--gemm 'mkl'"), "\(badGEMM.status) \(badGEMM.err)")
        let badEnv = try runProcess(exe, ["inspect", "--model", config], environment: ["FINETUNE_GEMM": "blis"])
        #expect(badEnv.status == 2 && badEnv.err.contains("FINETUNE_GEMM 'blis'"), "\(badEnv.status) \(badEnv.err)")
        let badDot = try runProcess(exe, ["inspect", "--model", config], environment: ["FINETUNE_QUANT_DOT": "int4"])
        #expect(badDot.status == 2 && badDot.err.contains("FINETUNE_QUANT_DOT 'int4'"), "\(badDot.status) \(badDot.err)")
    }

    // MARK: - Every backend and ISA level

    /// (FINETUNE_ISA, FINETUNE_GEMM) pairs this machine runs besides the default one (the whole
    /// suite's own process): every level with OpenBLAS, and with oneDNN when libdnnl2 is
    /// installed.
    static var matrix: [(isa: String, gemm: String)] {
        let levels = ISALevel.allCases.filter { $0 <= CPU.detectedISA }.reversed()
        let backends = oneDNNInstalled ? [GEMMBackend.openblas, .onednn] : [.openblas]
        let plan = CPU.plan
        return levels.flatMap { l in backends.map { (l, $0) } }
            .filter { !($0.0 == plan.isa && $0.1 == plan.backend) }
            .map { ($0.0.description, $0.1.rawValue) }
    }

    static var oneDNNInstalled: Bool {
        ["/usr/lib/x86_64-linux-gnu/libdnnl.so.2", "/usr/lib/libdnnl.so.2", "/usr/local/lib/libdnnl.so.2"]
            .contains { FileManager.default.fileExists(atPath: $0) }
    }

    /// Runs this test bundle again with FINETUNE_ISA / FINETUNE_GEMM set, filtered to the golden
    /// forward and gradient tests (logits, loss, every adapter gradient, merges, of every
    /// fixture family and adapter kind) and `activePlanMatchesEnvironment`; every one must run
    /// and pass under each backend and level.
    ///
    /// Not in the filter: the 6-step AdamW trajectories (`reproducesTrajectory`, run by the suite
    /// itself under the default kernels). Under OpenBLAS's SSE kernels or oneDNN capped at AVX2,
    /// llama-tiny's layer-0 gate_proj LoRA B ends 8.4e-6 / 9.4e-6 from the float64 golden
    /// against its bound of 6.6e-6 (default kernels: 2.6e-6). PyTorch + PEFT itself in float32,
    /// from the same start, ends 7.2e-6 from it on that tensor (`scripts/trajectory_f32_check.py`):
    /// the bound there is tighter than float32 reproduces, whoever computes. Reported with the
    /// fixtures; the tolerance is not widened here.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["FINETUNE_TEST_CHILD"] == nil))
    func goldenTestsPassUnderEveryBackendAndLevel() throws {
        if !Self.oneDNNInstalled {
            FileHandle.standardError.write(Data("SKIP \(#fileID): libdnnl2 is not installed; oneDNN is not checked (.ci/run installs it)\n".utf8))
        }
        let bundle = CommandLine.arguments[0]
        try #require(FileManager.default.isExecutableFile(atPath: bundle), "the test bundle \(bundle) is an executable")
        let filter = "GoldenForwardTests|GoldenAdapterTests|activePlanMatchesEnvironment"
        for (isa, gemm) in Self.matrix {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: bundle)
            p.arguments = ["--testing-library", "swift-testing", "--filter", filter]
            var env = ProcessInfo.processInfo.environment
            env["FINETUNE_ISA"] = isa; env["FINETUNE_GEMM"] = gemm; env["FINETUNE_TEST_CHILD"] = "1"
            env["OPENBLAS_CORETYPE"] = nil
            p.environment = env
            let out = Pipe()
            p.standardOutput = out; p.standardError = out
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            let text = String(decoding: data, as: UTF8.self)
            let summary = text.split(separator: "\n").last { $0.contains("Test run with") }.map(String.init) ?? "(no summary line)"
            let count = summary.split(separator: " ").firstIndex(of: "with").flatMap { i in Int(summary.split(separator: " ")[i + 1]) } ?? 0
            #expect(p.terminationStatus == 0 && summary.contains("passed"),
                    "FINETUNE_ISA=\(isa) FINETUNE_GEMM=\(gemm): \(summary)\n\(text.suffix(4000))")
            #expect(count >= 8, "FINETUNE_ISA=\(isa) FINETUNE_GEMM=\(gemm) ran \(count) tests: \(summary)")
            print("FINETUNE_ISA=\(isa) FINETUNE_GEMM=\(gemm): \(summary)")
        }
    }
}
