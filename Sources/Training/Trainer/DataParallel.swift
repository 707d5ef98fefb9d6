import Foundation

/// Data parallelism over MPI (issue 11): every rank draws the same global batch (the data
/// position stays global), runs its contiguous share of the rows, and the adapter gradients
/// and the step's counts are summed in one collective per step. Rank 0 alone reads `--resume`
/// and writes files; `broadcastState` gives the others its state.
extension Trainer {
    /// Rank `rank`'s contiguous share of `n` rows: near-equal blocks, the first `n % size`
    /// ranks one row more. Contiguous blocks cut into micro-batches of `batchSize` are exactly
    /// the micro-batches a 1-rank run with the same global batch makes (same dropout seeds).
    static func shard(_ n: Int, rank: Int, size: Int) -> Range<Int> {
        let base = n / size, extra = n % size
        let lo = rank * base + min(rank, extra)
        return lo..<(lo + base + (rank < extra ? 1 : 0))
    }

    /// This rank's micro-batches of a global batch, and the global index of the first (one
    /// process: all the rows in micro-batches of `batchSize`, the first being 0).
    func myMicroBatches(_ rows: [[Int]]) -> (micro: [[[Int]]], first: Int) {
        let b = config.batchSize
        var first = 0
        for r in 0..<comm.rank { first += (Self.shard(rows.count, rank: r, size: comm.size).count + b - 1) / b }
        let mine = Self.shard(rows.count, rank: comm.rank, size: comm.size)
        let micro = stride(from: mine.lowerBound, to: mine.upperBound, by: b).map { Array(rows[$0..<min($0 + b, mine.upperBound)]) }
        return (micro, first)
    }

    /// Sums gradients, target count, loss and tokens over ranks in one collective and writes
    /// the summed gradients back; returns the global numbers and whether any rank was asked to
    /// stop (so that all stop after the same step).
    func reduceStep(lossSum: Double, targets: Int, tokens: Int) -> (lossSum: Double, targets: Int, tokens: Int, stop: Bool) {
        let params = adapters.parameters
        let n = adapters.parameterCount
        if reduceBuffer == nil { reduceBuffer = .allocate(capacity: n + 4) }
        let buf = reduceBuffer!
        var o = 0
        for p in params { let g = p.grad.pointer; for j in 0..<p.count { buf[o + j] = Double(g[j]) }; o += p.count }
        buf[n] = Double(targets); buf[n + 1] = lossSum; buf[n + 2] = Double(tokens); buf[n + 3] = StopSignal.requested ? 1 : 0
        comm.allReduceSum(buf, count: n + 4)
        o = 0
        for p in params { let g = p.grad.pointer; for j in 0..<p.count { g[j] = Float(buf[o + j]) }; o += p.count }
        return (buf[n + 1], Int(buf[n]), Int(buf[n + 2]), buf[n + 3] > 0)
    }

    /// Checks, identical on every rank, that the first global batch has a row for every rank
    /// (that the global batch itself is large enough is checked before the data are read).
    func checkShards() throws {
        guard comm.isDistributed else { return }
        var s = data.stream(config)
        let first = data.packer.nextRows(from: &s, count: globalBatch)
        guard first.count >= comm.size else {
            throw TrainingError.data("\(config.data): \(first.count) training rows for \(comm.size) ranks leaves rank \(first.count) without data; use fewer ranks")
        }
    }

    /// Gives every rank rank 0's adapter, optimizer moments, step, data position and
    /// early-stopping state (rank 0 alone reads `--resume`, so only its filesystem needs the
    /// checkpoints; this also makes the starting adapter identical everywhere). Rank 0 has
    /// checked the checkpoint against this run (`resume(from:)`) before it is sent.
    func broadcastState() throws {
        guard comm.isDistributed else { return }
        let params = adapters.parameters
        let n = adapters.parameterCount
        let count = 8 + 3 * n
        let buf = UnsafeMutablePointer<Double>.allocate(capacity: count)
        defer { buf.deallocate() }
        buf.initialize(repeating: 0, count: count)
        if comm.isRoot {
            let (m, v) = optimizer.moments
            buf[0] = Double(step); buf[1] = Double(optimizer.step)
            buf[2] = Double(stream.position.epoch); buf[3] = Double(stream.position.offset); buf[4] = Double(stream.position.consumed)
            buf[5] = bestVal?.loss ?? .nan; buf[6] = Double(bestVal?.step ?? -1); buf[7] = Double(badEvals)
            var o = 8
            for (i, p) in params.enumerated() {
                for j in 0..<p.count { buf[o + j] = Double(p.value[j]); buf[o + n + j] = Double(m[i][j]); buf[o + 2 * n + j] = Double(v[i][j]) }
                o += p.count
            }
        }
        comm.broadcast(buf, count: count, root: 0)
        guard !comm.isRoot else { return }
        step = Int(buf[0])
        stream.position.epoch = Int(buf[2]); stream.position.offset = Int(buf[3]); stream.position.consumed = Int(buf[4])
        bestVal = buf[5].isNaN ? nil : (buf[5], Int(buf[6]))
        badEvals = Int(buf[7])
        var o = 8
        var m: [[Float]] = [], v: [[Float]] = []
        for p in params {
            for j in 0..<p.count { p.value[j] = Float(buf[o + j]) }
            m.append((0..<p.count).map { Float(buf[o + n + $0]) }); v.append((0..<p.count).map { Float(buf[o + 2 * n + $0]) })
            o += p.count
        }
        try optimizer.restore(step: Int(buf[1]), m: m, v: v)   // shapes are ours by construction
    }
}
