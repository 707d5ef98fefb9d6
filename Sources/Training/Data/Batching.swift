import Foundation
import Tokenize

// MARK: - Batches

/// A batch of sequences as flat row-major `[batchSize, seqLen]` arrays.
///
/// - `attentionMask`: 1 on real tokens, 0 on padding.
/// - `labels`: unshifted, -100 on padding and on masked tokens.
/// - `segmentIds`: 0 on padding, 1, 2, ... for the 1st, 2nd, ... example in a row (always 1 in
///   an unpacked batch). Token `q` may attend to token `k` of the same row iff `k <= q` and both
///   have the same non-zero segment id: attention stays inside each example.
/// - `positionIds`: restart at 0 at the start of every example; padding continues the count of
///   the segment before it, so an unpacked row is exactly `0..<seqLen` (as transformers builds it).
public struct Batch: Sendable, Equatable {
    public var batchSize: Int
    public var seqLen: Int
    public var inputIds: [Int32]
    public var attentionMask: [Int32]
    public var labels: [Int32]
    public var positionIds: [Int32]
    public var segmentIds: [Int32]
    /// True when rows may hold several examples.
    public var isPacked: Bool

    /// Whether query position `q` may attend to key position `k` in `row` (causal, same segment).
    public func canAttend(row: Int, query q: Int, key k: Int) -> Bool {
        guard k <= q else { return false }
        let s = segmentIds[row * seqLen + q]
        return s != 0 && s == segmentIds[row * seqLen + k]
    }

    /// Number of (shifted) target tokens: positions t >= 1 of a row whose label is not -100.
    public var targetCount: Int {
        var n = 0
        for r in 0..<batchSize {
            for t in 1..<max(seqLen, 1) where labels[r * seqLen + t] != Int32(ignoreIndex) { n += 1 }
        }
        return n
    }

    /// Number of real (non-padding) tokens.
    public var tokenCount: Int { attentionMask.reduce(0) { $0 + Int($1) } }

    /// Right-pads each example to the longest in the batch (optionally rounded up to a multiple
    /// of `padToMultipleOf`): pad id `padId`, label -100, attention mask 0.
    public static func padded(_ examples: [TokenizedExample], padId: Int, padToMultipleOf: Int = 1) throws -> Batch {
        try packed(examples.map { [$0] }, seqLen: nil, padId: padId, padToMultipleOf: padToMultipleOf, markPacked: false)
    }

    /// Builds a batch whose row `r` is the concatenation of `rows[r]` (from `packGreedy`), padded
    /// on the right to `seqLen` (default: the longest row). In every packed example the label of
    /// its first token is set to -100, so that the last token of one example is never trained
    /// to predict the first token of the next (transformers' `DataCollatorWithFlattening` does
    /// the same); within an example that label is never used anyway, as position 0 has no
    /// preceding token.
    public static func packed(_ rows: [[TokenizedExample]], seqLen: Int? = nil, padId: Int,
                              padToMultipleOf: Int = 1) throws -> Batch {
        try packed(rows, seqLen: seqLen, padId: padId, padToMultipleOf: padToMultipleOf, markPacked: true)
    }

