import Foundation
import LLMCore

/// Loads the tokenizer of a model directory or a tokenizer file.
///
/// A directory is searched in this order: `tokenizer.json` (byte-level BPE), `vocab.json` +
/// `merges.txt`, `tokenizer.model` (tiktoken ranks when its content is "base64 rank" lines,
/// otherwise a SentencePiece model). A `tokenizer.json` that is not byte-level BPE (e.g. the
/// SentencePiece-style one of Llama 2 / TinyLlama) is skipped in favour of `tokenizer.model`
/// when that exists. `tokenizer_config.json` beside the files supplies bos/eos/pad, added
/// tokens and `add_bos_token` / `add_eos_token`. (The model's chat template is loaded separately,
/// by `loadChatTemplate(from:)`.)
///
/// For `vocab.json` + `merges.txt`, the split pattern comes from `tokenizer_class` in
/// tokenizer_config.json: Qwen2Tokenizer → Qwen2 pattern with NFC, anything else → GPT-2.
public func loadTokenizer(from url: URL) throws -> any Tokenizer {
    let fm = FileManager.default
    var isDirectory: ObjCBool = false
    guard fm.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
        throw TokenizerError.missingFile(path: url.path, expected: "a tokenizer directory or file (tokenizer.json, vocab.json, merges.txt or tokenizer.model)")
    }
    if isDirectory.boolValue {
        return try loadTokenizer(directory: url)
    }
    if url.pathExtension.lowercased() == "gguf" { return try loadTokenizer(ggufPath: url.path) }
    let directory = url.deletingLastPathComponent()
    let config = try TokenizerConfig.load(inDirectory: directory)
    switch url.lastPathComponent {
    case "vocab.json":
        return try loadVocabMerges(vocab: url, merges: directory.appendingPathComponent("merges.txt"), config: config)
    case "merges.txt":
        return try loadVocabMerges(vocab: directory.appendingPathComponent("vocab.json"), merges: url, config: config)
    case "tokenizer_config.json":
        return try loadTokenizer(directory: directory)
    default:
        if url.pathExtension.lowercased() == "json" {
            return try ByteLevelBPETokenizer(tokenizerJSON: url, config: config)
        }
        return try loadModelFile(url, config: config)
    }
}

private func loadTokenizer(directory: URL) throws -> any Tokenizer {
    let fm = FileManager.default
    let config = try TokenizerConfig.load(inDirectory: directory)
    let json = directory.appendingPathComponent("tokenizer.json")
    let vocab = directory.appendingPathComponent("vocab.json")
    let merges = directory.appendingPathComponent("merges.txt")
    let model = directory.appendingPathComponent("tokenizer.model")
    if fm.fileExists(atPath: json.path) {
        do {
            return try ByteLevelBPETokenizer(tokenizerJSON: json, config: config)
        } catch let error as TokenizerError {
            switch error {
            case .unsupportedComponent, .unknownModelType:
                if fm.fileExists(atPath: model.path) { return try loadModelFile(model, config: config) }
                throw error
            default:
                throw error
            }
        }
    }
    if fm.fileExists(atPath: vocab.path) || fm.fileExists(atPath: merges.path) {
        return try loadVocabMerges(vocab: vocab, merges: merges, config: config)
    }
    if fm.fileExists(atPath: model.path) {
        return try loadModelFile(model, config: config)
    }
    throw TokenizerError.missingFile(path: directory.path, expected: "tokenizer.json, vocab.json + merges.txt, or tokenizer.model in this directory")
}

private func loadVocabMerges(vocab: URL, merges: URL, config: TokenizerConfig?) throws -> any Tokenizer {
    let isQwen = config?.tokenizerClass?.hasPrefix("Qwen2Tokenizer") ?? false
    return try ByteLevelBPETokenizer(vocabFile: vocab, mergesFile: merges, pattern: isQwen ? .qwen2 : .gpt2, nfc: isQwen, config: config)
}

/// `tokenizer.model`: tiktoken ranks or a SentencePiece ModelProto, told apart by content.
private func loadModelFile(_ url: URL, config: TokenizerConfig?) throws -> any Tokenizer {
    let data = try readFile(url, expected: "tokenizer.model")
    if TiktokenTokenizer.looksLikeTiktoken(data) {
        return try TiktokenTokenizer(modelFile: url, config: config)
    }
    return try SentencePieceTokenizer(modelData: data, path: url.path, config: config)
}

// MARK: - Chat template

/// The chat template that comes with a model, found where transformers looks: a directory's
/// `chat_template.jinja` (the transformers ≥ 4.43 layout; it wins over the config), else the
/// `chat_template` of its `tokenizer_config.json` (a string, or a list of `{name, template}`
/// where "default" wins); a `.gguf` file's `tokenizer.chat_template`; for any other file, the
/// files beside it.
/// - Returns: nil when the model has no chat template.
/// - Throws: `TokenizerError` for unreadable files, `ChatTemplateError` when the template does
///   not parse.
public func loadChatTemplate(from url: URL) throws -> ChatTemplate? {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
        throw TokenizerError.missingFile(path: url.path, expected: "a model directory, tokenizer file or .gguf file")
    }
    let source: String?
    let origin: String
    if !isDirectory.boolValue {
        if url.pathExtension.lowercased() != "gguf" { return try loadChatTemplate(from: url.deletingLastPathComponent()) }
        source = try GGUFFile(path: url.path).metadata[GGUFKey.chatTemplate]?.string
        origin = "\(url.path) (\(GGUFKey.chatTemplate))"
    } else {
        let jinja = url.appendingPathComponent("chat_template.jinja")
        let inFile = FileManager.default.fileExists(atPath: jinja.path)
        source = inFile
            ? String(decoding: try readFile(jinja, expected: "chat_template.jinja"), as: UTF8.self)
            : try TokenizerConfig.load(inDirectory: url)?.chatTemplate
        origin = inFile ? jinja.path : url.appendingPathComponent("tokenizer_config.json").path + " (chat_template)"
    }
    return try source.map { try ChatTemplate(source: $0, origin: origin) }
}

// MARK: - Convenience

public extension Tokenizer {
    /// Encodes UTF-8 bytes, rejecting invalid UTF-8 with `TokenizerError.invalidUTF8` instead of
    /// silently replacing it.
    func encode(utf8 bytes: Data, addSpecialTokens: Bool = false) throws -> [Int] {
        if let offset = firstInvalidUTF8Offset(bytes) { throw TokenizerError.invalidUTF8(offset: offset) }
        return try encode(String(decoding: bytes, as: UTF8.self), addSpecialTokens: addSpecialTokens)
    }
}

/// Offset of the first byte of the first invalid UTF-8 sequence, or nil when valid.
func firstInvalidUTF8Offset<C: Collection>(_ bytes: C) -> Int? where C.Element == UInt8 {
    var iterator = bytes.makeIterator()
    var decoder = UTF8()
    var offset = 0
    while true {
        switch decoder.decode(&iterator) {
        case let .scalarValue(s): offset += UTF8.width(s)
        case .emptyInput: return nil
        case .error: return offset
        }
    }
}
