import Foundation
import Testing
import TestSupport
import Tokenize

@Suite struct SentencePieceTests {
    /// reference_greedy.json's `greedy_token_ids` are the 200 tokens generated after BOS; its
    /// `expected_text` is their text (llama2.c drops the leading space after BOS). Encoding
    /// the text with SentencePiece's dummy prefix gives back exactly those ids.
    @Test func stories260KEncodesReferenceText() throws {
        let url = TestPaths.models.appendingPathComponent("stories260K/reference_greedy.json")
        let reference = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let text = try #require(reference["expected_text"] as? String)
        let greedy = try #require(reference["greedy_token_ids"] as? [Int])
        #expect(greedy.count == 200)
        let tok = try Assets.stories260K()
        #expect(try tok.encode(text, addSpecialTokens: false) == greedy)
        #expect(try tok.encode(text, addSpecialTokens: true) == [1] + greedy)
        #expect(tok.decode(greedy) == text)
        #expect(tok.decode([1] + greedy, skipSpecialTokens: true) == text)
    }

    @Test func stories260KVocabulary() throws {
        let tok = try Assets.stories260K()
        #expect(tok.vocabSize == 512)
        #expect(tok.bosTokenId == 1)
        #expect(tok.eosTokenIds == [2])
        #expect(tok.padTokenId == nil)
        #expect(tok.token(1) == "<s>")
        #expect(tok.tokenId("</s>") == 2)
        #expect(tok.tokenId("no such piece") == nil)
        #expect(tok.token(512) == nil)
        // Byte pieces come right after the three specials.
        #expect(tok.tokenId("<0x0A>") == 3 + 0x0A)
    }

    @Test(.requires(Assets.shared)) func llama2Vocabulary() throws {
        let tok = try Assets.llama2()
        #expect(tok.vocabSize == 32_000)
        #expect(tok.bosTokenId == 1)
        #expect(tok.eosTokenIds == [2])
        #expect(tok.padTokenId == nil)  // Llama 2 has no pad piece
        #expect(tok.tokenId("<unk>") == 0)
        #expect(tok.token(0) == "<unk>")
        #expect(tok.tokenId("▁Hello") == 15_043)
        #expect(tok.token(15_043) == "▁Hello")
        #expect(try tok.encode("Hello world", addSpecialTokens: true) == [1, 15_043, 3_186])
        #expect(try tok.encode("Hello world", addSpecialTokens: false) == [15_043, 3_186])
        // Control tokens are skipped on request; otherwise written out, and the text after one
        // keeps its word-initial space (as Hugging Face's LlamaTokenizer prints "<s> Hello").
        #expect(tok.decode([1, 15_043, 3_186, 2], skipSpecialTokens: true) == "Hello world")
        #expect(tok.decode([1, 15_043, 3_186, 2], skipSpecialTokens: false) == "<s> Hello world</s>")
        // Literal special tokens in the text are matched.
        #expect(try tok.encode("Hi</s>", addSpecialTokens: false).last == 2)
    }
}
