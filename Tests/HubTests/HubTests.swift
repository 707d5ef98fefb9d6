import Foundation
@testable import Hub
import Testing
import TestSupport

/// The Hub client against `FakeHub` on 127.0.0.1 (no network): downloads into huggingface_hub's
/// cache layout, cache hits without a request, offline mode, resume, verification, errors.
@Suite struct HubDownloadTests {
    /// A small Hugging Face model repository (the llama-tiny fixture's files) plus files the
    /// engine never reads, which must not be downloaded.
    static func tinyRepo() throws -> [String: Data] {
        let dir = FixtureModel.llamaTiny.directory
        return [
            "config.json": try Data(contentsOf: dir.appendingPathComponent("config.json")),
            "generation_config.json": try Data(contentsOf: dir.appendingPathComponent("generation_config.json")),
            "model.safetensors": try Data(contentsOf: dir.appendingPathComponent("model.safetensors")),
            "tokenizer_config.json": Data("{\"chat_template\": \"{{ messages }}\"}".utf8),
            "pytorch_model.bin": Data(repeating: 7, count: 4096),
            "README.md": Data("# tiny\n".utf8),
        ]
    }

    struct Setup {
        let server: FakeHub
        let cache: URL
        let files: [String: Data]
        let commit: String
        func hub(token: String? = nil, offline: Bool = false) -> Hub {
            var settings = HubSettings(endpoint: server.hubURL, token: token, cache: cache, offline: offline)
            // In a whole `swift test` on 2 cores this process's async tasks can wait minutes for a
            // cooperative thread (other suites block theirs on child processes and long
            // computations); a 60 s idle read would then be retried and the request counts differ.
            settings.readTimeoutSeconds = 900
            return Hub(settings: settings)
        }
        func folder(_ repo: String = "test/tiny") -> URL { cache.appendingPathComponent("models--" + repo.replacingOccurrences(of: "/", with: "--")) }
    }

    static func withServer(token: String? = nil, _ body: (Setup) async throws -> Void) async throws {
        let server = FakeHub()
        let files = try tinyRepo()
        let commit = server.add("test/tiny", files: files, revisions: ["main", "v1"], token: token)
        try await server.start()
        let cache = try temporaryDirectory("hub-cache")
        do {
            try await body(Setup(server: server, cache: cache, files: files, commit: commit))
        } catch {
            await server.stop()
            try? FileManager.default.removeItem(at: cache)
            throw error
        }
        await server.stop()
        try? FileManager.default.removeItem(at: cache)
    }

    static func error(_ body: () async throws -> Any) async -> HubError? {
        do { _ = try await body(); return nil } catch { return error as? HubError }
    }

    @Test func freshDownloadWritesHuggingFaceHubsLayout() async throws {
        try await Self.withServer { s in
            let url = try await s.hub().resolve(HubModelName(parsing: "test/tiny")!)
            let snapshot = s.folder().appendingPathComponent("snapshots/\(s.commit)")
            #expect(url.standardizedFileURL.path == snapshot.standardizedFileURL.path)
            #expect(try String(contentsOf: s.folder().appendingPathComponent("refs/main"), encoding: .utf8) == s.commit)
            let fm = FileManager.default
            // Only the engine's files, each a relative link to its blob; LFS blobs named by sha256.
            let linked = try fm.contentsOfDirectory(atPath: snapshot.path).sorted()
            #expect(linked == ["config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json"])
            for f in linked {
                let target = try fm.destinationOfSymbolicLink(atPath: snapshot.appendingPathComponent(f).path)
                let etag = FakeHub.isLFS(f) ? FakeHub.sha256(s.files[f]!) : FakeHub.oid(s.files[f]!)
                #expect(target == "../../blobs/\(etag)")
                #expect(try Data(contentsOf: snapshot.appendingPathComponent(f)) == s.files[f]!, "\(f)")
            }
            let blobs = try fm.contentsOfDirectory(atPath: s.folder().appendingPathComponent("blobs").path)
            #expect(blobs.count == 4 && !blobs.contains { $0.hasSuffix(".incomplete") })
            let fetched = s.server.requests.filter { $0.method == "GET" }.map(\.uri)
            #expect(!fetched.contains { $0.contains("pytorch_model.bin") || $0.contains("README.md") }, "\(fetched)")
            // The LFS bytes came from the other host the Hub redirected to.
            #expect(s.server.requests.contains { $0.server == "cdn" && $0.method == "GET" })
        }
    }

