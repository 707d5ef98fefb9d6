import Foundation
import Testing
import TestSupport
import Tokenize

/// llama.cpp's tokenizer test vectors (46 texts each, add_special=false), produced by the
/// reference libraries: Qwen2 with `tokenizers`, Llama 3 ("llama-bpe") with tiktoken/`tokenizers`,
/// Llama 2 ("llama-spm") with sentencepiece.
@Suite(.requires(Assets.shared)) struct LlamaCppVectorTests {
    private func check(_ name: String, _ tokenizer: any Tokenizer) throws {
        let vectors = try Assets.llamaCppVectors(name)
        #expect(vectors.count == 46)
        var matched = 0
        for (i, v) in vectors.enumerated() {
            let ids = try tokenizer.encode(v.text, addSpecialTokens: false)
            #expect(ids == v.ids, "\(name) text \(i): \(v.text.debugDescription)")
            if ids == v.ids { matched += 1 }
        }
        #expect(matched == 46)
    }

    @Test func qwen2FromTokenizerJSON() throws {
        try check("qwen2", try Assets.qwen2JSON())
    }

    @Test func qwen2FromVocabAndMerges() throws {
        try check("qwen2", try Assets.qwen2VocabMerges())
    }

    @Test func llama3TiktokenModel() throws {
        try check("llama-bpe", try Assets.llama3())
    }

    @Test func llama2SentencePiece() throws {
        try check("llama-spm", try Assets.llama2())
    }
}
