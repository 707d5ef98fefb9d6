import Foundation
import LLMCore
import Yams

/// `--config FILE` (CLI.md): a YAML or JSON mapping whose keys are long flag names (`-` or `_`)
/// becomes command-line arguments placed BEFORE the user's own, so flags given on the command
/// line win (a later single-valued option overrides an earlier one).
///
/// A run configuration is a small mapping of flags, so the reader refuses what no configuration
/// needs and what makes a YAML reader run away: files over `maxBytes`, and documents whose
/// aliases (`*name`) expand to more than `maxNodes` values (a "billion laughs" document of a few
/// hundred bytes expands to gigabytes). The document is composed with its aliases shared, the
/// expansion is counted on that tree, and only then are values built.
public enum ConfigFile {
    /// Largest configuration file read (the repository's configs are under 2 KB).
    public static let maxBytes = 1 << 20
    /// Most values (scalars, lists, mappings) a configuration may hold once its aliases are
    /// expanded (a configuration names a few dozen flags).
    public static let maxNodes = 10_000

    public enum Error: Swift.Error, CustomStringConvertible {
        case unreadable(String, reason: String)
        case invalid(String, String)
        public var description: String {
            switch self {
            case let .unreadable(p, r): return "--config \(p): cannot read the file: \(r)"
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
        try arguments(fromText: try read(path), path: path)
    }

    /// The file's text, refusing directories, files over `maxBytes` and invalid UTF-8.
    static func read(_ path: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw Error.unreadable(path, reason: "no such file")
        }
        guard !isDir.boolValue else { throw Error.unreadable(path, reason: "it is a directory; expected a YAML or JSON file") }
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        guard size <= maxBytes else {
            throw Error.invalid(path, "\(size) bytes; a run configuration is a small mapping of flag names (at most \(maxBytes) bytes)")
        }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw Error.unreadable(path, reason: ErrorText.reason(error, path: path))
        }
        guard data.count <= maxBytes else {
            throw Error.invalid(path, "more than \(maxBytes) bytes; a run configuration is a small mapping of flag names")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw Error.invalid(path, "not UTF-8 text") }
        return text
    }

    /// The flags of a configuration's text (`path` names it in errors).
    public static func arguments(fromText text: String, path: String) throws -> [String] {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw Error.invalid(path, "not valid YAML/JSON (\(error))") }
        guard let root, case let .mapping(mapping) = root else {
            throw Error.invalid(path, "expected a mapping of flag names to values")
        }
        // Count the expanded document before anything is built from it.
        var budget = maxNodes
        for (key, value) in mapping {
            guard countNodes(key, &budget), countNodes(value, &budget) else {
                let line = key.mark.map { " (line \($0.line))" } ?? ""
                throw Error.invalid(path, "'\(key.string ?? "?")'\(line) expands to more than \(maxNodes) values once its YAML aliases "
                    + "(*name) are expanded; a run configuration is a small mapping of flag names to scalars or lists of scalars")
            }
        }
        // Yams' constructor traps on a key that is not a scalar (`[a, b]: 1`, `{x: 1}: 2`, `*alias: 3`).
        if let key = nonScalarKey(in: root) {
            let line = key.mark.map { " (line \($0.line))" } ?? ""
            let what: String
            switch key {
            case .sequence: what = "a list"
            case .mapping: what = "a mapping"
            default: what = "a YAML alias"
            }
            throw Error.invalid(path, "a key\(line) is \(what); expected flag names (plain scalars) as keys")
        }
        guard let map = Constructor.default.any(from: root) as? [String: Any] else {
            throw Error.invalid(path, "expected a mapping of flag names to values")
        }
        func line(_ key: String) -> String {
            mapping.first { $0.key.string == key }?.key.mark.map { " (line \($0.line))" } ?? ""
        }
        var out: [String] = []
        for key in map.keys.sorted() {
            let flag = "--" + key.replacingOccurrences(of: "_", with: "-")
            switch map[key]! {
            case let b as Bool:
                if b { out.append(flag) }
            case let list as [Any]:
                guard list.allSatisfy({ !($0 is [Any]) && !($0 is [String: Any]) }) else {
                    throw Error.invalid(path, "'\(key)'\(line(key)) must be a scalar or a list of scalars")
                }
                out += [flag, list.map { "\($0)" }.joined(separator: ",")]
            case is [String: Any]:
                throw Error.invalid(path, "'\(key)'\(line(key)) must be a scalar or a list")
            case let v:
                out += [flag, "\(v)"]
            }
        }
        return out
    }

    /// The first mapping key in `node` that is not a scalar. Called once `countNodes` has bounded
    /// the document, so the walk is bounded too.
    static func nonScalarKey(in node: Node) -> Node? {
        switch node {
        case .scalar, .alias:
            return nil
        case let .sequence(s):
            return s.lazy.compactMap { nonScalarKey(in: $0) }.first
        case let .mapping(m):
            for (k, v) in m {
                guard case .scalar = k else { return k }
                if let bad = nonScalarKey(in: v) { return bad }
            }
            return nil
        }
    }

    /// Counts `node` and everything under it against `budget`; false once it is spent. Stops
    /// as soon as the budget is gone, so a document that expands exponentially costs no more
    /// than `maxNodes` steps.
    static func countNodes(_ node: Node, _ budget: inout Int) -> Bool {
        budget -= 1
        guard budget >= 0 else { return false }
        switch node {
        case .scalar, .alias:
            return true
        case let .sequence(s):
            for n in s where !countNodes(n, &budget) { return false }
            return true
        case let .mapping(m):
            for (k, v) in m where !countNodes(k, &budget) || !countNodes(v, &budget) { return false }
            return true
        }
    }
}
