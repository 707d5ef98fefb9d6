import ArgumentParser
import Foundation
import LLMCore
import Training

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Turn a results.jsonl written by `finetune eval --append-results` into a Markdown table and an SVG bar chart.",
        discussion: "Prints the table on stdout; --output writes it to a file, --svg writes the accuracy chart (grey: base, blue: with adapter).")

    @Option(help: "The results file (JSON lines from `finetune eval --append-results`).") var results: String
    @Option(help: "Write the Markdown table here as well.") var output: String?
    @Option(help: "Write an SVG bar chart of accuracy per task and run here.") var svg: String?

    func run() throws {
        try reportingErrors {
            let rows = try ResultsReport.load(URL(fileURLWithPath: results))
            guard !rows.isEmpty else { throw InputError("--results \(results): no result rows") }
            let table = ResultsReport.markdown(rows)
            print(table, terminator: "")
            if let output { try AtomicFile.write(table, to: URL(fileURLWithPath: output)) }
            if let svg { try AtomicFile.write(ResultsReport.svg(rows), to: URL(fileURLWithPath: svg)) }
        }
    }
}
