import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A download progress line on stderr: file, bytes, percentage, rate and ETA. On a terminal the
/// line is redrawn in place; otherwise a line is written every few seconds and at the end.
public enum ProgressLine {
    public static func stderr() -> @Sendable (DownloadProgress) -> Void {
        let tty = isatty(2) == 1
        let last = LastLine()
        return { p in
            let now = Date().timeIntervalSince1970
            if !tty && !p.finished && now - last.value < 5 { return }
            last.value = now
            let line = format(p)
            FileHandle.standardError.write(Data(((tty ? "\r\u{1B}[K" : "") + line + (p.finished || !tty ? "\n" : "")).utf8))
        }
    }

    /// When the last line was written (off a terminal, the first comes 5 s into the download).
    private final class LastLine: @unchecked Sendable { var value = Date().timeIntervalSince1970 }

    public static func format(_ p: DownloadProgress) -> String {
        let rate = p.seconds > 0 ? Double(p.transferred) / p.seconds : 0
        var s = "\(p.file)  \(bytes(p.received))"
        if let t = p.total, t > 0 {
            s += " / \(bytes(t))  \(Int(Double(p.received) * 100 / Double(t)))%"
        }
        s += "  \(bytes(Int64(rate)))/s"
        if p.finished {
            s += "  done in \(duration(p.seconds))"
        } else if let t = p.total, rate > 0 {
            s += "  ETA \(duration(Double(max(t - p.received, 0)) / rate))"
        }
        return s
    }

    static func bytes(_ n: Int64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var v = Double(n), i = 0
        while v >= 1000 && i < units.count - 1 { v /= 1000; i += 1 }
        return i == 0 ? "\(n) B" : String(format: "%.1f", v) + " " + units[i]
    }

    static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }
}
