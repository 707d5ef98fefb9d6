import Foundation
import Testing
import TestSupport
import Tokenize

/// Reference assets under ../shared and tokenizers loaded once per test process (loading a
/// 150k-token vocabulary takes about a second in a debug build). Tests using the ../shared ones
/// carry `.requires(Assets.shared)` (TestSupport/Paths.swift).
extension Assets {
    static func tokenizerPath(_ relative: String) -> URL {
        TestPaths.shared("data/tokenizers/" + relative)
    }

    private final class Cache: @unchecked Sendable {
        let lock = NSLock()
        var locks: [String: NSLock] = [:]
        var tokenizers: [String: any Tokenizer] = [:]
    }
    private static let cache = Cache()

    /// Loads (once) and returns a tokenizer. Each key has its own lock, so parallel tests share
    /// one load while different tokenizers load side by side.
    static func cached(_ key: String, _ make: () throws -> any Tokenizer) throws -> any Tokenizer {
        cache.lock.lock()
        let keyLock = cache.locks[key] ?? NSLock()
        cache.locks[key] = keyLock
        cache.lock.unlock()
        keyLock.lock()
        defer { keyLock.unlock() }
        cache.lock.lock()
        let existing = cache.tokenizers[key]
        cache.lock.unlock()
        if let existing { return existing }
        let t = try make()
        cache.lock.lock()
        cache.tokenizers[key] = t
        cache.lock.unlock()
        return t
    }

    /// Qwen2 from tokenizer.json.
    static func qwen2JSON() throws -> any Tokenizer {
        let dir = tokenizerPath("qwen2/tokenizer.json")
        return try cached("qwen2.json") { try loadTokenizer(from: dir) }
    }

    /// Qwen2 from vocab.json + merges.txt with the Qwen2 pattern and NFC.
    static func qwen2VocabMerges() throws -> any Tokenizer {
        let vocab = tokenizerPath("qwen2/vocab.json"), merges = tokenizerPath("qwen2/merges.txt")
        return try cached("qwen2.vocab") { try ByteLevelBPETokenizer(vocabFile: vocab, mergesFile: merges, pattern: .qwen2, nfc: true) }
    }

    static func smollm2() throws -> any Tokenizer {
        let dir = tokenizerPath("smollm2")
        return try cached("smollm2") { try loadTokenizer(from: dir) }
    }

    static func llama3() throws -> TiktokenTokenizer {
        let dir = tokenizerPath("llama3-tiktoken")
        return try #require(try cached("llama3") { try loadTokenizer(from: dir) } as? TiktokenTokenizer)
    }

    static func llama2() throws -> any Tokenizer {
        let dir = tokenizerPath("llama2-spm")
        return try cached("llama2") { try loadTokenizer(from: dir) }
    }

    /// The repository's bundled stories260K SentencePiece model.
    static func stories260K() throws -> any Tokenizer {
        try cached("stories260K") { try loadTokenizer(from: TestPaths.models.appendingPathComponent("stories260K/tokenizer.model")) }
    }

    /// llama.cpp's tokenizer test vectors: `.inp` holds the texts, each followed by
    /// "\n__ggml_vocab_test__\n" (test-tokenizer-0 reads text up to each separator, so the
    /// file's tail after the last one is not a text); line i of `.out` holds text i's ids.
    static func llamaCppVectors(_ name: String) throws -> [(text: String, ids: [Int])] {
        let inp = tokenizerPath("llama.cpp-vocab/ggml-vocab-\(name).gguf.inp"),
            out = tokenizerPath("llama.cpp-vocab/ggml-vocab-\(name).gguf.out")
        let bytes = [UInt8](try Data(contentsOf: inp))
        let separator = Array("\n__ggml_vocab_test__\n".utf8)
        var texts: [String] = []
        var start = 0
        var i = 0
        while i + separator.count <= bytes.count {
            if bytes[i] == separator[0] && Array(bytes[i..<(i + separator.count)]) == separator {
                texts.append(String(decoding: bytes[start..<i], as: UTF8.self))
                i += separator.count
                start = i
            } else {
                i += 1
            }
        }
        let lines = String(decoding: try Data(contentsOf: out), as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        return texts.enumerated().map { (k, text) in
            (text, k < lines.count ? lines[k].split(separator: " ").compactMap { Int($0) } : [-1])
        }
    }

    /// The GSM8K test questions.
    static func gsm8kTestQuestions() throws -> [String] {
        let url = TestPaths.shared("data/datasets/gsm8k/test.jsonl")
        let data = try Data(contentsOf: url)
        return try data.split(separator: UInt8(ascii: "\n")).map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any]
            return object?["question"] as? String ?? ""
        }
    }

    /// A fresh temporary directory (removed by the caller).
    static func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("tokenize-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
