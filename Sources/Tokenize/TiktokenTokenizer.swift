import Foundation

/// A tiktoken BPE (Llama 3's `tokenizer.model`: one "base64-token rank" pair per line) with the
/// behaviour of Meta's `llama_models` `Tokenizer`: the Llama 3 split pattern, 256 special tokens
/// numbered from the end of the ranks, tiktoken's rank-ordered byte-pair merge, and Meta's input
/// chunking (400,000-character chunks, runs of more than 25,000 consecutive whitespace or
/// non-whitespace characters cut). Special tokens written in the text are matched as tokens,
/// as the Hugging Face tokenizer of the same model does.
public final class TiktokenTokenizer: Tokenizer {
    /// Token bytes → rank (= id).
    private let ranks: ByteStringTable
    /// id → bytes for the ranked tokens.
    private let idBytes: BytesById
    private let byteIds: [Int32]
    private let specialById: [Int: String]
    private let specialByName: [String: Int]
    private let matcher: AddedTokenMatcher
    private let scanner: PatternScanner?
    private let regex: RegexBox?
    private let cache = WordCache()
    private let addBos: Bool
    private let addEos: Bool
    /// End-of-text id used by `encode(_:bos:eos:)`.
    private let endOfTextId: Int?

    /// Number of ranked (non-special) tokens.
    public let numBaseTokens: Int
    public let vocabSize: Int
    public let bosTokenId: Int?
    public let eosTokenIds: [Int]
    public let padTokenId: Int?

    /// Meta's Llama 3 special tokens (ids 128000…128255 on top of the 128000 ranks): the twelve
    /// named ones, then `<|reserved_special_token_{2+i}|>` (llama_models' tokenizer.py).
    public static let llama3SpecialTokens: [String] = {
        var names = [
            "<|begin_of_text|>", "<|end_of_text|>",
            "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
            "<|finetune_right_pad_id|>", "<|step_id|>",
            "<|start_header_id|>", "<|end_header_id|>",
            "<|eom_id|>", "<|eot_id|>", "<|python_tag|>", "<|image|>",
        ]
        for i in 0..<(256 - names.count) { names.append("<|reserved_special_token_\(2 + i)|>") }
        return names
    }()

    /// Meta's limits (llama_models tokenizer.py): tiktoken is called on at most this many
    /// characters at once …
    static let maxEncodeChars = 400_000
    /// … and with no run of more consecutive whitespace / non-whitespace characters than this.
    static let maxConsecutiveChars = 25_000