    @Test func cacheHitDoesNotContactTheServer() async throws {
        try await Self.withServer { s in
            let name = HubModelName(parsing: "test/tiny")!
            let first = try await s.hub().resolve(name)
            let count = s.server.requests.count
            #expect(count > 0)
            let again = try await s.hub().resolve(name)
            #expect(again.path == first.path)
            #expect(s.server.requests.count == count)
            // A tag resolves through its own ref once downloaded, and an explicit commit directly.
            _ = try await s.hub().resolve(HubModelName(parsing: "test/tiny@v1")!)
            #expect(try String(contentsOf: s.folder().appendingPathComponent("refs/v1"), encoding: .utf8) == s.commit)
            let n = s.server.requests.count
            #expect(try await s.hub(offline: true).resolve(HubModelName(parsing: "test/tiny@\(s.commit)")!).path == first.path)
            #expect(try await s.hub(offline: true).resolve(HubModelName(parsing: "test/tiny@v1")!).path == first.path)
            #expect(s.server.requests.count == n)
        }
    }

    @Test func offlineMissNamesTheModelAndWhatToRun() async throws {
        try await Self.withServer { s in
            let e = await Self.error { try await s.hub(offline: true).resolve(HubModelName(parsing: "test/tiny@v1")!) }
            guard case .offlineMiss = e else { Issue.record("expected offlineMiss, got \(String(describing: e))"); return }
            let text = e!.description
            #expect(text.contains("test/tiny@v1") && text.contains("HF_HUB_OFFLINE=1") && text.contains("finetune inspect --model test/tiny@v1"), "\(text)")
            #expect(text.contains(s.cache.path))
            #expect(s.server.requests.isEmpty)
        }
    }

    @Test func resumesAfterACutConnection() async throws {
        try await Self.withServer { s in
            s.server.cutFirstTransfer = ["model.safetensors"]
            let url = try await s.hub().resolve(HubModelName(parsing: "test/tiny")!)
            #expect(try Data(contentsOf: url.appendingPathComponent("model.safetensors")) == s.files["model.safetensors"]!)
            let gets = s.server.requests.filter { $0.server == "cdn" && $0.method == "GET" }
            #expect(gets.count == 2)
            let half = s.files["model.safetensors"]!.count / 2
            #expect(gets.first?.headers.first(name: "Range") == nil)
            // The retry asks for the rest of what reached the disk: at most the half the server
            // sent before cutting (how much of it arrived before the cut was seen depends on the
            // scheduling of the two event loops), and more than nothing.
            let range = gets.last?.headers.first(name: "Range") ?? ""
            let start = range.hasPrefix("bytes=") && range.hasSuffix("-") ? Int(range.dropFirst(6).dropLast()) : nil
            #expect(start.map { $0 > 0 && $0 <= half } == true, "Range \(range), half \(half): \(gets.map(\.headers))")
        }
    }

    @Test func resumesAPartialDownloadLeftByAnEarlierRun() async throws {
        try await Self.withServer { s in
            let data = s.files["model.safetensors"]!
            let blobs = s.folder().appendingPathComponent("blobs")
            try FileManager.default.createDirectory(at: blobs, withIntermediateDirectories: true)
            try data.prefix(1000).write(to: blobs.appendingPathComponent(FakeHub.sha256(data) + ".incomplete"))
            let url = try await s.hub().resolve(HubModelName(parsing: "test/tiny")!)
            #expect(try Data(contentsOf: url.appendingPathComponent("model.safetensors")) == data)
            let cdn = s.server.requests.filter { $0.server == "cdn" }
            #expect(cdn.count == 1 && cdn[0].headers.first(name: "Range") == "bytes=1000-", "\(cdn.map(\.headers))")
        }
    }

