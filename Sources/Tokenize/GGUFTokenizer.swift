import Foundation
import LLMCore

// Tokenizers built from the `tokenizer.*` metadata of a GGUF file (llama.cpp's format):
//
//   tokenizer.ggml.model        "gpt2" (byte-level BPE) or "llama" (SentencePiece)
//   tokenizer.ggml.pre          which split regex a "gpt2" model uses (llama-vocab.cpp's names)
//   tokenizer.ggml.tokens       token texts; the id is the index
//   tokenizer.ggml.token_type   1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
//   tokenizer.ggml.merges       "left right" BPE merges in rank order ("gpt2")
//   tokenizer.ggml.scores       piece scores ("llama")
//   tokenizer.ggml.{bos,eos,padding,unknown}_token_id, add_bos_token, add_eos_token,
//   tokenizer.ggml.add_space_prefix, tokenizer.ggml.remove_extra_whitespaces,
//   tokenizer.chat_template
//
// "gpt2" becomes a ByteLevelBPETokenizer: control, unknown and user-defined tokens are added
// tokens matched in the raw text before BPE (control/unknown ones are special, i.e. dropped by
// `decode(skipSpecialTokens: true)`), the rest go through the pre-tokenizer `tokenizer.ggml.pre`
// names. "llama" becomes a SentencePieceTokenizer: the metadata is serialized as a SentencePiece
// ModelProto (BPE, byte fallback when there are byte tokens, identity normalization) and run by
// libsentencepiece, so segmentation is the reference's.

/// What `loadTokenizer(gguf:)` implements.
public enum GGUFTokenizerSupport {
    /// Values of `tokenizer.ggml.model`.
    public static let models = ["gpt2", "llama"]
    /// Values of `tokenizer.ggml.pre` for "gpt2" models.
    public static var preTokenizers: [String] { GGUFPreTokenizer.names }
}

/// Loads the tokenizer stored in a GGUF file's metadata.
public func loadTokenizer(ggufPath: String) throws -> any Tokenizer {
    try loadTokenizer(gguf: try GGUFFile(path: ggufPath))
}

/// Builds the tokenizer described by a GGUF file's `tokenizer.*` metadata. bos/eos/pad come from
/// `tokenizer.ggml.*_token_id`; `encode(_, addSpecialTokens: true)` adds BOS/EOS as
/// `add_bos_token` / `add_eos_token` say, defaulting like llama.cpp (BOS for SentencePiece and
/// Llama 3 style models, nothing otherwise). Errors name the file and the metadata key.
public func loadTokenizer(gguf: GGUFFile) throws -> any Tokenizer {
    let meta = try GGUFTokenizerMetadata(gguf)
    switch meta.model {
    case "gpt2": return try meta.byteLevelBPE()
    case "llama": return try meta.sentencePiece()
    default: throw TokenizerError.unsupportedGGUFValue(path: meta.path, key: GGUFKey.model, value: meta.model, supported: GGUFTokenizerSupport.models)
    }
}

public extension TokenizerConfig {
    /// The tokenizer_config.json equivalent of a GGUF file's metadata: special token names from
    /// the `*_token_id` keys, the effective `add_bos_token` / `add_eos_token`, control,
    /// unknown and user-defined tokens as added tokens, and `tokenizer.chat_template`.
    init(gguf: GGUFFile) throws {
        self = try GGUFTokenizerMetadata(gguf).config()
    }
}

// MARK: - Keys

enum GGUFKey {
    static let model = "tokenizer.ggml.model"
    static let pre = "tokenizer.ggml.pre"
    static let tokens = "tokenizer.ggml.tokens"
    static let tokenType = "tokenizer.ggml.token_type"
    static let merges = "tokenizer.ggml.merges"
    static let scores = "tokenizer.ggml.scores"
    static let bos = "tokenizer.ggml.bos_token_id"
    static let eos = "tokenizer.ggml.eos_token_id"
    static let pad = "tokenizer.ggml.padding_token_id"
    static let unk = "tokenizer.ggml.unknown_token_id"
    static let addBos = "tokenizer.ggml.add_bos_token"
    static let addEos = "tokenizer.ggml.add_eos_token"
    static let addSpacePrefix = "tokenizer.ggml.add_space_prefix"
    static let removeExtraWhitespaces = "tokenizer.ggml.remove_extra_whitespaces"
    static let chatTemplate = "tokenizer.chat_template"
}

