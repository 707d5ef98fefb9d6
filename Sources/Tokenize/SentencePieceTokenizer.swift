import CSentencePiece
import Foundation

/// Owns a loaded libsentencepiece processor. This is the only file that imports CSentencePiece;
/// every Int32 conversion and range check of the C API lives here.
private final class SentencePieceHandle: @unchecked Sendable {
    // The processor is immutable after loading and the C++ methods used are `const`, so
    // concurrent calls are safe.
    let processor: OpaquePointer

    init(data: Data, path: String) throws {
        var message = [CChar](repeating: 0, count: 512)
        let loaded: OpaquePointer? = data.withUnsafeBytes { raw in
            message.withUnsafeMutableBufferPointer { m in
                csp_load_from_bytes(raw.baseAddress, raw.count, m.baseAddress, m.count)
            }
        }
        guard let loaded else {
            let reason = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw TokenizerError.sentencePieceLoadFailed(path: path, reason: reason)
        }
        processor = loaded
    }

    deinit { csp_free(processor) }
}

/// A SentencePiece model (`tokenizer.model` of Llama 2, TinyLlama, Mistral, llama2.c models)
/// run by libsentencepiece itself, so normalization, the dummy-prefix space, BPE/unigram
/// segmentation and byte fallback are exactly the reference's.
///
/// `addSpecialTokens` adds BOS (and EOS only when tokenizer_config.json sets `add_eos_token`),
/// like Hugging Face's LlamaTokenizer. Control pieces (`<s>`, `</s>`), the unknown piece and
/// tokens added in tokenizer_config.json are matched when written literally in the text; the
/// text between them is encoded by SentencePiece piece by piece (HF's legacy behaviour).
public final class SentencePieceTokenizer: Tokenizer {
    private let handle: SentencePieceHandle
    private let pieceCount: Int
    private let isControl: [Bool]
    private let matcher: AddedTokenMatcher
    /// Tokens from tokenizer_config.json beyond the model's pieces.
    private let extraById: [Int: String]
    private let extraByName: [String: Int]
    private let addBos: Bool
    private let addEos: Bool

    public let vocabSize: Int
    public let bosTokenId: Int?
    public let eosTokenIds: [Int]
    public let padTokenId: Int?
    public let unknownTokenId: Int?

    /// Loads a serialized SentencePiece ModelProto.
    public convenience init(modelFile url: URL, config: TokenizerConfig? = nil) throws {
        try self.init(modelData: try readFile(url, expected: "a SentencePiece model (tokenizer.model)"), path: url.path, config: config)
    }

