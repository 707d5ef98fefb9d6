import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import TestSupport
import Training

/// `finetune report`: results.jsonl → Markdown table + SVG chart.
@Suite struct ResultsReportTests {
    static let rows = """
    {"task":"boolq","model":"models/smol","n":500,"accuracy":0.61,"accuracy_strict":0.6,"wall_s":12.5,"tokens_per_s":900,"timestamp":"2026-11-23T10:00:00Z"}
    {"task":"boolq","model":"models/smol","adapter":"runs/lora/adapter","n":500,"accuracy":0.705,"accuracy_strict":0.7,"wall_s":13,"tokens_per_s":880,"timestamp":"2026-11-23T11:00:00Z"}

    {"task":"arc_easy","model":"models/smol","n":200,"accuracy":0.3,"timestamp":"2026-11-23T09:00:00Z"}
    """

    @Test func tableAndChart() throws {
        let dir = try temporaryDirectory("report")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("results.jsonl")
        try Self.rows.write(to: url, atomically: true, encoding: .utf8)
        let rows = try ResultsReport.load(url)
        #expect(rows.count == 3)
        let md = ResultsReport.markdown(rows).split(separator: "\n").map(String.init)
        #expect(md.count == 5)
        #expect(md[2] == "| arc_easy | models/smol (base) | 200 | 30.0 | – | – | – | – |")
        #expect(md[4] == "| boolq | models/smol + lora/adapter | 500 | 70.5 | 70.0 | – | 13.0 | 880 |")
        let svg = ResultsReport.svg(rows)
        #expect(svg.components(separatedBy: "<rect").count - 1 == 3)
        #expect(svg.contains("70.5 %") && svg.contains(">boolq<") && svg.contains(">arc_easy<"))
        let parser = XMLParser(data: Data(svg.utf8))
        #expect(parser.parse(), "the SVG is well-formed XML")
    }

    @Test func malformedLineIsNamed() throws {
        let dir = try temporaryDirectory("report-bad")
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("results.jsonl")
        try "{\"task\":\"x\",\"model\":\"m\",\"n\":1}\n{\"task\": 3}\n".write(to: url, atomically: true, encoding: .utf8)
        #expect { _ = try ResultsReport.load(url) } throws: { "\($0)".contains("results.jsonl:2") }
    }
}
