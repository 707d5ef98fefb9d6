import Foundation
import Tokenize

// MARK: - Stop strings

/// Stops generation at a template's next-section marker (`PromptTemplate.stopStrings`, e.g.
/// `### Instruction`) by looking at the decoded text as it grows.
///
/// Re-decoding a whole output every step costs O(n²) over a long generation, so `matches`
/// decodes only the last few ids: a stop string that first appears when the newest id is added
/// ends inside that id's text and spans at most `maxBytes` UTF-8 bytes, so (every non-special id
/// decodes to at least one byte) it starts within the last `maxBytes` ids. Two more ids are
/// decoded in front so that the window's first id — which a decoder may render differently out
/// of context (SentencePiece drops its leading space, a split UTF-8 character becomes U+FFFD) —
/// lies before any part of the match.
public struct StopStringMatcher: Sendable {
    public let stopStrings: [String]
    let tokenizer: any Tokenizer
    /// How many trailing ids `matches` decodes.
    public let window: Int

    public init(tokenizer: any Tokenizer, stopStrings: [String]) {
        self.tokenizer = tokenizer
        self.stopStrings = stopStrings.filter { !$0.isEmpty }
        window = (self.stopStrings.map(\.utf8.count).max() ?? 0) + 2
    }

    /// Whether the decoded tail of `ids` (special tokens skipped) contains a stop string. Meant
    /// to be asked after every new id: it is true at the first length whose full decoded text
    /// contains a stop string (later, the window may have moved past it).
    public func matches(_ ids: [Int]) -> Bool {
        guard !stopStrings.isEmpty, !ids.isEmpty else { return false }
        let tail = tokenizer.decode(Array(ids.suffix(window)), skipSpecialTokens: true)
        return stopStrings.contains { tail.contains($0) }
    }

    /// `text` up to (not including) the earliest occurrence of any stop string; the text from a
    /// stop string on belongs to a section the model should not have written.
    public static func truncate(_ text: String, at stopStrings: [String]) -> String {
        var cut = text.endIndex
        for s in stopStrings where !s.isEmpty {
            if let r = text.range(of: s), r.lowerBound < cut { cut = r.lowerBound }
        }
        return String(text[..<cut])
    }
}
