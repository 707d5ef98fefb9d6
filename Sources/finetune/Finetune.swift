import ArgumentParser
import Foundation
import Training

@main
struct Finetune: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finetune",
        abstract: "Fine-tune Llama/Qwen models with LoRA or NdLinear-LoRA adapters on the CPU.",
        subcommands: [TrainCommand.self, GenerateCommand.self, LogitsCommand.self, InspectCommand.self, BenchCommand.self, TokenizeCommand.self, EvalCommand.self, ExportCommand.self, MergeCommand.self]
    )

    /// Expands `--config FILE` into flags before parsing (flags on the command line win).
    static func main() {
        do {
            let args = try ConfigFile.expand(Array(CommandLine.arguments.dropFirst()))
            var command = try parseAsRoot(args)
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
