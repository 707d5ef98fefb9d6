import Foundation
import LLMCore

/// `finetune report`: the rows `finetune eval --append-results` wrote, as a Markdown table and
/// an SVG bar chart of accuracy per task and run.
public enum ResultsReport {
    public struct Row: Sendable {
        public var task: String, model: String, adapter: String?, data: String
        public var n: Int, accuracy: Double?, accuracyStrict: Double?, loss: Double?
        public var wallSeconds: Double?, tokensPerSecond: Double?, timestamp: String?
        /// "model" or "model + adapter": what was evaluated.
        public var run: String { adapter.map { "\(short(model)) + \(short($0))" } ?? "\(short(model)) (base)" }
        func short(_ p: String) -> String {
            let parts = p.split(separator: "/").suffix(2)
            return parts.joined(separator: "/")
        }
    }

    /// Reads a results.jsonl; a malformed line is an error naming the file and line.
    public static func load(_ url: URL) throws -> [Row] {
        guard let text = try? String(contentsOf: url, encoding: .utf8) else {
            throw DataError.unreadable(file: url.path, reason: "cannot read the results file")
        }
        var rows: [Row] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let t = line.trimmingCharacters(in: .whitespaces)
            if t.isEmpty { continue }
            guard let j = try? JSONValue.parse(Data(t.utf8)), j.object != nil,
                  let task = j["task"]?.string, let model = j["model"]?.string, let n = j["n"]?.int else {
                throw DataError.malformedRecord(RecordLocation(file: url.path, line: i + 1),
                                                reason: "expected a JSON object with task, model and n (a `finetune eval --append-results` row)")
            }
            rows.append(Row(task: task, model: model, adapter: j["adapter"]?.string, data: j["data"]?.string ?? "",
                            n: n, accuracy: j["accuracy"]?.double, accuracyStrict: j["accuracy_strict"]?.double,
                            loss: j["loss"]?.double, wallSeconds: j["wall_s"]?.double, tokensPerSecond: j["tokens_per_s"]?.double,
                            timestamp: j["timestamp"]?.string))
        }
        return rows
    }

    static func pct(_ x: Double?) -> String { x.map { String(format: "%.1f", 100 * $0) } ?? "–" }

    public static func markdown(_ rows: [Row]) -> String {
        var s = "| task | run | n | accuracy % | strict % | loss | wall s | tok/s |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        for r in rows.sorted(by: { ($0.task, $0.timestamp ?? "") < ($1.task, $1.timestamp ?? "") }) {
            s += "| \(r.task) | \(r.run) | \(r.n) | \(pct(r.accuracy)) | \(pct(r.accuracyStrict)) | "
            s += (r.loss.map { String(format: "%.4f", $0) } ?? "–") + " | "
            s += (r.wallSeconds.map { String(format: "%.1f", $0) } ?? "–") + " | "
            s += (r.tokensPerSecond.map { String(format: "%.0f", $0) } ?? "–") + " |\n"
        }
        return s
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// Horizontal bars, one per row with an accuracy, grouped by task, labelled with the run and
    /// the percentage; the axis runs 0–100 %.
    public static func svg(_ rows: [Row]) -> String {
        let bars = rows.filter { $0.accuracy != nil }.sorted { ($0.task, $0.timestamp ?? "") < ($1.task, $1.timestamp ?? "") }
        let labelW = 360.0, barW = 400.0, rowH = 22.0, top = 40.0
        var y = top, body = ""
        var lastTask: String?
        for r in bars {
            if r.task != lastTask {
                if lastTask != nil { y += 8 }
                body += "<text x=\"8\" y=\"\(y + 15)\" font-weight=\"bold\">\(escape(r.task))</text>\n"
                y += rowH; lastTask = r.task
            }
            let w = barW * min(max(r.accuracy!, 0), 1)
            body += "<text x=\"\(labelW - 6)\" y=\"\(y + 15)\" text-anchor=\"end\">\(escape(r.run))</text>\n"
            body += "<rect x=\"\(labelW)\" y=\"\(y + 3)\" width=\"\(String(format: "%.1f", w))\" height=\"\(rowH - 6)\" fill=\"\(r.adapter == nil ? "#9e9e9e" : "#1f77b4")\"/>\n"
            body += "<text x=\"\(String(format: "%.1f", labelW + w + 4))\" y=\"\(y + 15)\">\(pct(r.accuracy)) %</text>\n"
            y += rowH
        }
        let h = y + 30
        var axis = "<line x1=\"\(labelW)\" y1=\"\(top - 4)\" x2=\"\(labelW)\" y2=\"\(y)\" stroke=\"#333\"/>\n"
        for t in stride(from: 0, through: 100, by: 25) {
            let x = labelW + barW * Double(t) / 100
            axis += "<text x=\"\(x)\" y=\"\(y + 18)\" text-anchor=\"middle\" fill=\"#555\">\(t)</text>\n"
        }
        return """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(labelW + barW + 80))" height="\(Int(h + 10))" font-family="sans-serif" font-size="13">
        <text x="8" y="22" font-size="15">Accuracy (%) by task; grey = base model, blue = with adapter</text>
        \(axis)\(body)<text x="\(labelW + barW / 2)" y="\(h + 4)" text-anchor="middle" fill="#555">accuracy %</text>
        </svg>

        """
    }
}
