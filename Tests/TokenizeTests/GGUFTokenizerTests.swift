import Foundation
import LLMCore
import Testing
import TestSupport
import Tokenize

/// Tokenizers built from GGUF metadata (`loadTokenizer(gguf:)`): llama.cpp's vocab-only GGUFs
/// against its test vectors, the real SmolLM2 GGUF against its tokenizer.json, tiny in-memory
/// GGUFs for the pre-tokenizers and the SentencePiece path, and typed errors for bad metadata.
@Suite struct GGUFTokenizerTests {
    // MARK: Helpers

    private static func vocabGGUF(_ name: String) -> URL {
        Assets.tokenizerPath("llama.cpp-vocab/ggml-vocab-\(name).gguf")
    }

    private static func vocabTokenizer(_ name: String) throws -> any Tokenizer {
        let url = vocabGGUF(name)
        return try Assets.cached("gguf.\(name)") { try loadTokenizer(ggufPath: url.path) }
    }

    /// The reference tokenizer each vocab GGUF was converted from (loaded from its own files).
    private static func reference(_ name: String) throws -> any Tokenizer {
        switch name {
        case "qwen2": return try Assets.qwen2JSON()
        case "llama-bpe": return try Assets.llama3()
        default: return try Assets.llama2()
        }
    }

