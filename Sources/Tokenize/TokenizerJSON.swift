import Foundation
import LLMCore

// MARK: - Merge list

/// BPE merges as (left, right) byte strings in their vocabulary spelling, stored flat:
/// merge k covers `bytes[parts[3k] ..< parts[3k+2]]`, split at `parts[3k+1]`, so the merged
/// token's spelling is the contiguous whole.
struct MergeList {
    private(set) var bytes: [UInt8] = []
    private(set) var parts: [Int32] = []
    /// Source line (merges.txt) or array index + 1 (tokenizer.json) of each merge, for errors.
    private(set) var lines: [Int32] = []

    var count: Int { lines.count }

    mutating func append(left: UnsafeBufferPointer<UInt8>, right: UnsafeBufferPointer<UInt8>, line: Int) {
        parts.append(Int32(bytes.count))
        bytes.append(contentsOf: left)
        parts.append(Int32(bytes.count))
        bytes.append(contentsOf: right)
        parts.append(Int32(bytes.count))
        lines.append(Int32(line))
    }

    /// Appends "left right" (split at the first space) — the legacy string form.
    mutating func append(joined: [UInt8], line: Int, path: String) throws {
        guard let space = joined.firstIndex(of: 0x20) else {
            throw TokenizerError.malformedLine(path: path, line: line, expected: "a merge \"left right\" separated by one space")
        }
        joined.withUnsafeBufferPointer { b in
            append(left: UnsafeBufferPointer(rebasing: b[0..<space]), right: UnsafeBufferPointer(rebasing: b[(space + 1)...]), line: line)
        }
    }

    /// Parses merges.txt: one "left right" per line; lines starting with `#version` and empty
    /// lines are skipped (`tokenizers`' convert_merges_to_hashmap).
    static func parseText(_ data: Data, path: String) throws -> MergeList {
        var list = MergeList()
        try data.withUnsafeBytes { raw in
            let p = raw.bindMemory(to: UInt8.self)
            let n = p.count
            var lineStart = 0
            var lineNumber = 0
            while lineStart < n {
                var lineEnd = lineStart
                while lineEnd < n && p[lineEnd] != 0x0A { lineEnd += 1 }
                lineNumber += 1
                var end = lineEnd
                if end > lineStart && p[end - 1] == 0x0D { end -= 1 }
                let line = UnsafeBufferPointer(rebasing: p[lineStart..<end])
                defer { lineStart = lineEnd + 1 }
                if line.isEmpty { continue }
                if line.count >= 8 && memcmp(line.baseAddress!, "#version", 8) == 0 { continue }
                guard let space = line.firstIndex(of: 0x20) else {
                    throw TokenizerError.malformedLine(path: path, line: lineNumber, expected: "a merge \"left right\" separated by one space")
                }
                list.append(left: UnsafeBufferPointer(rebasing: line[0..<space]), right: UnsafeBufferPointer(rebasing: line[(space + 1)...]), line: lineNumber)
            }
        }
        return list
    }

    /// Resolves the merges against the vocabulary: rank = position in the list; the merged
    /// token must exist (`tokenizers` fails with MergeTokenOutOfVocabulary otherwise).
    func resolve(vocab: ByteStringTable, path: String) throws -> PairTable {
        var table = PairTable(capacityFor: max(1, count))
        try bytes.withUnsafeBufferPointer { b in
            let base = b.baseAddress ?? ByteStringTable.emptyPointer
            for k in 0..<count {
                let s = Int(parts[3 * k]), m = Int(parts[3 * k + 1]), e = Int(parts[3 * k + 2])
                guard let a = vocab.value(base + s, m - s) else {
                    throw TokenizerError.mergeTokenOutOfVocabulary(path: path, line: Int(lines[k]), token: String(decoding: b[s..<m], as: UTF8.self))
                }
                guard let c = vocab.value(base + m, e - m) else {
                    throw TokenizerError.mergeTokenOutOfVocabulary(path: path, line: Int(lines[k]), token: String(decoding: b[m..<e], as: UTF8.self))
                }
                guard let merged = vocab.value(base + s, e - s) else {
                    throw TokenizerError.mergeTokenOutOfVocabulary(path: path, line: Int(lines[k]), token: String(decoding: b[s..<e], as: UTF8.self))
                }
                table.insert(a, c, rank: Int32(k), merged: merged)
            }
        }
        return table
    }
}