    static func packed(_ rows: [[TokenizedExample]], seqLen: Int?, padId: Int, padToMultipleOf: Int,
                       markPacked: Bool) throws -> Batch {
        guard !rows.isEmpty else { throw DataError.invalidArgument("a batch needs at least one row") }
        guard padToMultipleOf >= 1 else { throw DataError.invalidArgument("padToMultipleOf must be >= 1") }
        guard padId >= 0, padId <= Int(Int32.max) else { throw DataError.invalidArgument("pad id \(padId) out of range") }
        let lengths = rows.map { $0.reduce(0) { $0 + $1.inputIds.count } }
        let longest = lengths.max()!
        guard longest > 0 else { throw DataError.invalidArgument("every row of the batch is empty") }
        var T = seqLen ?? longest
        if let seqLen, seqLen < longest {
            throw DataError.invalidArgument("a row holds \(longest) tokens, more than seqLen \(seqLen)")
        }
        T = (T + padToMultipleOf - 1) / padToMultipleOf * padToMultipleOf
        let B = rows.count
        var ids = [Int32](repeating: Int32(padId), count: B * T)
        var mask = [Int32](repeating: 0, count: B * T)
        var labels = [Int32](repeating: Int32(ignoreIndex), count: B * T)
        var pos = [Int32](repeating: 0, count: B * T)
        var seg = [Int32](repeating: 0, count: B * T)
        for (r, row) in rows.enumerated() {
            var t = 0
            var p = 0
            for (s, ex) in row.enumerated() {
                p = 0
                for (j, id) in ex.inputIds.enumerated() {
                    guard id >= 0, id <= Int(Int32.max) else { throw DataError.invalidArgument("token id \(id) out of range") }
                    let o = r * T + t
                    ids[o] = Int32(id)
                    mask[o] = 1
                    labels[o] = (markPacked && j == 0) ? Int32(ignoreIndex) : Int32(ex.labels[j])
                    pos[o] = Int32(p)
                    seg[o] = Int32(s + 1)
                    t += 1
                    p += 1
                }
            }
            while t < T {
                pos[r * T + t] = Int32(p)
                t += 1
                p += 1
            }
        }
        return Batch(batchSize: B, seqLen: T, inputIds: ids, attentionMask: mask, labels: labels,
                     positionIds: pos, segmentIds: seg, isPacked: markPacked)
    }
}

// MARK: - Packing

/// Groups consecutive examples (in the given order, so a shuffle is respected) into rows of at
/// most `maxLength` tokens: an example goes into the current row if it fits, else it starts a
/// new row. Returns the example indices of each row.
/// - Throws: `invalidArgument` if an example is longer than `maxLength` (truncate first).
public func packGreedy(lengths: [Int], maxLength: Int) throws -> [[Int]] {
    guard maxLength >= 1 else { throw DataError.invalidArgument("maxLength must be >= 1") }
    var rows: [[Int]] = []
    var current: [Int] = []
    var used = 0
    for (i, n) in lengths.enumerated() {
        guard n <= maxLength else {
            throw DataError.invalidArgument("example \(i) has \(n) tokens, more than the packing length \(maxLength)")
        }
        if used + n > maxLength, !current.isEmpty {
            rows.append(current)
            current = []
            used = 0
        }
        current.append(i)
        used += n
    }
    if !current.isEmpty { rows.append(current) }
    return rows
}

/// Splits a data set into batches for one epoch: the examples are taken in `order` (e.g.
/// `epochOrder(count:seed:epoch:)`, or `0..<n` without shuffling); unpacked, each batch holds
/// `batchSize` examples, one per row; with `packing`, consecutive examples are first packed into
/// rows of at most `maxLength` tokens (`packGreedy`) and each batch holds `batchSize` rows.
/// Rows are padded to the longest row of their batch. The last batch may be smaller.
/// Deterministic: batch `k` of an epoch is the same on every run, so a checkpoint only needs the
/// epoch and the batch index to resume.
public func makeBatches(_ examples: [TokenizedExample], order: [Int], batchSize: Int, packing: Bool,
                        maxLength: Int?, padId: Int) throws -> [Batch] {
    guard batchSize >= 1 else { throw DataError.invalidArgument("batchSize must be >= 1, got \(batchSize)") }
    if let bad = order.first(where: { $0 < 0 || $0 >= examples.count }) {
        throw DataError.invalidArgument("order holds index \(bad) outside 0..<\(examples.count)")
    }
    let ordered = order.map { examples[$0] }
    var rows: [[TokenizedExample]]
    if packing {
        guard let maxLength else { throw DataError.invalidArgument("packing needs a maximum length") }
        rows = try packGreedy(lengths: ordered.map(\.inputIds.count), maxLength: maxLength).map { $0.map { ordered[$0] } }
    } else {
        rows = ordered.map { [$0] }
    }
    var batches: [Batch] = []
    var start = 0
    while start < rows.count {
        let chunk = Array(rows[start..<min(start + batchSize, rows.count)])
        batches.append(packing ? try Batch.packed(chunk, padId: padId) : try Batch.padded(chunk.map { $0[0] }, padId: padId))
        start += batchSize
    }
    return batches
}

/// The id used for padding: the tokenizer's pad token, else 0 (padding is masked out of
/// attention and loss, so its value never matters numerically).
public func paddingId(for tokenizer: (any Tokenizer)?) -> Int {
    tokenizer?.padTokenId ?? 0
}
