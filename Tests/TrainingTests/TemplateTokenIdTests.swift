import Foundation
import Testing
import Tokenize
import TestSupport
@testable import Training

/// Pins the exact token ids and masks of the first Math10K training record
/// (`ft-training_set/math_data.json`, record 0: "Julia played tag with 16 kids on monday. ...",
/// output "\nA: She played ... The answer is 4.", answer "4.0") under each template, with the real
/// Qwen2 byte-level BPE (`tokenizers/qwen2/tokenizer.json`, EOS `<|endoftext|>` 151643, no BOS) and
/// the Llama 2 SentencePiece model (`tokenizers/llama2-spm/tokenizer.model`, BOS 1, EOS 2).
///
/// The expected ids were computed independently in Python: the template text rebuilt from the
/// reference scripts' f-strings, encoded with the `tokenizers` library (`Tokenizer.from_file(...)
/// .encode(text).ids`) and the `sentencepiece` library (`[bos] + sp.encode(text)`), EOS id
/// appended, prompt length = `len(encode(prompt))` (with the BOS for Llama). For Qwen the alpaca
/// prompt's final "\n" and the output's leading "\n" merge into one "\n\n" token (1447), so
/// the joint text is not the concatenation of the separately tokenized parts: the mask length
/// still comes from the prompt alone, as both references do.
@Suite("Template token ids (real tokenizers)")
struct TemplateTokenIdTests {
    /// The Qwen2.5 base EOS. `tokenizers/qwen2` has no tokenizer_config.json naming one, so the
    /// test supplies it the way a model's tokenizer_config would.
    struct QwenBase: Tokenizer {
        let base: any Tokenizer
        let eos: Int
        func encode(_ text: String, addSpecialTokens: Bool) throws -> [Int] { try base.encode(text, addSpecialTokens: addSpecialTokens) }
        func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String { base.decode(ids, skipSpecialTokens: skipSpecialTokens) }
        var vocabSize: Int { base.vocabSize }
        var bosTokenId: Int? { base.bosTokenId }
        var eosTokenIds: [Int] { [eos] }
        var padTokenId: Int? { base.padTokenId }
        func tokenId(_ token: String) -> Int? { base.tokenId(token) }
        func token(_ id: Int) -> String? { base.token(id) }
    }

    static func qwen() throws -> any Tokenizer {
        let url = TestPaths.shared("data/tokenizers/qwen2/tokenizer.json")
        let base = try loadTokenizer(from: url)
        let eos = try #require(base.tokenId("<|endoftext|>"))
        #expect(eos == 151643)
        return QwenBase(base: base, eos: eos)
    }

    static func llama() throws -> any Tokenizer {
        let url = TestPaths.shared("data/tokenizers/llama2-spm/tokenizer.model")
        let tok = try loadTokenizer(from: url)
        #expect(tok.bosTokenId == 1)
        #expect(tok.eosTokenId == 2)
        return tok
    }

    static func firstMath10K() throws -> Example {
        let url = TestPaths.shared("data/datasets/llm-adapters/ft-training_set/math_data.json")
        let e = try loadExamples(from: url, strict: true).examples
        #expect(e.count == 3260)
        #expect(e[0].answer == "4.0")
        return e[0]
    }

    static func check(_ ex: Example, _ template: PromptTemplate, _ tok: any Tokenizer,
                      _ expected: (ids: [Int], promptLength: Int)) throws {
        let t = try tokenize(ex, template: template, tokenizer: tok)
        #expect(t.inputIds == expected.ids, "\(template.rawValue): input ids")
        #expect(t.promptLength == expected.promptLength, "\(template.rawValue): prompt length")
        let labels = [Int](repeating: -100, count: expected.promptLength) + Array(expected.ids[expected.promptLength...])
        #expect(t.labels == labels, "\(template.rawValue): labels")
    }

