import Foundation
import Testing
import TestSupport
import Tokenize

/// Meta's own Llama 3 tokenizer unit tests (llama_models tests/api/test_tokenizer.py), as
/// transcribed in ../shared/data/tokenizers/llama3-tiktoken/test_vectors.json.
@Suite(.requires(Assets.shared)) struct Llama3TiktokenTests {
    private func vectors() throws -> [String: Any] {
        let url = Assets.tokenizerPath("llama3-tiktoken/test_vectors.json")
        return try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    }

    private func cases(_ v: [String: Any]) -> [[String: Any]] { v["cases"] as? [[String: Any]] ?? [] }

    @Test func specialTokenIds() throws {
        let tok = try Assets.llama3(), v = try vectors()
        let named = try #require(v["special_tokens_first12"] as? [String: Int])
        #expect(named.count == 12)
        for (name, id) in named {
            #expect(tok.tokenId(name) == id, "\(name)")
            #expect(tok.token(id) == name)
        }
        // "ids 128012..128255 are <|reserved_special_token_{2+i}|>"
        for i in 0..<244 {
            #expect(tok.tokenId("<|reserved_special_token_\(2 + i)|>") == 128_012 + i)
        }
        #expect(tok.vocabSize == 128_256)
        #expect(tok.numBaseTokens == v["num_base_tokens"] as? Int)
        #expect(tok.bosTokenId == 128_000)
        #expect(tok.eosTokenIds.contains(128_001) && tok.eosTokenIds.contains(128_009))
        // The file's pattern is the one the scanner implements.
        #expect(SplitPattern(regex: try #require(v["pat_str"] as? String)) == .llama3)
    }

    @Test func encodeWithBosAndEos() throws {
        let tok = try Assets.llama3(), v = try vectors()
        let encodeCases = cases(v).filter { $0["bos"] != nil }
        #expect(!encodeCases.isEmpty)
        for c in encodeCases {
            let text = try #require(c["text"] as? String)
            let expected = try #require(c["ids"] as? [Int])
            let ids = tok.encode(text, bos: c["bos"] as? Bool ?? false, eos: c["eos"] as? Bool ?? false)
            #expect(ids == expected)
            // addSpecialTokens adds BOS only (Meta's default and the HF tokenizer's).
            #expect(try tok.encode(text, addSpecialTokens: true) == Array(expected.dropLast()))
            #expect(try tok.encode(text, addSpecialTokens: false) == Array(expected.dropFirst().dropLast()))
        }
    }

    @Test func decode() throws {
        let tok = try Assets.llama3(), v = try vectors()
        let decodeCases = cases(v).filter { $0["decode_ids"] != nil }
        #expect(!decodeCases.isEmpty)
        for c in decodeCases {
            let ids = try #require(c["decode_ids"] as? [Int])
            let text = try #require(c["text"] as? String)
            #expect(tok.decode(ids, skipSpecialTokens: false) == text)
            #expect(tok.decode(ids, skipSpecialTokens: true) == text.replacingOccurrences(of: "<|begin_of_text|>", with: "").replacingOccurrences(of: "<|end_of_text|>", with: ""))
        }
    }

    /// Special tokens written in the text are matched (as the HF tokenizer does).
    @Test func specialTokensInText() throws {
        let tok = try Assets.llama3()
        let ids = try tok.encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", addSpecialTokens: false)
        #expect(ids.first == 128_006 && ids.last == 128_009 && ids.contains(128_007))
        #expect(tok.decode(ids, skipSpecialTokens: true) == "user\n\nHi")
    }
}
