import Foundation

/// Byte-level BPE as in Hugging Face `tokenizers` (GPT-2, Qwen2/2.5/3, SmolLM, Llama 3's
/// tokenizer.json): added tokens → normalizer → pre-tokenizer (Split / ByteLevel / Digits) →
/// BPE with a merge-rank table → optional template post-processing; decoding maps tokens back
/// to bytes (ByteLevel decoder) and decodes UTF-8 lossily like `String::from_utf8_lossy`.
///
/// Loads from `tokenizer.json` or from `vocab.json` + `merges.txt`.
public final class ByteLevelBPETokenizer: Tokenizer {
    // MARK: Vocabulary
    /// Model vocabulary in its file spelling (byte-level alphabet) → id.
    private let vocab: ByteStringTable
    /// id → entry index in `vocab`, -1 for ids that are not model tokens.
    private let idToEntry: [Int32]
    /// id → raw bytes (model and added tokens), for decoding.
    private let idBytes: BytesById
    /// Id of each single-byte token.
    private let byteIds: [Int32]
    private let ranker: MergeListRanker
    /// Raw bytes → id, used by `ignore_merges` (a word that is a token is taken whole).
    private let rawVocab: ByteStringTable?

    // MARK: Added tokens and pipeline
    public let addedTokens: [AddedToken]
    private let addedById: [Int: String]
    private let addedByContent: [String: Int]
    private let isSpecial: [Bool]
    private let matcher: AddedTokenMatcher
    private let normalizer: Normalizer
    private let preTokenizer: PreTokenizer
    /// Ids the post-processor puts before / after the sequence when `addSpecialTokens` is true.
    private let prefixIds: [Int]
    private let suffixIds: [Int]
    private let cache = WordCache()

    // MARK: Tokenizer
    public let vocabSize: Int
    public let bosTokenId: Int?
    public let eosTokenIds: [Int]
    public let padTokenId: Int?

    /// Number of BPE merges.
    public let mergeCount: Int

    // MARK: - Loading

    /// Loads a Hugging Face `tokenizer.json` (model type BPE with a ByteLevel pre-tokenizer).
    /// `config` (tokenizer_config.json) supplies bos/eos/pad names, `add_bos_token` /
    /// `add_eos_token` and extra added tokens.
    public convenience init(tokenizerJSON url: URL, config: TokenizerConfig? = nil) throws {
        let path = url.path
        let data = try readFile(url, expected: "tokenizer.json")
        let file = try TokenizerJSONFile.parse(data, path: path)
        try self.init(file: file, path: path, config: config)
    }

    /// Loads `vocab.json` + `merges.txt` (a `#version` header line is skipped). The split pattern
    /// and normalization are not stored in these files; `pattern` and `nfc` give them (Qwen2:
    /// `.qwen2` and true; GPT-2: `.gpt2` and false).
    public convenience init(vocabFile: URL, mergesFile: URL, pattern: SplitPattern = .gpt2, nfc: Bool = false,
                            config: TokenizerConfig? = nil) throws {
        let vocabPath = vocabFile.path
        let vocabData = try readFile(vocabFile, expected: "vocab.json")
        let vocab: ByteStringTable = try readJSON(vocabData, path: vocabPath) { reader in
            let table = try TokenizerJSONFile.readVocab(&reader)
            try reader.expectEnd()
            return table
        }
        let merges = try MergeList.parseText(try readFile(mergesFile, expected: "merges.txt"), path: mergesFile.path)
        var file = TokenizerJSONFile(vocab: vocab, merges: merges)
        file.normalizer = nfc ? [.nfc] : []
        let splitStep: PreTokenizerStep
        switch pattern {
        case .gpt2: splitStep = .byteLevel(addPrefixSpace: false, useRegex: true)
        case .qwen2: splitStep = .split(matcher: .scanner(PatternScanner(kind: .cl100k(maxDigits: 1))), behavior: .isolated, invert: false)
        case .llama3: splitStep = .split(matcher: .scanner(PatternScanner(kind: .cl100k(maxDigits: 3))), behavior: .isolated, invert: false)
        case let .regex(source): splitStep = .split(matcher: .regex(try RegexBox(source, path: vocabPath)), behavior: .isolated, invert: false)
        }
        file.preTokenizer = [splitStep]
        file.mergesPath = mergesFile.path
        try self.init(file: file, path: vocabPath, config: config)
    }

    /// Builds the tokenizer from a vocabulary, merges and pipeline assembled elsewhere in this
    /// module (GGUF metadata: GGUFTokenizer.swift).
    convenience init(parts file: TokenizerJSONFile, path: String, config: TokenizerConfig?) throws {
        try self.init(file: file, path: path, config: config)
    }