    @Test(.requires(Assets.shared)) func qwenTemplates() throws {
        let tok = try Self.qwen(), ex = try Self.firstMath10K()
        try Self.check(ex, .ndlinear, tok, Self.qwenNdlinear)
        try Self.check(ex, .auto, tok, Self.qwenNdlinear)
        try Self.check(ex, .alpaca, tok, Self.qwenAlpaca)
        try Self.check(ex, .llmAdapters, tok, Self.qwenLlmadapters)
        #expect(try evalPromptIds(ex, template: .ndlinear, tokenizer: tok) == Self.qwenNdlinearEval.ids)
        #expect(try evalPromptIds(ex, template: .llmAdapters, tokenizer: tok) == Self.qwenLlmadaptersEval.ids)
        // The seam merge is real: the joint ids do not start with the prompt's own ids.
        let prompt = try tok.encode(try PromptTemplate.alpaca.render(ex).prompt, addSpecialTokens: true)
        #expect(Array(Self.qwenAlpaca.ids.prefix(prompt.count)) != prompt)
    }

    @Test(.requires(Assets.shared)) func llamaTemplates() throws {
        let tok = try Self.llama(), ex = try Self.firstMath10K()
        try Self.check(ex, .ndlinear, tok, Self.llamaNdlinear)
        try Self.check(ex, .alpaca, tok, Self.llamaAlpaca)
        try Self.check(ex, .llmAdapters, tok, Self.llamaLlmadapters)
        #expect(try evalPromptIds(ex, template: .ndlinear, tokenizer: tok) == Self.llamaNdlinearEval.ids)
        #expect(try evalPromptIds(ex, template: .llmAdapters, tokenizer: tok) == Self.llamaLlmadaptersEval.ids)
        // Truncation keeps the mask: 50 tokens of the ndlinear example are all prompt (60 tokens).
        let cut = try tokenize(ex, template: .ndlinear, tokenizer: tok, options: TokenizeOptions(maxLength: 50))
        #expect(cut.inputIds == Array(Self.llamaNdlinear.ids.prefix(50)))
        #expect(cut.labels.allSatisfy { $0 == -100 })
    }

    // MARK: Expected ids (Python: tokenizers 0.23.3, sentencepiece 0.2.3)

    static let qwenNdlinear: (ids: [Int], promptLength: Int) = (
        [
            14374, 29051, 510, 28085, 685, 6342, 4772, 448, 220, 16, 21, 6837, 389, 93199, 13, 1416,
            1340, 6342, 4772, 448, 220, 16, 17, 803, 6837, 389, 93199, 1091, 389, 259, 7047, 13,
            2585, 1657, 6837, 1521, 1340, 1486, 448, 389, 259, 7047, 1939, 14374, 12478, 510, 32, 25,
            2932, 6342, 448, 220, 16, 21, 6837, 389, 7014, 13, 2932, 6342, 448, 220, 16, 17,
            803, 6837, 389, 7014, 1091, 389, 7589, 13, 2938, 3363, 389, 7589, 1340, 6342, 448, 220,
            16, 21, 481, 220, 16, 17, 284, 220, 19, 6837, 13, 576, 4226, 374, 220, 19,
            382, 14374, 13023, 21806, 510, 59, 79075, 90, 19, 13, 15, 92, 151643,
        ],
        46
    )

    static let qwenAlpaca: (ids: [Int], promptLength: Int) = (
        [
            38214, 374, 458, 7600, 429, 16555, 264, 3383, 13, 9645, 264, 2033, 429, 34901, 44595, 279,
            1681, 382, 14374, 29051, 510, 28085, 685, 6342, 4772, 448, 220, 16, 21, 6837, 389, 93199,
            13, 1416, 1340, 6342, 4772, 448, 220, 16, 17, 803, 6837, 389, 93199, 1091, 389, 259,
            7047, 13, 2585, 1657, 6837, 1521, 1340, 1486, 448, 389, 259, 7047, 1939, 14374, 5949, 1447,
            32, 25, 2932, 6342, 448, 220, 16, 21, 6837, 389, 7014, 13, 2932, 6342, 448, 220,
            16, 17, 803, 6837, 389, 7014, 1091, 389, 7589, 13, 2938, 3363, 389, 7589, 1340, 6342,
            448, 220, 16, 21, 481, 220, 16, 17, 284, 220, 19, 6837, 13, 576, 4226, 374,
            220, 19, 13, 151643,
        ],
        64
    )

