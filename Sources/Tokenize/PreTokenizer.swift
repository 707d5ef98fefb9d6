import Foundation

// MARK: - Known split patterns

/// The split regexes found in byte-level BPE tokenizers, implemented as hand-written scanners
/// that reproduce the leftmost-first alternation and backtracking of Oniguruma / fancy-regex
/// exactly, on Unicode scalars (not grapheme clusters), without building any `String`.
public enum SplitPattern: Sendable, Equatable {
    /// GPT-2's `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    /// (also what a `ByteLevel` pre-tokenizer with `use_regex: true` applies).
    case gpt2
    /// Qwen2's cl100k variant with single digits: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
    case qwen2
    /// Llama 3's (= cl100k_base) pattern: as Qwen2 but `\p{N}{1,3}`.
    case llama3
    /// Any other regex, run with Swift Regex on Unicode-scalar semantics (slower; syntax
    /// differences from Oniguruma are possible for exotic constructs).
    case regex(String)

    public static let gpt2Source = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    public static let qwen2Source = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    public static let llama3Source = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Maps a regex source to its scanner when it is one of the known patterns.
    public init(regex source: String) {
        switch source {
        case SplitPattern.gpt2Source: self = .gpt2
        case SplitPattern.qwen2Source: self = .qwen2
        case SplitPattern.llama3Source: self = .llama3
        default: self = .regex(source)
        }
    }
}

/// Scans `n` bytes of valid UTF-8 and reports each regex match as a byte range, in order.
/// Every scalar belongs to some alternative of these patterns, so matches tile the input.
struct PatternScanner {
    enum Kind { case gpt2, cl100k(maxDigits: Int) }
    let kind: Kind

    private static let L = ScalarClass.letter
    private static let N = ScalarClass.number
    private static let S = ScalarClass.space
    private static let NL = ScalarClass.newline

    func scan(_ p: UnsafePointer<UInt8>, _ n: Int, _ emit: (Int, Int) -> Void) {
        let table = ScalarClass.bmp
        switch kind {
        case .gpt2: PatternScanner.scanGPT2(p, n, table, emit)
        case let .cl100k(maxDigits): PatternScanner.scanCL100k(p, n, maxDigits, table, emit)
        }
    }

    /// Class of the scalar at `i` (0 past the end).
    @inline(__always) private static func classAt(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int, _ table: UnsafePointer<UInt8>) -> (UInt8, Int) {
        if i >= n { return (0xFF, 0) }
        let b = p[i]
        if b < 0x80 { return (table[Int(b)], 1) }
        let (v, l) = decodeScalar(p, i, n)
        return (ScalarClass.of(v, table: table), l)
    }

    /// "Punctuation-ish": `[^\s\p{L}\p{N}]`.
    @inline(__always) private static func isOther(_ k: UInt8) -> Bool { k & (L | N | S) == 0 }

    /// End of a run of scalars whose class has any bit of `mask` set, starting at `i`.
    @inline(__always) private static func skip(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int, _ mask: UInt8, _ table: UnsafePointer<UInt8>) -> Int {
        var j = i
        while j < n {
            let (k, l) = classAt(p, j, n, table)
            if k & mask == 0 { break }
            j += l
        }
        return j
    }

