import Foundation
import Tokenize
import TestSupport
@testable import Training

// MARK: - Small tokenizers for template/batching tests (no files needed)

/// One token per Unicode scalar (id = scalar value + 10), except that the special strings
/// `<s>` (1), `</s>` (2) and `<pad>` (0) written in the text are matched as tokens, and optional
/// multi-scalar "merges" (e.g. "\n\n") are taken greedily (longest first). `addSpecialTokens`
/// prepends BOS when `addsBOS`.
struct ToyTokenizer: Tokenizer {
    var merges: [String: Int] = [:]
    var addsBOS = true
    var hasEOS = true

    static let specials: [String: Int] = ["<pad>": 0, "<s>": 1, "</s>": 2]

    func encode(_ text: String, addSpecialTokens: Bool) throws -> [Int] {
        var ids: [Int] = addSpecialTokens && addsBOS ? [1] : []
        let s = Array(text.unicodeScalars)
        let pieces = Self.specials.merging(merges) { a, _ in a }.sorted { $0.key.unicodeScalars.count > $1.key.unicodeScalars.count }
        var i = 0
        outer: while i < s.count {
            for (piece, id) in pieces {
                let p = Array(piece.unicodeScalars)
                if i + p.count <= s.count, Array(s[i..<(i + p.count)]) == p {
                    if id == 2 && !hasEOS { break }
                    ids.append(id)
                    i += p.count
                    continue outer
                }
            }
            ids.append(Int(s[i].value) + 10)
            i += 1
        }
        return ids
    }

    func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String {
        var out = ""
        for id in ids {
            if let tok = token(id) {
                if skipSpecialTokens && Self.specials[tok] != nil { continue }
                out += tok
            }
        }
        return out
    }

    var vocabSize: Int { 0x11_0000 + 10 }
    var bosTokenId: Int? { addsBOS ? 1 : nil }
    var eosTokenIds: [Int] { hasEOS ? [2] : [] }
    var padTokenId: Int? { 0 }
    func tokenId(_ token: String) -> Int? {
        if let s = Self.specials[token] ?? merges[token] { return s }
        let u = Array(token.unicodeScalars)
        return u.count == 1 ? Int(u[0].value) + 10 : nil
    }
    func token(_ id: Int) -> String? {
        if let s = Self.specials.first(where: { $0.value == id }) { return s.key }
        if let m = merges.first(where: { $0.value == id }) { return m.key }
        guard id >= 10, let u = Unicode.Scalar(UInt32(id - 10)) else { return nil }
        return String(Character(u))
    }

    /// The ids of `text` with no specials and no merges: what the toy tokenizer gives scalar by scalar.
    static func plain(_ text: String) -> [Int] { text.unicodeScalars.map { Int($0.value) + 10 } }
}

/// Writes `text` to a fresh temporary file with the given name and returns its URL.
func writeDataTempFile(_ text: String, name: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("trainingtests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let url = dir.appendingPathComponent(name)
    try Data(text.utf8).write(to: url)
    return url
}

/// A file under `Tests/Fixtures/data`.
func dataFixture(_ name: String) -> URL {
    TestPaths.fixtures.appendingPathComponent("data").appendingPathComponent(name)
}