    static let qwenLlmadapters: (ids: [Int], promptLength: Int) = (
        [
            38214, 374, 458, 7600, 429, 16555, 264, 3383, 13, 9645, 264, 2033, 429, 34901, 44595, 279,
            1681, 13, 18611, 394, 16600, 29051, 510, 394, 39294, 6342, 4772, 448, 220, 16, 21, 6837,
            389, 93199, 13, 1416, 1340, 6342, 4772, 448, 220, 16, 17, 803, 6837, 389, 93199, 1091,
            389, 259, 7047, 13, 2585, 1657, 6837, 1521, 1340, 1486, 448, 389, 259, 7047, 5267, 6360,
            394, 16600, 5949, 510, 6360, 32, 25, 2932, 6342, 448, 220, 16, 21, 6837, 389, 7014,
            13, 2932, 6342, 448, 220, 16, 17, 803, 6837, 389, 7014, 1091, 389, 7589, 13, 2938,
            3363, 389, 7589, 1340, 6342, 448, 220, 16, 21, 481, 220, 16, 17, 284, 220, 19,
            6837, 13, 576, 4226, 374, 220, 19, 13, 151643,
        ],
        69
    )

    static let qwenNdlinearEval: (ids: [Int], promptLength: Int) = (
        [
            14374, 29051, 510, 28085, 685, 6342, 4772, 448, 220, 16, 21, 6837, 389, 93199, 13, 1416,
            1340, 6342, 4772, 448, 220, 16, 17, 803, 6837, 389, 93199, 1091, 389, 259, 7047, 13,
            2585, 1657, 6837, 1521, 1340, 1486, 448, 389, 259, 7047, 1939, 14374, 12478, 510,
        ],
        0
    )

    static let qwenLlmadaptersEval: (ids: [Int], promptLength: Int) = (
        [
            38214, 374, 458, 7600, 429, 16555, 264, 3383, 13, 9645, 264, 2033, 429, 34901, 44595, 279,
            1681, 13, 4710, 394, 16600, 29051, 510, 394, 39294, 6342, 4772, 448, 220, 16, 21, 6837,
            389, 93199, 13, 1416, 1340, 6342, 4772, 448, 220, 16, 17, 803, 6837, 389, 93199, 1091,
            389, 259, 7047, 13, 2585, 1657, 6837, 1521, 1340, 1486, 448, 389, 259, 7047, 1939, 394,
            16600, 5949, 510, 338,
        ],
        0
    )

    static let llamaNdlinear: (ids: [Int], promptLength: Int) = (
        [
            1, 835, 2799, 4080, 29901, 13, 27501, 423, 5318, 4055, 411, 29871, 29896, 29953, 413, 4841,
            373, 7398, 388, 29889, 960, 1183, 5318, 4055, 411, 29871, 29896, 29906, 901, 413, 4841, 373,
            7398, 388, 1135, 373, 260, 1041, 3250, 29889, 1128, 1784, 413, 4841, 1258, 1183, 1708, 411,
            373, 260, 1041, 3250, 29973, 13, 13, 2277, 29937, 24380, 29901, 13, 29909, 29901, 2296, 5318,
            411, 29871, 29896, 29953, 413, 4841, 373, 27822, 29889, 2296, 5318, 411, 29871, 29896, 29906, 901,
            413, 4841, 373, 27822, 1135, 373, 323, 1041, 3250, 29889, 2193, 2794, 373, 323, 1041, 3250,
            1183, 5318, 411, 29871, 29896, 29953, 448, 29871, 29896, 29906, 353, 29871, 29946, 413, 4841, 29889,
            450, 1234, 338, 29871, 29946, 29889, 13, 13, 2277, 29937, 9550, 673, 29901, 13, 29905, 1884,
            287, 29912, 29946, 29889, 29900, 29913, 2,
        ],
        60
    )