    @inline(__always) private static func skipOther(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int, _ table: UnsafePointer<UInt8>) -> Int {
        var j = i
        while j < n {
            let (k, l) = classAt(p, j, n, table)
            if !isOther(k) { break }
            j += l
        }
        return j
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d` after the apostrophe at `j - 1`; returns the match end or -1.
    /// Case-insensitive matching follows simple Unicode case folding as both Oniguruma and the
    /// regex crate do: besides ASCII case, U+017F LATIN SMALL LETTER LONG S folds to `s`.
    @inline(__always) private static func contraction(_ p: UnsafePointer<UInt8>, _ j: Int, _ n: Int, caseInsensitive: Bool) -> Int {
        guard j < n else { return -1 }
        @inline(__always) func fold(_ i: Int) -> (UInt32, Int) {
            let (v, l) = decodeScalar(p, i, n)
            guard caseInsensitive else { return (v, l) }
            if v >= 0x41 && v <= 0x5A { return (v | 0x20, l) }
            if v == 0x17F { return (0x73, l) }
            return (v, l)
        }
        let (c1, l1) = fold(j)
        switch c1 {
        case 0x73, 0x74, 0x6D, 0x64:  // s t m d
            return j + l1
        case 0x72, 0x76:  // r v → "re", "ve"
            guard j + l1 < n else { return -1 }
            let (c2, l2) = fold(j + l1)
            return c2 == 0x65 ? j + l1 + l2 : -1
        case 0x6C:  // l → "ll"
            guard j + l1 < n else { return -1 }
            let (c2, l2) = fold(j + l1)
            return c2 == 0x6C ? j + l1 + l2 : -1
        default:
            return -1
        }
    }

    /// The whitespace alternatives, tried in order at a whitespace scalar:
    /// (cl100k only) `\s*[\r\n]+` — backtracking makes it end after the LAST CR/LF of the run;
    /// `\s+(?!\S)` — the whole run at the end of input, else the run minus its last scalar
    /// when that leaves at least one; `\s+` — the whole run.
    @inline(__always) private static func whitespaceEnd(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int, newlineRule: Bool, _ table: UnsafePointer<UInt8>) -> Int {
        var j = i
        var lastNewline = -1
        var lastStart = i
        var scalars = 0
        while j < n {
            let (k, l) = classAt(p, j, n, table)
            if k & S == 0 { break }
            if k & NL != 0 { lastNewline = j }
            lastStart = j
            j += l
            scalars += 1
        }
        if newlineRule && lastNewline >= 0 { return lastNewline + 1 }
        if j == n { return j }
        if scalars >= 2 { return lastStart }
        return j
    }

    private static func scanCL100k(_ p: UnsafePointer<UInt8>, _ n: Int, _ maxDigits: Int, _ table: UnsafePointer<UInt8>, _ emit: (Int, Int) -> Void) {
        var i = 0
        while i < n {
            let (k0, l0) = classAt(p, i, n, table)
            var end = -1
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if p[i] == 0x27 { end = contraction(p, i + 1, n, caseInsensitive: true) }
            if end < 0 {
                // [^\r\n\p{L}\p{N}]?\p{L}+
                if k0 & L != 0 {
                    end = skip(p, i + l0, n, L, table)
                } else if k0 & (N | NL) == 0 {
                    let (k1, l1) = classAt(p, i + l0, n, table)
                    if k1 != 0xFF && k1 & L != 0 { end = skip(p, i + l0 + l1, n, L, table) }
                }
            }
            if end < 0 && k0 & N != 0 {
                // \p{N}{1,maxDigits}
                end = i + l0
                var digits = 1
                while digits < maxDigits && end < n {
                    let (k, l) = classAt(p, end, n, table)
                    if k & N == 0 { break }
                    end += l
                    digits += 1
                }
            }
            if end < 0 {
                //  ?[^\s\p{L}\p{N}]+[\r\n]*
                var s = i
                if p[i] == 0x20 {
                    let (k1, _) = classAt(p, i + 1, n, table)
                    if k1 != 0xFF && isOther(k1) { s = i + 1 }
                }
                let (ks, _) = s == i ? (k0, l0) : classAt(p, s, n, table)
                if isOther(ks) {
                    end = skipOther(p, s, n, table)
                    while end < n && (p[end] == 0x0A || p[end] == 0x0D) { end += 1 }
                }
            }
            if end < 0 {
                // \s*[\r\n]+ | \s+(?!\S) | \s+ (the scalar is whitespace here)
                end = whitespaceEnd(p, i, n, newlineRule: true, table)
            }
            emit(i, end)
            i = end
        }
    }

    private static func scanGPT2(_ p: UnsafePointer<UInt8>, _ n: Int, _ table: UnsafePointer<UInt8>, _ emit: (Int, Int) -> Void) {
        var i = 0
        while i < n {
            let (k0, _) = classAt(p, i, n, table)
            var end = -1
            // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
            if p[i] == 0x27 { end = contraction(p, i + 1, n, caseInsensitive: false) }
            if end < 0 {
                // The optional leading space of the next three alternatives.
                var s = i
                var ks = k0
                if p[i] == 0x20 && i + 1 < n {
                    let (k1, _) = classAt(p, i + 1, n, table)
                    if k1 & (L | N) != 0 || isOther(k1) { s = i + 1; ks = k1 }
                }
                if ks & L != 0 {
                    end = skip(p, s, n, L, table)  //  ?\p{L}+
                } else if ks & N != 0 {
                    end = skip(p, s, n, N, table)  //  ?\p{N}+
                } else if isOther(ks) {
                    end = skipOther(p, s, n, table)  //  ?[^\s\p{L}\p{N}]+
                }
            }
            if end < 0 {
                // \s+(?!\S) | \s+
                end = whitespaceEnd(p, i, n, newlineRule: false, table)
            }
            emit(i, end)
            i = end
        }
    }
}

// MARK: - Regex fallback

/// A compiled Swift Regex for patterns without a hand-written scanner. Swift Regex values are
/// immutable once built; the box only exists to carry one across threads.
final class RegexBox: @unchecked Sendable {
    let regex: Regex<AnyRegexOutput>
    init(_ source: String, path: String) throws {
        do {
            regex = try Regex(source).matchingSemantics(.unicodeScalar)
        } catch {
            throw TokenizerError.invalidPattern(path: path, pattern: source, reason: "\(error)")
        }
    }

    /// Non-empty match ranges as UTF-8 byte offsets.
    func matches(_ p: UnsafePointer<UInt8>, _ n: Int) -> [(Int, Int)] {
        let text = String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
        var out: [(Int, Int)] = []
        for m in text.matches(of: regex) {
            let a = text.utf8.distance(from: text.startIndex, to: m.range.lowerBound)
            let b = text.utf8.distance(from: text.startIndex, to: m.range.upperBound)
            if b > a { out.append((a, b)) }
        }
        return out
    }
}

// MARK: - Pre-tokenizer pipeline

/// How a Split pre-tokenizer treats the matches (`tokenizers`' SplitDelimiterBehavior).
enum SplitBehavior: String {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"
}

/// One stage of a pre-tokenizer: each stage splits every piece produced by the previous stage.
enum PreTokenizerStep {
    /// A regex/literal split with a delimiter behaviour; `invert` swaps matches and gaps.
    case split(matcher: Matcher, behavior: SplitBehavior, invert: Bool)
    /// `ByteLevel`: optionally prefixes a space to each piece that lacks one (as `tokenizers`
    /// does per piece), then optionally applies the GPT-2 pattern. The byte→unicode mapping
    /// itself is implicit: the BPE model works on raw bytes.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    /// `Digits`: numbers (Rust `char::is_numeric`, i.e. \p{N}) split off, one by one or in runs.
    case digits(individual: Bool)

    enum Matcher {
        case scanner(PatternScanner)
        case regex(RegexBox)
        case literal([UInt8])

        func matches(_ p: UnsafePointer<UInt8>, _ n: Int) -> [(Int, Int)] {
            switch self {
            case let .scanner(s):
                var out: [(Int, Int)] = []
                s.scan(p, n) { out.append(($0, $1)) }
                return out
            case let .regex(r):
                return r.matches(p, n)
            case let .literal(lit):
                var out: [(Int, Int)] = []
                guard !lit.isEmpty, lit.count <= n else { return out }
                lit.withUnsafeBufferPointer { l in
                    var i = 0
                    while i + l.count <= n {
                        if memcmp(p + i, l.baseAddress!, l.count) == 0 {
                            out.append((i, i + l.count))
                            i += l.count
                        } else {
                            i += 1
                        }
                    }
                }
                return out
            }
        }
    }
}

/// The pre-tokenizer: a list of stages applied in order (a `Sequence` flattens into it).
struct PreTokenizer {
    let steps: [PreTokenizerStep]

    /// Drops stages that cannot change the split (a ByteLevel without regex or prefix space:
    /// its byte mapping is implicit), so the common Split + ByteLevel pipeline takes the
    /// single-scanner fast path.
    init(steps: [PreTokenizerStep]) {
        self.steps = steps.filter {
            if case .byteLevel(false, false) = $0 { return false }
            return true
        }
    }

    /// Calls `emit` with the bytes of every final piece, in order. Piece pointers are only
    /// valid during the call.
    func run(_ p: UnsafePointer<UInt8>, _ n: Int, _ emit: (UnsafePointer<UInt8>, Int) -> Void) {
        if n == 0 { return }
        // Fast path: a single known-pattern Split, Isolated (matches tile the text).
        if steps.count == 1, case let .split(.scanner(scanner), .isolated, false) = steps[0] {
            scanner.scan(p, n) { a, b in emit(p + a, b - a) }
            return
        }
        run(step: 0, p, n, emit)
    }

    private func run(step k: Int, _ p: UnsafePointer<UInt8>, _ n: Int, _ emit: (UnsafePointer<UInt8>, Int) -> Void) {
        if n == 0 { return }  // tokenizers drops empty splits
        if k == steps.count { emit(p, n); return }
        switch steps[k] {
        case let .split(matcher, behavior, invert):
            if case let .scanner(scanner) = matcher, behavior == .isolated, !invert {
                scanner.scan(p, n) { a, b in run(step: k + 1, p + a, b - a, emit) }
                return
            }
            for (a, b) in PreTokenizer.pieces(matcher.matches(p, n), length: n, behavior: behavior, invert: invert) {
                run(step: k + 1, p + a, b - a, emit)
            }
        case let .byteLevel(addPrefixSpace, useRegex):
            let scanner = PatternScanner(kind: .gpt2)
            if addPrefixSpace && p[0] != 0x20 {
                var scratch = [UInt8](repeating: 0x20, count: n + 1)
                scratch.withUnsafeMutableBufferPointer { s in
                    (s.baseAddress! + 1).update(from: p, count: n)
                    let q = UnsafePointer(s.baseAddress!)
                    if useRegex {
                        scanner.scan(q, n + 1) { a, b in run(step: k + 1, q + a, b - a, emit) }
                    } else {
                        run(step: k + 1, q, n + 1, emit)
                    }
                }
            } else if useRegex {
                scanner.scan(p, n) { a, b in run(step: k + 1, p + a, b - a, emit) }
            } else {
                run(step: k + 1, p, n, emit)
            }
        case let .digits(individual):
            let table = ScalarClass.bmp
            var ranges: [(Int, Int)] = []
            var i = 0
            while i < n {
                let (v, l) = decodeScalar(p, i, n)
                if ScalarClass.of(v, table: table) & ScalarClass.number != 0 { ranges.append((i, i + l)) }
                i += l
            }
            for (a, b) in PreTokenizer.pieces(ranges, length: n, behavior: individual ? .isolated : .contiguous, invert: false) {
                run(step: k + 1, p + a, b - a, emit)
            }
        }
    }

    /// Turns match ranges into pieces following `tokenizers`' `split` with a delimiter behaviour:
    /// gaps and matches alternate over the whole text, then are filtered or merged.
    static func pieces(_ matches: [(Int, Int)], length n: Int, behavior: SplitBehavior, invert: Bool) -> [(Int, Int)] {
        var spans: [(Int, Int, Bool)] = []
        var last = 0
        for (a, b) in matches {
            if a > last { spans.append((last, a, invert)) }
            spans.append((a, b, !invert))
            last = b
        }
        if last < n { spans.append((last, n, invert)) }
        var out: [(Int, Int)] = []
        switch behavior {
        case .removed:
            for s in spans where !s.2 { out.append((s.0, s.1)) }
        case .isolated:
            for s in spans { out.append((s.0, s.1)) }
        case .mergedWithPrevious:
            var previousMatch = false
            for s in spans {
                if s.2 && !previousMatch, !out.isEmpty {
                    out[out.count - 1].1 = s.1
                } else {
                    out.append((s.0, s.1))
                }
                previousMatch = s.2
            }
        case .mergedWithNext:
            var previousMatch = false
            var reversed: [(Int, Int)] = []
            for s in spans.reversed() {
                if s.2 && !previousMatch, !reversed.isEmpty {
                    reversed[reversed.count - 1].0 = s.0
                } else {
                    reversed.append((s.0, s.1))
                }
                previousMatch = s.2
            }
            out = reversed.reversed()
        case .contiguous:
            var previousMatch = false
            for s in spans {
                if s.2 == previousMatch, !out.isEmpty {
                    out[out.count - 1].1 = s.1
                } else {
                    out.append((s.0, s.1))
                }
                previousMatch = s.2
            }
        }
        return out.filter { $0.1 > $0.0 }
    }
}
