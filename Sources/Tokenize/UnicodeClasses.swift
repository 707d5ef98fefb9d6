import Foundation

// MARK: - Scalar classes for the pre-tokenizer scanners

/// The character classes the GPT-2 / cl100k-style split patterns use, as bit flags:
/// `\p{L}` (general categories Lu, Ll, Lt, Lm, Lo), `\p{N}` (Nd, Nl, No), `\s` and `[\r\n]`.
///
/// `\s` in Oniguruma (Unicode encodings: U+0009–U+000D, U+0085 and the Zs/Zl/Zp categories) and in
/// Rust's regex crate (the White_Space property) denote the same set, which is exactly
/// `Unicode.Scalar.Properties.isWhitespace`.
///
/// Version skew matters on "all of Unicode": the Swift 6.3 standard library has Unicode 17.0
/// tables, while the reference engines have Unicode 16.0 ones (Oniguruma in `tokenizers` 0.23,
/// regex-syntax under tiktoken's fancy-regex; measured over every code point: exactly the
/// letters and numbers new in 17.0 differ). Scalars newer than `regexUnicodeVersion` are
/// therefore treated as unassigned (no class), as the engines see them.
enum ScalarClass {
    /// The Unicode version of the reference regex engines' property tables.
    static let regexUnicodeVersion = (major: 16, minor: 0)

    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 4
    static let newline: UInt8 = 8

    /// Class bits for U+0000…U+FFFF, computed once from the standard library's Unicode tables.
    /// Stored behind a raw pointer so the scanners' hot loops pay no array bounds checks.
    static let bmp: UnsafePointer<UInt8> = {
        let table = UnsafeMutablePointer<UInt8>.allocate(capacity: 0x10000)
        for v in 0..<0x10000 {
            table[v] = compute(UInt32(v))
        }
        return UnsafePointer(table)
    }()

    static func compute(_ v: UInt32) -> UInt8 {
        guard let scalar = Unicode.Scalar(v) else { return 0 }  // surrogates: no class
        let props = scalar.properties
        guard let age = props.age else { return 0 }
        if age.major > regexUnicodeVersion.major || (age.major == regexUnicodeVersion.major && age.minor > regexUnicodeVersion.minor) {
            return 0
        }
        var bits: UInt8 = 0
        switch props.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            bits |= letter
        case .decimalNumber, .letterNumber, .otherNumber:
            bits |= number
        default:
            break
        }
        if props.isWhitespace { bits |= space }
        if v == 0x0A || v == 0x0D { bits |= newline }
        return bits
    }

    @inline(__always) static func of(_ v: UInt32, table: UnsafePointer<UInt8>) -> UInt8 {
        v < 0x10000 ? table[Int(v)] : compute(v)
    }
}

// MARK: - UTF-8 decoding on raw buffers

/// Decodes the scalar starting at `i` in a valid UTF-8 buffer of `n` bytes; returns the scalar
/// value and its length in bytes. Input comes from Swift strings, so it is valid UTF-8; lengths
/// are clamped to the buffer so a malformed tail can never read out of bounds.
@inline(__always) func decodeScalar(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int) -> (UInt32, Int) {
    let b0 = UInt32(p[i])
    if b0 < 0x80 { return (b0, 1) }
    if b0 < 0xE0 {
        guard i + 1 < n else { return (0xFFFD, n - i) }
        return ((b0 & 0x1F) << 6 | UInt32(p[i + 1] & 0x3F), 2)
    }
    if b0 < 0xF0 {
        guard i + 2 < n else { return (0xFFFD, n - i) }
        return ((b0 & 0x0F) << 12 | UInt32(p[i + 1] & 0x3F) << 6 | UInt32(p[i + 2] & 0x3F), 3)
    }
    guard i + 3 < n else { return (0xFFFD, n - i) }
    return ((b0 & 0x07) << 18 | UInt32(p[i + 1] & 0x3F) << 12 | UInt32(p[i + 2] & 0x3F) << 6 | UInt32(p[i + 3] & 0x3F), 4)
}

/// Python's `str.isspace()`: general category Zs or bidirectional class WS, B or S. That is the
/// White_Space set plus U+001C…U+001F (bidi B/S but not White_Space). Used only to mirror Meta's
/// Llama 3 `tokenizer.py` run splitting.
@inline(__always) func isPythonSpace(_ v: UInt32) -> Bool {
    if v >= 0x1C && v <= 0x1F { return true }
    return ScalarClass.of(v, table: ScalarClass.bmp) & ScalarClass.space != 0
}
