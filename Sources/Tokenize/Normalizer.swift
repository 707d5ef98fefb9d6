import Foundation

/// Text normalization applied before pre-tokenization (`tokenizers`' normalizers). Only the
/// Unicode normal forms (and Lowercase) occur in byte-level BPE tokenizers (Qwen2 uses NFC);
/// anything else is rejected at load time rather than silently ignored.
enum NormalizerStep: Equatable {
    case nfc, nfd, nfkc, nfkd, lowercase
}

struct Normalizer {
    let steps: [NormalizerStep]

    var isIdentity: Bool { steps.isEmpty }

    /// Whether normalizing `n` bytes can change them. NFC leaves every string of scalars below
    /// U+0300 unchanged (the first combining mark is U+0300; no composition exclusion or
    /// singleton lies below it), and all UTF-8 lead bytes of such scalars are below 0xCC. The
    /// other forms are only skipped for ASCII (Lowercase: ASCII without capitals).
    func mayChange(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        if steps.isEmpty { return false }
        let onlyNFC = steps.allSatisfy { $0 == .nfc }
        let limit: UInt8 = onlyNFC ? 0xCC : 0x80
        let lowercases = steps.contains(.lowercase)
        for i in 0..<n {
            let b = p[i]
            if b >= limit { return true }
            if lowercases && b >= 0x41 && b <= 0x5A { return true }
        }
        return false
    }

    /// The normalized bytes.
    func apply(_ p: UnsafePointer<UInt8>, _ n: Int) -> [UInt8] {
        var scalars = Array(String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self).unicodeScalars)
        for step in steps {
            switch step {
            case .nfc: scalars = UnicodeNormalization.compose(UnicodeNormalization.decompose(scalars, compatibility: false))
            case .nfd: scalars = UnicodeNormalization.decompose(scalars, compatibility: false)
            case .nfkc: scalars = UnicodeNormalization.compose(UnicodeNormalization.decompose(scalars, compatibility: true))
            case .nfkd: scalars = UnicodeNormalization.decompose(scalars, compatibility: true)
            case .lowercase:
                // Per-scalar full lowercase mapping, as Rust's `char::to_lowercase`.
                scalars = scalars.flatMap { Array($0.properties.lowercaseMapping.unicodeScalars) }
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(n + 8)
        for s in scalars { appendUTF8(s.value, to: &out) }
        return out
    }
}

/// Unicode normal forms computed the way `tokenizers` computes them.
///
/// `tokenizers` normalizes with the `unicode-normalization-alignments` crate, whose tables are
/// Unicode 9.0: a scalar assigned later is, to it, a starter without decomposition (combining
/// class 0), so it blocks reordering and composition around it. We reproduce that by leaving
/// such scalars verbatim and normalizing the text between them.
///
/// Foundation's normalization (like the standard library's) is used for everything except
/// Hangul, with two corrections verified against Python's `unicodedata` and `tokenizers`:
/// composing after a full canonical decomposition (its NFC alone skips the reordering of marks
/// that come out of decomposing e.g. U+0F73), and Hangul syllables / conjoining jamo handled
/// by the algorithm of Unicode §3.12 (Foundation composes some out-of-range jamo and turns
/// U+1113 + U+116F into U+FFFD).
enum UnicodeNormalization {
    /// Unicode version of the reference's normalization tables.
    static let tableVersion = (major: 9, minor: 0)

    enum RunKind { case plain, hangul, opaque }

    @inline(__always) static func kind(_ s: Unicode.Scalar) -> RunKind {
        let v = s.value
        if v < 0x300 { return .plain }
        if (0x1100...0x11FF).contains(v) || (0xA960...0xA97F).contains(v) || (0xAC00...0xD7A3).contains(v) || (0xD7B0...0xD7FF).contains(v) {
            return .hangul
        }
        guard let age = s.properties.age else { return .opaque }
        if age.major > tableVersion.major || (age.major == tableVersion.major && age.minor > tableVersion.minor) { return .opaque }
        return .plain
    }

    /// Splits into runs of one kind and transforms each (opaque runs stay as they are).
    private static func byRuns(_ scalars: [Unicode.Scalar], plain: (String) -> String, hangul: ([Unicode.Scalar]) -> [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(scalars.count + 4)
        var i = 0
        while i < scalars.count {
            let k = kind(scalars[i])
            var j = i + 1
            while j < scalars.count && kind(scalars[j]) == k { j += 1 }
            let run = Array(scalars[i..<j])
            switch k {
            case .opaque:
                out.append(contentsOf: run)
            case .hangul:
                out.append(contentsOf: hangul(run))
            case .plain:
                var view = String.UnicodeScalarView()
                view.append(contentsOf: run)
                out.append(contentsOf: plain(String(view)).unicodeScalars)
            }
            i = j
        }
        return out
    }

    static func decompose(_ scalars: [Unicode.Scalar], compatibility: Bool) -> [Unicode.Scalar] {
        byRuns(scalars, plain: { compatibility ? $0.decomposedStringWithCompatibilityMapping : $0.decomposedStringWithCanonicalMapping },
               hangul: decomposeHangul)
    }

    /// Canonical composition of fully decomposed text.
    static func compose(_ scalars: [Unicode.Scalar]) -> [Unicode.Scalar] {
        byRuns(scalars, plain: { $0.precomposedStringWithCanonicalMapping }, hangul: composeHangul)
    }

    // MARK: Hangul (Unicode §3.12)

    private static let sBase: UInt32 = 0xAC00, lBase: UInt32 = 0x1100, vBase: UInt32 = 0x1161, tBase: UInt32 = 0x11A7
    private static let lCount: UInt32 = 19, vCount: UInt32 = 21, tCount: UInt32 = 28
    private static let nCount = vCount * tCount, sCount = lCount * vCount * tCount

    static func decomposeHangul(_ run: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        for s in run {
            let v = s.value
            guard v >= sBase && v < sBase + sCount else {
                out.append(s)
                continue
            }
            let index = v - sBase
            out.append(Unicode.Scalar(lBase + index / nCount)!)
            out.append(Unicode.Scalar(vBase + (index % nCount) / tCount)!)
            if index % tCount != 0 { out.append(Unicode.Scalar(tBase + index % tCount)!) }
        }
        return out
    }

    static func composeHangul(_ run: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        for s in run {
            let v = s.value
            if let last = out.last?.value {
                // L + V → LV
                if last >= lBase && last < lBase + lCount && v >= vBase && v < vBase + vCount {
                    out[out.count - 1] = Unicode.Scalar(sBase + ((last - lBase) * vCount + (v - vBase)) * tCount)!
                    continue
                }
                // LV + T → LVT (T index 0 is "no trailing consonant", so U+11A7 never composes)
                if last >= sBase && last < sBase + sCount && (last - sBase) % tCount == 0 && v > tBase && v < tBase + tCount {
                    out[out.count - 1] = Unicode.Scalar(last + (v - tBase))!
                    continue
                }
            }
            out.append(s)
        }
        return out
    }
}
