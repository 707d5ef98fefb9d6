import Foundation

// MARK: - Pair ranking

/// Ranks the merge of two adjacent symbols of a word: returns `rank << 32 | mergedId`, or nil
/// when the pair cannot merge. Lower ranks merge first.
protocol PairRanker {
    /// `a` covers word bytes `start..<mid`, `b` covers `mid..<end`.
    func rank(_ a: Int32, _ b: Int32, _ word: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> UInt64?
}

/// `tokenizers` BPE: the rank of a pair is its line in the merges list.
struct MergeListRanker: PairRanker {
    let pairs: PairTable
    @inline(__always) func rank(_ a: Int32, _ b: Int32, _ word: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> UInt64? {
        pairs.lookup(a, b)
    }
}

/// tiktoken: two parts merge when their concatenated bytes are a token; the token's rank (which
/// is also its id) orders the merges (`byte_pair_merge` in tiktoken's lib.rs).
struct ByteRankRanker: PairRanker {
    let ranks: ByteStringTable
    @inline(__always) func rank(_ a: Int32, _ b: Int32, _ word: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> UInt64? {
        guard let r = ranks.value(word + start, end - start) else { return nil }
        return UInt64(UInt32(bitPattern: r)) << 32 | UInt64(UInt32(bitPattern: r))
    }
}

// MARK: - Merge loop

/// Byte-pair merging of one pre-tokenized word. Both `tokenizers` (a heap ordered by
/// (rank, position)) and tiktoken (a scan for the minimum rank, first on ties) merge the
/// lowest-ranked adjacent pair, leftmost on ties, until none can merge; this does the same
/// with a linear scan for short words and a heap for long ones (so pathological inputs stay
/// O(n log n)).
enum BPEMerge {
    /// Words with more symbols than this use the heap.
    static let heapThreshold = 48

    /// Appends the token ids of `word` to `out`. `byteIds[b]` is the id of the single-byte
    /// token for byte `b` (negative when there is none: such bytes are dropped, as `tokenizers`
    /// drops characters missing from the vocabulary when there is no unk token).
    static func encode<R: PairRanker>(_ w: UnsafePointer<UInt8>, _ n: Int, byteIds: UnsafePointer<Int32>, ranker: R, into out: inout [Int32]) {
        if n == 0 { return }
        if n == 1 {
            let id = byteIds[Int(w[0])]
            if id >= 0 { out.append(id) }
            return
        }
        if n <= heapThreshold {
            linear(w, n, byteIds: byteIds, ranker: ranker, into: &out)
        } else {
            heap(w, n, byteIds: byteIds, ranker: ranker, into: &out)
        }
    }

    private static func linear<R: PairRanker>(_ w: UnsafePointer<UInt8>, _ n: Int, byteIds: UnsafePointer<Int32>, ranker: R, into out: inout [Int32]) {
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: n) { ids in
            withUnsafeTemporaryAllocation(of: Int.self, capacity: n + 1) { starts in
                withUnsafeTemporaryAllocation(of: UInt64.self, capacity: n) { pr in
                    var m = 0
                    for i in 0..<n {
                        let id = byteIds[Int(w[i])]
                        if id >= 0 {
                            ids[m] = id
                            starts[m] = i
                            m += 1
                        }
                    }
                    starts[m] = n
                    if m > 1 {
                        for i in 0..<(m - 1) {
                            pr[i] = ranker.rank(ids[i], ids[i + 1], w, starts[i], starts[i + 2]) ?? .max
                        }
                    }
                    while m > 1 {
                        var best = UInt64.max
                        var bi = -1
                        for i in 0..<(m - 1) where pr[i] < best {
                            best = pr[i]
                            bi = i
                        }
                        if bi < 0 { break }
                        ids[bi] = Int32(truncatingIfNeeded: best & 0xFFFF_FFFF)
                        // Remove symbol bi+1.
                        var j = bi + 1
                        while j < m - 1 {
                            ids[j] = ids[j + 1]
                            starts[j] = starts[j + 1]
                            pr[j] = pr[j + 1]
                            j += 1
                        }
                        starts[m - 1] = starts[m]
                        m -= 1
                        if bi + 1 < m {
                            pr[bi] = ranker.rank(ids[bi], ids[bi + 1], w, starts[bi], starts[bi + 2]) ?? .max
                        }
                        if bi > 0 {
                            pr[bi - 1] = ranker.rank(ids[bi - 1], ids[bi], w, starts[bi - 1], starts[bi + 1]) ?? .max
                        }
                    }
                    for i in 0..<m { out.append(ids[i]) }
                }
            }
        }
    }