    /// Writes `metadata` as a tensor-less GGUF v3 file and opens it. (Encoded here rather than
    /// with LLMCore's GGUFWriter so these tests only depend on the reader.)
    private static func gguf(_ metadata: [(String, GGUFValue)], in dir: URL, name: String = "t.gguf") throws -> GGUFFile {
        var out = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: Array(s.utf8)) }
        func value(_ v: GGUFValue) {
            switch v {
            case let .uint8(x): out.append(x)
            case let .int8(x): out.append(UInt8(bitPattern: x))
            case let .uint16(x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case let .int16(x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case let .uint32(x): u32(x)
            case let .int32(x): u32(UInt32(bitPattern: x))
            case let .float32(x): u32(x.bitPattern)
            case let .bool(x): out.append(x ? 1 : 0)
            case let .string(x): str(x)
            case let .uint64(x): u64(x)
            case let .int64(x): u64(UInt64(bitPattern: x))
            case let .float64(x): u64(x.bitPattern)
            case let .array(t, items): u32(t); u64(UInt64(items.count)); items.forEach(value)
            }
        }
        u32(0x4655_4747); u32(3); u64(0); u64(UInt64(metadata.count))
        for (k, v) in metadata { str(k); u32(v.typeCode); value(v) }
        let url = dir.appendingPathComponent(name)
        try out.write(to: url)
        return try GGUFFile(path: url.path)
    }

    private static func strings(_ s: [String]) -> GGUFValue { .array(8, s.map { .string($0) }) }
    private static func int32s(_ v: [Int]) -> GGUFValue { .array(5, v.map { .int32(Int32($0)) }) }
    private static func floats(_ v: [Float]) -> GGUFValue { .array(6, v.map { .float32($0) }) }

    /// GPT-2's byte alphabet: the vocabulary spelling of every single byte.
    private static let byteAlphabet: [String] = (0..<256).map { b -> String in
        let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
        if printable { return String(UnicodeScalar(UInt8(b))) }
        let offset = (0..<b).filter { !((0x21...0x7E).contains($0) || (0xA1...0xAC).contains($0) || (0xAE...0xFF).contains($0)) }.count
        return String(UnicodeScalar(UInt32(256 + offset))!)
    }

    /// A toy "gpt2" vocabulary: the 256 byte tokens, a few merges and two added tokens.
    private static func toyBPE(pre: String?, extra: [(String, GGUFValue)] = []) -> [(String, GGUFValue)] {
        let merged = ["he", "ll", "hell", "hello", "12", "123"]
        let tokens = byteAlphabet + merged + ["<|eot|>", "[USER]"]
        let types = [Int](repeating: 1, count: 256 + merged.count) + [3, 4]
        var m: [(String, GGUFValue)] = [
            ("tokenizer.ggml.model", .string("gpt2")),
            ("tokenizer.ggml.tokens", strings(tokens)),
            ("tokenizer.ggml.token_type", int32s(types)),
            ("tokenizer.ggml.merges", strings(["h e", "l l", "he ll", "hell o", "1 2", "12 3"])),
            ("tokenizer.ggml.eos_token_id", .uint32(UInt32(tokens.count - 2))),
        ]
        if let pre { m.append(("tokenizer.ggml.pre", .string(pre))) }
        return m + extra
    }

    /// A toy "llama" (SentencePiece) vocabulary with byte tokens.
    private static let toySPMTokens: [String] = ["<unk>", "<s>", "</s>"] + (0..<256).map { String(format: "<0x%02X>", $0) }
        + ["▁", "h", "e", "l", "o", "▁h", "he", "ll", "▁he", "▁hell", "▁hello"]
    private static func toySPM(extra: [(String, GGUFValue)] = [], scores: [Float]? = nil) -> [(String, GGUFValue)] {
        let tokens = toySPMTokens
        let types = [2, 3, 3] + [Int](repeating: 6, count: 256) + [Int](repeating: 1, count: 11)
        // Later (longer) pieces score higher, so they merge first.
        let defaultScores: [Float] = [0, 0, 0] + [Float](repeating: 0, count: 256) + (0..<11).map { Float($0) - 20 }
        return [
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.pre", .string("default")),
            ("tokenizer.ggml.tokens", strings(tokens)),
            ("tokenizer.ggml.scores", floats(scores ?? defaultScores)),
            ("tokenizer.ggml.token_type", int32s(types)),
            ("tokenizer.ggml.bos_token_id", .uint32(1)),
            ("tokenizer.ggml.eos_token_id", .uint32(2)),
            ("tokenizer.ggml.unknown_token_id", .uint32(0)),
        ] + extra
    }

    /// The GGUF error of loading `metadata`, which must be an `.invalidGGUFMetadata` for `key`
    /// naming the file.
    private func expectInvalid(_ metadata: [(String, GGUFValue)], key: String, mentioning detail: String? = nil,
                               sourceLocation: SourceLocation = #_sourceLocation) throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = try Self.gguf(metadata, in: dir)
        do {
            _ = try loadTokenizer(gguf: file)
            Issue.record("loaded despite a bad `\(key)`", sourceLocation: sourceLocation)
        } catch let error as TokenizerError {
            guard case let .invalidGGUFMetadata(path, k, expected) = error else {
                Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
                return
            }
            #expect(path == file.path, sourceLocation: sourceLocation)
            #expect(k == key, "\(error)", sourceLocation: sourceLocation)
            #expect(error.description.contains(file.path) && error.description.contains(key), sourceLocation: sourceLocation)
            if let detail { #expect(expected.contains(detail), "\(error)", sourceLocation: sourceLocation) }
        }
    }

    // MARK: llama.cpp vocab GGUFs

    /// Every llama.cpp test vector (add_special=false) of the three vocab-only GGUFs.
    @Test(.requires(Assets.shared), arguments: ["qwen2", "llama-bpe", "llama-spm"])
    func llamaCppVectors(_ name: String) throws {
        let tokenizer = try Self.vocabTokenizer(name), vectors = try Assets.llamaCppVectors(name)
        #expect(vectors.count == 46)
        var matched = 0
        for (i, v) in vectors.enumerated() {
            let ids = try tokenizer.encode(v.text, addSpecialTokens: false)
            #expect(ids == v.ids, "\(name) text \(i): \(v.text.debugDescription)")
            if ids == v.ids { matched += 1 }
        }
        #expect(matched == 46)
    }

    /// Decoding the vector ids gives what the reference tokenizer decodes them to; for the
    /// lossless byte-level vocabularies that is the text itself (for Qwen2, its NFC form).
    @Test(.requires(Assets.shared), arguments: ["qwen2", "llama-bpe", "llama-spm"])
    func llamaCppVectorsDecode(_ name: String) throws {
        let tokenizer = try Self.vocabTokenizer(name), reference = try Self.reference(name),
            vectors = try Assets.llamaCppVectors(name)
        for (i, v) in vectors.enumerated() {
            let decoded = tokenizer.decode(v.ids, skipSpecialTokens: false)
            #expect(decoded == reference.decode(v.ids, skipSpecialTokens: false), "\(name) text \(i)")
            switch name {
            case "llama-bpe":
                #expect(decoded == v.text, "\(name) text \(i)")
            case "qwen2":
                #expect(Array(decoded.unicodeScalars) == Array(v.text.precomposedStringWithCanonicalMapping.unicodeScalars), "\(name) text \(i)")
            default:
                break
            }
        }
    }

    /// decode(encode(x)) == x on every GSM8K test question, as for the file-based tokenizers.
    @Test(.requires(Assets.shared), arguments: ["qwen2", "llama-bpe", "llama-spm"])
    func gsm8kRoundTrip(_ name: String) throws {
        let tokenizer = try Self.vocabTokenizer(name), questions = try Assets.gsm8kTestQuestions()
        var failures = 0
        for q in questions {
            let back = tokenizer.decode(try tokenizer.encode(q, addSpecialTokens: false))
            if back == q { continue }
            failures += 1
            if failures <= 3 { Issue.record("\(name): \(q.debugDescription) → \(back.debugDescription)") }
        }
        #expect(failures == 0)
    }

    /// Special ids, added tokens and BOS/EOS handling from the metadata, and the same ids as
    /// the reference tokenizer for the control tokens.
    @Test(.requires(Assets.shared)) func vocabGGUFSpecialTokens() throws {
        do {
            let qwen = try Self.vocabTokenizer("qwen2")
            #expect(qwen is ByteLevelBPETokenizer)
            #expect(qwen.vocabSize == 151_936)
            #expect(qwen.bosTokenId == 151_643 && qwen.eosTokenIds == [151_643] && qwen.padTokenId == 151_643)
            #expect(qwen.tokenId("<|im_start|>") == 151_644)
            let ids = try qwen.encode("<|im_start|>user\nhi<|im_end|>")
            #expect(ids.first == 151_644 && ids.last == 151_645)
            #expect(try qwen.encode("hi", addSpecialTokens: true) == qwen.encode("hi"))  // Qwen adds nothing
            #expect(qwen.decode(ids, skipSpecialTokens: true) == "user\nhi")
            #expect(qwen.decode(ids) == "<|im_start|>user\nhi<|im_end|>")
            do {
                let reference = try Self.reference("qwen2")
                let text = "<|im_start|>system\nYou are helpful.<|im_end|>\n<|endoftext|>"
                #expect(try qwen.encode(text) == reference.encode(text))
            }
        }
        do {
            let llama3 = try Self.vocabTokenizer("llama-bpe")
            #expect(llama3.bosTokenId == 128_000 && llama3.eosTokenIds == [128_001] && llama3.padTokenId == nil)
            #expect(try llama3.encode("Hello", addSpecialTokens: true) == [128_000] + llama3.encode("Hello"))  // BOS by default, as llama.cpp
            do {
                let reference = try Self.reference("llama-bpe")
                #expect(try llama3.encode("Hello", addSpecialTokens: true) == reference.encode("Hello", addSpecialTokens: true))
                let text = "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
                #expect(try llama3.encode(text) == reference.encode(text))
            }
        }
        do {
            let spm = try Self.vocabTokenizer("llama-spm")
            #expect(spm is SentencePieceTokenizer)
            #expect(spm.vocabSize == 32_000)
            #expect(spm.bosTokenId == 1 && spm.eosTokenIds == [2] && spm.padTokenId == nil)
            #expect((spm as? SentencePieceTokenizer)?.unknownTokenId == 0)
            #expect(try spm.encode("Hello", addSpecialTokens: true) == [1] + spm.encode("Hello"))
            #expect(spm.token(3) == "<0x00>")
            do {
                let reference = try Self.reference("llama-spm")
                for text in ["Hello world", " leading", "a\n\nb  c", "€ 日本", "<s>x</s>"] {
                    #expect(try spm.encode(text, addSpecialTokens: true) == reference.encode(text, addSpecialTokens: true), "\(text.debugDescription)")
                }
            }
        }
    }

    /// Loading the 150k-token Qwen2 GGUF stays fast; GGUF parsing and tokenizer building are
    /// timed separately.
    @Test(.requires(Assets.shared)) func qwen2LoadTime() throws {
        let url = Self.vocabGGUF("qwen2")
        let clock = ContinuousClock()
        var file: GGUFFile? = nil
        let parse = try clock.measure { file = try GGUFFile(path: url.path) }
        var tokenizer: (any Tokenizer)? = nil
        let build = try clock.measure { tokenizer = try loadTokenizer(gguf: file!) }
        #expect(tokenizer?.vocabSize == 151_936)
        print("qwen2 GGUF: GGUFFile parse \(parse), tokenizer build \(build)")
        // Generous bound: debug build on a shared 2-core machine.
        #expect(parse + build < .seconds(10))
    }

    // MARK: SmolLM2

    /// The real SmolLM2 GGUF's tokenizer ("smollm" pre-tokenizer) against
    /// ../shared/data/tokenizers/smollm2/tokenizer.json, and the special tokens and ids agree.
    ///
    /// That tokenizer.json was read out of this same GGUF by transformers' GGUF loader, which
    /// does not know the "smollm" pre-tokenizer and falls back to a plain ByteLevel (GPT-2 regex)
    /// split. llama.cpp's "smollm" (like SmolLM's own tokenizer.json) first splits every digit
    /// off (`\p{N}`), then applies the GPT-2 regex. The two differ only where whitespace runs
    /// into a number: "and  2/5" is "and", "ĠĠ", "2" with the digit split but "and", "Ġ", "Ġ",
    /// "2" without it — 15 of the 1319 GSM8K questions. So the GGUF tokenizer must equal that
    /// tokenizer.json with a `Digits(individual_digits)` stage put back on every question, and
    /// the unmodified file on all but those 15.
    @Test(.requires(Assets.smolLM2GGUF, Assets.shared)) func smolLM2MatchesTokenizerJSON() throws {
        let url = try Assets.smolLM2GGUF.url(), jsonURL = Assets.tokenizerPath("smollm2/tokenizer.json"),
            reference = try Assets.smollm2(), questions = try Assets.gsm8kTestQuestions()
        let file = try GGUFFile(path: url.path)
        #expect(file.metadata["tokenizer.ggml.pre"]?.string == "smollm")
        let tokenizer = try loadTokenizer(gguf: file)
        #expect(tokenizer.vocabSize == reference.vocabSize)

        // tokenizer.json with SmolLM's Sequence[Digits(individual), ByteLevel] pre-tokenizer.
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let json = try String(contentsOf: jsonURL, encoding: .utf8)
        let byteLevel = #""pre_tokenizer": {\#n    "type": "ByteLevel",\#n    "add_prefix_space": false,\#n    "trim_offsets": true,\#n    "use_regex": true\#n  }"#
        #expect(json.contains(byteLevel))
        let digits = #""pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]}"#
        try json.replacingOccurrences(of: byteLevel, with: digits).write(to: dir.appendingPathComponent("tokenizer.json"), atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(at: jsonURL.deletingLastPathComponent().appendingPathComponent("tokenizer_config.json"),
                                         to: dir.appendingPathComponent("tokenizer_config.json"))
        let withDigits = try loadTokenizer(from: dir)

        var differFromDigits = 0
        var differFromFile = 0
        for q in questions {
            let ids = try tokenizer.encode(q, addSpecialTokens: false)
            if ids != (try withDigits.encode(q, addSpecialTokens: false)) {
                differFromDigits += 1
                if differFromDigits <= 3 { Issue.record("SmolLM2 GGUF differs on \(q.debugDescription)") }
            }
            if ids != (try reference.encode(q, addSpecialTokens: false)) { differFromFile += 1 }
            if tokenizer.decode(ids) != q { Issue.record("SmolLM2 GGUF does not round-trip \(q.debugDescription)") }
        }
        #expect(differFromDigits == 0, "\(differFromDigits) of \(questions.count) GSM8K questions differ")
        #expect(differFromFile == 15, "vs. the transformers-derived tokenizer.json")
        #expect(try tokenizer.encode("and  2/5") == withDigits.encode("and  2/5"))
        #expect(try tokenizer.encode("and  2/5").count == reference.encode("and  2/5").count - 1)

        for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<file_sep>", "<empty_output>"] {
            #expect(tokenizer.tokenId(special) != nil && tokenizer.tokenId(special) == reference.tokenId(special), "\(special)")
        }
        #expect(tokenizer.tokenId("<|im_start|>") == 1)
        #expect(tokenizer.bosTokenId == reference.bosTokenId && tokenizer.eosTokenIds == reference.eosTokenIds && tokenizer.padTokenId == reference.padTokenId)
        let chat = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n<|im_start|>user\nWhat is 12+30?<|im_end|>\n<|im_start|>assistant\n"
        #expect(try tokenizer.encode(chat) == reference.encode(chat))
        #expect(try tokenizer.encode("Hi", addSpecialTokens: true) == tokenizer.encode("Hi"))  // add_bos_token = false
        #expect(tokenizer.decode(try tokenizer.encode(chat), skipSpecialTokens: true) == reference.decode(try reference.encode(chat), skipSpecialTokens: true))
        let config = try TokenizerConfig(gguf: file)
        #expect(config.chatTemplate?.contains("<|im_start|>") == true)
        #expect(config.bosToken == "<|im_start|>" && config.eosToken == "<|im_end|>" && config.padToken == "<|im_end|>")
        #expect(config.addBosToken == false && config.addEosToken == false)
    }

    // MARK: Tiny in-memory GGUFs

    @Test func toyByteLevelBPE() throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tok = try #require(try loadTokenizer(gguf: Self.gguf(Self.toyBPE(pre: "gpt-2"), in: dir)) as? ByteLevelBPETokenizer)
        let hello = try #require(tok.tokenId("hello"))
        let eot = try #require(tok.tokenId("<|eot|>"))
        let user = try #require(tok.tokenId("[USER]"))
        #expect(try tok.encode("hello<|eot|>[USER]") == [hello, eot, user])
        #expect(tok.eosTokenIds == [eot] && tok.bosTokenId == nil)
        #expect(tok.isSpecialToken(eot) && !tok.isSpecialToken(user))
        #expect(tok.decode([hello, eot, user], skipSpecialTokens: true) == "hello[USER]")
        #expect(tok.decode(try tok.encode("héllo 123 wörld")) == "héllo 123 wörld")
    }

    /// Each supported pre-tokenizer family splits as llama.cpp's regexes for that name do.
    @Test func toyPreTokenizers() throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        func pieces(_ pre: String?, _ text: String) throws -> [String] {
            let file = try Self.gguf(Self.toyBPE(pre: pre), in: dir, name: "\(pre ?? "none").gguf")
            return try #require(try loadTokenizer(gguf: file) as? ByteLevelBPETokenizer).preTokenize(text)
        }
        let text = "abc 12345!? I'm"
        #expect(try pieces("gpt-2", text) == ["abc", " 12345", "!?", " I", "'m"])
        #expect(try pieces("smollm", text) == ["abc", " ", "1", "2", "3", "4", "5", "!?", " I", "'m"])
        #expect(try pieces("qwen2", text) == ["abc", " ", "1", "2", "3", "4", "5", "!?", " I", "'m"])
        #expect(try pieces("llama-bpe", text) == ["abc", " ", "123", "45", "!?", " I", "'m"])
        // llama.cpp's "default" (also used when the key is missing): punctuation runs, GPT-2,
        // digit runs, then groups of three ASCII digits.
        #expect(try pieces("default", text) == ["abc", " ", "123", "45", "!?", " I", "'", "m"])
        #expect(try pieces(nil, text) == ["abc", " ", "123", "45", "!?", " I", "'", "m"])
        #expect(GGUFTokenizerSupport.preTokenizers.contains("smollm"))
    }

    /// The SentencePiece path (ModelProto built in memory): merges by score, byte fallback,
    /// dummy prefix, BOS, and `add_space_prefix` / `add_bos_token` overrides.
    @Test func toySentencePiece() throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let tok = try #require(try loadTokenizer(gguf: Self.gguf(Self.toySPM(), in: dir)) as? SentencePieceTokenizer)
        let id = { (t: String) in Self.toySPMTokens.firstIndex(of: t)! }
        #expect(try tok.encode("hello") == [id("▁hello")])
        #expect(try tok.encode("hello", addSpecialTokens: true) == [1, id("▁hello")])
        #expect(try tok.encode("hi") == [id("▁h"), 3 + 0x69])  // "i" is not a piece: byte fallback
        #expect(tok.decode(try tok.encode("hi ü")) == "hi ü")
        #expect(tok.bosTokenId == 1 && tok.eosTokenIds == [2] && tok.unknownTokenId == 0)
        #expect(try tok.encode("x</s>") == [id("▁"), 3 + 0x78, 2])

        let plain = try Self.gguf(Self.toySPM(extra: [("tokenizer.ggml.add_space_prefix", .bool(false)), ("tokenizer.ggml.add_bos_token", .bool(false))]),
                                  in: dir, name: "plain.gguf")
        let noPrefix = try loadTokenizer(gguf: plain)
        #expect(try noPrefix.encode("hello", addSpecialTokens: true) == [id("he"), id("ll"), id("o")])
    }

    // MARK: Errors

    @Test func unknownPreTokenizerNamesKeyAndSupportedOnes() throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = try Self.gguf(Self.toyBPE(pre: "made-up"), in: dir)
        #expect(throws: TokenizerError.unsupportedGGUFValue(path: file.path, key: "tokenizer.ggml.pre", value: "made-up", supported: GGUFTokenizerSupport.preTokenizers)) {
            try loadTokenizer(gguf: file)
        }
        do { _ = try loadTokenizer(gguf: file) } catch {
            #expect("\(error)".contains("made-up") && "\(error)".contains("qwen2") && "\(error)".contains("smollm"))
        }
        let t5 = try Self.gguf([("tokenizer.ggml.model", .string("t5")), ("tokenizer.ggml.tokens", Self.strings(["a"]))], in: dir, name: "t5.gguf")
        #expect(throws: TokenizerError.unsupportedGGUFValue(path: t5.path, key: "tokenizer.ggml.model", value: "t5", supported: ["gpt2", "llama"])) {
            try loadTokenizer(gguf: t5)
        }
    }

    @Test func malformedMetadataGivesTypedErrors() throws {
        let tokensKey = "tokenizer.ggml.tokens"
        func replacing(_ m: [(String, GGUFValue)], _ key: String, with value: GGUFValue?) -> [(String, GGUFValue)] {
            var out = m.filter { $0.0 != key }
            if let value { out.append((key, value)) }
            return out
        }
        let spm = Self.toySPM()
        // Scores of the wrong length.
        try expectInvalid(replacing(spm, "tokenizer.ggml.scores", with: Self.floats([0, 1, 2])), key: "tokenizer.ggml.scores", mentioning: "found 3")
        // Scores missing for a SentencePiece model; scores that are not numbers.
        try expectInvalid(replacing(spm, "tokenizer.ggml.scores", with: nil), key: "tokenizer.ggml.scores", mentioning: "missing")
        try expectInvalid(replacing(spm, "tokenizer.ggml.scores", with: Self.strings(Self.toySPMTokens)), key: "tokenizer.ggml.scores")
        // token_type of the wrong length.
        try expectInvalid(replacing(spm, "tokenizer.ggml.token_type", with: Self.int32s([1])), key: "tokenizer.ggml.token_type")
        // Tokens missing, not a string array, or not an array.
        try expectInvalid(replacing(spm, tokensKey, with: nil), key: tokensKey, mentioning: "missing")
        try expectInvalid(replacing(spm, tokensKey, with: Self.int32s([1, 2, 3])), key: tokensKey, mentioning: "int32")
        try expectInvalid(replacing(spm, tokensKey, with: .string("abc")), key: tokensKey)
        // The model key missing or not a string.
        try expectInvalid(replacing(spm, "tokenizer.ggml.model", with: nil), key: "tokenizer.ggml.model")
        try expectInvalid(replacing(spm, "tokenizer.ggml.model", with: .uint32(2)), key: "tokenizer.ggml.model")
        // A special id past the vocabulary; a flag that is not a bool.
        try expectInvalid(replacing(spm, "tokenizer.ggml.bos_token_id", with: .uint32(99_999)), key: "tokenizer.ggml.bos_token_id", mentioning: "99999")
        try expectInvalid(replacing(spm, "tokenizer.ggml.add_bos_token", with: .string("yes")), key: "tokenizer.ggml.add_bos_token")

        let bpe = Self.toyBPE(pre: "gpt-2")
        // Merges missing, without a space, or naming a token that does not exist.
        try expectInvalid(replacing(bpe, "tokenizer.ggml.merges", with: nil), key: "tokenizer.ggml.merges", mentioning: "missing")
        try expectInvalid(replacing(bpe, "tokenizer.ggml.merges", with: Self.strings(["h e", "ll"])), key: "tokenizer.ggml.merges", mentioning: "entry 1")
        try expectInvalid(replacing(bpe, "tokenizer.ggml.merges", with: Self.strings(["h e", "x y"])), key: "tokenizer.ggml.merges", mentioning: "\"xy\"")
        // Duplicate token texts.
        let tokens = Self.byteAlphabet + ["he", "ll", "hell", "hello", "12", "123", "<|eot|>", "he"]
        try expectInvalid(replacing(bpe, tokensKey, with: Self.strings(tokens)), key: tokensKey, mentioning: "\"he\"")
    }
}
