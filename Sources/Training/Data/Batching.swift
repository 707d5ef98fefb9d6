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

    /// One example per row (`padded`) or several (`packed`): how the trainer turns the rows of
    /// a `RowPacker` into a batch.
    public static func make(_ rows: [[TokenizedExample]], packed isPacked: Bool, padId: Int) throws -> Batch {
        isPacked ? try packed(rows, padId: padId) : try padded(rows.map { $0[0] }, padId: padId)
    }

    /// Builds a batch whose row `r` is the concatenation of `rows[r]` (from `RowPacker`), padded
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

/// Example indices in training order, handed out one at a time; `peek` shows the next one
/// without taking it (the packer must know whether it fits before taking it).
public protocol ExampleOrder {
    mutating func peek() -> Int?
    mutating func advance()
}

public extension ExampleOrder {
    mutating func next() -> Int? {
        guard let i = peek() else { return nil }
        advance()
        return i
    }
}

/// A finite order: one epoch's `epochOrder(count:seed:epoch:)`, or `0..<n` without shuffling.
/// (The trainer's endless, resumable order over many epochs is `DataStream`.)
public struct IndexOrder: ExampleOrder, Sendable {
    public let indices: [Int]
    public private(set) var position = 0
    public init(_ indices: [Int]) { self.indices = indices }
    public func peek() -> Int? { position < indices.count ? indices[position] : nil }
    public mutating func advance() { position += 1 }
}

/// Turns an order of examples into rows: one example per row, or with packing consecutive
/// examples (in the given order, so a shuffle is respected) greedily packed into rows of at most
/// `packLength` tokens: the next example joins the current row if it fits, else it starts a new
/// row. A row depends only on the order, never on how rows are grouped into batches or on how
/// many are asked for at once, so a resumed stream continues with the same rows.
public struct RowPacker: Sendable {
    public let lengths: [Int]
    /// Tokens a packed row may hold; nil = no packing.
    public let packLength: Int?

    /// - Throws: `invalidArgument` if `packLength` < 1 or an example is longer than it
    ///   (truncate first, as `prepareExamples` does to `maxLength`).
    public init(lengths: [Int], packLength: Int?) throws {
        if let m = packLength {
            guard m >= 1 else { throw DataError.invalidArgument("the packing length must be >= 1, got \(m)") }
            if let i = lengths.firstIndex(where: { $0 > m }) {
                throw DataError.invalidArgument("example \(i) has \(lengths[i]) tokens, more than the packing length \(m)")
            }
        }
        self.lengths = lengths
        self.packLength = packLength
    }

    /// The example indices of the next row, or nil when the order is exhausted.
    public func nextRow<O: ExampleOrder>(from order: inout O) -> [Int]? {
        guard let first = order.next() else { return nil }
        var row = [first]
        if let m = packLength {
            var used = lengths[first]
            while let i = order.peek(), used + lengths[i] <= m {
                row.append(i)
                used += lengths[i]
                order.advance()
            }
        }
        return row
    }

    /// The next `count` rows (fewer when the order ends).
    public func nextRows<O: ExampleOrder>(from order: inout O, count: Int) -> [[Int]] {
        var rows: [[Int]] = []
        while rows.count < count, let row = nextRow(from: &order) { rows.append(row) }
        return rows
    }

    /// Every row of a finite order (indices into `lengths`).
    public func rows(in order: [Int]) -> [[Int]] {
        var o = IndexOrder(order)
        return nextRows(from: &o, count: .max)
    }
}

/// The id used for padding: the tokenizer's pad token, else 0 (padding is masked out of
/// attention and loss, so its value never matters numerically).
public func paddingId(for tokenizer: (any Tokenizer)?) -> Int {
    tokenizer?.padTokenId ?? 0
}
