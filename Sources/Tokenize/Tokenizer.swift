import Foundation

/// A text tokenizer as the rest of the engine sees it. Implementations: byte-level BPE
/// (tokenizer.json, vocab.json + merges.txt), Llama 3 tiktoken, SentencePiece.
///
/// `encode` never adds BOS/EOS unless `addSpecialTokens` is true, and then adds exactly what
/// the reference library adds for this tokenizer (e.g. BOS for Llama 2/3 and SentencePiece
/// models, nothing for Qwen).
public protocol Tokenizer: Sendable {
    /// Encodes `text`. Special/added tokens written literally in the text are matched as tokens.
    func encode(_ text: String, addSpecialTokens: Bool) throws -> [Int]
    /// Decodes ids to text; bytes split across tokens are reassembled before UTF-8 decoding.
    func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String
    /// The number of ids (including added/special tokens).
    var vocabSize: Int { get }
    var bosTokenId: Int? { get }
    /// Every id that ends generation (the model config may add more).
    var eosTokenIds: [Int] { get }
    var padTokenId: Int? { get }
    /// Id of a token string (normal or special), if it exists.
    func tokenId(_ token: String) -> Int?
    /// Token string of an id, if it exists.
    func token(_ id: Int) -> String?
    /// The text an id stands for, as bytes (a byte-level token may be part of a character); nil
    /// for unknown ids. `encodeWithOffsets` finds these in the text. The default is the UTF-8 of
    /// `decode([id])`, exact for tokenizers whose tokens are whole characters.
    func tokenBytes(_ id: Int) -> [UInt8]?
}

public extension Tokenizer {
    func encode(_ text: String) throws -> [Int] { try encode(text, addSpecialTokens: false) }
    func decode(_ ids: [Int]) -> String { decode(ids, skipSpecialTokens: false) }
    var eosTokenId: Int? { eosTokenIds.first }
    func tokenBytes(_ id: Int) -> [UInt8]? { token(id) == nil ? nil : Array(decode([id], skipSpecialTokens: false).utf8) }
}
