import Foundation
import LLMCore
import Testing
import TestSupport

/// GGML block formats against `gguf.quants` (Tests/Fixtures/gguf/quant_blocks.json, written by
/// scripts/gguf_quant_vectors.py): dequantization bit-exact from unaligned bytes, quantization
/// byte-exact, and the parallel path equal to the per-block one.
@Suite struct GGMLQuantTests {
    /// Block scales are widened bit-level (not through libgcc's `__extendhfsf2`): every one of
    /// the 65,536 f16 patterns as a Q8_0 scale, with quants 1 and -1, gives exactly
    /// `Float(Float16)` (NaN stays NaN).
    @Test func everyF16ScalePatternWidensExactly() {
        let blocks = 65_536
        var bytes = [UInt8](repeating: 0, count: blocks * 34)
        for h in 0..<blocks {
            bytes[h * 34] = UInt8(h & 0xFF); bytes[h * 34 + 1] = UInt8(h >> 8)
            bytes[h * 34 + 2] = 1; bytes[h * 34 + 3] = 0xFF  // q0 = 1, q1 = -1
        }
        var out = [Float](repeating: 0, count: blocks * 32)
        bytes.withUnsafeBytes { src in out.withUnsafeMutableBufferPointer { dequantize(src.baseAddress!, dtype: .q8_0, count: blocks * 32, into: $0.baseAddress!) } }
        var bad = 0
        for h in 0..<blocks {
            let d = Float(Float16(bitPattern: UInt16(h)))
            let got = (out[h * 32], out[h * 32 + 1])
            let ok = d.isNaN ? (got.0.isNaN && got.1.isNaN) : (got.0.bitPattern == d.bitPattern && got.1.bitPattern == (-d).bitPattern)
            if !ok { bad += 1 }
        }
        #expect(bad == 0, "\(bad) f16 scale patterns widened wrongly")
    }

    struct Vectors {
        let dtype: DType
        let blocks: Int
        let bytes: [UInt8]
        let expected: [Float]
        /// f32 input of the first `quantizedBlocks` blocks (formats gguf.quants can quantize).
        let input: [Float]
        let quantizedBlocks: Int
    }

    static let allFormats: [DType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K]

    static func hexBytes(_ s: String) -> [UInt8] {
        let u = Array(s.utf8)
        func nib(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : (c | 0x20) - 87 }
        return stride(from: 0, to: u.count, by: 2).map { nib(u[$0]) << 4 | nib(u[$0 + 1]) }
    }

    static func hexFloats(_ v: JSONValue?) throws -> [Float] {
        try (v?.array ?? []).map { h in
            let bits = try #require(h.string.flatMap { UInt32($0, radix: 16) }, "not an f32 bit pattern: \(h)")
            return Float(bitPattern: bits)
        }
    }

    static let url = TestPaths.fixtures.appendingPathComponent("gguf/quant_blocks.json")
    /// Parsed once for all test cases.
    static let parsed = Result { try JSONValue.parse(try Data(contentsOf: url)) }