/// llama.cpp's `llama_token_type` values in `tokenizer.ggml.token_type`.
enum GGUFTokenType {
    static let normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

// MARK: - Pre-tokenizers

/// The split a "gpt2" model applies before BPE, by `tokenizer.ggml.pre` name. The regexes per
/// name follow llama.cpp's llama-vocab.cpp; the scanners here implement them exactly as
/// `tokenizers` / tiktoken do (which is what the reference token ids come from).
enum GGUFPreTokenizer {
    /// Qwen2's pattern (digits one by one) with NFC, as Qwen's tokenizer.json has.
    case qwen2
    /// Llama 3's cl100k pattern (up to 3 digits); llama.cpp also sets ignore_merges and adds BOS.
    case llama3(ignoreMerges: Bool, addBos: Bool)
    /// Every digit on its own, then GPT-2's pattern (llama.cpp's STARCODER/SMOLLM group).
    case digitsThenGPT2
    /// GPT-2's pattern.
    case gpt2
    /// llama.cpp's fallback: punctuation runs, GPT-2's pattern, digit runs, then groups of three
    /// ASCII digits, each split applied to the pieces of the previous one.
    case llamaCppDefault

    static let table: [(String, GGUFPreTokenizer)] = [
        ("qwen2", .qwen2), ("deepseek-r1-qwen", .qwen2),
        ("llama3", .llama3(ignoreMerges: true, addBos: true)), ("llama-v3", .llama3(ignoreMerges: true, addBos: true)),
        ("llama-bpe", .llama3(ignoreMerges: true, addBos: true)), ("falcon3", .llama3(ignoreMerges: true, addBos: true)),
        ("dbrx", .llama3(ignoreMerges: false, addBos: false)), ("smaug-bpe", .llama3(ignoreMerges: false, addBos: false)),
        ("smollm", .digitsThenGPT2), ("starcoder", .digitsThenGPT2), ("refact", .digitsThenGPT2),
        ("codeshell", .digitsThenGPT2), ("exaone", .digitsThenGPT2), ("minerva-7b", .digitsThenGPT2),
        ("gpt-2", .gpt2), ("gpt2", .gpt2), ("phi-2", .gpt2), ("mpt", .gpt2), ("olmo", .gpt2), ("jais", .gpt2),
        ("default", .llamaCppDefault),
    ]

    static var names: [String] { table.map(\.0) }

    static func named(_ name: String) -> GGUFPreTokenizer? { table.first { $0.0 == name }?.1 }

    var nfc: Bool {
        if case .qwen2 = self { return true }
        return false
    }

    var ignoreMerges: Bool {
        if case let .llama3(ignore, _) = self { return ignore }
        return false
    }

    /// llama.cpp's add_bos default for this pre-tokenizer (when `add_bos_token` is absent).
    var addsBos: Bool {
        if case let .llama3(_, addBos) = self { return addBos }
        return false
    }

