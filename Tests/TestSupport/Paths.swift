import Foundation

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

    /// The real SmolLM2-135M-Instruct Q4_1 GGUF (93 MB; `scripts/fetch_models.sh` puts it in
    /// models/gguf/, or FINETUNE_SMOLLM2_GGUF names it), or nil with a visible message.
    public static func smolLM2GGUF(file: String = #fileID, line: Int = #line) -> URL? {
        let url = ProcessInfo.processInfo.environment["FINETUNE_SMOLLM2_GGUF"].map { URL(fileURLWithPath: $0) }
            ?? models.appendingPathComponent("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")
        if FileManager.default.fileExists(atPath: url.path) { return url }
        FileHandle.standardError.write("SKIP \(file):\(line): \(url.path) is not present (run scripts/fetch_models.sh); this check is skipped\n".data(using: .utf8)!)
        return nil
    }

    /// `../shared` next to the checkout, or nil (with a visible message) when it is absent.
    public static func shared(_ relative: String, file: String = #fileID, line: Int = #line) -> URL? {
        let url = repoRoot.deletingLastPathComponent().appendingPathComponent("shared").appendingPathComponent(relative)
        if FileManager.default.fileExists(atPath: url.path) { return url }
        FileHandle.standardError.write("SKIP \(file):\(line): ../shared/\(relative) is not present; this check is skipped\n".data(using: .utf8)!)
        return nil
    }
}
