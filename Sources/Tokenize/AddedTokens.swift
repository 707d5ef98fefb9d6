import Foundation
import LLMCore

/// A token added on top of the model vocabulary (`added_tokens` in tokenizer.json,
/// `added_tokens_decoder` in tokenizer_config.json). Added tokens are matched in the raw text
/// before normalization and pre-tokenization, so they are never split.
public struct AddedToken: Sendable, Equatable {
    public var id: Int
    public var content: String
    /// Special tokens are dropped by `decode(_:skipSpecialTokens: true)`.
    public var special: Bool
    /// Also swallow whitespace to the left / right of the match.
    public var lstrip: Bool
    public var rstrip: Bool
    /// Only match when not touching a word character on either side.
    public var singleWord: Bool
    /// Whether `tokenizers` matches it on normalized text (kept for information; this library
    /// matches all added tokens on the raw text, which only differs for tokens that
    /// normalization would change).
    public var normalized: Bool

    public init(id: Int, content: String, special: Bool, lstrip: Bool = false, rstrip: Bool = false, singleWord: Bool = false, normalized: Bool = false) {
        self.id = id
        self.content = content
        self.special = special
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.singleWord = singleWord
        self.normalized = normalized
    }

    /// Parses one `added_tokens` entry (`{"id", "content", "special", ...}`); `id` may come
    /// from the caller (the `added_tokens_decoder` key).
    static func parse(_ value: JSONValue, id explicitId: Int?, path: String, field: String) throws -> AddedToken {
        guard let object = value.object else {
            throw TokenizerError.invalidField(path: path, field: field, expected: "an object with id and content")
        }
        guard let content = object["content"]?.string else {
            throw TokenizerError.invalidField(path: path, field: "\(field).content", expected: "a string")
        }
        guard let id = explicitId ?? object["id"]?.int, id >= 0 else {
            throw TokenizerError.invalidField(path: path, field: "\(field).id", expected: "a non-negative integer")
        }
        return AddedToken(
            id: id, content: content,
            special: object["special"]?.bool ?? false,
            lstrip: object["lstrip"]?.bool ?? false,
            rstrip: object["rstrip"]?.bool ?? false,
            singleWord: object["single_word"]?.bool ?? false,
            normalized: object["normalized"]?.bool ?? !(object["special"]?.bool ?? false))
    }
}

/// Finds added tokens in UTF-8 text: leftmost-longest, like `tokenizers`' AddedVocabulary
/// (an Aho-Corasick automaton with MatchKind::LeftmostLongest), honouring lstrip / rstrip /
/// single_word the way it does.
struct AddedTokenMatcher {
    private struct Entry {
        let bytes: [UInt8]
        let id: Int32
        let lstrip: Bool
        let rstrip: Bool
        let singleWord: Bool
    }
    private let entries: [Entry]
    /// Candidate entries by first byte, longest first.
    private let byFirstByte: [[Int]]
    let isEmpty: Bool

    init(_ tokens: [AddedToken]) {
        var entries: [Entry] = []
        var seen = Set<String>()
        for t in tokens where !t.content.isEmpty && !seen.contains(t.content) {
            seen.insert(t.content)
            entries.append(Entry(bytes: Array(t.content.utf8), id: Int32(t.id), lstrip: t.lstrip, rstrip: t.rstrip, singleWord: t.singleWord))
        }
        var by = [[Int]](repeating: [], count: 256)
        for (i, e) in entries.enumerated() { by[Int(e.bytes[0])].append(i) }
        for b in 0..<256 { by[b].sort { entries[$0].bytes.count > entries[$1].bytes.count } }
        self.entries = entries
        self.byFirstByte = by
        self.isEmpty = entries.isEmpty
    }

    /// Splits `n` bytes into text segments (`text(start, end)`) and added tokens (`token(id)`),
    /// in order. Empty text segments are not reported.
    func split(_ p: UnsafePointer<UInt8>, _ n: Int, text: (Int, Int) -> Void, token: (Int32) -> Void) {
        if isEmpty {
            if n > 0 { text(0, n) }
            return
        }
        var segmentStart = 0
        var i = 0
        while i < n {
            let candidates = byFirstByte[Int(p[i])]
            var matched: Entry? = nil
            if !candidates.isEmpty {
                for c in candidates {
                    let e = entries[c]
                    let len = e.bytes.count
                    if i + len <= n && e.bytes.withUnsafeBufferPointer({ memcmp($0.baseAddress!, p + i, len) == 0 }) {
                        if e.singleWord && !(AddedTokenMatcher.wordBoundaryBefore(p, i) && AddedTokenMatcher.wordBoundaryAfter(p, i + len, n)) {
                            continue
                        }
                        matched = e
                        break
                    }
                }
            }
            guard let e = matched else {
                i += 1
                continue
            }
            var start = i
            var stop = i + e.bytes.count
            if e.lstrip {
                // Swallow whitespace back to the previous match / segment start.
                while start > segmentStart {
                    let (v, l) = AddedTokenMatcher.scalarBefore(p, start)
                    guard ScalarClass.of(v, table: ScalarClass.bmp) & ScalarClass.space != 0 else { break }
                    start -= l
                }
            }
            if e.rstrip {
                while stop < n {
                    let (v, l) = decodeScalar(p, stop, n)
                    guard ScalarClass.of(v, table: ScalarClass.bmp) & ScalarClass.space != 0 else { break }
                    stop += l
                }
            }
            if start > segmentStart { text(segmentStart, start) }
            token(e.id)
            segmentStart = stop
            i = stop
        }
        if segmentStart < n { text(segmentStart, n) }
    }

    /// The scalar ending just before byte `i` (UTF-8 continuation bytes are skipped backwards).
    private static func scalarBefore(_ p: UnsafePointer<UInt8>, _ i: Int) -> (UInt32, Int) {
        var s = i - 1
        while s > 0 && p[s] & 0xC0 == 0x80 && i - s < 4 { s -= 1 }
        let (v, _) = decodeScalar(p, s, i)
        return (v, i - s)
    }

    /// `tokenizers` treats alphanumerics and '_' as word characters for single_word.
    private static func isWordScalar(_ v: UInt32) -> Bool {
        if v == 0x5F { return true }
        return ScalarClass.of(v, table: ScalarClass.bmp) & (ScalarClass.letter | ScalarClass.number) != 0
    }

    private static func wordBoundaryBefore(_ p: UnsafePointer<UInt8>, _ i: Int) -> Bool {
        if i == 0 { return true }
        return !isWordScalar(scalarBefore(p, i).0)
    }

    private static func wordBoundaryAfter(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int) -> Bool {
        if i >= n { return true }
        return !isWordScalar(decodeScalar(p, i, n).0)
    }
}