// MARK: - tokenizer.json

/// The parts of a `tokenizer.json` this library uses, read in one streaming pass: the
/// vocabulary and merges go straight into flat tables; the small pipeline sections are parsed
/// as JSON values and translated into stages (anything unsupported is a typed error).
struct TokenizerJSONFile {
    var vocab: ByteStringTable
    var merges: MergeList
    var mergesPath: String? = nil
    var ignoreMerges = false
    var addedTokens: [AddedToken] = []
    var normalizer: [NormalizerStep] = []
    var preTokenizer: [PreTokenizerStep] = []
    var prefixIds: [Int] = []
    var suffixIds: [Int] = []

    init(vocab: ByteStringTable, merges: MergeList) {
        self.vocab = vocab
        self.merges = merges
    }

    static let supportedModels = ["BPE (byte-level)"]

    static func parse(_ data: Data, path: String) throws -> TokenizerJSONFile {
        var file = TokenizerJSONFile(vocab: ByteStringTable(), merges: MergeList())
        var sawModel = false
        var sections: [String: JSONValue] = [:]
        try readJSON(data, path: path) { reader in
            try reader.beginObject("a JSON object at the top level")
            var key: [UInt8] = []
            var first = true
            while try reader.nextMember(key: &key, first: &first) {
                let name = String(decoding: key, as: UTF8.self)
                if name == "model" {
                    try parseModel(&reader, into: &file, path: path)
                    sawModel = true
                } else {
                    sections[name] = try reader.readValue()
                }
            }
            try reader.expectEnd()
        }
        guard sawModel else { throw TokenizerError.invalidField(path: path, field: "model", expected: "an object with the tokenizer model") }

        if let list = sections["added_tokens"], !list.isNull {
            guard let items = list.array else {
                throw TokenizerError.invalidField(path: path, field: "added_tokens", expected: "an array")
            }
            for (i, item) in items.enumerated() {
                file.addedTokens.append(try AddedToken.parse(item, id: nil, path: path, field: "added_tokens[\(i)]"))
            }
        }
        if let n = sections["normalizer"], !n.isNull {
            try parseNormalizer(n, path: path, into: &file.normalizer)
        }
        var byteLevel = false
        if let p = sections["pre_tokenizer"], !p.isNull {
            try parsePreTokenizer(p, path: path, into: &file.preTokenizer, byteLevel: &byteLevel)
        }
        guard byteLevel else {
            throw TokenizerError.unsupportedComponent(path: path, component: "pre_tokenizer",
                                                      detail: "no ByteLevel stage, so this is not a byte-level BPE tokenizer (SentencePiece-style tokenizer.json files are read through tokenizer.model)")
        }
        if let d = sections["decoder"], !d.isNull {
            try checkDecoder(d, path: path)
        }
        if let p = sections["post_processor"], !p.isNull {
            try parsePostProcessor(p, path: path, prefix: &file.prefixIds, suffix: &file.suffixIds)
        }
        return file
    }

    /// Reads a `{"token": id, ...}` object into a table.
    static func readVocab(_ reader: inout JSONReader) throws -> ByteStringTable {
        try reader.beginObject("the vocabulary object {\"token\": id, ...}")
        // Size the table from the input (an entry takes well over 8 bytes) to avoid rehashing.
        var table = ByteStringTable(expectedCount: min(1 << 20, max(1024, (reader.count - reader.pos) / 24)))
        var key: [UInt8] = []
        var first = true
        while try reader.nextMember(key: &key, first: &first) {
            let at = reader.pos
            let id = try reader.readInt()
            guard id >= 0, id < Int(Int32.max) else { throw reader.error("token id \(id) out of range", at: at) }
            table.insert(key, value: Int32(id))
        }
        return table
    }

