import Foundation
import Testing
import TestSupport
import Tokenize

/// decode(encode(x)) == x on every GSM8K test question (../shared, even for the bundled stories260K).
@Suite(.requires(Assets.shared)) struct RoundTripTests {
    private func roundTrip(_ name: String, _ tokenizer: any Tokenizer, expected: (String) -> String = { $0 }) throws {
        let questions = try Assets.gsm8kTestQuestions()
        #expect(questions.count == 1319)
        var failures = 0
        for q in questions {
            let ids = try tokenizer.encode(q, addSpecialTokens: false)
            let back = tokenizer.decode(ids, skipSpecialTokens: false)
            if back != expected(q) {
                failures += 1
                if failures <= 3 { Issue.record("\(name): \(q.debugDescription) → \(back.debugDescription)") }
            }
        }
        #expect(failures == 0, "\(name): \(failures) of \(questions.count) questions do not round-trip")
    }

    @Test func qwen2TokenizerJSON() throws { try roundTrip("qwen2 tokenizer.json", try Assets.qwen2JSON()) }
    @Test func qwen2VocabMerges() throws { try roundTrip("qwen2 vocab.json+merges.txt", try Assets.qwen2VocabMerges()) }
    @Test func smollm2() throws { try roundTrip("smollm2", try Assets.smollm2()) }
    @Test func llama3Tiktoken() throws { try roundTrip("llama3", try Assets.llama3()) }
    @Test func llama2SentencePiece() throws { try roundTrip("llama2", try Assets.llama2()) }

    /// stories260K's SentencePiece normalizer has remove_extra_whitespaces: libsentencepiece
    /// drops leading/trailing spaces and collapses runs of spaces, so that is all that changes.
    @Test func stories260KUpToSpaceRuns() throws {
        try roundTrip("stories260K", try Assets.stories260K()) { q in
            var out = ""
            var previousSpace = false
            for c in q {
                if c == " " {
                    if !previousSpace { out.append(c) }
                    previousSpace = true
                } else {
                    out.append(c)
                    previousSpace = false
                }
            }
            while out.hasPrefix(" ") { out.removeFirst() }
            while out.hasSuffix(" ") { out.removeLast() }
            return out
        }
    }

    /// One tokenizer used from several threads at once (the word cache is shared) gives the
    /// same ids as sequential use.
    @Test func concurrentEncodingMatchesSequential() throws {
        let tok = try Assets.qwen2JSON(), llama3 = try Assets.llama3(), questions = try Assets.gsm8kTestQuestions()
        for t in [tok, llama3] as [any Tokenizer] {
            let sample = Array(questions.prefix(400))
            let sequential = try sample.map { try t.encode($0, addSpecialTokens: false) }
            final class Results: @unchecked Sendable {
                let lock = NSLock()
                var ids: [[Int]]
                init(_ n: Int) { ids = Array(repeating: [], count: n) }
            }
            let results = Results(sample.count)
            DispatchQueue.concurrentPerform(iterations: sample.count) { i in
                let ids = (try? t.encode(sample[i], addSpecialTokens: false)) ?? [-1]
                results.lock.lock()
                results.ids[i] = ids
                results.lock.unlock()
            }
            #expect(results.ids == sequential)
        }
    }

    /// SmolLM2's tokenizer.json (ByteLevel pre-tokenizer with the GPT-2 regex) loads with its
    /// tokenizer_config.json special tokens.
    @Test func smollm2Loads() throws {
        let tok = try Assets.smollm2()
        #expect(tok.vocabSize == 49_152)
        #expect(tok.tokenId("<|im_start|>") == 1)
        #expect(tok.bosTokenId == 1)
        #expect(tok.eosTokenIds == [2])
        #expect(tok.padTokenId == 2)
        // The post-processor template adds nothing.
        #expect(try tok.encode("Hello", addSpecialTokens: true) == tok.encode("Hello", addSpecialTokens: false))
    }

    /// Bytes of one character split across tokens are reassembled before UTF-8 decoding, and
    /// an incomplete sequence decodes to U+FFFD like the references.
    @Test func splitBytesReassemble() throws {
        let qwen = try Assets.qwen2JSON(), llama3 = try Assets.llama3(), llama2 = try Assets.llama2()
        for tok in [qwen, llama3, llama2] as [any Tokenizer] {
            let text = "日本語𝔘𐍈ꙮü"
            let ids = try tok.encode(text, addSpecialTokens: false)
            #expect(tok.decode(ids) == text)
            var pieces = ""
            for id in ids { pieces += tok.decode([id]) }
            #expect(pieces.contains("\u{FFFD}"), "some token of \(text) holds a partial character")
        }
        // Llama 2's byte pieces <0xE2><0x82><0xAC> (ids 3 + byte) are the UTF-8 of "€".
        let bytes = ["<0xE2>", "<0x82>", "<0xAC>"].compactMap { llama2.tokenId($0) }
        #expect(bytes == [229, 133, 175])
        #expect(llama2.decode(bytes) == "€")
        #expect(llama2.decode(Array(bytes.prefix(2))) == "\u{FFFD}\u{FFFD}")
    }
}
