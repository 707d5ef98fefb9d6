import Foundation
import Testing
@testable import Training

@Suite("Batching, packing, shuffling")
struct DataBatchingTests {
    let a = TokenizedExample(inputIds: [1, 11, 12, 13], labels: [-100, -100, 12, 13], promptLength: 2)
    let b = TokenizedExample(inputIds: [1, 21, 22], labels: [-100, 21, 22], promptLength: 1)
    let c = TokenizedExample(inputIds: [1, 31], labels: [-100, 31], promptLength: 1)

    @Test func paddedBatch() throws {
        let batch = try Batch.padded([a, b, c], padId: 7)
        #expect(batch.batchSize == 3 && batch.seqLen == 4)
        #expect(!batch.isPacked)
        #expect(batch.inputIds == [1, 11, 12, 13, 1, 21, 22, 7, 1, 31, 7, 7])
        #expect(batch.attentionMask == [1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0])
        #expect(batch.labels == [-100, -100, 12, 13, -100, 21, 22, -100, -100, 31, -100, -100])
        // Unpacked rows: positions 0..<T like transformers, padding included.
        #expect(batch.positionIds == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
        #expect(batch.segmentIds == [1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0])
        #expect(batch.tokenCount == 9)
        #expect(batch.targetCount == 2 + 2 + 1)
        #expect(batch.canAttend(row: 1, query: 2, key: 0))
        #expect(!batch.canAttend(row: 1, query: 1, key: 2))   // causal
        #expect(!batch.canAttend(row: 1, query: 3, key: 0))   // padding query
    }

    @Test func padToMultiple() throws {
        let batch = try Batch.padded([a, b], padId: 0, padToMultipleOf: 8)
        #expect(batch.seqLen == 8)
        #expect(Array(batch.attentionMask[0..<8]) == [1, 1, 1, 1, 0, 0, 0, 0])
    }

    @Test func greedyPackingKeepsOrder() throws {
        #expect(try RowPacker(lengths: [4, 3, 2, 5, 1], packLength: 7).rows(in: Array(0..<5)) == [[0, 1], [2, 3], [4]])
        #expect(try RowPacker(lengths: [7, 7], packLength: 7).rows(in: [0, 1]) == [[0], [1]])
        #expect(throws: DataError.self) { try RowPacker(lengths: [8], packLength: 7) }
        // Without packing, one example per row.
        #expect(try RowPacker(lengths: [4, 3, 2], packLength: nil).rows(in: [2, 0, 1]) == [[2], [0], [1]])
    }

    /// The trainer's stream of rows: packing continues across an epoch boundary, and a stream
    /// resumed from a saved position gives the same rows as one that never stopped.
    @Test func packedRowsStreamAcrossEpochsAndResume() throws {
        let packer = try RowPacker(lengths: [4, 3, 2, 5, 1], packLength: 7)
        var straight = DataStream(count: 5, seed: 1, shuffle: false, epochs: 2)
        let all = packer.nextRows(from: &straight, count: .max)
        // Epoch 1 starts inside the row [4, 0].
        #expect(all == [[0, 1], [2, 3], [4, 0], [1, 2], [3, 4]])
        var first = DataStream(count: 5, seed: 1, shuffle: false, epochs: 2)
        let head = packer.nextRows(from: &first, count: 2)
        var resumed = DataStream(count: 5, seed: 1, shuffle: false, epochs: 2)
        resumed.position = first.position
        #expect(head + packer.nextRows(from: &resumed, count: .max) == all)
    }

    @Test func packedBatchKeepsExamplesApart() throws {
        let groups = try RowPacker(lengths: [a, b, c].map(\.inputIds.count), packLength: 7).rows(in: [0, 1, 2])
        #expect(groups == [[0, 1], [2]])
        let ex = [a, b, c]
        let batch = try Batch.packed(groups.map { $0.map { ex[$0] } }, seqLen: 8, padId: 0)
        #expect(batch.isPacked)
        #expect(batch.batchSize == 2 && batch.seqLen == 8)
        #expect(Array(batch.inputIds[0..<8]) == [1, 11, 12, 13, 1, 21, 22, 0])
        #expect(Array(batch.segmentIds[0..<8]) == [1, 1, 1, 1, 2, 2, 2, 0])
        // Positions restart at 0 for each example; padding continues the last count.
        #expect(Array(batch.positionIds[0..<8]) == [0, 1, 2, 3, 0, 1, 2, 3])
        #expect(Array(batch.positionIds[8..<16]) == [0, 1, 2, 3, 4, 5, 6, 7])
        // The first token of each packed example is never a target (so 13 never predicts 1).
        #expect(Array(batch.labels[0..<8]) == [-100, -100, 12, 13, -100, 21, 22, -100])
        #expect(batch.canAttend(row: 0, query: 6, key: 4))
        #expect(!batch.canAttend(row: 0, query: 4, key: 3))   // across the boundary
        #expect(!batch.canAttend(row: 0, query: 7, key: 7))   // padding
        #expect(throws: DataError.self) { try Batch.packed([[a, b]], seqLen: 6, padId: 0) }
    }

