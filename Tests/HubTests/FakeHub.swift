import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A local stand-in for the Hugging Face Hub on 127.0.0.1, playing the endpoints the client
/// uses: `GET /api/models/REPO/revision/REV`, `HEAD`/`GET /REPO/resolve/REV/FILE` (LFS files
/// answered with a 302 to a second server, the "CDN", as another host — `localhost`, on another
/// port — with `X-Linked-Etag`
/// and `X-Linked-Size`), and the CDN's `GET /blobs/SHA256` with Range support. Its error
/// answers are the Hub's: 401 `RepoNotFound` to anonymous requests for a missing or private
/// repository, 404 `RepoNotFound` with a token, 404 `RevisionNotFound`. Every request is logged.
final class FakeHub: @unchecked Sendable {
    struct Request { let server: String; let method: String; let uri: String; let headers: HTTPHeaders }
    struct Repo {
        var refs: [String: String] = [:]
        var commits: [String: [String: Data]] = [:]
        var token: String?
    }

    private let lock = NSLock()
    private var repos: [String: Repo] = [:]
    private var _requests: [Request] = []
    /// Files whose first CDN transfer stops halfway (the connection is closed).
    var cutFirstTransfer: Set<String> { get { lock.withLock { _cut } } set { lock.withLock { _cut = newValue } } }
    private var _cut: Set<String> = []
    /// Files whose CDN bytes differ from what the Hub's sha256 says.
    var corrupt: Set<String> { get { lock.withLock { _corrupt } } set { lock.withLock { _corrupt = newValue } } }
    private var _corrupt: Set<String> = []

    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private var channels: [Channel] = []
    private(set) var hubURL = "", cdnURL = ""

    static func isLFS(_ file: String) -> Bool { file.hasSuffix(".safetensors") || file.hasSuffix(".gguf") || file.hasSuffix(".bin") }
    static func sha256(_ d: Data) -> String { SHA256.hash(data: d).map { String(format: "%02x", $0) }.joined() }
    /// A stand-in for the git blob id of a regular file (40 hex digits).
    static func oid(_ d: Data) -> String { String(sha256(Data("blob".utf8) + d).prefix(40)) }

    var requests: [Request] { lock.withLock { _requests } }

    /// Adds a commit of `repo` with `files`, pointed at by `revisions` (the commit hash is
    /// derived from the content).
    @discardableResult
    func add(_ repo: String, files: [String: Data], revisions: [String] = ["main"], token: String? = nil) -> String {
        let commit = String(Self.sha256(Data((repo + files.keys.sorted().joined()).utf8) + Data(files.values.map(Self.sha256).sorted().joined().utf8)).prefix(40))
        lock.withLock {
            var r = repos[repo] ?? Repo()
            r.commits[commit] = files
            for rev in revisions { r.refs[rev] = commit }
            r.token = token
            repos[repo] = r
        }
        return commit
    }