    private static func parseModel(_ reader: inout JSONReader, into file: inout TokenizerJSONFile, path: String) throws {
        try reader.beginObject("the model object")
        var type: String? = nil
        var sawVocab = false
        var sawMerges = false
        var key: [UInt8] = []
        var first = true
        while try reader.nextMember(key: &key, first: &first) {
            switch String(decoding: key, as: UTF8.self) {
            case "type":
                type = try reader.readValue().string
            case "vocab":
                if reader.peek() == UInt8(ascii: "{") {
                    file.vocab = try readVocab(&reader)
                    sawVocab = true
                } else {
                    _ = try reader.readValue()  // e.g. Unigram's [[piece, score]] list
                }
            case "merges":
                try readMerges(&reader, into: &file.merges, path: path)
                sawMerges = true
            case "ignore_merges":
                file.ignoreMerges = try reader.readValue().bool ?? false
            case "continuing_subword_prefix", "end_of_word_suffix":
                let field = String(decoding: key, as: UTF8.self)
                let v = try reader.readValue()
                if let s = v.string, !s.isEmpty {
                    throw TokenizerError.unsupportedComponent(path: path, component: "model.\(field)", detail: "\"\(s)\" (only byte-level BPE without subword affixes is supported)")
                }
            default:
                _ = try reader.readValue()
            }
        }
        // `tokenizers` also accepts an untagged model; a BPE is recognized by its merges.
        let resolved = type ?? (sawMerges ? "BPE" : "(none)")
        guard resolved == "BPE" else {
            throw TokenizerError.unknownModelType(path: path, type: resolved, supported: supportedModels)
        }
        guard sawVocab else { throw TokenizerError.invalidField(path: path, field: "model.vocab", expected: "an object {\"token\": id}") }
        guard sawMerges else { throw TokenizerError.invalidField(path: path, field: "model.merges", expected: "an array of merges") }
    }

    /// Merges are `"left right"` strings (older files) or `["left", "right"]` pairs (newer ones).
    private static func readMerges(_ reader: inout JSONReader, into list: inout MergeList, path: String) throws {
        try reader.beginArray("the merges array")
        var first = true
        var left: [UInt8] = []
        var right: [UInt8] = []
        var index = 0
        while try reader.nextElement(first: &first) {
            index += 1
            left.removeAll(keepingCapacity: true)
            switch reader.peek() {
            case UInt8(ascii: "\""):
                try reader.readString(into: &left)
                try list.append(joined: left, line: index, path: path)
            case UInt8(ascii: "["):
                try reader.beginArray("a merge pair")
                var f = true
                right.removeAll(keepingCapacity: true)
                guard try reader.nextElement(first: &f) else { throw reader.error("a merge pair needs two strings") }
                try reader.readString(into: &left)
                guard try reader.nextElement(first: &f) else { throw reader.error("a merge pair needs two strings") }
                try reader.readString(into: &right)
                guard try !reader.nextElement(first: &f) else { throw reader.error("a merge pair has more than two strings") }
                left.withUnsafeBufferPointer { l in
                    right.withUnsafeBufferPointer { r in list.append(left: l, right: r, line: index) }
                }
            default:
                throw reader.error("a merge must be a string \"a b\" or a pair [\"a\", \"b\"]")
            }
        }
    }

    // MARK: Pipeline sections

    private static func typeName(_ v: JSONValue, _ path: String, _ field: String) throws -> String {
        guard let t = v["type"]?.string else {
            throw TokenizerError.invalidField(path: path, field: "\(field).type", expected: "a string")
        }
        return t
    }

    static func parseNormalizer(_ v: JSONValue, path: String, into steps: inout [NormalizerStep]) throws {
        let type = try typeName(v, path, "normalizer")
        switch type {
        case "NFC": steps.append(.nfc)
        case "NFD": steps.append(.nfd)
        case "NFKC": steps.append(.nfkc)
        case "NFKD": steps.append(.nfkd)
        case "Lowercase": steps.append(.lowercase)
        case "Sequence":
            guard let list = v["normalizers"]?.array else {
                throw TokenizerError.invalidField(path: path, field: "normalizer.normalizers", expected: "an array")
            }
            for item in list { try parseNormalizer(item, path: path, into: &steps) }
        default:
            throw TokenizerError.unsupportedComponent(path: path, component: "normalizer", detail: "type \"\(type)\" (supported: NFC, NFD, NFKC, NFKD, Lowercase, Sequence)")
        }
    }

