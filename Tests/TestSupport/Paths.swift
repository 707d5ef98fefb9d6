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

    /// `../shared` next to the checkout, or nil (with a visible message) when it is absent.
    public static func shared(_ relative: String, file: String = #fileID, line: Int = #line) -> URL? {
        let url = repoRoot.deletingLastPathComponent().appendingPathComponent("shared").appendingPathComponent(relative)
        if FileManager.default.fileExists(atPath: url.path) { return url }
        FileHandle.standardError.write("SKIP \(file):\(line): ../shared/\(relative) is not present; this check is skipped\n".data(using: .utf8)!)
        return nil
    }
}