    @Test func packedLabelsOfPlainTextExamplesDoNotCross() throws {
        // maskPrompt = false style examples: every label set; the boundary label must still be cut.
        let x = TokenizedExample(inputIds: [5, 6], labels: [5, 6])
        let y = TokenizedExample(inputIds: [7, 8], labels: [7, 8])
        let batch = try Batch.packed([[x, y]], padId: 0)
        #expect(batch.labels == [-100, 6, -100, 8])
        #expect(batch.targetCount == 2)
    }

    /// Rows in a given order become batches as the trainer makes them (`Batch.make`).
    @Test func epochBatches() throws {
        let ex = [a, b, c]
        func batches(_ order: [Int], size: Int, pack: Int?) throws -> [Batch] {
            let rows = try RowPacker(lengths: ex.map(\.inputIds.count), packLength: pack).rows(in: order)
            return try stride(from: 0, to: rows.count, by: size).map {
                try Batch.make(rows[$0..<min($0 + size, rows.count)].map { $0.map { ex[$0] } }, packed: pack != nil, padId: 0)
            }
        }
        let plain = try batches([2, 0, 1], size: 2, pack: nil)
        #expect(plain.count == 2)
        #expect(plain[0] == (try Batch.padded([c, a], padId: 0)))
        #expect(plain[1] == (try Batch.padded([b], padId: 0)))
        let packed = try batches([0, 1, 2], size: 1, pack: 7)
        #expect(packed.count == 2)
        #expect(packed[0] == (try Batch.packed([[a, b]], padId: 0)))
        #expect(packed[1].inputIds == [1, 31] && packed[1].isPacked)
        #expect(throws: DataError.self) { try RowPacker(lengths: [4], packLength: 0) }
    }

    @Test func badBatchArguments() throws {
        #expect(throws: DataError.self) { try Batch.padded([], padId: 0) }
        #expect(throws: DataError.self) { try Batch.padded([a], padId: -1) }
        #expect(throws: DataError.self) { try Batch.padded([a], padId: 0, padToMultipleOf: 0) }
    }

    // MARK: PRNG

    @Test func splitMix64ReferenceVector() {
        // Published outputs of Vigna's splitmix64.c for seed 1234567.
        var g: UInt64 = 1_234_567
        #expect((0..<5).map { _ in Xoshiro256StarStar.splitMix64(&g) } ==
                [6_457_827_717_110_365_317, 3_203_168_211_198_807_973, 9_817_491_932_198_370_423,
                 4_593_380_528_125_082_431, 16_408_922_859_458_223_821])
    }

    @Test func xoshiroReferenceVectors() throws {
        // xoshiro256** from the state {1, 2, 3, 4} (reference C: 11520, 0, 1509978240, ...).
        var g = try Xoshiro256StarStar(state: [1, 2, 3, 4])
        #expect((0..<4).map { _ in g.next() } == [11520, 0, 1_509_978_240, 1_215_971_899_390_074_240])
        // Seeded through SplitMix64(42); values from an independent Python implementation.
        var h = Xoshiro256StarStar(seed: 42)
        #expect(h.state == [13_679_457_532_755_275_413, 2_949_826_092_126_892_291, 5_139_283_748_462_763_858, 6_349_198_060_258_255_764])
        #expect((0..<4).map { _ in h.next() } ==
                [1_546_998_764_402_558_742, 6_990_951_692_964_543_102, 12_544_586_762_248_559_009, 17_057_574_109_182_124_193])
    }

    @Test func rngStateRoundTripsForResume() throws {
        var g = Xoshiro256StarStar(seed: 7)
        for _ in 0..<10 { _ = g.next() }
        let saved = g.state
        let expected = (0..<5).map { _ in g.next() }
        var resumed = try Xoshiro256StarStar(state: saved)
        #expect((0..<5).map { _ in resumed.next() } == expected)
        #expect(throws: DataError.self) { try Xoshiro256StarStar(state: [1, 2, 3]) }
        #expect(throws: DataError.self) { try Xoshiro256StarStar(state: [0, 0, 0, 0]) }
    }

    @Test func boundedIntegersStayInRangeAndCoverIt() {
        var g = Xoshiro256StarStar(seed: 3)
        var seen = Set<Int>()
        for _ in 0..<2000 {
            let v = g.nextInt(below: 7)
            #expect((0..<7).contains(v))
            seen.insert(v)
        }
        #expect(seen.count == 7)
        for _ in 0..<100 { #expect(g.nextInt(below: 1) == 0) }
        let d = g.nextDouble()
        #expect(d >= 0 && d < 1)
    }

    @Test func shufflingIsADeterministicPermutation() {
        var g1 = Xoshiro256StarStar(seed: 99)
        var g2 = Xoshiro256StarStar(seed: 99)
        let p1 = shuffledIndices(count: 50, rng: &g1)
        let p2 = shuffledIndices(count: 50, rng: &g2)
        #expect(p1 == p2)
        #expect(p1.sorted() == Array(0..<50))
        #expect(p1 != Array(0..<50))
        #expect(shuffledIndices(count: 0, rng: &g1) == [])
        #expect(shuffledIndices(count: 1, rng: &g1) == [0])

        let e0 = epochOrder(count: 100, seed: 1, epoch: 0)
        #expect(e0 == epochOrder(count: 100, seed: 1, epoch: 0))
        #expect(e0 != epochOrder(count: 100, seed: 1, epoch: 1))
        #expect(e0 != epochOrder(count: 100, seed: 2, epoch: 0))
        #expect(e0.sorted() == Array(0..<100))
    }
}