    func start() async throws {
        for role in ["hub", "cdn"] {
            let bootstrap = ServerBootstrap(group: group)
                .serverChannelOption(ChannelOptions.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { ch in
                    ch.pipeline.configureHTTPServerPipeline().flatMap { ch.pipeline.addHandler(Handler(hub: self, role: role)) }
                }
            let ch = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
            channels.append(ch)
            let url = "http://127.0.0.1:\(ch.localAddress!.port!)"
            if role == "hub" { hubURL = url } else { cdnURL = url }
        }
    }

    func stop() async {
        for c in channels { try? await c.close() }
        channels = []
        try? await group.shutdownGracefully()
    }

    // MARK: - Answers

    struct Reply {
        var status: HTTPResponseStatus
        var headers: [(String, String)] = []
        var body = Data()
        /// Close the connection after this many body bytes (a cut transfer).
        var cutAfter: Int?
    }

    func reply(role: String, head: HTTPRequestHead) -> Reply {
        lock.withLock { _requests.append(Request(server: role, method: head.method.rawValue, uri: head.uri, headers: head.headers)) }
        let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
        return role == "cdn" ? cdn(path: path, head: head) : hub(path: path, head: head)
    }

    private func hub(path: String, head: HTTPRequestHead) -> Reply {
        let parts = path.split(separator: "/").map { $0.removingPercentEncoding ?? String($0) }
        let auth = head.headers.first(name: "Authorization")
        let api = parts.count == 6 && parts[0] == "api" && parts[1] == "models" && parts[4] == "revision"
        let resolve = parts.count >= 5 && parts[2] == "resolve"
        guard api || resolve else { return Reply(status: .notFound) }
        let repoName = api ? "\(parts[2])/\(parts[3])" : "\(parts[0])/\(parts[1])"
        let revision = api ? parts[5] : parts[3]
        guard let repo = lock.withLock({ repos[repoName] }), repo.token == nil || auth == "Bearer \(repo.token!)" else {
            return Reply(status: auth == nil ? .unauthorized : .notFound, headers: [("X-Error-Code", "RepoNotFound"), ("X-Error-Message", "Repository not found")])
        }
        guard let commit = repo.refs[revision] ?? (repo.commits[revision] != nil ? revision : nil), let files = repo.commits[commit] else {
            return Reply(status: .notFound, headers: [("X-Error-Code", "RevisionNotFound"), ("X-Error-Message", "Invalid rev id: \(revision)")])
        }
        if api {
            let siblings = files.keys.sorted().map { ["rfilename": $0] }
            let json = try! JSONSerialization.data(withJSONObject: ["id": repoName, "sha": commit, "siblings": siblings] as [String: Any])
            return Reply(status: .ok, headers: [("Content-Type", "application/json")], body: json)
        }
        let file = parts[4...].joined(separator: "/")
        guard let data = files[file] else { return Reply(status: .notFound, headers: [("X-Error-Code", "EntryNotFound")]) }
        var headers = [("X-Repo-Commit", commit), ("ETag", "\"\(Self.oid(data))\"")]
        if Self.isLFS(file) {
            let sha = Self.sha256(data)
            headers += [("X-Linked-Etag", "\"\(sha)\""), ("X-Linked-Size", "\(data.count)"), ("Location", "\(cdnURL.replacingOccurrences(of: "127.0.0.1", with: "localhost"))/blobs/\(sha)?file=\(file)")]
            return Reply(status: .found, headers: headers)
        }
        headers.append(("Content-Length", "\(data.count)"))
        return Reply(status: .ok, headers: headers, body: head.method == .HEAD ? Data() : data)
    }

    private func cdn(path: String, head: HTTPRequestHead) -> Reply {
        let sha = path.split(separator: "/").last.map(String.init) ?? ""
        let found: (String, Data)? = lock.withLock {
            for r in repos.values { for files in r.commits.values { for (f, d) in files where Self.sha256(d) == sha { return (f, d) } } }
            return nil
        }
        guard let found else { return Reply(status: .notFound) }
        let file = found.0
        var data = found.1
        if corrupt.contains(file) { data[data.count / 2] ^= 0xFF }
        var start = 0
        var status = HTTPResponseStatus.ok
        var headers: [(String, String)] = []
        if let range = head.headers.first(name: "Range"), range.hasPrefix("bytes="), let s = Int(range.dropFirst(6).split(separator: "-").first ?? "") {
            guard s < data.count else { return Reply(status: .rangeNotSatisfiable) }
            start = s
            status = .partialContent
            headers.append(("Content-Range", "bytes \(s)-\(data.count - 1)/\(data.count)"))
        }
        var reply = Reply(status: status, headers: headers, body: data.subdata(in: start..<data.count))
        let cut = lock.withLock { _cut.remove(file) != nil }
        if cut { reply.cutAfter = reply.body.count / 2 }
        return reply
    }

    final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart
        let hub: FakeHub, role: String
        var head: HTTPRequestHead?
        init(hub: FakeHub, role: String) { self.hub = hub; self.role = role }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h): head = h
            case .body: break
            case .end:
                guard let head else { return }
                let r = hub.reply(role: role, head: head)
                var headers = HTTPHeaders(r.headers)
                if head.method != .HEAD || headers["Content-Length"].isEmpty { headers.replaceOrAdd(name: "Content-Length", value: "\(r.body.count)") }
                context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: r.status, headers: headers))), promise: nil)
                let body = r.cutAfter.map { r.body.prefix($0) } ?? r.body
                if r.cutAfter != nil {
                    // Every byte of the first half goes out, then the connection closes.
                    context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body))))).whenComplete { _ in context.close(promise: nil) }
                    return
                }
                if head.method != .HEAD, !body.isEmpty {
                    context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
                }
                context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