    /// Loads a tiktoken ranks file. `specialTokens` are numbered after the ranks; when nil, a
    /// file with exactly 128,000 ranks gets Llama 3's list and any other file none.
    /// `config` (tokenizer_config.json) may rename bos/eos/pad, set `add_bos_token` /
    /// `add_eos_token` and add tokens.
    public init(modelFile url: URL, specialTokens: [String]? = nil, pattern: SplitPattern = .llama3, config: TokenizerConfig? = nil) throws {
        let path = url.path
        let data = try readFile(url, expected: "a tiktoken ranks file (tokenizer.model)")
        var table = ByteStringTable(expectedCount: 1 << 17)
        var maxRank = -1
        try data.withUnsafeBytes { raw in
            let p = raw.bindMemory(to: UInt8.self)
            let n = p.count
            var lineStart = 0
            var lineNumber = 0
            var decoded: [UInt8] = []
            while lineStart < n {
                var lineEnd = lineStart
                while lineEnd < n && p[lineEnd] != 0x0A { lineEnd += 1 }
                lineNumber += 1
                var end = lineEnd
                if end > lineStart && p[end - 1] == 0x0D { end -= 1 }
                defer { lineStart = lineEnd + 1 }
                if end == lineStart { continue }
                let line = UnsafeBufferPointer(rebasing: p[lineStart..<end])
                guard let space = line.firstIndex(of: 0x20),
                      Base64.decode(UnsafeBufferPointer(rebasing: line[0..<space]), into: &decoded),
                      let rank = TiktokenTokenizer.parseDecimal(UnsafeBufferPointer(rebasing: line[(space + 1)...])) else {
                    throw TokenizerError.malformedLine(path: path, line: lineNumber, expected: "\"<base64 token> <rank>\"")
                }
                table.insert(decoded, value: Int32(rank))
                maxRank = max(maxRank, rank)
            }
        }
        guard maxRank >= 0 else { throw TokenizerError.malformedLine(path: path, line: 1, expected: "at least one \"<base64 token> <rank>\" line") }
        ranks = table
        numBaseTokens = maxRank + 1

        // Special tokens (Meta's) plus any added tokens from tokenizer_config.json.
        let names = specialTokens ?? (numBaseTokens == 128_000 ? TiktokenTokenizer.llama3SpecialTokens : [])
        var byId: [Int: String] = [:]
        var byName: [String: Int] = [:]
        var added: [AddedToken] = []
        for (i, name) in names.enumerated() {
            byId[numBaseTokens + i] = name
            byName[name] = numBaseTokens + i
            added.append(AddedToken(id: numBaseTokens + i, content: name, special: true))
        }
        for t in config?.addedTokens ?? [] where byId[t.id] == nil && t.id >= numBaseTokens {
            byId[t.id] = t.content
            byName[t.content] = t.id
            added.append(t)
        }
        specialById = byId
        specialByName = byName
        matcher = AddedTokenMatcher(added)
        vocabSize = max(numBaseTokens, (byId.keys.max() ?? -1) + 1)

        let count = numBaseTokens
        var entryOf = [Int32](repeating: -1, count: count)
        for e in 0..<table.count { entryOf[Int(table.values[e])] = Int32(e) }
        idBytes = BytesById(count: count) { id, out in
            let e = Int(entryOf[id])
            if e < 0 { return false }
            out.append(contentsOf: table.entryBytes(e))
            return true
        }
        var singles = [Int32](repeating: -1, count: 256)
        for b in 0..<256 { singles[b] = table.value(of: [UInt8(b)]) ?? -1 }
        byteIds = singles

        switch pattern {
        case .gpt2: scanner = PatternScanner(kind: .gpt2); regex = nil
        case .qwen2: scanner = PatternScanner(kind: .cl100k(maxDigits: 1)); regex = nil
        case .llama3: scanner = PatternScanner(kind: .cl100k(maxDigits: 3)); regex = nil
        case let .regex(source): scanner = nil; regex = try RegexBox(source, path: path)
        }

        func idOf(_ name: String?) -> Int? { name.flatMap { byName[$0] ?? table.value(of: $0).map(Int.init) } }
        bosTokenId = idOf(config?.bosToken ?? "<|begin_of_text|>")
        endOfTextId = idOf("<|end_of_text|>") ?? idOf(config?.eosToken)
        if let eos = config?.eosToken, let id = idOf(eos) {
            eosTokenIds = [id]
        } else {
            // Meta's stop tokens: end_of_text, eom_id, eot_id.
            eosTokenIds = ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"].compactMap { byName[$0] }
        }
        padTokenId = idOf(config?.padToken ?? "<|finetune_right_pad_id|>")
        addBos = config?.addBosToken ?? true
        addEos = config?.addEosToken ?? false
    }

    private static func parseDecimal(_ b: UnsafeBufferPointer<UInt8>) -> Int? {
        guard !b.isEmpty, b.count < 10 else { return nil }
        var v = 0
        for c in b {
            guard c >= 0x30 && c <= 0x39 else { return nil }
            v = v * 10 + Int(c - 0x30)
        }
        return v
    }

    // MARK: - Encoding

    /// `addSpecialTokens` adds BOS (and EOS only when tokenizer_config.json asks for it), as
    /// Meta's `encode(s, bos=True, eos=False)` and the Hugging Face tokenizer do.
    public func encode(_ text: String, addSpecialTokens: Bool) throws -> [Int] {
        encode(text, bos: addSpecialTokens && addBos, eos: addSpecialTokens && addEos)
    }