    static func vectors(_ dtype: DType) throws -> Vectors {
        let json = try parsed.get()
        let e = try #require(json["formats"]?[dtype.rawValue], "no \(dtype.rawValue) in \(url.path)")
        let v = Vectors(dtype: dtype, blocks: try #require(e["blocks"]?.int),
                        bytes: hexBytes(try #require(e["bytes"]?.string)),
                        expected: try hexFloats(e["expected"]), input: try hexFloats(e["input"]),
                        quantizedBlocks: e["quantized_blocks"]?.int ?? 0)
        try #require(e["block_elements"]?.int == dtype.blockElements && e["block_bytes"]?.int == dtype.blockBytes)
        try #require(v.bytes.count == v.blocks * dtype.blockBytes && v.expected.count == v.blocks * dtype.blockElements)
        try #require(v.input.count == v.quantizedBlocks * dtype.blockElements)
        return v
    }

    /// Indices where the bit patterns differ (so -0 vs +0 counts as a difference).
    static func mismatches(_ a: [Float], _ b: [Float]) -> [Int] {
        zip(a, b).enumerated().compactMap { $0.element.0.bitPattern == $0.element.1.bitPattern ? nil : $0.offset }
    }

    static func dequantized(_ bytes: [UInt8], _ dtype: DType, count: Int, offset: Int) -> [Float] {
        var buf = [UInt8](repeating: 0xA5, count: bytes.count + offset + 8)
        buf.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        var out = [Float](repeating: .nan, count: count)
        buf.withUnsafeBytes { raw in
            out.withUnsafeMutableBufferPointer { dequantize(raw.baseAddress! + offset, dtype: dtype, count: count, into: $0.baseAddress!) }
        }
        return out
    }

    @Test(arguments: allFormats)
    func dequantizeMatchesReferenceUnaligned(_ dtype: DType) throws {
        let v = try Self.vectors(dtype)
        for offset in [1, 3] {
            let y = Self.dequantized(v.bytes, dtype, count: v.expected.count, offset: offset)
            let bad = Self.mismatches(y, v.expected), nBad = bad.count
            #expect(nBad == 0, "\(dtype.rawValue) at +\(offset): \(bad.count) values differ, first at \(bad.first ?? -1): \(bad.first.map { "\(y[$0]) vs \(v.expected[$0])" } ?? "")")
        }
        // Through the generic widening entry point too.
        var w = [Float](repeating: .nan, count: v.expected.count)
        v.bytes.withUnsafeBytes { raw in w.withUnsafeMutableBufferPointer { widenToFloat(raw.baseAddress!, dtype: dtype, count: v.expected.count, into: $0.baseAddress!) } }
        let nWiden = Self.mismatches(w, v.expected).count
        #expect(nWiden == 0, "widenToFloat(\(dtype.rawValue)) differs")
    }

    @Test(arguments: [DType.q8_0, .q4_0, .q4_1])
    func quantizeMatchesReference(_ dtype: DType) throws {
        #expect(canQuantize(dtype))
        let v = try Self.vectors(dtype)
        try #require(v.quantizedBlocks > 0)
        let n = v.quantizedBlocks * dtype.blockBytes
        let reference = Array(v.bytes[0..<n])
        for offset in [0, 1, 3] {
            var buf = [UInt8](repeating: 0xA5, count: n + offset + 4)
            v.input.withUnsafeBufferPointer { x in
                buf.withUnsafeMutableBytes { quantize(x.baseAddress!, dtype: dtype, count: v.input.count, into: $0.baseAddress! + offset) }
            }
            let got = Array(buf[offset..<(offset + n)])
            let bad = (0..<n).filter { got[$0] != reference[$0] }, nBad = bad.count
            #expect(nBad == 0, "\(dtype.rawValue) at +\(offset): \(bad.count) bytes differ, first in block \((bad.first ?? 0) / dtype.blockBytes) byte \((bad.first ?? 0) % dtype.blockBytes)")
            #expect(buf[0..<offset].allSatisfy { $0 == 0xA5 } && buf[(offset + n)...].allSatisfy { $0 == 0xA5 }, "wrote outside its blocks")
        }
    }

    @Test func canQuantizeOnlyTheWritableFormats() {
        #expect(Self.allFormats.filter(canQuantize) == [.q4_0, .q4_1, .q8_0])
        #expect(!canQuantize(.f32) && !canQuantize(.bf16))
    }

    /// More blocks than one chunk, so `dequantize` splits the work over threads (4 chunks of
    /// 65536 values stay on the caller): must equal block-by-block dequantization and the
    /// reference values of the fixture blocks it repeats.
    @Test(arguments: allFormats)
    func largeCountMatchesBlockwise(_ dtype: DType) throws {
        let v = try Self.vectors(dtype)
        let be = dtype.blockElements, bb = dtype.blockBytes
        let blocks = 5 * (1 << 16) / be + 3
        var src = [UInt8](repeating: 0, count: blocks * bb + 1)
        var expected = [Float](repeating: 0, count: blocks * be)
        for b in 0..<blocks {
            let k = (b * 7 + b / 3) % v.blocks
            src.replaceSubrange((1 + b * bb)..<(1 + (b + 1) * bb), with: v.bytes[(k * bb)..<((k + 1) * bb)])
            expected.replaceSubrange((b * be)..<((b + 1) * be), with: v.expected[(k * be)..<((k + 1) * be)])
        }
        var whole = [Float](repeating: .nan, count: blocks * be), single = whole
        src.withUnsafeBytes { raw in
            let p = raw.baseAddress! + 1
            whole.withUnsafeMutableBufferPointer { dequantize(p, dtype: dtype, count: blocks * be, into: $0.baseAddress!) }
            single.withUnsafeMutableBufferPointer { out in
                for b in 0..<blocks { dequantize(p + b * bb, dtype: dtype, count: be, into: out.baseAddress! + b * be) }
            }
        }
        let vsSingle = Self.mismatches(whole, single).count, vsReference = Self.mismatches(whole, expected).count
        #expect(vsSingle == 0, "parallel vs per-block")
        #expect(vsReference == 0, "parallel vs reference")
    }
}
