import Foundation

// MARK: - Token offsets

/// Token ids with the part of the input text each one stands for, as `tokenizers`'
/// `offset_mapping` gives them, in UTF-8 bytes of the input.
public struct TokenOffsets: Sendable, Equatable {
    public var ids: [Int]
    /// `spans[i]`: the bytes of the input's UTF-8 that token `i` covers. A token that covers
    /// part of a multi-byte character (byte-level BPE) has a span inside that character.
    public var spans: [Range<Int>]

    public init(ids: [Int], spans: [Range<Int>]) {
        precondition(ids.count == spans.count, "one span per id")
        self.ids = ids
        self.spans = spans
    }
}

public extension Tokenizer {
    /// Encodes `text` without special tokens (as a chat template's text is encoded) and gives
    /// each token its span of the text: the text is walked token by token, each token's bytes
    /// (`tokenBytes(_:)`) found where the previous one ended. What a pipeline does to the text
    /// besides splitting it is followed: a SentencePiece dummy-prefix space or a ByteLevel
    /// prefix space (a token starting with a space the text does not have there), and
    /// whitespace that an added token's `lstrip` / `rstrip` swallowed (absorbed into the next
    /// token's span).
    /// - Throws: `TokenizerError.offsetsUnavailable` when a token's bytes are not found in the
    ///   text where they should be (e.g. a normalizer rewrote non-NFC text), naming the byte
    ///   offset; the tokenizer's own errors.
    func encodeWithOffsets(_ text: String) throws -> TokenOffsets {
        let ids = try encode(text, addSpecialTokens: false)
        let bytes = Array(text.utf8)
        var spans: [Range<Int>] = []
        spans.reserveCapacity(ids.count)
        var cursor = 0
        for id in ids {
            guard let piece = tokenBytes(id) else {
                throw TokenizerError.offsetsUnavailable(reason: "token \(id) has no bytes to find in the text (at byte \(cursor))")
            }
            guard let span = TokenAlignment.match(piece, in: bytes, at: cursor) else {
                throw TokenizerError.offsetsUnavailable(
                    reason: "token \(id) (\(String(decoding: piece, as: UTF8.self).debugDescription)) is not the text at byte \(cursor) "
                        + "(the tokenizer's normalizer may have rewritten it, e.g. text that is not in Unicode NFC)")
            }
            spans.append(span)
            cursor = span.upperBound
        }
        return TokenOffsets(ids: ids, spans: spans)
    }
}

/// Finding one token's bytes in the text.
enum TokenAlignment {
    /// The span `piece` covers when the text is read from `cursor`: the bytes themselves; or,
    /// when `piece` starts with a space the text does not have there, the rest of it (a prefix
    /// space the pipeline added); or, after whitespace the pipeline removed, from `cursor`
    /// through the piece. An empty piece covers nothing at `cursor`. Nil when none fits.
    static func match(_ piece: [UInt8], in text: [UInt8], at cursor: Int) -> Range<Int>? {
        if piece.isEmpty { return cursor..<cursor }
        if starts(text, piece[...], at: cursor) { return cursor..<(cursor + piece.count) }
        if piece[0] == 0x20, piece.count > 1, starts(text, piece.dropFirst(), at: cursor) {
            return cursor..<(cursor + piece.count - 1)
        }
        var i = cursor
        while i < text.count, isSpace(text[i]) { i += 1 }
        if i > cursor {
            if starts(text, piece[...], at: i) { return cursor..<(i + piece.count) }
            if piece[0] == 0x20, piece.count > 1, starts(text, piece.dropFirst(), at: i) { return cursor..<(i + piece.count - 1) }
        }
        return nil
    }

    private static func starts(_ text: [UInt8], _ piece: ArraySlice<UInt8>, at i: Int) -> Bool {
        guard i + piece.count <= text.count else { return false }
        return text[i..<(i + piece.count)].elementsEqual(piece)
    }

    private static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
}