    /// Meta's `Tokenizer.encode(s, bos=, eos=)`.
    public func encode(_ text: String, bos: Bool, eos: Bool) -> [Int] {
        var text = text
        var ids: [Int32] = []
        ids.reserveCapacity(text.utf8.count / 3 + 2)
        text.withUTF8 { buf in
            guard let p = buf.baseAddress else { return }
            matcher.split(p, buf.count, text: { a, b in
                encodeChunked(p + a, b - a, into: &ids)
            }, token: { ids.append($0) })
        }
        var out: [Int] = []
        out.reserveCapacity(ids.count + 2)
        if bos, let b = bosTokenId { out.append(b) }
        for id in ids { out.append(Int(id)) }
        if eos, let e = endOfTextId { out.append(e) }
        return out
    }

    /// Meta's chunking, then tiktoken on each piece. Byte length bounds the character count,
    /// so ordinary text skips the scalar walk entirely.
    private func encodeChunked(_ p: UnsafePointer<UInt8>, _ n: Int, into ids: inout [Int32]) {
        if n <= TiktokenTokenizer.maxConsecutiveChars {
            encodePlain(p, n, into: &ids)
            return
        }
        var chunkStart = 0
        while chunkStart < n {
            // One chunk of at most maxEncodeChars scalars.
            var chunkEnd = chunkStart
            var chars = 0
            while chunkEnd < n && chars < TiktokenTokenizer.maxEncodeChars {
                chunkEnd += decodeScalar(p, chunkEnd, n).1
                chars += 1
            }
            // _split_whitespaces_or_nonwhitespaces(chunk, maxConsecutiveChars)
            var sliceStart = chunkStart
            var runLength = 0
            var runIsSpace = isPythonSpace(decodeScalar(p, chunkStart, n).0)
            var i = chunkStart
            while i < chunkEnd {
                let (v, l) = decodeScalar(p, i, n)
                let isSpace = isPythonSpace(v)
                if isSpace != runIsSpace {
                    runLength = 1
                    runIsSpace = isSpace
                } else {
                    runLength += 1
                    if runLength > TiktokenTokenizer.maxConsecutiveChars {
                        encodePlain(p + sliceStart, i - sliceStart, into: &ids)
                        sliceStart = i
                        runLength = 1
                    }
                }
                i += l
            }
            encodePlain(p + sliceStart, chunkEnd - sliceStart, into: &ids)
            chunkStart = chunkEnd
        }
    }

    /// tiktoken's `_encode_native` on text without special tokens: split, then each piece is a
    /// single token when it has a rank, else byte-pair merged.
    private func encodePlain(_ p: UnsafePointer<UInt8>, _ n: Int, into ids: inout [Int32]) {
        if n == 0 { return }
        byteIds.withUnsafeBufferPointer { singles in
            let ranker = ByteRankRanker(ranks: ranks)
            let base = singles.baseAddress!
            func piece(_ w: UnsafePointer<UInt8>, _ k: Int) {
                if let id = ranks.value(w, k) {
                    ids.append(id)
                    return
                }
                let cacheable = k <= cache.maxWordLength
                if cacheable && cache.lookup(w, k, into: &ids) { return }
                let mark = ids.count
                BPEMerge.encode(w, k, byteIds: base, ranker: ranker, into: &ids)
                if cacheable { cache.insert(w, k, ids: ids[mark...]) }
            }
            if let scanner {
                scanner.scan(p, n) { a, b in piece(p + a, b - a) }
            } else if let regex {
                for (a, b) in PreTokenizer.pieces(regex.matches(p, n), length: n, behavior: .isolated, invert: false) {
                    piece(p + a, b - a)
                }
            }
        }
    }

    /// The pieces the split pattern produces (special tokens kept whole), as text.
    public func preTokenize(_ text: String) -> [String] {
        var text = text
        var pieces: [String] = []
        text.withUTF8 { buf in
            guard let p = buf.baseAddress else { return }
            matcher.split(p, buf.count, text: { a, b in
                let q = p + a
                if let scanner {
                    scanner.scan(q, b - a) { x, y in pieces.append(String(decoding: UnsafeBufferPointer(start: q + x, count: y - x), as: UTF8.self)) }
                } else if let regex {
                    for (x, y) in PreTokenizer.pieces(regex.matches(q, b - a), length: b - a, behavior: .isolated, invert: false) {
                        pieces.append(String(decoding: UnsafeBufferPointer(start: q + x, count: y - x), as: UTF8.self))
                    }
                }
            }, token: { id in pieces.append(self.specialById[Int(id)] ?? "") })
        }
        return pieces
    }

