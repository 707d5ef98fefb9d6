import Foundation
import Testing
import TestSupport
import Tokenize

/// Meta's own Llama 3 tokenizer unit tests (llama_models tests/api/test_tokenizer.py), as
/// transcribed in ../shared/data/tokenizers/llama3-tiktoken/test_vectors.json.
@Suite struct Llama3TiktokenTests {
    private func vectors() throws -> [String: Any]? {
        guard let url = Assets.tokenizerPath("llama3-tiktoken/test_vectors.json") else { return nil }
        return try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any]
    }

    private func cases(_ v: [String: Any]) -> [[String: Any]] { v["cases"] as? [[String: Any]] ?? [] }

    @Test func specialTokenIds() throws {
        guard let tok = try Assets.llama3(), let v = try vectors() else { return }
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
        guard let tok = try Assets.llama3(), let v = try vectors() else { return }
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
        guard let tok = try Assets.llama3(), let v = try vectors() else { return }
        let decodeCases = cases(v).filter { $0["decode_ids"] != nil }
        #expect(!decodeCases.isEmpty)
        for c in decodeCases {
            let ids = try #require(c["decode_ids"] as? [Int])
            let text = try #require(c["text"] as? String)
            #expect(tok.decode(ids, skipSpecialTokens: false) == text)
            #expect(tok.decode(ids, skipSpecialTokens: true) == text.replacingOccurrences(of: "<|begin_of_text|>", with: "").replacingOccurrences(of: "<|end_of_text|>", with: ""))
        }
    }

    @Test func chatMessageAndDialog() throws {
        guard let tok = try Assets.llama3(), let v = try vectors() else { return }
        var checked = 0
        for c in cases(v) {
            if let m = c["chat_message"] as? [String: String] {
                let message = ChatMessage(role: m["role"] ?? "", content: m["content"] ?? "")
                #expect(try Llama3ChatFormat.encodeMessage(message, with: tok) == c["ids"] as? [Int])
                checked += 1
            }
            if let d = c["chat_dialog"] as? [[String: String]] {
                let dialog = d.map { ChatMessage(role: $0["role"] ?? "", content: $0["content"] ?? "") }
                let ids = try Llama3ChatFormat.encodeDialogPrompt(dialog, with: tok, addGenerationPrompt: c["add_generation_prompt"] as? Bool ?? true)
                #expect(ids == c["ids"] as? [Int])
                checked += 1
            }
        }
        #expect(checked == 2)
    }

    /// Special tokens written in the text are matched (as the HF tokenizer does).
    @Test func specialTokensInText() throws {
        guard let tok = try Assets.llama3() else { return }
        let ids = try tok.encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", addSpecialTokens: false)
        #expect(ids.first == 128_006 && ids.last == 128_009 && ids.contains(128_007))
        #expect(tok.decode(ids, skipSpecialTokens: true) == "user\n\nHi")
    }
}