    func steps(path: String) throws -> [PreTokenizerStep] {
        switch self {
        case .qwen2:
            return [.split(matcher: .scanner(PatternScanner(kind: .cl100k(maxDigits: 1))), behavior: .isolated, invert: false)]
        case .llama3:
            return [.split(matcher: .scanner(PatternScanner(kind: .cl100k(maxDigits: 3))), behavior: .isolated, invert: false)]
        case .digitsThenGPT2:
            return [.digits(individual: true), .byteLevel(addPrefixSpace: false, useRegex: true)]
        case .gpt2:
            return [.byteLevel(addPrefixSpace: false, useRegex: true)]
        case .llamaCppDefault:
            func regex(_ source: String) throws -> PreTokenizerStep {
                .split(matcher: .regex(try RegexBox(source, path: path)), behavior: .isolated, invert: false)
            }
            return [
                try regex(#"[\p{P}\$\+<=>\^~\|]+"#),
                .byteLevel(addPrefixSpace: false, useRegex: true),
                try regex(#"\p{N}+"#),
                try regex("[0-9][0-9][0-9]"),
            ]
        }
    }
}

// MARK: - Metadata

/// The `tokenizer.*` metadata of one GGUF file, read and validated once.
struct GGUFTokenizerMetadata {
    let path: String
    let model: String
    let pre: String?
    /// Token texts; empty ones are renamed "[EMPTY_<id>]" as llama.cpp does.
    let tokens: [String]
    /// One type per token (all normal when the key is absent).
    let types: [Int]
    let scores: [Float]?
    let merges: [String]?
    let bos: Int?, eos: Int?, pad: Int?, unk: Int?
    let addBos: Bool?, addEos: Bool?
    let addSpacePrefix: Bool?
    let removeExtraWhitespaces: Bool?
    let chatTemplate: String?

    init(_ gguf: GGUFFile) throws {
        let path = gguf.path
        let metadata = gguf.metadata
        self.path = path
        func fail(_ key: String, _ expected: String) -> TokenizerError {
            .invalidGGUFMetadata(path: path, key: key, expected: expected)
        }
        func found(_ v: GGUFValue) -> String {
            if case let .array(t, items) = v { return "an array of \(items.count) \(GGUFTokenizerMetadata.typeName(t)) values" }
            return "a value of type \(GGUFTokenizerMetadata.typeName(v.typeCode))"
        }
        func string(_ key: String) throws -> String? {
            guard let v = metadata[key] else { return nil }
            guard let s = v.string else { throw fail(key, "a string (found \(found(v)))") }
            return s
        }
        func flag(_ key: String) throws -> Bool? {
            guard let v = metadata[key] else { return nil }
            guard let b = v.bool else { throw fail(key, "a bool (found \(found(v)))") }
            return b
        }
        func array(_ key: String, _ what: String, count: Int?) throws -> [GGUFValue]? {
            guard let v = metadata[key] else { return nil }
            guard let items = v.array else { throw fail(key, "\(what) (found \(found(v)))") }
            if let count, items.count != count {
                throw fail(key, "\(what) with one entry per token (\(count), one per `\(GGUFKey.tokens)` entry), found \(items.count)")
            }
            return items
        }
        func strings(_ key: String, count: Int?) throws -> [String]? {
            guard let items = try array(key, "an array of strings", count: count) else { return nil }
            guard case let .array(t, _) = metadata[key]!, t == GGUFValue.typeCodes["string"] else {
                throw fail(key, "an array of strings (found \(found(metadata[key]!)))")
            }
            return items.map { $0.string ?? "" }
        }

        guard let model = try string(GGUFKey.model) else { throw fail(GGUFKey.model, "a string naming the tokenizer model (gpt2 or llama); the key is missing") }
        self.model = model
        pre = try string(GGUFKey.pre)
        guard var tokens = try strings(GGUFKey.tokens, count: nil) else {
            throw fail(GGUFKey.tokens, "an array of strings (the token texts); the key is missing")
        }
        guard !tokens.isEmpty else { throw fail(GGUFKey.tokens, "at least one token") }
        for i in tokens.indices where tokens[i].isEmpty { tokens[i] = "[EMPTY_\(i)]" }
        self.tokens = tokens
        let n = tokens.count

        if let items = try array(GGUFKey.tokenType, "an array of integers", count: n) {
            types = try items.map { v in
                guard let t = v.int else { throw fail(GGUFKey.tokenType, "an array of integers (an entry is \(found(v)))") }
                return t
            }
        } else {
            types = [Int](repeating: GGUFTokenType.normal, count: n)
        }
        if let items = try array(GGUFKey.scores, "an array of numbers", count: n) {
            scores = try items.map { v in
                guard let d = v.double else { throw fail(GGUFKey.scores, "an array of numbers (an entry is \(found(v)))") }
                return Float(d)
            }
        } else {
            scores = nil
        }
        merges = try strings(GGUFKey.merges, count: nil)

        func id(_ key: String) throws -> Int? {
            guard let v = metadata[key] else { return nil }
            guard let i = v.int else { throw fail(key, "an integer token id (found \(found(v)))") }
            guard i >= 0 && i < n else { throw fail(key, "a token id below \(n) (the number of tokens), found \(i)") }
            return i
        }
        bos = try id(GGUFKey.bos)
        eos = try id(GGUFKey.eos)
        pad = try id(GGUFKey.pad)
        unk = try id(GGUFKey.unk)
        addBos = try flag(GGUFKey.addBos)
        addEos = try flag(GGUFKey.addEos)
        addSpacePrefix = try flag(GGUFKey.addSpacePrefix)
        removeExtraWhitespaces = try flag(GGUFKey.removeExtraWhitespaces)
        chatTemplate = try string(GGUFKey.chatTemplate)
    }

    static func typeName(_ code: UInt32) -> String {
        GGUFValue.typeCodes.first { $0.value == code }?.key ?? "type \(code)"
    }

    /// The pre-tokenizer of a "gpt2" model; a missing key means llama.cpp's "default".
    func preTokenizer() throws -> GGUFPreTokenizer {
        let name = pre ?? "default"
        guard let p = GGUFPreTokenizer.named(name) else {
            throw TokenizerError.unsupportedGGUFValue(path: path, key: GGUFKey.pre, value: name, supported: GGUFPreTokenizer.names)
        }
        return p
    }

    /// Tokens matched literally in the text before BPE / SentencePiece.
    var addedTokens: [AddedToken] {
        var out: [AddedToken] = []
        for (id, t) in types.enumerated() where t == GGUFTokenType.control || t == GGUFTokenType.unknown || t == GGUFTokenType.userDefined {
            out.append(AddedToken(id: id, content: tokens[id], special: t != GGUFTokenType.userDefined))
        }
        return out
    }

    func config() throws -> TokenizerConfig {
        let addBosDefault: Bool
        switch model {
        case "llama": addBosDefault = true
        case "gpt2": addBosDefault = (try? preTokenizer())?.addsBos ?? false
        default: addBosDefault = false
        }
        return TokenizerConfig(
            bosToken: bos.map { tokens[$0] }, eosToken: eos.map { tokens[$0] }, padToken: pad.map { tokens[$0] },
            unkToken: unk.map { tokens[$0] },
            addBosToken: addBos ?? addBosDefault, addEosToken: addEos ?? false,
            addedTokens: addedTokens, chatTemplate: chatTemplate)
    }

    // MARK: Byte-level BPE

    func byteLevelBPE() throws -> ByteLevelBPETokenizer {
        let pre = try preTokenizer()
        guard let merges else {
            throw TokenizerError.invalidGGUFMetadata(path: path, key: GGUFKey.merges, expected: "an array of \"left right\" strings (required by tokenizer.ggml.model \"gpt2\"); the key is missing")
        }
        var vocab = ByteStringTable(expectedCount: tokens.count)
        for (id, token) in tokens.enumerated() {
            var t = token
            let before = vocab.count
            t.withUTF8 { b in _ = vocab.insert(b.baseAddress!, b.count, value: Int32(id)) }
            if vocab.count == before {
                let first = tokens.firstIndex(of: token) ?? -1
                throw TokenizerError.invalidGGUFMetadata(path: path, key: GGUFKey.tokens, expected: "unique token texts; \"\(token)\" is both token \(first) and token \(id)")
            }
        }
        var list = MergeList()
        for (k, merge) in merges.enumerated() {
            var m = merge
            let ok: Bool = m.withUTF8 { b in
                // llama.cpp splits at the first space after the first byte.
                var space = 1
                while space < b.count && b[space] != 0x20 { space += 1 }
                guard space + 1 < b.count else { return false }
                list.append(left: UnsafeBufferPointer(rebasing: b[0..<space]), right: UnsafeBufferPointer(rebasing: b[(space + 1)...]), line: k + 1)
                return true
            }
            if !ok {
                throw TokenizerError.invalidGGUFMetadata(path: path, key: GGUFKey.merges, expected: "\"left right\" merges; entry \(k) is \(merge.debugDescription)")
            }
        }
        var file = TokenizerJSONFile(vocab: vocab, merges: list)
        file.mergesPath = path
        file.ignoreMerges = pre.ignoreMerges
        file.normalizer = pre.nfc ? [.nfc] : []
        file.preTokenizer = try pre.steps(path: path)
        file.addedTokens = addedTokens
        var config = try config()
        config.addedTokens = []  // already in `file`
        do {
            return try ByteLevelBPETokenizer(parts: file, path: path, config: config)
        } catch let TokenizerError.mergeTokenOutOfVocabulary(_, line, token) {
            throw TokenizerError.invalidGGUFMetadata(
                path: path, key: GGUFKey.merges,
                expected: "merges of tokens in `\(GGUFKey.tokens)`; entry \(line - 1) (\(merges[line - 1].debugDescription)) needs \(token.debugDescription), which is not a token")
        }
    }

    // MARK: SentencePiece

    func sentencePiece() throws -> SentencePieceTokenizer {
        guard let scores else {
            throw TokenizerError.invalidGGUFMetadata(path: path, key: GGUFKey.scores, expected: "an array of numbers (required by tokenizer.ggml.model \"llama\"); the key is missing")
        }
        let proto = sentencePieceModelProto(scores: scores)
        var config = try config()
        // libsentencepiece matches user-defined pieces itself; only control/unknown pieces are
        // matched literally by SentencePieceTokenizer (as for a tokenizer.model).
        config.addedTokens = []
        do {
            return try SentencePieceTokenizer(modelData: proto, path: path, config: config)
        } catch let TokenizerError.sentencePieceLoadFailed(_, reason) {
            throw TokenizerError.invalidGGUFMetadata(path: path, key: GGUFKey.tokens, expected: "a vocabulary libsentencepiece accepts: \(reason)")
        }
    }

    /// A serialized sentencepiece.ModelProto (sentencepiece_model.proto) for this vocabulary:
    /// BPE model, byte fallback when there are byte tokens, identity normalization with the
    /// dummy prefix llama.cpp would add (`add_space_prefix`, default true).
    func sentencePieceModelProto(scores: [Float]) -> Data {
        // SentencePiece needs exactly one unknown piece; llama.cpp's default unk id is 0.
        var types = types.map { t -> Int in
            switch t {
            case GGUFTokenType.unknown, GGUFTokenType.control, GGUFTokenType.userDefined, GGUFTokenType.unused, GGUFTokenType.byte: return t
            default: return GGUFTokenType.normal
            }
        }
        if !types.contains(GGUFTokenType.unknown) { types[unk ?? 0] = GGUFTokenType.unknown }
        let hasBytes = types.contains(GGUFTokenType.byte)
        let unkId = types.firstIndex(of: GGUFTokenType.unknown)!

        var model = ProtoWriter()
        for (id, token) in tokens.enumerated() {
            var piece = ProtoWriter()
            piece.string(1, token)
            piece.float(2, scores[id])
            piece.int(3, types[id])
            model.message(1, piece)
        }
        var trainer = ProtoWriter()
        trainer.int(3, 2)  // model_type = BPE
        trainer.int(4, tokens.count)  // vocab_size
        if hasBytes { trainer.bool(35, true) }  // byte_fallback
        trainer.int(40, unkId)  // unk_id
        trainer.int(41, bos ?? -1)  // bos_id
        trainer.int(42, eos ?? -1)  // eos_id
        trainer.int(43, pad ?? -1)  // pad_id
        trainer.string(45, tokens[unkId])  // unk_piece
        if let bos { trainer.string(46, tokens[bos]) }  // bos_piece
        if let eos { trainer.string(47, tokens[eos]) }  // eos_piece
        if let pad { trainer.string(48, tokens[pad]) }  // pad_piece
        model.message(2, trainer)
        var normalizer = ProtoWriter()
        normalizer.string(1, "identity")
        normalizer.bool(3, addSpacePrefix ?? true)  // add_dummy_prefix
        normalizer.bool(4, removeExtraWhitespaces ?? false)  // remove_extra_whitespaces
        normalizer.bool(5, true)  // escape_whitespaces
        model.message(3, normalizer)
        return Data(model.bytes)
    }
}

/// Minimal protobuf wire-format writer (varint, fixed32 and length-delimited fields).
struct ProtoWriter {
    private(set) var bytes: [UInt8] = []

    private mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    private mutating func key(_ field: Int, _ wireType: Int) { varint(UInt64(field << 3 | wireType)) }

    /// int32 / enum (negative values take ten bytes, as protobuf encodes them).
    mutating func int(_ field: Int, _ value: Int) {
        key(field, 0)
        varint(UInt64(bitPattern: Int64(value)))
    }

    mutating func bool(_ field: Int, _ value: Bool) { int(field, value ? 1 : 0) }

    mutating func float(_ field: Int, _ value: Float) {
        key(field, 5)
        withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func data<C: Collection>(_ field: Int, _ value: C) where C.Element == UInt8 {
        key(field, 2)
        varint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    mutating func string(_ field: Int, _ value: String) { data(field, value.utf8) }

    mutating func message(_ field: Int, _ value: ProtoWriter) { data(field, value.bytes) }
}
