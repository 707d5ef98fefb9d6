import Foundation
import Testing
import TestSupport
import Tokenize

@Suite struct LoaderTests {
    /// A directory holding vocab.json + merges.txt and Qwen3's tokenizer_config.json: the
    /// loader takes the Qwen2 pattern and NFC from `tokenizer_class`, the added tokens and the
    /// special token names from the config.
    @Test(.requires(Assets.shared)) func vocabMergesDirectoryWithQwenConfig() throws {
        let vocab = Assets.tokenizerPath("qwen2/vocab.json"), merges = Assets.tokenizerPath("qwen2/merges.txt"),
            config = Assets.tokenizerPath("qwen3/tokenizer_config.json"),
            reference = try Assets.qwen2JSON(), vectors = try Assets.llamaCppVectors("qwen2")
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        try fm.createSymbolicLink(at: dir.appendingPathComponent("vocab.json"), withDestinationURL: vocab)
        try fm.createSymbolicLink(at: dir.appendingPathComponent("merges.txt"), withDestinationURL: merges)
        try fm.createSymbolicLink(at: dir.appendingPathComponent("tokenizer_config.json"), withDestinationURL: config)
        let tok = try loadTokenizer(from: dir)
        #expect(tok is ByteLevelBPETokenizer)
        #expect(tok.vocabSize == 151_669)
        #expect(tok.tokenId("<think>") == 151_667)
        #expect(tok.eosTokenIds == [151_645])  // eos_token <|im_end|>
        #expect(tok.padTokenId == 151_643)
        #expect(tok.bosTokenId == nil)
        for v in vectors {
            #expect(try tok.encode(v.text, addSpecialTokens: false) == v.ids)
        }
        let chat = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n4<|im_end|>"
        #expect(try tok.encode(chat, addSpecialTokens: true) == reference.encode(chat, addSpecialTokens: true))
        #expect(tok.decode(try tok.encode(chat)) == chat)
        // Qwen3 marks <think> / </think> as added but not special: skipping keeps them.
        #expect(tok.decode(try tok.encode(chat), skipSpecialTokens: true) == "user\nWhat is 2+2?\nassistant\n<think>\n\n</think>\n\n4")
    }

    @Test(.requires(Assets.shared)) func qwen2TokenizerJSONWithoutConfig() throws {
        let tok = try Assets.qwen2JSON()
        #expect(tok.vocabSize == 151_669)
        #expect(tok.bosTokenId == nil)
        // No tokenizer_config.json: the conventional end markers present end generation.
        #expect(tok.eosTokenIds == [151_643, 151_645])
        #expect(tok.token(9707) == "Hello")
        #expect(tok.token(1879) == "Ġworld")
        #expect(tok.tokenId("Ġworld") == 1879)
        #expect(tok.tokenId("<|im_end|>") == 151_645)
        #expect(tok.token(151_645) == "<|im_end|>")
        #expect(tok.token(200_000) == nil)
        // Qwen adds no BOS/EOS.
        #expect(try tok.encode("Hello world", addSpecialTokens: true) == [9707, 1879])
        // Unknown ids are ignored when decoding, as in tokenizers.
        #expect(tok.decode([9707, 999_999, 1879]) == "Hello world")
    }

    /// The loader tells tiktoken ranks from a SentencePiece protobuf by content.
    @Test(.requires(Assets.shared)) func modelFileKindDetection() throws {
        let llama3 = Assets.tokenizerPath("llama3-tiktoken/tokenizer.model"),
            llama2 = Assets.tokenizerPath("llama2-spm/tokenizer.model")
        #expect(try loadTokenizer(from: llama3) is TiktokenTokenizer)
        #expect(try loadTokenizer(from: llama2) is SentencePieceTokenizer)
        #expect(try loadTokenizer(from: TestPaths.models.appendingPathComponent("stories260K")) is SentencePieceTokenizer)
    }