    public init(modelData: Data, path: String = "<memory>", config: TokenizerConfig? = nil) throws {
        let loaded = try SentencePieceHandle(data: modelData, path: path)
        let sp = loaded.processor
        let count = Int(csp_piece_size(sp))
        guard count > 0 else { throw TokenizerError.sentencePieceLoadFailed(path: path, reason: "the model has no pieces") }
        let control = (0..<count).map { csp_is_control(sp, Int32($0)) != 0 }

        func piece(_ id: Int) -> String {
            var length = 0
            guard let p = csp_id_to_piece(sp, Int32(id), &length) else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: p, count: length).bindMemory(to: UInt8.self), as: UTF8.self)
        }
        func optionalId(_ v: Int32) -> Int? { v >= 0 && Int(v) < count ? Int(v) : nil }
        let unk = optionalId(csp_unk_id(sp))

        var literal: [AddedToken] = []
        for id in 0..<count where control[id] {
            literal.append(AddedToken(id: id, content: piece(id), special: true))
        }
        if let unk { literal.append(AddedToken(id: unk, content: piece(unk), special: true)) }
        var extraById: [Int: String] = [:]
        var extraByName: [String: Int] = [:]
        for t in config?.addedTokens ?? [] {
            if t.id >= count {
                extraById[t.id] = t.content
                extraByName[t.content] = t.id
            }
            if !literal.contains(where: { $0.id == t.id }) { literal.append(t) }
        }

        func lookup(_ name: String?) -> Int? {
            guard let name else { return nil }
            if let id = extraByName[name] { return id }
            var n = name
            let id = n.withUTF8 { Int(csp_piece_to_id(sp, UnsafeRawPointer($0.baseAddress ?? ByteStringTable.emptyPointer).assumingMemoryBound(to: CChar.self), $0.count)) }
            if id == unk && name != unk.map(piece) { return nil }
            return id
        }
        handle = loaded
        pieceCount = count
        isControl = control
        unknownTokenId = unk
        self.extraById = extraById
        self.extraByName = extraByName
        matcher = AddedTokenMatcher(literal)
        vocabSize = max(count, (extraById.keys.max() ?? -1) + 1)
        bosTokenId = lookup(config?.bosToken) ?? optionalId(csp_bos_id(sp))
        let eos = lookup(config?.eosToken) ?? optionalId(csp_eos_id(sp))
        eosTokenIds = eos.map { [$0] } ?? []
        padTokenId = lookup(config?.padToken) ?? optionalId(csp_pad_id(sp))
        addBos = config?.addBosToken ?? true
        addEos = config?.addEosToken ?? false
    }

    // MARK: - Encoding

    public func encode(_ text: String, addSpecialTokens: Bool) throws -> [Int] {
        var out: [Int] = []
        if addSpecialTokens && addBos, let bos = bosTokenId { out.append(bos) }
        var text = text
        var failure: TokenizerError? = nil
        text.withUTF8 { buf in
            guard let p = buf.baseAddress else { return }
            matcher.split(p, buf.count, text: { a, b in
                guard failure == nil else { return }
                do { try encodePlain(p + a, b - a, into: &out) } catch { failure = error as? TokenizerError }
            }, token: { out.append(Int($0)) })
        }
        if let failure { throw failure }
        if addSpecialTokens && addEos, let eos = eosTokenIds.first { out.append(eos) }
        return out
    }

    private func encodePlain(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int]) throws {
        var ids: UnsafeMutablePointer<Int32>? = nil
        var count = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = message.withUnsafeMutableBufferPointer { m in
            UnsafeRawPointer(p).withMemoryRebound(to: CChar.self, capacity: n) { text in
                csp_encode(handle.processor, text, n, &ids, &count, m.baseAddress, m.count)
            }
        }
        guard status == 0 else {
            throw TokenizerError.sentencePieceFailed(reason: message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
        }
        defer { csp_free_buffer(ids) }
        if let ids {
            out.reserveCapacity(out.count + count)
            for i in 0..<count { out.append(Int(ids[i])) }
        }
    }

    // MARK: - Decoding

    /// Decodes with libsentencepiece. With `skipSpecialTokens`, control tokens are dropped
    /// (SentencePiece's own rule). Without it they are written out as their piece text between
    /// separately decoded runs; a run that follows one keeps its leading space.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool) -> String {
        var result = ""
        var run: [Int32] = []
        var wroteAnything = false
        func flush() {
            guard !run.isEmpty else { return }
            var text = decodeRun(run)
            if wroteAnything, let first = run.first, Int(first) < pieceCount, pieceText(Int(first))?.hasPrefix("\u{2581}") == true, !text.hasPrefix(" ") {
                text = " " + text
            }
            result += text
            wroteAnything = true
            run.removeAll(keepingCapacity: true)
        }
        for id in ids {
            if id >= 0 && id < pieceCount && !isControl[id] {
                run.append(Int32(id))
            } else if skipSpecialTokens {
                continue
            } else if let name = token(id) {
                flush()
                result += name
                wroteAnything = true
            }
        }
        flush()
        return result
    }

    private func decodeRun(_ ids: [Int32]) -> String {
        var text: UnsafeMutablePointer<CChar>? = nil
        var length = 0
        var message = [CChar](repeating: 0, count: 256)
        let status = ids.withUnsafeBufferPointer { b in
            message.withUnsafeMutableBufferPointer { m in
                csp_decode(handle.processor, b.baseAddress, b.count, &text, &length, m.baseAddress, m.count)
            }
        }
        defer { csp_free_buffer(text) }
        guard status == 0, let text else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: text, count: length).bindMemory(to: UInt8.self), as: UTF8.self)
    }

    // MARK: - Vocabulary queries

    private func pieceText(_ id: Int) -> String? {
        guard id >= 0, id < pieceCount else { return nil }
        var length = 0
        guard let p = csp_id_to_piece(handle.processor, Int32(id), &length) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: length).bindMemory(to: UInt8.self), as: UTF8.self)
    }

    public func tokenId(_ token: String) -> Int? {
        if let id = extraByName[token] { return id }
        var t = token
        let id = t.withUTF8 { buf in
            Int(csp_piece_to_id(handle.processor, UnsafeRawPointer(buf.baseAddress ?? ByteStringTable.emptyPointer).assumingMemoryBound(to: CChar.self), buf.count))
        }
        // PieceToId answers the unknown id for any missing piece.
        if id == unknownTokenId && token != unknownTokenId.flatMap(pieceText) { return nil }
        return id
    }

    public func token(_ id: Int) -> String? {
        if let name = extraById[id] { return name }
        return pieceText(id)
    }

    /// The text a token stands for: a piece with `▁` as a space, a byte-fallback piece
    /// (`<0x0A>`) as its byte, a control or added token as its name; nil for the unknown token
    /// (its text is not recoverable) and unknown ids.
    public func tokenBytes(_ id: Int) -> [UInt8]? {
        if let name = extraById[id] { return Array(name.utf8) }
        guard id != unknownTokenId, let piece = pieceText(id) else { return nil }
        if isControl[id] { return Array(piece.utf8) }
        let u = Array(piece.utf8)
        if u.count == 6, piece.hasPrefix("<0x"), piece.hasSuffix(">"), let b = UInt8(piece.dropFirst(3).prefix(2), radix: 16) { return [b] }
        return Array(piece.replacingOccurrences(of: "\u{2581}", with: " ").utf8)
    }

    /// Whether `id` is a control token (`<s>`, `</s>`, …).
    public func isControlToken(_ id: Int) -> Bool { id >= 0 && id < pieceCount && isControl[id] }
}