    // MARK: - Decoding

    /// Concatenates token bytes (special tokens as their names unless skipped) and decodes
    /// UTF-8 with replacement, like tiktoken's `decode(errors="replace")`.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids {
            if let name = specialById[id] {
                if !skipSpecialTokens { bytes.append(contentsOf: name.utf8) }
            } else {
                idBytes.appendBytes(of: id, to: &bytes)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - Vocabulary queries

    public func tokenId(_ token: String) -> Int? {
        if let id = specialByName[token] { return id }
        return ranks.value(of: token).map(Int.init)
    }

    /// Special tokens by name; ranked tokens as their bytes decoded as UTF-8 (lossily: a token
    /// may be part of a multi-byte character — use `tokenBytes(_:)` for the exact bytes).
    public func token(_ id: Int) -> String? {
        if let name = specialById[id] { return name }
        guard let r = idBytes.range(id) else { return nil }
        return String(decoding: idBytes.bytes[r], as: UTF8.self)
    }

    /// The exact bytes of a ranked token.
    public func tokenBytes(_ id: Int) -> [UInt8]? {
        if let name = specialById[id] { return Array(name.utf8) }
        guard let r = idBytes.range(id) else { return nil }
        return Array(idBytes.bytes[r])
    }

    /// Whether `id` is one of the special tokens.
    public func isSpecialToken(_ id: Int) -> Bool { specialById[id] != nil }

    /// Whether a file looks like tiktoken ranks: its first line is "<base64> <decimal>".
    static func looksLikeTiktoken(_ data: Data) -> Bool {
        data.withUnsafeBytes { raw -> Bool in
            let p = raw.bindMemory(to: UInt8.self)
            var i = 0
            var sawBase64 = false
            while i < p.count && p[i] != 0x20 {
                guard Base64.value(p[i]) >= 0 || p[i] == UInt8(ascii: "=") else { return false }
                sawBase64 = true
                i += 1
            }
            guard sawBase64, i < p.count else { return false }
            i += 1
            var digits = 0
            while i < p.count && p[i] >= 0x30 && p[i] <= 0x39 { digits += 1; i += 1 }
            return digits > 0 && (i == p.count || p[i] == 0x0A || p[i] == 0x0D)
        }
    }
}

// MARK: - Base64

enum Base64 {
    /// Value of a standard-alphabet base64 character, -1 otherwise.
    @inline(__always) static func value(_ c: UInt8) -> Int {
        switch c {
        case 0x41...0x5A: return Int(c - 0x41)
        case 0x61...0x7A: return Int(c - 0x61 + 26)
        case 0x30...0x39: return Int(c - 0x30 + 52)
        case UInt8(ascii: "+"): return 62
        case UInt8(ascii: "/"): return 63
        default: return -1
        }
    }

    /// Decodes padded standard base64 into `out` (replacing its contents); false if malformed.
    static func decode(_ s: UnsafeBufferPointer<UInt8>, into out: inout [UInt8]) -> Bool {
        out.removeAll(keepingCapacity: true)
        guard s.count % 4 == 0, !s.isEmpty else { return false }
        var i = 0
        while i < s.count {
            let a = value(s[i]), b = value(s[i + 1])
            guard a >= 0, b >= 0 else { return false }
            out.append(UInt8((a << 2 | b >> 4) & 0xFF))
            if s[i + 2] == UInt8(ascii: "=") {
                guard s[i + 3] == UInt8(ascii: "="), i + 4 == s.count else { return false }
                return true
            }
            let c = value(s[i + 2])
            guard c >= 0 else { return false }
            out.append(UInt8((b << 4 | c >> 2) & 0xFF))
            if s[i + 3] == UInt8(ascii: "=") {
                guard i + 4 == s.count else { return false }
                return true
            }
            let d = value(s[i + 3])
            guard d >= 0 else { return false }
            out.append(UInt8((c << 6 | d) & 0xFF))
            i += 4
        }
        return true
    }
}