    @Test func corruptedLFSFileIsRefusedAndNotInTheSnapshot() async throws {
        try await Self.withServer { s in
            s.server.corrupt = ["model.safetensors"]
            let e = await Self.error { try await s.hub().resolve(HubModelName(parsing: "test/tiny")!) }
            guard case let .corrupted(repo, file, expected, _) = e else { Issue.record("expected corrupted, got \(String(describing: e))"); return }
            #expect(repo == "test/tiny" && file == "model.safetensors" && expected.contains(FakeHub.sha256(s.files[file]!)))
            #expect(e!.description.contains("model.safetensors") && e!.isBadInput)
            let fm = FileManager.default
            let snapshot = s.folder().appendingPathComponent("snapshots/\(s.commit)")
            #expect(!fm.fileExists(atPath: snapshot.appendingPathComponent("model.safetensors").path))
            let blobs = try fm.contentsOfDirectory(atPath: s.folder().appendingPathComponent("blobs").path)
            #expect(!blobs.contains { $0.hasPrefix(FakeHub.sha256(s.files[file]!)) }, "\(blobs)")
            #expect(!fm.fileExists(atPath: s.folder().appendingPathComponent("refs/main").path))
            // Offline, the half-made snapshot is not taken for the model.
            let o = await Self.error { try await s.hub(offline: true).resolve(HubModelName(parsing: "test/tiny")!) }
            guard case .offlineMiss = o else { Issue.record("expected offlineMiss, got \(String(describing: o))"); return }
            // Served intact, the next run completes it.
            s.server.corrupt = []
            let url = try await s.hub().resolve(HubModelName(parsing: "test/tiny")!)
            #expect(try Data(contentsOf: url.appendingPathComponent("model.safetensors")) == s.files[file]!)
        }
    }

    @Test func unknownRepositoryAndRevision() async throws {
        try await Self.withServer { s in
            let anonymous = await Self.error { try await s.hub().resolve(HubModelName(parsing: "test/absent")!) }
            #expect(anonymous == .needsToken(repo: "test/absent", endpoint: s.server.hubURL, status: 401))
            #expect(anonymous!.description.contains("test/absent") && anonymous!.description.contains("HF_TOKEN"))
            let withToken = await Self.error { try await s.hub(token: "hf_x").resolve(HubModelName(parsing: "test/absent")!) }
            #expect(withToken == .repoNotFound(repo: "test/absent", endpoint: s.server.hubURL))
            #expect(withToken!.description.contains("test/absent") && withToken!.description.contains("404"))
            let revision = await Self.error { try await s.hub().resolve(HubModelName(parsing: "test/tiny@nope")!) }
            #expect(revision == .revisionNotFound(repo: "test/tiny", revision: "nope"))
            #expect(revision!.description.contains("test/tiny@nope") && revision!.description.contains("'nope'"))
            #expect(!FileManager.default.fileExists(atPath: s.folder().appendingPathComponent("refs/nope").path))
        }
    }

    @Test func privateRepositoryTokenGoesToTheHubOnlyNotToTheRedirectHost() async throws {
        try await Self.withServer(token: "hf_secret") { s in
            let e = await Self.error { try await s.hub().resolve(HubModelName(parsing: "test/tiny")!) }
            #expect(e == .needsToken(repo: "test/tiny", endpoint: s.server.hubURL, status: 401))
            let url = try await s.hub(token: "hf_secret").resolve(HubModelName(parsing: "test/tiny")!)
            #expect(try Data(contentsOf: url.appendingPathComponent("model.safetensors")) == s.files["model.safetensors"]!)
            let hub = s.server.requests.filter { $0.server == "hub" }.dropFirst()
            #expect(!hub.isEmpty && hub.allSatisfy { $0.headers.first(name: "Authorization") == "Bearer hf_secret" })
            let cdn = s.server.requests.filter { $0.server == "cdn" }
            #expect(!cdn.isEmpty && cdn.allSatisfy { $0.headers.first(name: "Authorization") == nil })
        }
    }

