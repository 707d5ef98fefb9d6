import Foundation

/// GPT-2's reversible byte ↔ printable-character mapping (`bytes_to_unicode` in OpenAI's
/// encoder.py, `ByteLevel` in `tokenizers`): printable Latin-1 bytes map to themselves, the
/// other 68 bytes to U+0100… in byte order. Vocabulary files of byte-level BPE tokenizers store
/// tokens in this alphabet; this library converts them to raw bytes once at load time.
enum ByteLevel {
    /// `byteToScalar[b]` is the character that stands for byte `b`.
    static let byteToScalar: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable {
                table[b] = UInt32(b)
            } else {
                table[b] = next
                next += 1
            }
        }
        return table
    }()

    /// Inverse of `byteToScalar`, indexed by scalar value (< 324); -1 where unmapped.
    static let scalarToByte: [Int16] = {
        var table = [Int16](repeating: -1, count: 324)
        for (b, s) in byteToScalar.enumerated() { table[Int(s)] = Int16(b) }
        return table
    }()

    /// The vocabulary spelling of a raw byte string.
    static func encode<C: Sequence>(_ bytes: C) -> String where C.Element == UInt8 {
        var out: [UInt8] = []
        for b in bytes { appendUTF8(byteToScalar[Int(b)], to: &out) }
        return String(decoding: out, as: UTF8.self)
    }

    /// Converts a token written in the byte-level alphabet back to raw bytes, appending them to
    /// `out`. Like `tokenizers`' ByteLevel decoder, a token with any character outside the
    /// alphabet is taken verbatim as UTF-8 instead. Returns false in that case.
    @discardableResult
    static func decodeToken(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [UInt8]) -> Bool {
        let mark = out.count
        var i = 0
        while i < n {
            let (v, l) = decodeScalar(p, i, n)
            if v < 324, scalarToByte[Int(v)] >= 0 {
                out.append(UInt8(scalarToByte[Int(v)]))
            } else {
                out.removeSubrange(mark...)
                out.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
                return false
            }
            i += l
        }
        return true
    }
}
