import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Where and how models are found and fetched, from the environment huggingface_hub reads.
public struct HubSettings: Sendable {
    /// `HF_ENDPOINT` without a trailing slash (default https://huggingface.co).
    public var endpoint: String
    /// `HF_TOKEN` (else `HUGGING_FACE_HUB_TOKEN`, else the file `huggingface-cli login` wrote).
    public var token: String?
    /// The hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`.
    public var cache: URL
    /// `HF_HUB_OFFLINE=1` (or `--offline`): never touch the network.
    public var offline: Bool
    /// Seconds a transfer may go without a byte before it is retried (60; tests whose process
    /// can leave the download's task unscheduled for minutes set more).
    public var readTimeoutSeconds: Int64 = 60

    public init(endpoint: String, token: String?, cache: URL, offline: Bool) {
        self.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        self.token = token
        self.cache = cache
        self.offline = offline
    }

    /// The settings huggingface_hub would use in `environment`; `offline` forces offline mode.
    public init(environment env: [String: String] = ProcessInfo.processInfo.environment, offline: Bool = false) {
        func value(_ k: String) -> String? { env[k].flatMap { $0.isEmpty ? nil : $0 } }
        let home = value("HOME") ?? NSHomeDirectory()
        let hfHome = value("HF_HOME") ?? ((value("XDG_CACHE_HOME") ?? home + "/.cache") + "/huggingface")
        let cache = value("HF_HUB_CACHE") ?? value("HUGGINGFACE_HUB_CACHE") ?? hfHome + "/hub"
        let tokenFile = value("HF_TOKEN_PATH") ?? hfHome + "/token"
        let token = value("HF_TOKEN") ?? value("HUGGING_FACE_HUB_TOKEN")
            ?? (try? String(contentsOfFile: tokenFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        let flag = ["1", "on", "yes", "true"].contains(value("HF_HUB_OFFLINE")?.lowercased() ?? "")
        self.init(endpoint: value("HF_ENDPOINT") ?? "https://huggingface.co", token: token.flatMap { $0.isEmpty ? nil : $0 },
                  cache: URL(fileURLWithPath: (cache as NSString).expandingTildeInPath), offline: offline || flag)
    }
}

/// The Hugging Face hub cache, in huggingface_hub's layout (so that transformers and
/// huggingface_hub find what this writes, and this finds what they wrote):
///
///     models--ORG--NAME/blobs/ETAG                  file contents (ETAG: the sha256 of an LFS file, else the git blob id)
///     models--ORG--NAME/blobs/ETAG.incomplete       a download in progress (resumed with a Range request)
///     models--ORG--NAME/refs/REVISION               the commit hash the branch or tag pointed at
///     models--ORG--NAME/snapshots/COMMIT/FILE       a relative symlink to ../../blobs/ETAG
///     .locks/models--ORG--NAME/ETAG.lock            held while ETAG is downloaded
struct HubCache {
    let root: URL
    let fm = FileManager.default

    func folder(_ repo: String) -> URL {
        root.appendingPathComponent("models--" + repo.replacingOccurrences(of: "/", with: "--"))
    }

    func snapshot(_ repo: String, commit: String) -> URL {
        folder(repo).appendingPathComponent("snapshots").appendingPathComponent(commit)
    }

    func blob(_ repo: String, etag: String) -> URL {
        folder(repo).appendingPathComponent("blobs").appendingPathComponent(etag)
    }

    /// The commit `revision` stands for here: itself when it is a commit hash, else what
    /// `refs/REVISION` holds; nil when the cache knows nothing of it.
    func commit(_ repo: String, revision: String) -> String? {
        if HubModelName.isCommitHash(revision) { return revision }
        let ref = folder(repo).appendingPathComponent("refs").appendingPathComponent(revision)
        guard let text = try? String(contentsOf: ref, encoding: .utf8) else { return nil }
        let c = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return HubModelName.isCommitHash(c) ? c : nil
    }

    /// The files of a snapshot whose links resolve, as paths relative to it.
    func files(in snapshot: URL) -> Set<String> {
        guard let e = fm.enumerator(at: snapshot, includingPropertiesForKeys: nil) else { return [] }
        var out = Set<String>()
        let prefix = snapshot.standardizedFileURL.path + "/"
        for case let u as URL in e {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: u.path, isDirectory: &isDir), !isDir.boolValue else { continue }
            let p = u.standardizedFileURL.path
            if p.hasPrefix(prefix) { out.insert(String(p.dropFirst(prefix.count))) }
        }
        return out
    }

    /// Points `refs/REVISION` at `commit` (nothing for a revision that is a commit hash).
    func writeRef(_ repo: String, revision: String, commit: String) throws {
        guard revision != commit else { return }
        let ref = folder(repo).appendingPathComponent("refs").appendingPathComponent(revision)
        if (try? String(contentsOf: ref, encoding: .utf8)) == commit { return }
        try create(ref.deletingLastPathComponent())
        do { try Data(commit.utf8).write(to: ref, options: .atomic) } catch {
            throw HubError.cache(path: ref.path, reason: "cannot write the ref: \(error.localizedDescription)")
        }
    }

    /// Links `snapshots/COMMIT/FILE` to the blob `etag` (relative, as huggingface_hub does),
    /// replacing any previous link atomically.
    func link(_ repo: String, commit: String, file: String, etag: String) throws {
        let pointer = snapshot(repo, commit: commit).appendingPathComponent(file)
        try create(pointer.deletingLastPathComponent())
        let depth = file.split(separator: "/").count - 1
        let target = String(repeating: "../", count: 2 + depth) + "blobs/" + etag
        let temporary = pointer.deletingLastPathComponent().appendingPathComponent(".\(pointer.lastPathComponent).\(getpid()).link")
        try? fm.removeItem(at: temporary)
        do {
            try fm.createSymbolicLink(atPath: temporary.path, withDestinationPath: target)
            guard rename(temporary.path, pointer.path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        } catch {
            try? fm.removeItem(at: temporary)
            throw HubError.cache(path: pointer.path, reason: "cannot link the snapshot file: \(error.localizedDescription)")
        }
    }

    func create(_ dir: URL) throws {
        do { try fm.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
            throw HubError.cache(path: dir.path, reason: "cannot create the cache directory: \(error.localizedDescription)")
        }
    }

    /// Runs `body` holding `.locks/models--ORG--NAME/ETAG.lock` (flock, as huggingface_hub's
    /// filelock), so that two processes (MPI ranks, or transformers) never write one blob at once.
    func withLock<T>(_ repo: String, etag: String, _ body: () async throws -> T) async throws -> T {
        let dir = root.appendingPathComponent(".locks").appendingPathComponent(folder(repo).lastPathComponent)
        try create(dir)
        let path = dir.appendingPathComponent(etag + ".lock").path
        let fd = open(path, O_CREAT | O_RDWR, 0o644)
        guard fd >= 0 else { throw HubError.cache(path: path, reason: "cannot open the lock file: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard flock(fd, LOCK_EX) == 0 else { throw HubError.cache(path: path, reason: "cannot lock: \(String(cString: strerror(errno)))") }
        defer { flock(fd, LOCK_UN) }
        return try await body()
    }
}
