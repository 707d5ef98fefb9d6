import Foundation
import Yams

/// `--config FILE` (CLI.md): a YAML or JSON mapping whose keys are long flag names (`-` or `_`)
/// becomes command-line arguments placed BEFORE the user's own, so flags given on the command
/// line win (a later single-valued option overrides an earlier one).
public enum ConfigFile {
    public enum Error: Swift.Error, CustomStringConvertible {
        case unreadable(String)
        case invalid(String, String)
        public var description: String {
            switch self {
            case let .unreadable(p): return "--config \(p): cannot read the file"
            case let .invalid(p, r): return "--config \(p): \(r)"
            }
        }
    }

    /// Rewrites `args` (without the program name): removes `--config FILE` / `--config=FILE`
    /// and inserts the file's options right after the subcommand name.
    public static func expand(_ args: [String]) throws -> [String] {
        var rest: [String] = []
        var path: String?
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--config", i + 1 < args.count { path = args[i + 1]; i += 2; continue }
            if a.hasPrefix("--config=") { path = String(a.dropFirst("--config=".count)); i += 1; continue }
            rest.append(a)
            i += 1
        }
        guard let path else { return args }
        let fileArgs = try arguments(fromFile: path)
        // Subcommand names come first (they never start with "-").
        let split = rest.firstIndex { $0.hasPrefix("-") } ?? rest.count
        return Array(rest[..<split]) + fileArgs + Array(rest[split...])
    }

    public static func arguments(fromFile path: String) throws -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw Error.unreadable(path) }
        let node: Any?
        do { node = try Yams.load(yaml: text) } catch { throw Error.invalid(path, "not valid YAML/JSON (\(error))") }
        guard let map = node as? [String: Any] else { throw Error.invalid(path, "expected a mapping of flag names to values") }
        var out: [String] = []
        for key in map.keys.sorted() {
            let flag = "--" + key.replacingOccurrences(of: "_", with: "-")
            switch map[key]! {
            case let b as Bool:
                if b { out.append(flag) }
            case let list as [Any]:
                out += [flag, list.map { "\($0)" }.joined(separator: ",")]
            case is [String: Any]:
                throw Error.invalid(path, "'\(key)' must be a scalar or a list")
            case let v:
                out += [flag, "\(v)"]
            }
        }
        return out
    }
}
