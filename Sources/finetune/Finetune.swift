import ArgumentParser
import Foundation
import LLMCore
import Training

@main
struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune Llama/Qwen models with LoRA or NdLinear-LoRA adapters on the CPU.",
        subcommands: [TrainCommand.self, GenerateCommand.self, LogitsCommand.self, InspectCommand.self, BenchCommand.self, TokenizeCommand.self, EvalCommand.self, ExportCommand.self, MergeCommand.self, ReportCommand.self]
    )

    /// Expands `--config FILE` into flags before parsing (flags on the command line win).
    static func main() {
        do {
            let args = try ConfigFile.expand(Array(CommandLine.arguments.dropFirst()))
            var command = try parseAsRoot(args)
            // Only `train` is data-parallel; N copies of any other command would each redo
            // the whole job and race on its output files.
            if !(command is TrainCommand), let l = Launcher.detect(), l.size ?? 2 > 1 {
                if (l.rank ?? 0) == 0 { note("error: launched by \(l.name): only `finetune train` runs under MPI; run this command as one process (without mpirun/srun)") }
                Finetune.exit(withError: ExitCode(2))
            }
            // FINETUNE_ISA / FINETUNE_GEMM are checked before any command runs: a typo is bad
            // input (exit 2) in every command, not a stop at the first GEMM.
            do { _ = try CPU.environmentRequest() } catch {
                note("error: \(error)")
                Finetune.exit(withError: ExitCode(2))
            }
            try command.run()
        } catch {
            // Under a launcher every rank parses the same arguments: one usage message is enough.
            if let r = Launcher.detect()?.rank, r != 0 { Foundation.exit(exitCode(for: error).rawValue) }
            exit(withError: error)
        }
    }
}