    /// A SentencePiece-style tokenizer.json (not byte-level) next to tokenizer.model falls back
    /// to the model file; tokenizer_config.json's add_eos_token is honoured.
    @Test func sentencePieceStyleTokenizerJSONFallsBack() throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let json = #"{"version":"1.0","added_tokens":[],"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},"pre_tokenizer":null,"model":{"type":"BPE","byte_fallback":true,"vocab":{"a":0},"merges":[]},"decoder":null}"#
        try Data(json.utf8).write(to: dir.appendingPathComponent("tokenizer.json"))
        try FileManager.default.copyItem(at: TestPaths.models.appendingPathComponent("stories260K/tokenizer.model"), to: dir.appendingPathComponent("tokenizer.model"))
        try Data(#"{"add_bos_token": true, "add_eos_token": true, "bos_token": "<s>", "eos_token": {"content": "</s>"}}"#.utf8)
            .write(to: dir.appendingPathComponent("tokenizer_config.json"))
        let tok = try loadTokenizer(from: dir)
        #expect(tok is SentencePieceTokenizer)
        let ids = try tok.encode("Once upon a time", addSpecialTokens: true)
        #expect(ids.first == 1 && ids.last == 2)
        #expect(tok.decode(ids, skipSpecialTokens: true) == "Once upon a time")
    }

    /// tokenizer.json variants: merges as "a b" strings or [a, b] pairs, a Sequence
    /// pre-tokenizer with Digits, a TemplateProcessing post-processor, and ignore_merges.
    @Test func tokenizerJSONVariants() throws {
        let dir = try Assets.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // Vocabulary: the bytes of "a", "b", "c", " ", "1", "2", and merges a+b, ab+c, Ġ+a.
        func file(merges: String, preTokenizer: String, ignoreMerges: Bool) -> String {
            """
            {"version":"1.0","added_tokens":[{"id":9,"content":"<s>","special":true,"single_word":false,"lstrip":false,"rstrip":false,"normalized":false}],
             "normalizer":null,"pre_tokenizer":\(preTokenizer),
             "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
               "pair":[],"special_tokens":{"<s>":{"id":"<s>","ids":[9],"tokens":["<s>"]}}},
             "decoder":{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},
             "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,"end_of_word_suffix":null,
               "fuse_unk":false,"byte_fallback":false,"ignore_merges":\(ignoreMerges),
               "vocab":{"a":0,"b":1,"c":2,"Ġ":3,"1":4,"2":5,"ab":6,"abc":7,"Ġa":8,"bc":10},
               "merges":\(merges)}}
            """
        }
        let byteLevel = #"{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}"#
        let url = dir.appendingPathComponent("tokenizer.json")
        for merges in [#"["a b","ab c","Ġ a"]"#, #"[["a","b"],["ab","c"],["Ġ","a"]]"#] {
            try Data(file(merges: merges, preTokenizer: byteLevel, ignoreMerges: false).utf8).write(to: url)
            let tok = try loadTokenizer(from: dir)
            #expect(try tok.encode("abc ab 12", addSpecialTokens: false) == [7, 3, 6, 3, 4, 5])  // a+b (rank 0) beats Ġ+a
            #expect(try tok.encode("abc", addSpecialTokens: true) == [9, 7])
            #expect(tok.decode([9, 7, 8, 1]) == "<s>abc ab")
            #expect(tok.bosTokenId == 9)
        }
        // Without ignore_merges "bc" is unreachable (no b+c merge); with it, a word that is a
        // token is taken whole.
        try Data(file(merges: #"["a b"]"#, preTokenizer: byteLevel, ignoreMerges: false).utf8).write(to: url)
        #expect(try loadTokenizer(from: dir).encode("bc", addSpecialTokens: false) == [1, 2])
        try Data(file(merges: #"["a b"]"#, preTokenizer: byteLevel, ignoreMerges: true).utf8).write(to: url)
        #expect(try loadTokenizer(from: dir).encode("bc", addSpecialTokens: false) == [10])
        // Digits (individual) before ByteLevel: "12" splits into "1", "2" even without merges.
        let sequence = #"{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},\#(byteLevel)]}"#
        try Data(file(merges: #"["a b","ab c"]"#, preTokenizer: sequence, ignoreMerges: false).utf8).write(to: url)
        #expect(try loadTokenizer(from: dir).encode("abc12", addSpecialTokens: false) == [7, 4, 5])
        // add_prefix_space puts a space before each piece that lacks one.
        let prefixed = #"{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true}"#
        try Data(file(merges: #"["a b","ab c","Ġ a"]"#, preTokenizer: prefixed, ignoreMerges: false).utf8).write(to: url)
        #expect(try loadTokenizer(from: dir).encode("a", addSpecialTokens: false) == [8])
    }
}