    private init(file: TokenizerJSONFile, path: String, config: TokenizerConfig?) throws {
        // Added tokens: tokenizer.json first, then any extra ones from tokenizer_config.json.
        var added = file.addedTokens
        var seenIds = Set(added.map(\.id))
        for t in config?.addedTokens ?? [] where !seenIds.contains(t.id) {
            added.append(t)
            seenIds.insert(t.id)
        }
        added.sort { $0.id < $1.id }
        addedTokens = added

        var maxId = -1
        for v in file.vocab.values { maxId = max(maxId, Int(v)) }
        for t in added { maxId = max(maxId, t.id) }
        let count = maxId + 1
        vocabSize = count

        var entryOf = [Int32](repeating: -1, count: count)
        for e in 0..<file.vocab.count {
            let id = Int(file.vocab.values[e])
            if id >= 0 { entryOf[id] = Int32(e) }
        }
        idToEntry = entryOf

        var byId: [Int: String] = [:]
        var byContent: [String: Int] = [:]
        var special = [Bool](repeating: false, count: count)
        for t in added {
            byId[t.id] = t.content
            if byContent[t.content] == nil { byContent[t.content] = t.id }
            if t.special { special[t.id] = true }
        }
        addedById = byId
        addedByContent = byContent
        isSpecial = special

        let vocabTable = file.vocab
        idBytes = vocabTable.bytes.withUnsafeBufferPointer { vb in
            BytesById(count: count) { id, out in
                if let content = byId[id] {
                    // Added tokens go through the ByteLevel decoder like every token.
                    var utf8 = Array(content.utf8)
                    utf8.withUnsafeMutableBufferPointer { b in
                        _ = ByteLevel.decodeToken(UnsafePointer(b.baseAddress ?? UnsafeMutablePointer(mutating: ByteStringTable.emptyPointer)), b.count, into: &out)
                    }
                    return true
                }
                let e = Int(entryOf[id])
                if e < 0 { return false }
                let start = Int(vocabTable.offsets[e])
                let len = Int(vocabTable.offsets[e + 1]) - start
                ByteLevel.decodeToken(vb.baseAddress! + start, len, into: &out)
                return true
            }
        }

        var bytesToIds = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            if let id = vocabTable.value(of: ByteLevel.encode([UInt8(b)])) { bytesToIds[b] = id }
        }
        byteIds = bytesToIds

        ranker = MergeListRanker(pairs: try file.merges.resolve(vocab: vocabTable, path: file.mergesPath ?? path))
        mergeCount = file.merges.count
        vocab = vocabTable

        if file.ignoreMerges {
            var raw = ByteStringTable(expectedCount: vocabTable.count)
            let tb = idBytes
            tb.bytes.withUnsafeBufferPointer { b in
                for id in 0..<count where entryOf[id] >= 0 {
                    if let r = tb.range(id) {
                        raw.insert(b.baseAddress.map { $0 + r.lowerBound } ?? ByteStringTable.emptyPointer, r.count, value: Int32(id))
                    }
                }
            }
            rawVocab = raw
        } else {
            rawVocab = nil
        }

        matcher = AddedTokenMatcher(added)
        normalizer = Normalizer(steps: file.normalizer)
        preTokenizer = PreTokenizer(steps: file.preTokenizer)

