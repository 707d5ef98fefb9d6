import AsyncHTTPClient
import Crypto
import Foundation
import NIOCore
import NIOHTTP1

/// What `HEAD /REPO/resolve/COMMIT/FILE` tells about a file (huggingface_hub's
/// `get_hf_file_metadata`).
struct FileMetadata {
    /// `X-Linked-Etag` (LFS files: their sha256) or `ETag` (the git blob id), unquoted.
    let etag: String
    let commit: String?
    /// `X-Linked-Size` or `Content-Length`.
    let size: Int64?
    /// Where the bytes are: the redirect target (a CDN, another host) or the resolve URL.
    let location: String
    /// An LFS file (`X-Linked-Etag` present): verified against its sha256.
    let isLFS: Bool
}

/// A file's transfer, reported while it runs (bytes include a resumed part).
public struct DownloadProgress: Sendable {
    public let file: String
    public let received: Int64
    public let total: Int64?
    /// Bytes of this run (not of the resumed part) and the seconds they took.
    public let transferred: Int64
    public let seconds: Double
    public let finished: Bool
}

/// HTTP against the Hub with AsyncHTTPClient: the token goes only to `HF_ENDPOINT`'s host,
/// redirects are followed by hand (relative ones only for HEAD, as huggingface_hub does, so the
/// Hub's own headers are read; any host for the bytes).
final class HubTransport {
    let settings: HubSettings
    let client: HTTPClient
    let endpointHost: String?
    /// Attempts for one file's bytes when the connection breaks (each resumes where the last stopped).
    let attempts = 5

