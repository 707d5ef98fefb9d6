import Foundation
import Testing
import TestSupport
import Tokenize

/// Edge cases of normalization, the split regexes and long-word merging, with ids produced by
/// the reference libraries (tokenizers 0.23.3 and tiktoken 0.14.0):
///
///     Tokenizer.from_file("qwen2/tokenizer.json").encode(text, add_special_tokens=False).ids
///     Tokenizer.from_file("smollm2/tokenizer.json").encode(text, add_special_tokens=False).ids
///     tiktoken.Encoding("l3", pat_str=PAT, mergeable_ranks=load(tokenizer.model), special_tokens={}).encode_ordinary(text)
@Suite(.requires(Assets.shared)) struct ReferenceGoldenTests {
    static let qwen2: [(String, [Int])] = [
        // NFC after a full decomposition reorders the marks of U+0F73 U+0F73.
        ("\u{F73}\u{F73}x", [62416, 109, 62416, 109, 62416, 110, 62416, 110, 87]),
        // tokenizers' normalization tables are Unicode 9: U+089A (Unicode 14) is a starter to it.
        ("\u{1DC1}\u{89A}", [157, 115, 223, 156, 95, 248]),
        // Hangul: out-of-range jamo do not compose.
        ("\u{1104}\u{1176}\u{AC00}\u{11C3} \u{1113}\u{116F}", [148579, 124052, 114, 19969, 150479, 225, 86089, 226, 241, 150236]),
        // U+088F is a letter only since Unicode 17; the regex engines (Unicode 16) do not know it.
        ("a\u{88F}b \u{88F}1", [64, 156, 95, 237, 65, 27982, 95, 237, 16]),
        // (?i:'s|...) also matches U+017F LATIN SMALL LETTER LONG S (simple case folding).
        ("'\u{17F} 'S 'RE 'Ll 've", [6, 144815, 364, 50, 364, 787, 364, 43, 75, 364, 586]),
        // \s*[\r\n]+ and \s+(?!\S) backtracking.
        ("  \n\n \t x\r\n  y   ", [18611, 7018, 856, 319, 220, 379, 262]),
        // A 102-byte word: merged with the heap, not the linear scan.
        ("SupercalifragilisticexpialidociousSupercalifragilisticexpialidociousSupercalifragilisticexpialidocious",
         [10048, 2962, 278, 333, 4101, 321, 4532, 4580, 530, 307, 77187, 10048, 2962, 278, 333, 4101, 321, 4532, 4580, 530, 307, 77187, 10048, 2962, 278, 333, 4101, 321, 4532, 4580, 530, 307, 77187]),
        ("<|im_start|>user\nHi<|im_end|>\n", [151644, 872, 198, 13048, 151645, 198]),
        ("cafe\u{301} na\u{EF}ve 2024-11-23 \u{1F600}!!", [924, 58858, 94880, 586, 220, 17, 15, 17, 19, 12, 16, 16, 12, 17, 18, 90316, 2928]),
    ]

    static let smollm2: [(String, [Int])] = [
        ("12345678901234567890123456789012345678901234567890123456789012345678901234567890",
         [33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 32]),
        ("Hello   world's 'S test!!! ???\n\n x", [19556, 256, 905, 506, 637, 67, 1028, 29646, 9148, 16693, 1116, 1792]),
        // GPT-2's contractions are case-sensitive: no long-s folding.
        ("\u{17F}'s 'll 'LL", [144, 140, 506, 637, 764, 637, 16421]),
        (String(repeating: "a", count: 60) + " " + String(repeating: "\u{E9}", count: 30),
         [46880, 46880, 46880, 46880, 46880, 46880, 46880, 46880, 46880, 46880, 46880, 46880, 46880, 46880, 46880, 26411, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756, 2756]),
    ]

    static let llama3: [(String, [Int])] = [
        ("1234567890123 12", [4513, 10961, 16474, 11531, 18, 220, 717]),
        (" '\u{17F} 'S 'Ve", [364, 129, 123, 364, 50, 364, 43712]),
        // Tolong Siki digits are \p{N} only since Unicode 17.
        ("\u{11DE0}1\u{11DE1}", [172, 239, 115, 254, 16, 172, 239, 115, 94]),
        ("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", [45202, 45202, 45202, 45202, 45202, 45202, 45202, 45202, 19023, 4239]),
        ("\u{F73}\u{F73}", [63516, 111, 63516, 111]),  // no normalizer in tiktoken
    ]

    private func check(_ tokenizer: any Tokenizer, _ table: [(String, [Int])]) throws {
        for (text, expected) in table {
            #expect(try tokenizer.encode(text, addSpecialTokens: false) == expected, "\(text.debugDescription)")
        }
    }

    @Test func qwen2TokenizerJSON() throws { try check(try Assets.qwen2JSON(), Self.qwen2) }
    @Test func qwen2VocabMerges() throws {
        // vocab.json + merges.txt carry no added tokens; skip the one case that uses them.
        try check(try Assets.qwen2VocabMerges(), Self.qwen2.filter { !$0.0.contains("<|") })
    }
    @Test func smollm2() throws { try check(try Assets.smollm2(), Self.smollm2) }
    @Test func llama3() throws { try check(try Assets.llama3(), Self.llama3) }

    /// The pre-tokenizer pieces of the Qwen2 pattern on the whitespace rules, as
    /// `tokenizers`' `pre_tokenize_str(normalize_str(text))` returns them (byte-level decoded).
    @Test func qwen2Pieces() throws {
        let tok = try #require(try Assets.qwen2JSON() as? ByteLevelBPETokenizer)
        #expect(tok.preTokenize("  \n\n \t x\r\n  y   ") == ["  \n\n", " \t", " x", "\r\n", " ", " y", "   "])
        #expect(tok.preTokenize("Hello world's 123!!\n") == ["Hello", " world", "'s", " ", "1", "2", "3", "!!\n"])
        #expect(tok.preTokenize("a<|im_end|>b").count == 3)
    }
}