    private static func heap<R: PairRanker>(_ w: UnsafePointer<UInt8>, _ n: Int, byteIds: UnsafePointer<Int32>, ranker: R, into out: inout [Int32]) {
        var ids = [Int32](repeating: 0, count: n)
        var starts = [Int](repeating: 0, count: n)
        var next = [Int](repeating: -1, count: n)
        var prev = [Int](repeating: -1, count: n)
        var m = 0
        for i in 0..<n {
            let id = byteIds[Int(w[i])]
            if id >= 0 {
                ids[m] = id
                starts[m] = i
                m += 1
            }
        }
        for i in 0..<m {
            next[i] = i + 1 < m ? i + 1 : -1
            prev[i] = i - 1
        }
        var alive = [Bool](repeating: true, count: m)
        var heap = MinHeap()
        @inline(__always) func end(_ s: Int) -> Int { next[s] < 0 ? n : starts[next[s]] }
        @inline(__always) func pairRank(_ s: Int) -> UInt64? {
            let t = next[s]
            if t < 0 { return nil }
            return ranker.rank(ids[s], ids[t], w, starts[s], end(t))
        }
        for s in 0..<max(0, m - 1) {
            if let r = pairRank(s) { heap.push((r >> 32) << 32 | UInt64(s)) }
        }
        while let top = heap.pop() {
            let s = Int(top & 0xFFFF_FFFF)
            guard alive[s], let r = pairRank(s), r >> 32 == top >> 32 else { continue }  // stale entry
            let t = next[s]
            ids[s] = Int32(truncatingIfNeeded: r & 0xFFFF_FFFF)
            alive[t] = false
            next[s] = next[t]
            if next[t] >= 0 { prev[next[t]] = s }
            if prev[s] >= 0, let r2 = pairRank(prev[s]) { heap.push((r2 >> 32) << 32 | UInt64(prev[s])) }
            if let r3 = pairRank(s) { heap.push((r3 >> 32) << 32 | UInt64(s)) }
        }
        var s = m > 0 ? 0 : -1
        while s >= 0 {
            out.append(ids[s])
            s = next[s]
        }
    }
}

/// A binary min-heap of packed (rank << 32 | position) keys.
struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(_ v: UInt64) {
        items.append(v)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if items[parent] <= items[i] { break }
            items.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> UInt64? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            let count = items.count
            while true {
                let l = 2 * i + 1
                let r = l + 1
                var smallest = i
                if l < count && items[l] < items[smallest] { smallest = l }
                if r < count && items[r] < items[smallest] { smallest = r }
                if smallest == i { break }
                items.swapAt(i, smallest)
                i = smallest
            }
        }
        return first
    }
}

// MARK: - Word cache

/// Memoizes word → ids (like the word cache of `tokenizers`' BPE), shared by all threads that
/// use one tokenizer. Bounded: when full it starts over.
final class WordCache: @unchecked Sendable {
    private let lock = NSLock()
    private var keys = ByteStringTable(expectedCount: 4096)
    private var starts: [Int32] = [0]
    private var values: [Int32] = []
    private let maxEntries: Int
    /// Words longer than this are not cached (they are rare and would evict useful entries).
    let maxWordLength: Int

    init(maxEntries: Int = 100_000, maxWordLength: Int = 64) {
        self.maxEntries = maxEntries
        self.maxWordLength = maxWordLength
    }

    /// Appends the cached ids of a word to `out`; false when the word is not cached.
    func lookup(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32]) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let e = keys.value(p, n) else { return false }
        let a = Int(starts[Int(e)]), b = Int(starts[Int(e) + 1])
        out.append(contentsOf: values[a..<b])
        return true
    }

    func insert(_ p: UnsafePointer<UInt8>, _ n: Int, ids: ArraySlice<Int32>) {
        lock.lock()
        defer { lock.unlock() }
        if keys.count >= maxEntries {
            keys = ByteStringTable(expectedCount: 4096)
            starts = [0]
            values = []
        }
        if keys.value(p, n) != nil { return }
        keys.insert(p, n, value: Int32(starts.count - 1))
        values.append(contentsOf: ids)
        starts.append(Int32(values.count))
    }
}
