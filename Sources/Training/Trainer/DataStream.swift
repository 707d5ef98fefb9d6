import Foundation
import LLMCore

/// Where a run is in its data: epoch and offset into that epoch's order. The order of an epoch
/// is a pure function of (seed, epoch) (or file order with `shuffle` off), so this position is
/// all a checkpoint needs to continue with the same examples.
public struct DataPosition: Codable, Sendable, Equatable {
    public var epoch: Int = 0
    public var offset: Int = 0
    /// Examples handed out so far (over all epochs).
    public var consumed: Int = 0
    public init() {}
}

/// An endless (steps mode) or bounded (epochs mode) stream of example indices, epoch after
/// epoch; resumable from a `DataPosition`. `RowPacker` turns it into rows.
struct DataStream: ExampleOrder {
    let count: Int
    let seed: UInt64
    let shuffle: Bool
    /// Total examples to hand out (epochs · count), or nil for no bound.
    let limit: Int?
    var position = DataPosition()
    private var order: [Int] = []
    private var orderEpoch = -1

    init(count: Int, seed: UInt64, shuffle: Bool, epochs: Int?) {
        self.count = count; self.seed = seed; self.shuffle = shuffle
        // `TrainingData` refuses an --epochs whose product overflows; saturate regardless.
        limit = epochs.map { Checked.mul($0, count) ?? .max }
    }

    /// Why `p` cannot be a position of this stream (a resumed checkpoint's), or nil: the
    /// epoch and offset must lie in this data (offset below its example count) and agree with
    /// the examples consumed, and an epochs-mode run must not be past its end.
    func problem(with p: DataPosition) -> (field: String, expected: String)? {
        guard p.epoch >= 0 else { return ("position.epoch", "an epoch ≥ 0, found \(p.epoch)") }
        guard p.offset >= 0, p.offset < count else {
            return ("position.offset", "an offset into the epoch's \(count) training example\(count == 1 ? "" : "s") (0..<\(count)), found \(p.offset)")
        }
        guard let consumed = Checked.add(Checked.mul(p.epoch, count), p.offset), consumed == p.consumed else {
            return ("position.consumed", "epoch × examples + offset = \(p.epoch) × \(count) + \(p.offset), found \(p.consumed)")
        }
        if let limit, consumed > limit {
            return ("position.consumed", "at most the \(limit) examples of this run's epochs, found \(consumed)")
        }
        return nil
    }

    var exhausted: Bool { limit.map { position.consumed >= $0 } ?? false }

    private mutating func currentOrder() -> [Int] {
        if orderEpoch != position.epoch {
            order = shuffle ? epochOrder(count: count, seed: seed, epoch: position.epoch) : Array(0..<count)
            orderEpoch = position.epoch
        }
        return order
    }

    /// The next index without consuming it.
    mutating func peek() -> Int? {
        guard !exhausted, count > 0 else { return nil }
        return currentOrder()[position.offset]
    }

    mutating func advance() {
        position.consumed += 1
        position.offset += 1
        if position.offset == count { position.epoch += 1; position.offset = 0 }
    }
}