    @Test func shardedWeightsFetchTheIndexAndEveryShard() async throws {
        try await Self.withServer { s in
            let index = Data(#"{"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#.utf8)
            let files: [String: Data] = ["config.json": s.files["config.json"]!, "model.safetensors.index.json": index,
                                         "model-00001-of-00002.safetensors": Data(repeating: 1, count: 3000),
                                         "model-00002-of-00002.safetensors": Data(repeating: 2, count: 2000)]
            s.server.add("test/sharded", files: files)
            let url = try await s.hub().resolve(HubModelName(parsing: "test/sharded")!)
            for (f, d) in files { #expect(try Data(contentsOf: url.appendingPathComponent(f)) == d, "\(f)") }
            // A missing shard in the cache is a miss, offline.
            try FileManager.default.removeItem(at: url.appendingPathComponent("model-00002-of-00002.safetensors"))
            let e = await Self.error { try await s.hub(offline: true).resolve(HubModelName(parsing: "test/sharded")!) }
            #expect(e?.description.contains("model-00002-of-00002.safetensors") == true, "\(String(describing: e))")
        }
    }

    @Test func ggufByFileOrQuantisationTagDownloadsThatFileOnly() async throws {
        try await Self.withServer { s in
            let files: [String: Data] = ["tiny-Q4_K_M.gguf": Data(repeating: 4, count: 1500), "tiny-Q8_0.gguf": Data(repeating: 8, count: 2500),
                                         "tiny.q4_k_s.gguf": Data(repeating: 5, count: 100), "README.md": Data("x".utf8)]
            s.server.add("test/gguf", files: files)
            let byTag = try await s.hub().resolve(HubModelName(parsing: "test/gguf:q4_k_m")!)
            #expect(byTag.lastPathComponent == "tiny-Q4_K_M.gguf")
            #expect(try Data(contentsOf: byTag) == files["tiny-Q4_K_M.gguf"]!)
            let snapshot = byTag.deletingLastPathComponent()
            #expect(try FileManager.default.contentsOfDirectory(atPath: snapshot.path) == ["tiny-Q4_K_M.gguf"])
            let byFile = try await s.hub().resolve(HubModelName(parsing: "test/gguf:tiny-Q8_0.gguf")!)
            #expect(try Data(contentsOf: byFile) == files["tiny-Q8_0.gguf"]!)
            #expect(try await s.hub(offline: true).resolve(HubModelName(parsing: "test/gguf:Q4_K_M")!).path == byTag.path)

            let none = await Self.error { try await s.hub().resolve(HubModelName(parsing: "test/gguf:Q2_K")!) }
            #expect(none?.description.contains("Q2_K") == true && none?.description.contains("tiny-Q8_0.gguf") == true, "\(String(describing: none))")
            let missing = await Self.error { try await s.hub().resolve(HubModelName(parsing: "test/gguf:other.gguf")!) }
            #expect(missing == .fileNotFound(repo: "test/gguf", revision: "main", file: "other.gguf", available: ["tiny-Q4_K_M.gguf", "tiny-Q8_0.gguf", "tiny.q4_k_s.gguf"]))
            // Without a file, a GGUF-only repository says how to name one.
            let whole = await Self.error { try await s.hub().resolve(HubModelName(parsing: "test/gguf")!) }
            #expect(whole?.description.contains("test/gguf:Q4_K_M") == true, "\(String(describing: whole))")
        }
    }
}

/// A cache laid out by huggingface_hub (transformers' downloads) is used as it is.
@Suite struct HubForeignCacheTests {
    @Test func usesASnapshotHuggingFaceHubWrote() async throws {
        let cache = try temporaryDirectory("hub-hf")
        defer { try? FileManager.default.removeItem(at: cache) }
        let folder = cache.appendingPathComponent("models--org--m")
        let commit = "0123456789abcdef0123456789abcdef01234567"
        let fm = FileManager.default
        for d in ["blobs", "refs", "snapshots/\(commit)"] { try fm.createDirectory(at: folder.appendingPathComponent(d), withIntermediateDirectories: true) }
        try Data(commit.utf8).write(to: folder.appendingPathComponent("refs/main"))
        for (f, etag) in [("config.json", "c0ffee"), ("model.safetensors", "5afe")] {
            try Data(f.utf8).write(to: folder.appendingPathComponent("blobs/\(etag)"))
            try fm.createSymbolicLink(atPath: folder.appendingPathComponent("snapshots/\(commit)/\(f)").path, withDestinationPath: "../../blobs/\(etag)")
        }
        // Online, with an endpoint nothing listens on: a cache hit never connects.
        let hub = Hub(settings: HubSettings(endpoint: "http://127.0.0.1:9", token: nil, cache: cache, offline: false))
        let url = try await hub.resolve(HubModelName(parsing: "org/m")!)
        #expect(url.path == folder.appendingPathComponent("snapshots/\(commit)").path)
        #expect(try String(contentsOf: url.appendingPathComponent("config.json"), encoding: .utf8) == "config.json")
        // A snapshot without weights (transformers fetched only the config) is not the model.
        try fm.removeItem(at: url.appendingPathComponent("model.safetensors"))
        let e = await HubDownloadTests.error { try await hub.resolve(HubModelName(parsing: "org/m")!) }
        guard case .transfer = e else { Issue.record("expected a transfer error, got \(String(describing: e))"); return }
        #expect(e!.description.contains("127.0.0.1:9/api/models/org/m/revision/main"), "\(e!)")
    }
}

@Suite struct HubNameTests {
    @Test func parsesNamesRevisionsAndFiles() {
        #expect(HubModelName(parsing: "Qwen/Qwen2.5-0.5B-Instruct") == HubModelName(repo: "Qwen/Qwen2.5-0.5B-Instruct"))
        #expect(HubModelName(parsing: "org/m@v1.0") == HubModelName(repo: "org/m", revision: "v1.0"))
        #expect(HubModelName(parsing: "org/m@refs/pr/1") == HubModelName(repo: "org/m", revision: "refs/pr/1"))
        #expect(HubModelName(parsing: "org/m:Q4_K_M") == HubModelName(repo: "org/m", file: "Q4_K_M"))
        #expect(HubModelName(parsing: "org/m@dev:m-q8_0.gguf") == HubModelName(repo: "org/m", revision: "dev", file: "m-q8_0.gguf"))
        #expect(HubModelName(parsing: "org/m:Q4_K_M")!.isQuantTag && !HubModelName(parsing: "org/m:a.gguf")!.isQuantTag)
        for path in ["model", "/abs/dir", "./org/m", "../org/m", "~/org/m", "a/b/c", "org/-m", "org/m.", "org/a--b", "org/a..b",
                     "org/m@", "org/m:", "org/m@../x", "org/m:../x.gguf", "org/ m", "model.gguf", "dir/config.json/"] {
            #expect(HubModelName(parsing: path) == nil, "\(path)")
        }
    }

    @Test func settingsFollowHuggingFaceHubsEnvironment() {
        let a = HubSettings(environment: ["HOME": "/h"])
        #expect(a.cache.path == "/h/.cache/huggingface/hub" && a.endpoint == "https://huggingface.co" && !a.offline)
        let b = HubSettings(environment: ["HOME": "/h", "HF_HOME": "/hf", "HF_TOKEN": "t", "HF_ENDPOINT": "http://x:1/", "HF_HUB_OFFLINE": "1"])
        #expect(b.cache.path == "/hf/hub" && b.token == "t" && b.endpoint == "http://x:1" && b.offline)
        let c = HubSettings(environment: ["HOME": "/h", "HF_HOME": "/hf", "HF_HUB_CACHE": "/c", "HF_HUB_OFFLINE": "0"], offline: false)
        #expect(c.cache.path == "/c" && !c.offline)
        #expect(HubSettings(environment: ["HOME": "/h"], offline: true).offline)
    }

    @Test func quantTagMatching() {
        let files = ["a-Q4_K_M.gguf", "a.Q4_K_S.gguf", "b_q8_0.gguf", "XQ4_K_M.gguf", "Q4_K_M.gguf", "c-Q4_K_M.bin"]
        #expect(ModelFiles.gguf(tag: "Q4_K_M", in: files) == ["Q4_K_M.gguf", "a-Q4_K_M.gguf"])
        #expect(ModelFiles.gguf(tag: "q8_0", in: files) == ["b_q8_0.gguf"])
    }

    @Test func progressLineShowsBytesRateAndETA() {
        let p = DownloadProgress(file: "model.safetensors", received: 50_000_000, total: 200_000_000, transferred: 40_000_000, seconds: 4, finished: false)
        #expect(ProgressLine.format(p) == "model.safetensors  50.0 MB / 200.0 MB  25%  10.0 MB/s  ETA 0:15")
    }
}