    init(settings: HubSettings) {
        self.settings = settings
        var config = HTTPClient.Configuration()
        config.redirectConfiguration = .disallow
        // A refused connection is retried until the connect timeout: a Hub that is down fails in 10 s.
        config.timeout = .init(connect: .seconds(10), read: .seconds(settings.readTimeoutSeconds))
        client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: config)
        endpointHost = URLComponents(string: settings.endpoint).map { "\($0.host ?? ""):\($0.port ?? -1)" }
    }

    func shutdown() async { try? await client.shutdown() }

    static func escape(_ s: String, keepSlash: Bool) -> String {
        let allowed = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~" + (keepSlash ? "/" : ""))
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }

    func apiURL(_ repo: String, revision: String) -> String {
        "\(settings.endpoint)/api/models/\(repo)/revision/\(Self.escape(revision, keepSlash: false))"
    }

    func resolveURL(_ repo: String, revision: String, file: String) -> String {
        "\(settings.endpoint)/\(repo)/resolve/\(Self.escape(revision, keepSlash: false))/\(Self.escape(file, keepSlash: true))"
    }

    private func request(_ url: String, method: HTTPMethod, headers extra: [(String, String)] = []) -> HTTPClientRequest {
        var r = HTTPClientRequest(url: url)
        r.method = method
        r.headers.add(name: "User-Agent", value: "finetune-hub/1")
        let components = URLComponents(string: url)
        if let token = settings.token, let c = components, "\(c.host ?? ""):\(c.port ?? -1)" == endpointHost {
            r.headers.add(name: "Authorization", value: "Bearer \(token)")
        }
        for (k, v) in extra { r.headers.add(name: k, value: v) }
        return r
    }

    private func send(_ r: HTTPClientRequest, deadline: NIODeadline) async throws -> HTTPClientResponse {
        do { return try await client.execute(r, deadline: deadline) } catch {
            throw HubError.transfer(url: r.url, reason: Self.reason(error))
        }
    }

    static func reason(_ error: Error) -> String {
        if let e = error as? HubError { return e.description }
        return "the connection failed: \(error)"
    }

    /// An absolute URL for `Location` relative to `base`.
    static func absolute(_ location: String, base: String) -> String {
        URL(string: location, relativeTo: URL(string: base))?.absoluteString ?? location
    }

    /// The error the Hub's answer stands for (huggingface_hub's `hf_raise_for_status`), or nil
    /// for a success or a redirect.
    func failure(_ response: HTTPClientResponse, url: String, repo: String, revision: String, file: String?) -> HubError? {
        let status = Int(response.status.code)
        guard status >= 400 else { return nil }
        let code = response.headers.first(name: "X-Error-Code") ?? ""
        let message = response.headers.first(name: "X-Error-Message") ?? ""
        switch (code, status) {
        case ("RevisionNotFound", _): return .revisionNotFound(repo: repo, revision: revision)
        case ("EntryNotFound", _): return .fileNotFound(repo: repo, revision: revision, file: file ?? "", available: [])
        case (_, 401) where settings.token == nil, (_, 403) where settings.token == nil:
            return .needsToken(repo: repo, endpoint: settings.endpoint, status: status)
        case ("GatedRepo", _), (_, 401), (_, 403): return .unauthorized(repo: repo, status: status, message: message)
        case ("RepoNotFound", _), (_, 404) where file == nil: return .repoNotFound(repo: repo, endpoint: settings.endpoint)
        case (_, 404): return .fileNotFound(repo: repo, revision: revision, file: file ?? "", available: [])
        default: return .badResponse(url: url, reason: "HTTP \(status)\(message.isEmpty ? "" : ": " + message)")
        }
    }

    /// `GET /api/models/REPO/revision/REV`: the commit and the repository's files.
    func listing(_ repo: String, revision: String) async throws -> (commit: String, files: Set<String>) {
        let url = apiURL(repo, revision: revision)
        let response = try await send(request(url, method: .GET), deadline: .now() + .seconds(120))
        if let e = failure(response, url: url, repo: repo, revision: revision, file: nil) { throw e }
        let body: ByteBuffer
        do { body = try await response.body.collect(upTo: 64 << 20) } catch { throw HubError.transfer(url: url, reason: Self.reason(error)) }
        guard response.status == .ok,
              let obj = try? JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any],
              let sha = obj["sha"] as? String, HubModelName.isCommitHash(sha), let siblings = obj["siblings"] as? [[String: Any]] else {
            throw HubError.badResponse(url: url, reason: "HTTP \(response.status.code): expected the model's JSON with \"sha\" (a commit hash) and \"siblings\"")
        }
        let files = siblings.compactMap { $0["rfilename"] as? String }.filter { HubModelName.isSafeRelativePath(Substring($0)) }
        return (sha, Set(files))
    }

    /// `HEAD /REPO/resolve/COMMIT/FILE`, following relative redirects only.
    func metadata(_ repo: String, commit: String, file: String) async throws -> FileMetadata {
        var url = resolveURL(repo, revision: commit, file: file)
        for _ in 0..<10 {
            let response = try await send(request(url, method: .HEAD, headers: [("Accept-Encoding", "identity")]), deadline: .now() + .seconds(60))
            if let e = failure(response, url: url, repo: repo, revision: commit, file: file) { throw e }
            let location = response.headers.first(name: "Location")
            if (300..<400).contains(Int(response.status.code)), let loc = location, URL(string: loc)?.host == nil {
                url = Self.absolute(loc, base: url)
                continue
            }
            let h = response.headers
            let linked = h.first(name: "X-Linked-Etag")
            guard let raw = linked ?? h.first(name: "ETag") else {
                throw HubError.badResponse(url: url, reason: "no ETag or X-Linked-Etag header (is HF_ENDPOINT a Hugging Face Hub?)")
            }
            let etag = Self.unquote(raw)
            guard !etag.isEmpty, etag.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }) else {
                throw HubError.badResponse(url: url, reason: "ETag '\(raw)' is not a hash")
            }
            let size = (h.first(name: "X-Linked-Size") ?? h.first(name: "Content-Length")).flatMap { Int64($0) }
            return FileMetadata(etag: etag, commit: h.first(name: "X-Repo-Commit"), size: size,
                                location: location.map { Self.absolute($0, base: url) } ?? url, isLFS: linked != nil)
        }
        throw HubError.badResponse(url: url, reason: "more than 10 redirects")
    }

    static func unquote(_ etag: String) -> String {
        var e = Substring(etag.trimmingCharacters(in: .whitespaces))
        if e.hasPrefix("W/") { e = e.dropFirst(2) }
        return String(e.trimmingCharacters(in: CharacterSet(charactersIn: "\"")))
    }

    /// Downloads `url` into `partial`, resuming from its current size with a Range request and
    /// again after a broken connection (up to `attempts` tries).
    func download(_ url: String, to partial: URL, file: String, size: Int64?, progress: (@Sendable (DownloadProgress) -> Void)?) async throws {
        let fm = FileManager.default
        if !fm.fileExists(atPath: partial.path) { fm.createFile(atPath: partial.path, contents: nil) }
        let start = Date()
        var transferred: Int64 = 0
        var lastError: HubError?
        for attempt in 0..<attempts {
            if attempt > 0 { try? await Task.sleep(nanoseconds: UInt64(attempt) * 300_000_000) }
            do {
                try await fetch(url, to: partial, file: file, size: size, start: start, transferred: &transferred, progress: progress)
                return
            } catch let e as HubError {
                guard case .transfer = e else { throw e }
                lastError = e
            }
        }
        throw lastError!
    }

    private func fetch(_ first: String, to partial: URL, file: String, size: Int64?, start: Date, transferred: inout Int64,
                       progress: (@Sendable (DownloadProgress) -> Void)?) async throws {
        guard let handle = FileHandle(forUpdatingAtPath: partial.path) else {
            throw HubError.cache(path: partial.path, reason: "cannot open the partial download for writing")
        }
        defer { try? handle.close() }
        var offset = Int64(try handle.seekToEnd())
        if let size, offset > size { try handle.truncate(atOffset: 0); try handle.seek(toOffset: 0); offset = 0 }
        if let size, offset == size, size > 0 { return }
        var url = first
        var response: HTTPClientResponse!
        for hop in 0...10 {
            guard hop < 10 else { throw HubError.badResponse(url: url, reason: "more than 10 redirects") }
            let range = offset > 0 ? [("Range", "bytes=\(offset)-")] : []
            response = try await send(request(url, method: .GET, headers: range + [("Accept-Encoding", "identity")]), deadline: .distantFuture)
            if (300..<400).contains(Int(response.status.code)), let loc = response.headers.first(name: "Location") {
                url = Self.absolute(loc, base: url)
                continue
            }
            break
        }
        switch response.status.code {
        case 206:
            let from = response.headers.first(name: "Content-Range").flatMap { $0.split(whereSeparator: { " -/".contains($0) }).dropFirst().first }.flatMap { Int64($0) }
            guard from == offset else { throw HubError.badResponse(url: url, reason: "Content-Range does not start at byte \(offset)") }
        case 200:
            if offset > 0 { try handle.truncate(atOffset: 0); try handle.seek(toOffset: 0); offset = 0 }
        case 416 where offset > 0:
            // The partial file is not a prefix the server recognises: start over.
            try handle.truncate(atOffset: 0)
            throw HubError.transfer(url: url, reason: "HTTP 416 for a resumed download; restarting")
        default:
            throw HubError.badResponse(url: url, reason: "HTTP \(response.status.code) for the file's bytes")
        }
        var received = offset
        var lastReport = Date.distantPast
        do {
            for try await chunk in response.body {
                try chunk.withUnsafeReadableBytes { try handle.write(contentsOf: $0) }
                received += Int64(chunk.readableBytes)
                transferred += Int64(chunk.readableBytes)
                if let progress, Date().timeIntervalSince(lastReport) >= 0.2 {
                    lastReport = Date()
                    progress(.init(file: file, received: received, total: size, transferred: transferred, seconds: lastReport.timeIntervalSince(start), finished: false))
                }
            }
        } catch let e as HubError {
            throw e
        } catch {
            throw HubError.transfer(url: url, reason: "the connection broke after \(received) bytes: \(error)")
        }
        progress?(.init(file: file, received: received, total: size, transferred: transferred, seconds: Date().timeIntervalSince(start), finished: true))
    }

    /// The sha256 of a file, hex, read in 8 MiB pieces.
    static func sha256(_ url: URL) throws -> String {
        guard let h = FileHandle(forReadingAtPath: url.path) else { throw HubError.cache(path: url.path, reason: "cannot read the download") }
        defer { try? h.close() }
        var hasher = SHA256()
        while let d = try h.read(upToCount: 8 << 20), !d.isEmpty { hasher.update(data: d) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
