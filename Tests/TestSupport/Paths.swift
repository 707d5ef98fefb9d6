import Foundation
import Testing

/// Locations the tests read from. Small fixtures live in the repo (`Tests/Fixtures`);
/// large reference assets are read from `../shared` beside the checkout when it exists.
public enum TestPaths {
    /// The repository root (two levels above this file's directory).
    public static let repoRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// `Tests/Fixtures` inside the repo.
    public static let fixtures: URL = repoRoot.appendingPathComponent("Tests/Fixtures")

    /// `models/` inside the repo (the bundled stories260K).
    public static let models: URL = repoRoot.appendingPathComponent("models")

    /// The reference data directory: `../shared` beside the checkout, or the directory
    /// `FINETUNE_SHARED` names (as scripts/chat_template_golden.py reads it).
    /// `FINETUNE_SHARED=/nonexistent swift test` runs the suite as a checkout without it would.
    public static let sharedRoot: URL = ProcessInfo.processInfo.environment["FINETUNE_SHARED"]
        .flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
        ?? repoRoot.deletingLastPathComponent().appendingPathComponent("shared")

    /// A path under the reference data directory. A test that reads it carries
    /// `.requires(Assets.shared)`; a file missing from a present directory fails the test.
    public static func shared(_ relative: String) -> URL {
        sharedRoot.appendingPathComponent(relative)
    }

    /// The real SmolLM2-135M-Instruct Q4_1 GGUF (93 MB): `scripts/fetch_models.sh` puts it in
    /// models/gguf/, or FINETUNE_SMOLLM2_GGUF names it. Tests using it carry
    /// `.requires(Assets.smolLM2GGUF)`.
    public static let smolLM2GGUF: URL = ProcessInfo.processInfo.environment["FINETUNE_SMOLLM2_GGUF"]
        .flatMap { $0.isEmpty ? nil : URL(fileURLWithPath: $0) }
        ?? models.appendingPathComponent("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")
}

// MARK: - Optional assets

/// Something outside the repository that some tests need and a checkout may lack. A test that
/// needs it declares `@Test(.requires(Assets.x))`: when the asset is missing, Swift Testing
/// reports the test as skipped with `reason` ("Test t() skipped: …") instead of running it, and
/// the run ends with a count of the tests skipped per reason (see `SkipLedger`).
public struct Asset: Sendable, CustomStringConvertible {
    /// Where the asset is (or would be).
    public let location: URL
    public let isAvailable: Bool
    /// What is missing and how to get it.
    public let reason: String

    public var description: String { location.path }

    /// The location, or an error naming the missing asset (a test that forgot `.requires` then
    /// fails instead of passing without checking anything).
    public func url() throws -> URL {
        guard isAvailable else { throw MissingAsset(reason: reason) }
        return location
    }
}

public struct MissingAsset: Error, CustomStringConvertible {
    public let reason: String
    public var description: String { reason }
}

/// The optional assets, each checked once per test process.
public enum Assets {
    /// The reference data directory `../shared` (tokenizers, datasets, llama.cpp vectors):
    /// present beside the checkout in CI, too big to copy into the repo.
    public static let shared: Asset = {
        let url = TestPaths.sharedRoot
        var isDirectory: ObjCBool = false
        let present = FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) && isDirectory.boolValue
        let source = ProcessInfo.processInfo.environment["FINETUNE_SHARED"].map { _ in " (from FINETUNE_SHARED)" } ?? ""
        return Asset(location: url, isAvailable: present,
                     reason: "the reference data directory \(url.path)\(source) is not present: put the project's ../shared beside the checkout (as CI does) or set FINETUNE_SHARED=DIR")
    }()

    /// The real SmolLM2-135M-Instruct Q4_1 GGUF (93 MB).
    public static let smolLM2GGUF: Asset = {
        let url = TestPaths.smolLM2GGUF
        return Asset(location: url, isAvailable: FileManager.default.fileExists(atPath: url.path),
                     reason: "\(url.path) is not present: run scripts/fetch_models.sh (or set FINETUNE_SMOLLM2_GGUF=FILE)")
    }()

    /// `mpirun` on PATH (Open MPI).
    public static let mpirun: Asset = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        let found = path.split(separator: ":").map { URL(fileURLWithPath: String($0)).appendingPathComponent("mpirun") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
        return Asset(location: found ?? URL(fileURLWithPath: "mpirun"), isAvailable: found != nil,
                     reason: "mpirun is not on PATH: apt-get install openmpi-bin libopenmpi-dev")
    }()
}

extension Trait where Self == ConditionTrait {
    /// Runs the test (or every test of the suite) only when all `assets` are present; otherwise
    /// Swift Testing reports it skipped with the missing assets' reasons, and `SkipLedger`
    /// counts it for the end-of-run summary.
    public static func requires(_ assets: Asset..., sourceLocation: SourceLocation = #_sourceLocation) -> Self {
        let missing = assets.filter { !$0.isAvailable }
        let reason = missing.map(\.reason).joined(separator: "; ")
        return .enabled(missing.isEmpty ? nil : Comment(rawValue: reason), sourceLocation: sourceLocation) {
            if missing.isEmpty { return true }
            SkipLedger.record(reason)
            return false
        }
    }
}

/// Counts the tests skipped by `.requires` and prints the count per reason when the test
/// process exits, after Swift Testing's own summary. (Swift Testing 6.3 prints one
/// "Test t() skipped: reason" line per skipped test, but its final "Test run with N tests …"
/// line counts skipped tests among the N without saying how many were skipped.)
public enum SkipLedger {
    private final class State: @unchecked Sendable {
        let lock = NSLock()
        var tests: [String: Set<Test.ID>] = [:]
        var registered = false
    }
    private static let state = State()

    /// Swift Testing evaluates the condition with `Test.current` set to the test (or suite)
    /// being planned; a suite's condition is evaluated again for each of its tests, so suites
    /// are left out and tests counted once.
    static func record(_ reason: String) {
        guard let test = Test.current, !test.isSuite else { return }
        state.lock.withLock {
            state.tests[reason, default: []].insert(test.id)
            if !state.registered {
                state.registered = true
                atexit { SkipLedger.report() }
            }
        }
    }

    private static func report() {
        let byReason = state.lock.withLock { state.tests.mapValues(\.count) }
        let total = byReason.values.reduce(0, +)
        guard total > 0 else { return }
        var text = "➜ \(total) test\(total == 1 ? "" : "s") skipped because an asset they need is missing:\n"
        for (reason, n) in byReason.sorted(by: { $0.value > $1.value || ($0.value == $1.value && $0.key < $1.key) }) {
            text += "➜   \(n) test\(n == 1 ? "" : "s"): \(reason)\n"
        }
        FileHandle.standardError.write(Data(text.utf8))
    }
}