    static func parsePreTokenizer(_ v: JSONValue, path: String, into steps: inout [PreTokenizerStep], byteLevel: inout Bool) throws {
        let type = try typeName(v, path, "pre_tokenizer")
        switch type {
        case "Sequence":
            guard let list = v["pretokenizers"]?.array else {
                throw TokenizerError.invalidField(path: path, field: "pre_tokenizer.pretokenizers", expected: "an array")
            }
            for item in list { try parsePreTokenizer(item, path: path, into: &steps, byteLevel: &byteLevel) }
        case "ByteLevel":
            // tokenizers' defaults: add_prefix_space = true, use_regex = true.
            steps.append(.byteLevel(addPrefixSpace: v["add_prefix_space"]?.bool ?? true, useRegex: v["use_regex"]?.bool ?? true))
            byteLevel = true
        case "Split":
            let matcher: PreTokenizerStep.Matcher
            if let source = v["pattern"]?["Regex"]?.string {
                switch SplitPattern(regex: source) {
                case .gpt2: matcher = .scanner(PatternScanner(kind: .gpt2))
                case .qwen2: matcher = .scanner(PatternScanner(kind: .cl100k(maxDigits: 1)))
                case .llama3: matcher = .scanner(PatternScanner(kind: .cl100k(maxDigits: 3)))
                case .regex: matcher = .regex(try RegexBox(source, path: path))
                }
            } else if let literal = v["pattern"]?["String"]?.string {
                matcher = .literal(Array(literal.utf8))
            } else {
                throw TokenizerError.invalidField(path: path, field: "pre_tokenizer.pattern", expected: "{\"Regex\": ...} or {\"String\": ...}")
            }
            let behaviorName = v["behavior"]?.string ?? "Isolated"
            guard let behavior = SplitBehavior(rawValue: behaviorName) else {
                throw TokenizerError.invalidField(path: path, field: "pre_tokenizer.behavior", expected: "Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous")
            }
            steps.append(.split(matcher: matcher, behavior: behavior, invert: v["invert"]?.bool ?? false))
        case "Digits":
            steps.append(.digits(individual: v["individual_digits"]?.bool ?? false))
        default:
            throw TokenizerError.unsupportedComponent(path: path, component: "pre_tokenizer", detail: "type \"\(type)\" (supported: ByteLevel, Split, Digits, Sequence)")
        }
    }

    static func checkDecoder(_ v: JSONValue, path: String) throws {
        let type = try typeName(v, path, "decoder")
        switch type {
        case "ByteLevel":
            return
        case "Sequence":
            for item in v["decoders"]?.array ?? [] { try checkDecoder(item, path: path) }
        default:
            throw TokenizerError.unsupportedComponent(path: path, component: "decoder", detail: "type \"\(type)\" (a byte-level BPE needs the ByteLevel decoder)")
        }
    }

    static func parsePostProcessor(_ v: JSONValue, path: String, prefix: inout [Int], suffix: inout [Int]) throws {
        let type = try typeName(v, path, "post_processor")
        switch type {
        case "ByteLevel":
            return  // only adjusts offsets
        case "Sequence":
            for item in v["processors"]?.array ?? [] { try parsePostProcessor(item, path: path, prefix: &prefix, suffix: &suffix) }
        case "TemplateProcessing":
            guard let single = v["single"]?.array else {
                throw TokenizerError.invalidField(path: path, field: "post_processor.single", expected: "an array")
            }
            var before = true
            for piece in single {
                if piece["Sequence"] != nil {
                    before = false
                } else if let name = piece["SpecialToken"]?["id"]?.string {
                    guard let ids = v["special_tokens"]?[name]?["ids"]?.array?.compactMap(\.int) else {
                        throw TokenizerError.invalidField(path: path, field: "post_processor.special_tokens.\(name).ids", expected: "an array of ids")
                    }
                    if before { prefix.append(contentsOf: ids) } else { suffix.append(contentsOf: ids) }
                }
            }
        case "RobertaProcessing", "BertProcessing":
            // cls / sep are [token, id] pairs: <cls> A <sep>.
            if let cls = v["cls"]?.array, cls.count == 2, let id = cls[1].int { prefix.append(id) }
            if let sep = v["sep"]?.array, sep.count == 2, let id = sep[1].int { suffix.append(id) }
        default:
            throw TokenizerError.unsupportedComponent(path: path, component: "post_processor", detail: "type \"\(type)\" (supported: TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing, Sequence)")
        }
    }
}
