import Foundation
import Tokenize

/// A row's generated ids as text pieces that each hold whole characters, cut at the first
/// OpenAI stop string (which is not emitted).
///
/// Decoding is incremental (text-generation-inference's prefix/read offsets): each new token
/// decodes a short window `ids[prefix...]` against `ids[prefix..<read]`, so the cost per token
/// does not grow with the output, and a piece is released only when the window's text does not
/// end in U+FFFD (a character whose bytes are split across tokens waits for its last byte).
/// Text that could be the start of a stop string is held until it cannot be.
///
/// Without a tokenizer the text is the ids written in decimal, separated by spaces (what
/// `finetune generate` prints for such a model).
struct TextStream {
    let tokenizer: (any Tokenizer)?
    let stops: [[Unicode.Scalar]]
    private var ids: [Int] = []
    private var prefixOffset = 0, readOffset = 0
    /// Decoded, not yet released: it may begin a stop string.
    private var pending: [Unicode.Scalar] = []

    init(tokenizer: (any Tokenizer)?, stop: [String]) {
        self.tokenizer = tokenizer
        stops = stop.filter { !$0.isEmpty }.map { Array($0.unicodeScalars) }
    }

    /// Adds a generated id (not an end-of-sequence one). Returns the text now safe to send and
    /// whether a stop string ended the completion (the text before it is returned).
    mutating func push(_ id: Int) -> (text: String, stopped: Bool) {
        ids.append(id)
        pending += decodeNew(final: false)
        return release(final: false)
    }

    /// The rest at the end of a completion: characters still waiting for bytes (as U+FFFD) and
    /// text held for a stop string that never came.
    mutating func finish() -> String {
        pending += decodeNew(final: true)
        return release(final: true).text
    }

    private mutating func decodeNew(final: Bool) -> [Unicode.Scalar] {
        guard readOffset < ids.count else { return [] }
        guard let tok = tokenizer else {
            let words = ids[readOffset...].enumerated().map { ($0.offset + readOffset == 0 ? "" : " ") + String($0.element) }
            readOffset = ids.count
            return Array(words.joined().unicodeScalars)
        }
        let before = Array(tok.decode(Array(ids[prefixOffset..<readOffset]), skipSpecialTokens: true).unicodeScalars)
        let now = Array(tok.decode(Array(ids[prefixOffset...]), skipSpecialTokens: true).unicodeScalars)
        guard now.count > before.count, final || now.last != "\u{FFFD}" else { return [] }
        prefixOffset = readOffset
        readOffset = ids.count
        return Array(now[before.count...])
    }

    private mutating func release(final: Bool) -> (text: String, stopped: Bool) {
        if let cut = stops.compactMap({ firstMatch($0, in: pending) }).min() {
            let out = Self.string(pending[..<cut])
            pending = []
            return (out, true)
        }
        let hold = final ? 0 : stops.map { heldPrefix($0) }.max() ?? 0
        let out = Self.string(pending.dropLast(hold))
        pending = Array(pending.suffix(hold))
        return (out, false)
    }

    /// Where `needle` first occurs in `hay`.
    private func firstMatch(_ needle: [Unicode.Scalar], in hay: [Unicode.Scalar]) -> Int? {
        guard needle.count <= hay.count else { return nil }
        return (0...(hay.count - needle.count)).first { i in hay[i..<(i + needle.count)].elementsEqual(needle) }
    }

    /// The length of the longest end of `pending` that is a proper start of `stop`.
    private func heldPrefix(_ stop: [Unicode.Scalar]) -> Int {
        var n = min(stop.count - 1, pending.count)
        while n > 0 && !pending.suffix(n).elementsEqual(stop.prefix(n)) { n -= 1 }
        return n
    }

    private static func string<S: Sequence>(_ scalars: S) -> String where S.Element == Unicode.Scalar {
        var s = String.UnicodeScalarView()
        s.append(contentsOf: scalars)
        return String(s)
    }
}
