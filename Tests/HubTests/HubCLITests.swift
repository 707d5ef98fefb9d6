import Foundation
import Testing
import TestSupport

/// `--model ORG/NAME` through the command line against a fake Hub serving the bundled
/// stories260K: `inspect` and `generate` give what they give on the local directory, a second
/// run uses the cache with the server gone, and the errors exit 2 naming the repository.
@Suite struct HubCLITests {
    static let modelFiles = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.model", "reference_greedy.json"]

    @Test func inspectAndGenerateByNameMatchTheLocalModel() async throws {
        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let local = TestPaths.models.appendingPathComponent("stories260K")
        let server = FakeHub()
        var files: [String: Data] = [:]
        for f in Self.modelFiles { files[f] = try Data(contentsOf: local.appendingPathComponent(f)) }
        let commit = server.add("karpathy/stories260K", files: files)
        try await server.start()
        let home = try temporaryDirectory("hub-cli")
        defer { try? FileManager.default.removeItem(at: home) }
        let cache = home.appendingPathComponent("hub")
        // HF_HOME keeps the user's token file out; HF_TOKEN empty is no token.
        let env = ["HF_ENDPOINT": server.hubURL, "HF_HUB_CACHE": cache.path, "HF_HOME": home.path, "HF_TOKEN": "", "HF_HUB_OFFLINE": ""]
        let generate = ["--prompt", "Once upon a time", "--max-new-tokens", "12", "--json"]

        let inspectLocal = try runProcess(exe, ["inspect", "--model", local.path, "--json"])
        let inspectHub = try runProcess(exe, ["inspect", "--model", "karpathy/stories260K", "--json"], environment: env)
        #expect(inspectHub.status == 0, "\(inspectHub.err)")
        #expect(inspectHub.out == inspectLocal.out && inspectLocal.out.contains("\"layers\""))
        let snapshot = cache.appendingPathComponent("models--karpathy--stories260K/snapshots/\(commit)")
        #expect(inspectHub.err.contains(snapshot.path), "\(inspectHub.err)")
        #expect(!FileManager.default.fileExists(atPath: snapshot.appendingPathComponent("reference_greedy.json").path))

        let genLocal = try runProcess(exe, ["generate", "--model", local.path] + generate)
        let genHub = try runProcess(exe, ["generate", "--model=karpathy/stories260K"] + generate, environment: env)
        #expect(genLocal.status == 0 && genHub.status == 0, "\(genLocal.err) \(genHub.err)")
        #expect(genHub.out == genLocal.out && genLocal.out.contains("\"ids\""), "\(genHub.out) vs \(genLocal.out)")

        // The server gone: the cache answers, with --offline too.
        let contacted = server.requests.count
        await server.stop()
        let cached = try runProcess(exe, ["generate", "--model", "karpathy/stories260K", "--offline"] + generate, environment: env)
        #expect(cached.status == 0 && cached.out == genLocal.out, "\(cached.err)")
        #expect(server.requests.count == contacted)

        // Offline, a model not in the cache exits 2 and says what to run.
        let miss = try runProcess(exe, ["inspect", "--model", "karpathy/stories15M"], environment: env.merging(["HF_HUB_OFFLINE": "1"]) { $1 })
        #expect(miss.status == 2 && miss.err.contains("karpathy/stories15M") && miss.err.contains("finetune inspect --model karpathy/stories15M"), "\(miss.err)")
        // The server down and nothing cached: a failed transfer, exit 1, naming the URL.
        let down = try runProcess(exe, ["inspect", "--model", "karpathy/stories15M"], environment: env)
        #expect(down.status == 1 && down.err.contains("/api/models/karpathy/stories15M"), "\(down.err)")
    }

    @Test func unknownRepositoryExits2AndLocalPathsWin() async throws {
        guard let exe = finetuneExecutable() else { Issue.record("finetune executable not built"); return }
        let server = FakeHub()
        try await server.start()
        let home = try temporaryDirectory("hub-cli")
        defer { try? FileManager.default.removeItem(at: home) }
        let env = ["HF_ENDPOINT": server.hubURL, "HF_HUB_CACHE": home.appendingPathComponent("hub").path, "HF_HOME": home.path, "HF_TOKEN": "hf_t"]
        let r = try runProcess(exe, ["inspect", "--model", "nobody/nothing@v2"], environment: env)
        let contacted = server.requests.count
        #expect(r.status == 2 && r.err.contains("nobody/nothing") && r.err.contains("no such model repository"), "\(r.err)")
        // A typo in the flags is reported before anything is fetched.
        let typo = try runProcess(exe, ["inspect", "--model", "nobody/nothing", "--no-such-flag"], environment: env)
        #expect(typo.status == 2 && server.requests.count == contacted, "\(typo.err)")
        await server.stop()

        // ORG/NAME that exists as a directory (relative to the working directory) is that directory.
        let org = home.appendingPathComponent("nobody")
        try FileManager.default.createDirectory(at: org, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: TestPaths.models.appendingPathComponent("stories260K"), to: org.appendingPathComponent("nothing"))
        let p = Process()
        p.executableURL = exe
        p.arguments = ["inspect", "--model", "nobody/nothing", "--json"]
        p.currentDirectoryURL = home
        p.environment = ProcessInfo.processInfo.environment.merging(env.merging(["HF_HUB_OFFLINE": "1"]) { $1 }) { $1 }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = Pipe()
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0 && text.contains("\"layers\""))
    }
}
