import Foundation

/// A model named on the Hugging Face Hub: `ORG/NAME[@REVISION][:FILE]`, where FILE is one file
/// of the repository (`model-Q4_K_M.gguf`) or a GGUF quantisation tag (`Q4_K_M`).
public struct HubModelName: Equatable, Sendable, CustomStringConvertible {
    /// `ORG/NAME`.
    public let repo: String
    /// A branch, tag or commit hash (`main` when none is given).
    public let revision: String
    /// A file of the repository, or a quantisation tag (no `.gguf`), or nil for the model.
    public let file: String?

    public init(repo: String, revision: String = "main", file: String? = nil) {
        self.repo = repo
        self.revision = revision
        self.file = file
    }

    /// Parses `ORG/NAME[@REVISION][:FILE]`; nil when `text` is not of that form (then it is a
    /// path). The repository id follows the Hub's rules: two parts of letters, digits, `-`, `_`
    /// and `.`, neither starting nor ending with `-` or `.`, no `--` or `..`, at most 96
    /// characters.
    public init?(parsing text: String) {
        var rest = Substring(text)
        var file: String?
        if let colon = rest.lastIndex(of: ":") {
            let f = rest[rest.index(after: colon)...]
            guard !f.isEmpty, Self.isSafeRelativePath(f) else { return nil }
            file = String(f)
            rest = rest[..<colon]
        }
        var revision = "main"
        if let at = rest.firstIndex(of: "@") {
            let r = rest[rest.index(after: at)...]
            guard !r.isEmpty, Self.isSafeRelativePath(r) else { return nil }
            revision = String(r)
            rest = rest[..<at]
        }
        let parts = rest.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, rest.count <= 96, parts.allSatisfy(Self.isRepoPart) else { return nil }
        self.init(repo: String(rest), revision: revision, file: file)
    }

    public var description: String {
        repo + (revision == "main" ? "" : "@" + revision) + (file.map { ":" + $0 } ?? "")
    }

    /// True when `file` names a quantisation tag rather than a file.
    public var isQuantTag: Bool { file.map { !$0.lowercased().hasSuffix(".gguf") && !$0.contains("/") } ?? false }

    /// A 40-hex-digit commit hash.
    public static func isCommitHash(_ s: String) -> Bool {
        s.utf8.count == 40 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    static func isRepoPart(_ p: Substring) -> Bool {
        guard let first = p.first, let last = p.last, !"-.".contains(first), !"-.".contains(last) else { return false }
        guard !p.contains("--"), !p.contains("..") else { return false }
        return p.unicodeScalars.allSatisfy { ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || "-_.".unicodeScalars.contains($0) }
    }

    /// A relative path with no empty, `.` or `..` component and no control characters (it
    /// becomes a path under the cache).
    static func isSafeRelativePath(_ p: Substring) -> Bool {
        guard !p.hasPrefix("/"), !p.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0 == "\\" }) else { return false }
        return p.split(separator: "/", omittingEmptySubsequences: false).allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }
}

/// What went wrong resolving a Hub name; every case names the repository (and the file or
/// revision it is about). `isBadInput` tells bad input (exit 2) from a failed transfer.
public enum HubError: Error, CustomStringConvertible, Equatable {
    /// The Hub answered 404 for the repository.
    case repoNotFound(repo: String, endpoint: String)
    /// 401/403 without a token: the Hub's answer for a private, gated or missing repository.
    case needsToken(repo: String, endpoint: String, status: Int)
    case revisionNotFound(repo: String, revision: String)
    /// 401/403 with a token, or a gated repository.
    case unauthorized(repo: String, status: Int, message: String)
    /// A file the engine needs, or the one asked for, is not in the repository.
    case fileNotFound(repo: String, revision: String, file: String, available: [String])
    /// The repository has nothing the engine can load (no config.json or no safetensors weights).
    case notAModel(repo: String, revision: String, reason: String)
    /// A quantisation tag matching no file, or several.
    case quantTag(repo: String, tag: String, matches: [String], available: [String])
    /// A downloaded LFS file whose sha256 (or size) differs from the Hub's; it was deleted and
    /// is not in the snapshot.
    case corrupted(repo: String, file: String, expected: String, actual: String)
    /// Offline (`HF_HUB_OFFLINE=1` or `--offline`) and not in the cache.
    case offlineMiss(name: String, cache: String, reason: String)
    /// A response the client cannot use (status, missing header, bad JSON).
    case badResponse(url: String, reason: String)
    /// The connection failed (after retries).
    case transfer(url: String, reason: String)
    /// The cache directory cannot be written.
    case cache(path: String, reason: String)

    public var isBadInput: Bool {
        switch self {
        case .transfer, .badResponse: return false
        default: return true
        }
    }

    public var description: String {
        switch self {
        case let .repoNotFound(repo, endpoint):
            return "--model \(repo): no such model repository on \(endpoint) (HTTP 404)"
        case let .needsToken(repo, endpoint, status):
            return "--model \(repo): \(endpoint) refused anonymous access (HTTP \(status)): the repository does not exist, "
                + "or it is private or gated: set HF_TOKEN to a token that can read it"
        case let .revisionNotFound(repo, revision):
            return "--model \(repo)@\(revision): the repository has no revision (branch, tag or commit) '\(revision)'"
        case let .unauthorized(repo, status, message):
            return "--model \(repo): access refused (HTTP \(status))\(message.isEmpty ? "" : ": " + message); "
                + "check that HF_TOKEN can read it (a gated model needs its terms accepted on the Hub)"
        case let .fileNotFound(repo, revision, file, available):
            return "--model \(repo)@\(revision): no file '\(file)' in the repository" + Self.listing(available)
        case let .notAModel(repo, revision, reason):
            return "--model \(repo)@\(revision): \(reason)"
        case let .quantTag(repo, tag, matches, available):
            return matches.isEmpty
                ? "--model \(repo):\(tag): no GGUF file of the repository matches the quantisation tag '\(tag)'" + Self.listing(available)
                : "--model \(repo):\(tag): the tag matches several files (\(matches.joined(separator: ", "))); name one as \(repo):FILE.gguf"
        case let .corrupted(repo, file, expected, actual):
            return "--model \(repo): \(file) is corrupted (downloaded \(actual), the Hub says \(expected)); "
                + "it was deleted and is not in the cache: run the command again to download it anew"
        case let .offlineMiss(name, cache, reason):
            return "--model \(name): \(reason) in the Hugging Face cache \(cache), and offline mode (HF_HUB_OFFLINE=1 or --offline) "
                + "forbids downloading: run `finetune inspect --model \(name)` online once (or `huggingface-cli download \(name.split(separator: ":")[0].split(separator: "@")[0])`), then retry"
        case let .badResponse(url, reason):
            return "\(url): \(reason)"
        case let .transfer(url, reason):
            return "\(url): \(reason)"
        case let .cache(path, reason):
            return "\(path): \(reason)"
        }
    }

    static func listing(_ files: [String]) -> String {
        guard !files.isEmpty else { return "" }
        let shown = files.prefix(20).joined(separator: ", ")
        return " (it has: \(shown)\(files.count > 20 ? ", … \(files.count - 20) more" : ""))"
    }
}
