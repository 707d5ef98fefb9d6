import Foundation
import LLMCore

/// The golden fixture models copied from `../shared/fixtures` (see Tests/Fixtures/README.md).
public enum FixtureModel: String, CaseIterable, Sendable, CustomStringConvertible {
    case llamaTiny = "llama-tiny", qwen2Tiny = "qwen2-tiny", qwen3Tiny = "qwen3-tiny", llama3Tiny = "llama3-tiny"

    public var description: String { rawValue }
    public var directory: URL { TestPaths.fixtures.appendingPathComponent(rawValue) }

    public func load() throws -> ModelWeights { try ModelWeights.load(directory: directory) }

    /// `expected.safetensors` of the base model, or of its `lora/` / `ndlinear/` adapter.
    public func expected(_ sub: String? = nil) throws -> SafetensorsFile {
        var u = directory
        if let sub { u.appendPathComponent(sub) }
        return try SafetensorsFile(url: u.appendingPathComponent("expected.safetensors"))
    }
}

/// Largest absolute difference, optionally only where `include(i)`.
public func maxAbsDiff(_ a: [Float], _ b: [Float], include: ((Int) -> Bool)? = nil) -> Float {
    precondition(a.count == b.count, "maxAbsDiff: \(a.count) vs \(b.count) values")
    var m: Float = 0
    for i in a.indices where include?(i) ?? true { m = max(m, abs(a[i] - b[i])) }
    return m
}

public func maxAbs(_ a: [Float]) -> Float { a.reduce(0) { max($0, abs($1)) } }

/// The fixture batch as a model input plus shifted targets.
public struct FixtureBatch {
    public let input: ModelInput
    public let targets: [Int32]
    public let mask: [Int]
    public let batch: Int, seqLen: Int

    public init(_ e: SafetensorsFile) throws {
        let ids = try e.tensor("input_ids"), mask = try e.tensor("attention_mask").ints(), labels = try e.tensor("labels").ints()
        batch = ids.shape[0]; seqLen = ids.shape[1]
        self.mask = mask
        input = ModelInput(batch: batch, seqLen: seqLen, tokens: ids.ints(), attentionMask: mask)
        targets = shiftedTargets(labels: labels.map { Int32($0) }, batch: batch, seqLen: seqLen)
    }
}

extension FixtureBatch {
    /// A small batch that exercises every mask path at once (for finite-difference checks of
    /// the whole model): two rows of 8, the first packing two examples (positions restart,
    /// segments differ), the second right-padded, targets ignored at segment ends and padding.
    public static let packedPadded = (
        input: ModelInput(batch: 2, seqLen: 8, tokens: (0..<16).map { ($0 * 37) % 300 + 3 },
                          attentionMask: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                          positions: [0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6, 7],
                          segments: [0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        targets: [5, 6, -1, 8, 9, 10, 11, -1, 12, 13, 14, 15, -1, -1, -1, -1] as [Int32])
}

// MARK: - Finite differences

/// Deterministic test values.
public func randomFloats(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var r = SplitMix64(seed: seed)
    return (0..<n).map { _ in (r.nextFloat() * 2 - 1) * scale }
}

/// Central finite-difference gradient of `f` at `x` (f32 evaluation, Double arithmetic on the
/// differences): `(f(x+h) − f(x−h)) / 2h` for every coordinate.
public func finiteDifference(_ x: [Float], h: Float = 1e-2, _ f: ([Float]) -> Double) -> [Float] {
    var g = [Float](repeating: 0, count: x.count)
    var xp = x
    for i in x.indices {
        xp[i] = x[i] + h; let fp = f(xp)
        xp[i] = x[i] - h; let fm = f(xp)
        xp[i] = x[i]
        g[i] = Float((fp - fm) / Double(2 * h))
    }
    return g
}

/// Relative error max|a−b| / max(max|b|, tiny).
public func relativeError(_ a: [Float], _ b: [Float]) -> Float {
    maxAbsDiff(a, b) / max(maxAbs(b), 1e-12)
}

/// Σ r ⊙ y: a random linear functional that turns a vector output into a scalar loss.
public func dot(_ a: [Float], _ b: [Float]) -> Double {
    zip(a, b).reduce(0) { $0 + Double($1.0) * Double($1.1) }
}

// MARK: - Training fixtures

extension FixtureModel {
    /// The fixture batch as pre-tokenized JSONL (one line per row, padding removed), written to
    /// a fresh temporary file.
    public func batchJSONL() throws -> URL {
        let e = try expected()
        let ids = try e.tensor("input_ids").ints(), mask = try e.tensor("attention_mask").ints(), labels = try e.tensor("labels").ints()
        let T = try e.tensor("input_ids").shape[1]
        var text = ""
        for r in 0..<(ids.count / T) {
            let n = mask[(r * T)..<((r + 1) * T)].reduce(0, +)
            let row = (r * T)..<(r * T + n)
            text += "{\"input_ids\": \(Array(ids[row])), \"labels\": \(Array(labels[row]))}\n"
        }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("batch-\(rawValue)-\(UUID().uuidString).jsonl")
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }
}

/// A fresh temporary directory.
public func temporaryDirectory(_ tag: String) throws -> URL {
    let u = FileManager.default.temporaryDirectory.appendingPathComponent("\(tag)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
    return u
}

/// The `finetune` executable built beside the test bundle (swift test builds every product).
public func finetuneExecutable() -> URL? {
    let candidates = [
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("finetune"),
        TestPaths.repoRoot.appendingPathComponent(".build/debug/finetune"),
    ]
    return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) }
}

/// Runs a process to completion; returns (exit status or negative signal, stdout, stderr).
public func runProcess(_ exe: URL, _ args: [String], environment: [String: String] = [:]) throws -> (status: Int32, out: String, err: String) {
    let p = Process()
    p.executableURL = exe
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    let status = p.terminationReason == .uncaughtSignal ? -p.terminationStatus : p.terminationStatus
    return (status, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}
