import Foundation

/// Resolves `ORG/NAME[@REVISION][:FILE]` to a local path: a snapshot directory of the Hugging
/// Face cache (or the one file asked for in it), downloading what is missing unless offline.
///
/// A cached model is used without contacting the Hub when its snapshot has what the engine
/// needs (config.json and the safetensors weights, all shards of an index; or the file asked
/// for), so a branch is used at the commit it was downloaded at. Otherwise the Hub lists the
/// revision's files, and only the engine's files are fetched (`ModelFiles`): each one's HEAD
/// gives its commit, ETag and size, the bytes go to `blobs/ETAG.incomplete` (resumed with a
/// Range request), LFS files are checked against their sha256, then moved to `blobs/ETAG` and
/// linked from `snapshots/COMMIT/FILE`; the ref is written last.
public struct Hub: Sendable {
    public let settings: HubSettings
    /// Called while files download (the command line draws a progress bar on stderr).
    public var progress: (@Sendable (DownloadProgress) -> Void)?

    public init(settings: HubSettings, progress: (@Sendable (DownloadProgress) -> Void)? = nil) {
        self.settings = settings
        self.progress = progress
    }

    var cache: HubCache { HubCache(root: settings.cache) }

    /// The local path for `name`: the cache's when it has it, else downloaded (offline: an
    /// `offlineMiss` error saying what to run).
    public func resolve(_ name: HubModelName) async throws -> URL {
        let cached = lookup(name)
        if let url = cached.url { return url }
        guard !settings.offline else { throw HubError.offlineMiss(name: name.description, cache: settings.cache.path, reason: cached.miss) }
        return try await download(name)
    }

    /// `resolve` for synchronous callers (the command line), on a task of its own.
    public func resolveBlocking(_ name: HubModelName) throws -> URL {
        final class Box: @unchecked Sendable { var result: Result<URL, Error> = .failure(CancellationError()) }
        let box = Box(), done = DispatchSemaphore(value: 0)
        Task {
            do { box.result = .success(try await resolve(name)) } catch { box.result = .failure(error) }
            done.signal()
        }
        done.wait()
        return try box.result.get()
    }

    /// The cached path for `name`, or why there is none ("revision main is not", "config.json
    /// is not" …), without touching the network.
    public func lookup(_ name: HubModelName) -> (url: URL?, miss: String) {
        guard let commit = cache.commit(name.repo, revision: name.revision) else {
            return (nil, name.revision == "main" ? "the model is not" : "revision '\(name.revision)' is not")
        }
        let snapshot = cache.snapshot(name.repo, commit: commit)
        let files = cache.files(in: snapshot)
        if let f = name.file {
            guard let file = try? ModelFiles.requested(name, in: files, revision: commit) else { return (nil, "\(f) is not") }
            return (snapshot.appendingPathComponent(file), "")
        }
        if let missing = ModelFiles.missing(in: files, index: { try? Data(contentsOf: snapshot.appendingPathComponent($0)) }) {
            return (nil, "the snapshot \(commit) has \(missing),")
        }
        return (snapshot, "")
    }

    private func download(_ name: HubModelName) async throws -> URL {
        let transport = HubTransport(settings: settings)
        do {
            let url = try await download(name, transport: transport)
            await transport.shutdown()
            return url
        } catch {
            await transport.shutdown()
            throw error
        }
    }

    private func download(_ name: HubModelName, transport: HubTransport) async throws -> URL {
        let (commit, files) = try await transport.listing(name.repo, revision: name.revision)
        let snapshot = cache.snapshot(name.repo, commit: commit)
        let result: URL
        if name.file != nil {
            let file = try ModelFiles.requested(name, in: files, revision: name.revision)
            try await fetch(name.repo, commit: commit, file: file, transport: transport)
            result = snapshot.appendingPathComponent(file)
        } else {
            guard files.contains("config.json"), files.contains(ModelFiles.weights) || files.contains(ModelFiles.index) else {
                throw HubError.notAModel(repo: name.repo, revision: name.revision, reason: ModelFiles.notAModel(files, name: name))
            }
            var wanted = ModelFiles.optional.filter(files.contains)
            if files.contains(ModelFiles.weights) {
                wanted.append(ModelFiles.weights)
            } else {
                try await fetch(name.repo, commit: commit, file: ModelFiles.index, transport: transport)
                let index = snapshot.appendingPathComponent(ModelFiles.index)
                let shards = try ModelFiles.shards(index: try Data(contentsOf: index), file: "\(name.repo)/\(ModelFiles.index)")
                if let absent = shards.first(where: { !files.contains($0) }) {
                    throw HubError.fileNotFound(repo: name.repo, revision: name.revision, file: absent + " (listed in \(ModelFiles.index))",
                                                available: files.sorted())
                }
                wanted += shards
            }
            for f in wanted { try await fetch(name.repo, commit: commit, file: f, transport: transport) }
            result = snapshot
        }
        try cache.writeRef(name.repo, revision: name.revision, commit: commit)
        return result
    }

    /// One file into the snapshot: nothing when it is linked already, a link when its blob is
    /// cached, else a (resumed) download checked against the Hub's size and, for LFS files,
    /// sha256 — a file that fails the check is deleted and never linked.
    private func fetch(_ repo: String, commit: String, file: String, transport: HubTransport) async throws {
        let pointer = cache.snapshot(repo, commit: commit).appendingPathComponent(file)
        if FileManager.default.fileExists(atPath: pointer.path) { return }
        let meta = try await transport.metadata(repo, commit: commit, file: file)
        if let c = meta.commit, c != commit {
            throw HubError.badResponse(url: meta.location, reason: "X-Repo-Commit \(c) is not the commit the listing gave (\(commit))")
        }
        let blob = cache.blob(repo, etag: meta.etag)
        try cache.create(blob.deletingLastPathComponent())
        try await cache.withLock(repo, etag: meta.etag) {
            guard !FileManager.default.fileExists(atPath: blob.path) else { return }
            let partial = blob.appendingPathExtension("incomplete")
            try await transport.download(meta.location, to: partial, file: file, size: meta.size, progress: progress)
            let size = (try? partial.resourceValues(forKeys: [.fileSizeKey]))?.fileSize.map(Int64.init)
            if let expected = meta.size, let size, size != expected {
                try? FileManager.default.removeItem(at: partial)
                throw HubError.corrupted(repo: repo, file: file, expected: "\(expected) bytes", actual: "\(size) bytes")
            }
            if meta.isLFS {
                let digest = try HubTransport.sha256(partial)
                guard digest == meta.etag.lowercased() else {
                    try? FileManager.default.removeItem(at: partial)
                    throw HubError.corrupted(repo: repo, file: file, expected: "sha256 \(meta.etag)", actual: "sha256 \(digest)")
                }
            }
            guard rename(partial.path, blob.path) == 0 else {
                throw HubError.cache(path: blob.path, reason: "cannot move the download into place: \(String(cString: strerror(errno)))")
            }
        }
        try cache.link(repo, commit: commit, file: file, etag: meta.etag)
    }
}
