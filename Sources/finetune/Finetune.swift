import ArgumentParser
import Foundation
import LLMCore
import Training

@main
struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune Llama/Qwen models with LoRA or NdLinear-LoRA adapters on the CPU.",
        subcommands: [TrainCommand.self, GenerateCommand.self, LogitsCommand.self, InspectCommand.self, BenchCommand.self, TokenizeCommand.self, EvalCommand.self, ExportCommand.self, MergeCommand.self, ReportCommand.self, PrepareCommand.self, ServeCommand.self, ChatCommand.self]
    )

    /// Expands `--config FILE` into flags before parsing (flags on the command line win).
    static func main() {
        do {
            let (args, offline) = ModelNames.extractOffline(try ConfigFile.expand(Array(CommandLine.arguments.dropFirst())))
            var command = try parseAsRoot(args)
            // Only `train` is data-parallel; N copies of any other command would each redo
            // the whole job and race on its output files.
            if !(command is TrainCommand), let l = Launcher.detect(), l.size ?? 2 > 1 {
                if (l.rank ?? 0) == 0 { note("error: launched by \(l.name): only `finetune train` runs under MPI; run this command as one process (without mpirun/srun)") }
                Finetune.exit(withError: ExitCode(2))
            }
            // FINETUNE_ISA / FINETUNE_GEMM / FINETUNE_QUANT_DOT are checked before any command
            // runs: a typo is bad input (exit 2) in every command, not a stop at the first GEMM.
            do { _ = try CPU.environmentRequest(); _ = try GEMV.environmentQuantDot() } catch {
                note("error: " + errorMessage(error))
                Finetune.exit(withError: ExitCode(2))
            }
            // `--model ORG/NAME` → the cached (or downloaded) snapshot, once the flags are known good.
            let resolved = try ModelNames.resolve(args, offline: offline)
            if resolved != args { command = try parseAsRoot(resolved) }
            try command.run()
        } catch {
            fail(error)
        }
    }

    /// Ends the process after `error` with one message and the contract's status (CLI.md):
    /// usage and parse errors (ArgumentParser's 64) and every other bad input exit 2, a failed
    /// run 1, an interrupt 130; `--help` and `--version` exit 0.
    static func fail(_ error: Error) -> Never {
        let parser = exitCode(for: error)
        let status: Int32
        if let e = error as? ExitCode {
            status = e == .validationFailure ? 2 : e.rawValue
        } else {
            status = parser == .success ? 0 : parser == .validationFailure ? 2 : exitStatus(for: error)
        }
        // Under a launcher every rank parses the same arguments: one message is enough.
        if let r = Launcher.detect()?.rank, r != 0 { Foundation.exit(status) }
        if parser == .success {
            // Help text, status 0; every command's help ends with the exit codes.
            let text = fullMessage(for: error)
            guard !text.isEmpty, !text.hasPrefix("{"), !CommandLine.arguments.contains("--experimental-dump-help") else { exit(withError: error) }
            print(text.hasSuffix("\n") ? text : text + "\n")
            print(exitCodesHelp)
            Foundation.exit(0)
        }
        if !(error is ExitCode) { note(parser == .validationFailure ? fullMessage(for: error) : "error: " + errorMessage(error)) }
        Foundation.exit(status)
    }
}