        // Special token ids.
        func idOf(_ name: String?) -> Int? {
            guard let name else { return nil }
            if let id = byContent[name] { return id }
            if let id = vocabTable.value(of: name) { return Int(id) }
            return nil
        }
        var prefix = file.prefixIds
        var suffix = file.suffixIds
        if let config {
            bosTokenId = idOf(config.bosToken)
            eosTokenIds = idOf(config.eosToken).map { [$0] } ?? []
            padTokenId = idOf(config.padToken)
        } else {
            bosTokenId = prefix.first
            // Without a config, every conventional end-of-text marker among the special added
            // tokens ends generation (ordinary vocabulary entries such as Qwen's "</s>" do not).
            eosTokenIds = ["<|endoftext|>", "<|im_end|>", "<|end_of_text|>", "<|eot_id|>", "</s>"].compactMap { name in
                byContent[name].flatMap { special[$0] ? $0 : nil }
            }
            padTokenId = nil
        }
        // transformers rebuilds the template from add_bos_token / add_eos_token when set.
        if let bos = bosTokenId, let addBos = config?.addBosToken {
            if addBos && prefix.first != bos { prefix.insert(bos, at: 0) }
            if !addBos && prefix.first == bos { prefix.removeFirst() }
        }
        if let eos = eosTokenIds.first, let addEos = config?.addEosToken {
            if addEos && suffix.last != eos { suffix.append(eos) }
            if !addEos && suffix.last == eos { suffix.removeLast() }
        }
        prefixIds = prefix
        suffixIds = suffix
    }

    // MARK: - Encoding

    public func encode(_ text: String, addSpecialTokens: Bool) throws -> [Int] {
        var text = text
        var ids: [Int32] = []
        ids.reserveCapacity(text.utf8.count / 3 + 4)
        text.withUTF8 { buf in
            guard let p = buf.baseAddress else { return }
            encodeBytes(p, buf.count, into: &ids)
        }
        var out: [Int] = []
        out.reserveCapacity(ids.count + prefixIds.count + suffixIds.count)
        if addSpecialTokens { out.append(contentsOf: prefixIds) }
        for id in ids { out.append(Int(id)) }
        if addSpecialTokens { out.append(contentsOf: suffixIds) }
        return out
    }

    /// Added-token split, then normalize + pre-tokenize + BPE each text segment.
    private func encodeBytes(_ p: UnsafePointer<UInt8>, _ n: Int, into ids: inout [Int32]) {
        byteIds.withUnsafeBufferPointer { byteIds in
            let byteIdsBase = byteIds.baseAddress!
            matcher.split(p, n, text: { a, b in
                let q = p + a
                let m = b - a
                if normalizer.mayChange(q, m) {
                    let normalized = normalizer.apply(q, m)
                    normalized.withUnsafeBufferPointer { nb in
                        if let base = nb.baseAddress {
                            preTokenizer.run(base, nb.count) { w, k in encodeWord(w, k, byteIdsBase, &ids) }
                        }
                    }
                } else {
                    preTokenizer.run(q, m) { w, k in encodeWord(w, k, byteIdsBase, &ids) }
                }
            }, token: { id in ids.append(id) })
        }
    }

    /// The pieces BPE runs on, as text: added tokens are matched, the rest normalized and
    /// pre-tokenized (like `tokenizers`' `pre_tokenize_str` after `normalize_str`, with added
    /// tokens kept whole). Joined, they are the normalized text.
    public func preTokenize(_ text: String) -> [String] {
        var text = text
        var pieces: [String] = []
        text.withUTF8 { buf in
            guard let p = buf.baseAddress else { return }
            matcher.split(p, buf.count, text: { a, b in
                let emit: (UnsafePointer<UInt8>, Int) -> Void = { w, k in
                    pieces.append(String(decoding: UnsafeBufferPointer(start: w, count: k), as: UTF8.self))
                }
                if normalizer.mayChange(p + a, b - a) {
                    let normalized = normalizer.apply(p + a, b - a)
                    normalized.withUnsafeBufferPointer { nb in
                        if let base = nb.baseAddress { preTokenizer.run(base, nb.count, emit) }
                    }
                } else {
                    preTokenizer.run(p + a, b - a, emit)
                }
            }, token: { id in pieces.append(self.addedById[Int(id)] ?? "") })
        }
        return pieces
    }

    @inline(__always) private func encodeWord(_ w: UnsafePointer<UInt8>, _ n: Int, _ byteIds: UnsafePointer<Int32>, _ ids: inout [Int32]) {
        if n == 1 {
            let id = byteIds[Int(w[0])]
            if id >= 0 { ids.append(id) }
            return
        }
        if let raw = rawVocab, let id = raw.value(w, n) {
            ids.append(id)
            return
        }
        let cacheable = n <= cache.maxWordLength
        if cacheable && cache.lookup(w, n, into: &ids) { return }
        let mark = ids.count
        BPEMerge.encode(w, n, byteIds: byteIds, ranker: ranker, into: &ids)
        if cacheable { cache.insert(w, n, ids: ids[mark...]) }
    }

    // MARK: - Decoding

    public func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        for id in ids {
            if skipSpecialTokens && id >= 0 && id < isSpecial.count && isSpecial[id] { continue }
            idBytes.appendBytes(of: id, to: &bytes)  // unknown ids are ignored, as in tokenizers
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - Vocabulary queries

    public func tokenId(_ token: String) -> Int? {
        if let id = addedByContent[token] { return id }
        return vocab.value(of: token).map(Int.init)
    }

    public func token(_ id: Int) -> String? {
        if let content = addedById[id] { return content }
        guard id >= 0, id < idToEntry.count, idToEntry[id] >= 0 else { return nil }
        return vocab.entryString(Int(idToEntry[id]))
    }

    /// The raw bytes a token stands for (after the ByteLevel mapping), or nil for unknown ids.
    public func tokenBytes(_ id: Int) -> [UInt8]? {
        guard let r = idBytes.range(id) else { return nil }
        return Array(idBytes.bytes[r])
    }

    /// Whether `id` is an added token marked special.
    public func isSpecialToken(_ id: Int) -> Bool { id >= 0 && id < isSpecial.count && isSpecial[id] }
}
