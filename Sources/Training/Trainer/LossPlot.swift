import Foundation
import LLMCore

/// `loss.svg`: training loss (and validation loss when present) over steps, with labelled axes
/// and the two series named on the plot itself.
public enum LossPlot {
    public static func write(metrics: URL, to url: URL) throws {
        guard let data = FileManager.default.contents(atPath: metrics.path) else { return }
        var train: [(Double, Double)] = [], val: [(Double, Double)] = []
        for line in String(decoding: data, as: UTF8.self).split(separator: "\n") {
            guard let j = try? JSONValue.parse(Data(line.utf8)), let s = j["step"]?.double else { continue }
            if let l = j["loss"]?.double { train.append((s, l)) }
            if let l = j["val_loss"]?.double { val.append((s, l)) }
        }
        guard !train.isEmpty else { return }
        try AtomicFile.write(svg(train: train, val: val), to: url)
    }

    public static func svg(train: [(Double, Double)], val: [(Double, Double)], title: String = "Loss") -> String {
        let W = 720.0, H = 420.0, left = 70.0, right = 20.0, top = 40.0, bottom = 50.0
        let all = train + val
        let xs = all.map(\.0), ys = all.map(\.1).filter(\.isFinite)
        let x0 = xs.min() ?? 0, x1 = max(xs.max() ?? 1, x0 + 1)
        var y0 = ys.min() ?? 0, y1 = ys.max() ?? 1
        if y1 - y0 < 1e-9 { y0 -= 0.5; y1 += 0.5 }
        let pad = (y1 - y0) * 0.05
        y0 -= pad; y1 += pad
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * (W - left - right) }
        func py(_ y: Double) -> Double { top + (1 - (y - y0) / (y1 - y0)) * (H - top - bottom) }
        func path(_ pts: [(Double, Double)]) -> String {
            pts.enumerated().map { i, p in String(format: "%@%.1f,%.1f", i == 0 ? "M" : " L", px(p.0), py(p.1)) }.joined()
        }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(W))\" height=\"\(Int(H))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(W / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">\(title)</text>\n"
        for i in 0...5 {
            let y = y0 + (y1 - y0) * Double(i) / 5
            s += String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", left, W - right, py(y), py(y))
            s += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3f</text>\n", left - 6, py(y) + 4, y)
        }
        for i in 0...5 {
            let x = x0 + (x1 - x0) * Double(i) / 5
            s += String(format: "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", px(x), H - bottom + 18, x)
        }
        s += String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>", left, W - right, H - bottom, H - bottom)
        s += String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", left, left, top, H - bottom)
        s += "<text x=\"\((left + W - right) / 2)\" y=\"\(H - 12)\" text-anchor=\"middle\">optimizer step</text>\n"
        s += "<text transform=\"translate(18,\((top + H - bottom) / 2)) rotate(-90)\" text-anchor=\"middle\">mean token loss</text>\n"
        s += "<path d=\"\(path(train))\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>\n"
        if let last = train.last {
            s += String(format: "<text x=\"%.1f\" y=\"%.1f\" fill=\"#1f77b4\" text-anchor=\"end\">train</text>\n", px(last.0) - 4, py(last.1) - 6)
        }
        if !val.isEmpty {
            s += "<path d=\"\(path(val))\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"6,3\"/>\n"
            for p in val { s += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"#d62728\"/>", px(p.0), py(p.1)) }
            let last = val.last!
            s += String(format: "\n<text x=\"%.1f\" y=\"%.1f\" fill=\"#d62728\" text-anchor=\"end\">validation</text>\n", px(last.0) - 4, py(last.1) + 16)
        }
        return s + "</svg>\n"
    }
}
