import Foundation
import Testing
import TestSupport
import Tokenize

/// Bad input gives typed errors that name the file and what was expected — never a crash.
@Suite struct ErrorTests {
    private func write(_ text: String, _ name: String, in dir: URL) throws -> URL {
        let url = dir.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url
    }

    @Test func missingFileAndEmptyDirectory() throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let missing = dir.appendingPathComponent("nope")
        #expect(throws: TokenizerError.missingFile(path: missing.path, expected: "a tokenizer directory or file (tokenizer.json, vocab.json, merges.txt or tokenizer.model)")) {
            try loadTokenizer(from: missing)
        }
        do {
            _ = try loadTokenizer(from: dir)
            Issue.record("an empty directory loaded")
        } catch let error as TokenizerError {
            guard case let .missingFile(path, expected) = error else { Issue.record("\(error)"); return }
            #expect(path == dir.path)
            #expect(expected.contains("tokenizer.json"))
            #expect(error.description.contains(dir.path))
        }
        // vocab.json without merges.txt.
        _ = try write("{\"a\": 0}", "vocab.json", in: dir)
        do {
            _ = try loadTokenizer(from: dir)
            Issue.record("vocab.json alone loaded")
        } catch let error as TokenizerError {
            guard case let .missingFile(path, _) = error else { Issue.record("\(error)"); return }
            #expect(path.hasSuffix("merges.txt"))
        }
    }

    @Test func malformedJSON() throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        for (text, line) in [("{\"model\": {\"type\": \"BPE\",\n \"vocab\": {\"a\": 0,}}}", 2), ("", 1), ("[1, 2]", 1), ("{\"model\": {\"vocab\": {\"a\": \"x\"}}}", 1)] {
            let url = try write(text, "tokenizer.json", in: dir)
            do {
                _ = try loadTokenizer(from: url)
                Issue.record("malformed JSON loaded: \(text)")
            } catch let error as TokenizerError {
                guard case let .malformedJSON(path, errorLine, _, _) = error else { Issue.record("\(error)"); continue }
                #expect(path == url.path)
                #expect(errorLine == line)
            }
        }
        // tokenizer_config.json is parsed strictly too.
        _ = try write("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}", "tokenizer.json", in: dir)
        let config = try write("{\"eos_token\": ", "tokenizer_config.json", in: dir)
        #expect(throws: TokenizerError.self) { try loadTokenizer(from: dir) }
        do { _ = try TokenizerConfig(contentsOf: config) } catch let error as TokenizerError {
            if case let .malformedJSON(path, _, _, _) = error { #expect(path == config.path) } else { Issue.record("\(error)") }
        }
    }

    @Test func unknownModelType() throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = try write(#"{"model": {"type": "WordPiece", "vocab": {"a": 0}, "unk_token": "[UNK]"}, "pre_tokenizer": {"type": "ByteLevel"}}"#, "tokenizer.json", in: dir)
        #expect(throws: TokenizerError.unknownModelType(path: url.path, type: "WordPiece", supported: ["BPE (byte-level)"])) {
            try loadTokenizer(from: url)
        }
        let unigram = try write(#"{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}, "pre_tokenizer": {"type": "Metaspace"}}"#, "tokenizer.json", in: dir)
        #expect(throws: TokenizerError.self) { try loadTokenizer(from: unigram) }
        // An unsupported pipeline stage is named.
        let meta = try write(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Metaspace"}}"#, "tokenizer.json", in: dir)
        do { _ = try loadTokenizer(from: meta) } catch let error as TokenizerError {
            guard case let .unsupportedComponent(path, component, detail) = error else { Issue.record("\(error)"); return }
            #expect(path == meta.path && component == "pre_tokenizer" && detail.contains("Metaspace"))
        }
    }

    @Test func mergeOutOfVocabularyAndMalformedLines() throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        _ = try write(#"{"a": 0, "b": 1}"#, "vocab.json", in: dir)
        let merges = try write("#version: 0.2\na b\n", "merges.txt", in: dir)
        #expect(throws: TokenizerError.mergeTokenOutOfVocabulary(path: merges.path, line: 2, token: "ab")) {
            try loadTokenizer(from: dir)
        }
        _ = try write("#version: 0.2\nab\n", "merges.txt", in: dir)
        #expect(throws: TokenizerError.malformedLine(path: merges.path, line: 2, expected: "a merge \"left right\" separated by one space")) {
            try loadTokenizer(from: dir)
        }
        let tiktoken = try write("IQ== 0\nIg== x\n", "ranks.tiktoken", in: dir)
        #expect(throws: TokenizerError.malformedLine(path: tiktoken.path, line: 2, expected: "\"<base64 token> <rank>\"")) {
            try TiktokenTokenizer(modelFile: tiktoken)
        }
    }

    @Test func notASentencePieceModel() throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("tokenizer.model")
        try Data([0xFF, 0x00, 0x13, 0x37, 0x0A, 0x99]).write(to: url)
        do {
            _ = try loadTokenizer(from: url)
            Issue.record("garbage loaded as a tokenizer")
        } catch let error as TokenizerError {
            guard case let .sentencePieceLoadFailed(path, _) = error else { Issue.record("\(error)"); return }
            #expect(path == url.path)
        }
    }

    @Test func invalidUTF8Input() throws {
        let tok = try Assets.stories260K()
        #expect(throws: TokenizerError.invalidUTF8(offset: 3)) {
            try tok.encode(utf8: Data([0x61, 0x62, 0x63, 0xC3, 0x28]))
        }
        #expect(throws: TokenizerError.invalidUTF8(offset: 0)) { try tok.encode(utf8: Data([0xFF])) }
        #expect(throws: TokenizerError.invalidUTF8(offset: 1)) { try tok.encode(utf8: Data([0x61, 0xED, 0xA0, 0x80])) }  // a surrogate
        #expect(try tok.encode(utf8: Data("Once upon a time".utf8)) == tok.encode("Once upon a time"))
    }
}