    static let llamaAlpaca: (ids: [Int], promptLength: Int) = (
        [
            1, 13866, 338, 385, 15278, 393, 16612, 263, 3414, 29889, 14350, 263, 2933, 393, 7128, 2486,
            1614, 2167, 278, 2009, 29889, 13, 13, 2277, 29937, 2799, 4080, 29901, 13, 27501, 423, 5318,
            4055, 411, 29871, 29896, 29953, 413, 4841, 373, 7398, 388, 29889, 960, 1183, 5318, 4055, 411,
            29871, 29896, 29906, 901, 413, 4841, 373, 7398, 388, 1135, 373, 260, 1041, 3250, 29889, 1128,
            1784, 413, 4841, 1258, 1183, 1708, 411, 373, 260, 1041, 3250, 29973, 13, 13, 2277, 29937,
            13291, 29901, 13, 13, 29909, 29901, 2296, 5318, 411, 29871, 29896, 29953, 413, 4841, 373, 27822,
            29889, 2296, 5318, 411, 29871, 29896, 29906, 901, 413, 4841, 373, 27822, 1135, 373, 323, 1041,
            3250, 29889, 2193, 2794, 373, 323, 1041, 3250, 1183, 5318, 411, 29871, 29896, 29953, 448, 29871,
            29896, 29906, 353, 29871, 29946, 413, 4841, 29889, 450, 1234, 338, 29871, 29946, 29889, 2,
        ],
        83
    )

    static let llamaLlmadapters: (ids: [Int], promptLength: Int) = (
        [
            1, 13866, 338, 385, 15278, 393, 16612, 263, 3414, 29889, 14350, 263, 2933, 393, 7128, 2486,
            1614, 2167, 278, 2009, 29889, 259, 13, 13, 18884, 835, 2799, 4080, 29901, 13, 18884, 22045,
            5318, 4055, 411, 29871, 29896, 29953, 413, 4841, 373, 7398, 388, 29889, 960, 1183, 5318, 4055,
            411, 29871, 29896, 29906, 901, 413, 4841, 373, 7398, 388, 1135, 373, 260, 1041, 3250, 29889,
            1128, 1784, 413, 4841, 1258, 1183, 1708, 411, 373, 260, 1041, 3250, 29973, 13, 462, 13,
            18884, 835, 13291, 29901, 13, 462, 13, 29909, 29901, 2296, 5318, 411, 29871, 29896, 29953, 413,
            4841, 373, 27822, 29889, 2296, 5318, 411, 29871, 29896, 29906, 901, 413, 4841, 373, 27822, 1135,
            373, 323, 1041, 3250, 29889, 2193, 2794, 373, 323, 1041, 3250, 1183, 5318, 411, 29871, 29896,
            29953, 448, 29871, 29896, 29906, 353, 29871, 29946, 413, 4841, 29889, 450, 1234, 338, 29871, 29946,
            29889, 2,
        ],
        86
    )

    static let llamaNdlinearEval: (ids: [Int], promptLength: Int) = (
        [
            1, 835, 2799, 4080, 29901, 13, 27501, 423, 5318, 4055, 411, 29871, 29896, 29953, 413, 4841,
            373, 7398, 388, 29889, 960, 1183, 5318, 4055, 411, 29871, 29896, 29906, 901, 413, 4841, 373,
            7398, 388, 1135, 373, 260, 1041, 3250, 29889, 1128, 1784, 413, 4841, 1258, 1183, 1708, 411,
            373, 260, 1041, 3250, 29973, 13, 13, 2277, 29937, 24380, 29901, 13,
        ],
        0
    )

    static let llamaLlmadaptersEval: (ids: [Int], promptLength: Int) = (
        [
            1, 13866, 338, 385, 15278, 393, 16612, 263, 3414, 29889, 14350, 263, 2933, 393, 7128, 2486,
            1614, 2167, 278, 2009, 29889, 29871, 13, 13, 18884, 835, 2799, 4080, 29901, 13, 18884, 22045,
            5318, 4055, 411, 29871, 29896, 29953, 413, 4841, 373, 7398, 388, 29889, 960, 1183, 5318, 4055,
            411, 29871, 29896, 29906, 901, 413, 4841, 373, 7398, 388, 1135, 373, 260, 1041, 3250, 29889,
            1128, 1784, 413, 4841, 1258, 1183, 1708, 411, 373, 260, 1041, 3250, 29973, 13, 13, 18884,
            835, 13291, 29901, 13, 462,
        ],
        0
    )
}
