import Foundation

// MARK: - Answer extraction

/// Extracts answers from generated text, two ways.
///
/// **The LLM-Adapters-compatible rule** (`compatible`) reproduces what AGI-Edgerunners/LLM-Adapters
/// runs, read from its `evaluate.py` (math, @32e03af) and `commomsense_evaluate.py`
/// (commonsense, @e0efdc0; the file name's typo is upstream's):
/// 1. The scripts decode prompt + generation and take `output.split("### Response:")[1].strip()`.
///    The prompt holds exactly one `### Response:`, so that is the generation up to its own first
///    `### Response:` (if any), stripped (Python `str.strip()`): `responseText(_:)`.
/// 2. Numbers (`extract_answer_number`): `sentence.replace(',', '')`, then
///    `re.findall(r'-?\d+\.?\d*', ...)` and the LAST match as `float`; no match gives
///    `float('inf')`, which is never within the tolerance. The gold answer is `float(answer)`;
///    correct iff `abs(label - predict) <= 0.001`.
/// 3. AQuA (`extract_answer_letter`): the first match of `A|B|C|D|E` in the stripped text,
///    else `''`; correct iff `label == predict`.
/// 4. Commonsense (`extract_answer`): the first match of the dataset's alternation
///    (`true|false`, `solution1|solution2`, `answer1|...|answer5`, `ending1|...|ending4`,
///    `option1|option2`), else `""`; correct iff `label == predict`.
/// (`evaluate.py` decodes with special tokens, `commomsense_evaluate.py` skips them; no EOS/pad
/// string of the Llama or Qwen tokenizers contains a digit or a capital A–E, so scoring the
/// generation without special tokens gives the same predictions.)
/// All patterns are case-sensitive and have no word boundaries (`True` matches nothing,
/// `truefalse` yields `true`, `answer12` yields `answer1`). Python's `\d` is any Unicode decimal
/// digit (category Nd) and `float()` accepts those digits, so we do the same.
///
/// **The strict rule** (`strict`, our extension, reported as a second figure): inside the
/// response text, the content of the LAST `\boxed{...}` (braces balanced), else the text after
/// the LAST `####` up to the end of its line, else the text after the LAST "answer is"
/// (any case, e.g. "The answer is 42", "the correct answer is answer2") up to the end of its
/// line; the answer is read from that span (a number — `\frac{a}{b}` and `a/b` are evaluated —,
/// the first letter A–E, or the first alternative). When no marker yields an answer, it falls
/// back to the compatible rule.
public enum AnswerExtractor {

    // MARK: Compatible (LLM-Adapters)

    /// The text the LLM-Adapters scripts search: the generation up to its first
    /// `### Response:`, stripped.
    public static func responseText(_ generation: String) -> String {
        let cut = generation.range(of: "### Response:").map { String(generation[..<$0.lowerBound]) } ?? generation
        return PyText.strip(cut)
    }

    /// The LLM-Adapters prediction for `rule`: the matched text (a number as matched, e.g.
    /// `"576"` or `"-2.5"`; a letter; an alternative), or `""` when nothing matches.
    public static func compatible(_ generation: String, rule: AnswerRule) -> String {
        let text = responseText(generation)
        switch rule {
        case .number:
            return lastNumber(in: text.replacingOccurrences(of: ",", with: "")) ?? ""
        case .letter:
            return firstAlternative(in: text, ["A", "B", "C", "D", "E"]) ?? ""
        case let .choice(alts):
            return firstAlternative(in: text, alts) ?? ""
        }
    }

    // MARK: Strict (ours)

    /// Our stricter prediction: `\boxed{...}`, then `#### X`, then "answer is X", then the
    /// compatible rule. Numbers are returned in Python `repr(float)` form when computed from a
    /// fraction, else as matched.
    public static func strict(_ generation: String, rule: AnswerRule) -> String {
        let text = responseText(generation)
        for span in [lastBoxed(in: text), afterLast("####", in: text, caseInsensitive: false),
                     afterLast("answer is", in: text, caseInsensitive: true)] {
            guard let span else { continue }
            if let answer = answer(inSpan: span, rule: rule) { return answer }
        }
        return compatible(generation, rule: rule)
    }

    static func answer(inSpan span: String, rule: AnswerRule) -> String? {
        switch rule {
        case .number:
            var s = span.replacingOccurrences(of: ",", with: "")
            for junk in ["\\$", "$", "\\!", "\\,", "\\%", "%", "\\left", "\\right"] {
                s = s.replacingOccurrences(of: junk, with: "")
            }
            if let v = fraction(in: s) { return PyText.floatRepr(v) }
            return firstNumber(in: s)
        case .letter:
            return firstAlternative(in: span, ["A", "B", "C", "D", "E"])
        case let .choice(alts):
            return firstAlternative(in: span, alts)
        }
    }

    /// The content of the last `\boxed{...}` with balanced braces, or nil.
    static func lastBoxed(in text: String) -> String? {
        guard let start = text.range(of: "\\boxed{", options: .backwards) else { return nil }
        var depth = 1
        var i = start.upperBound
        while i < text.endIndex {
            let c = text[i]
            if c == "{" { depth += 1 }
            if c == "}" {
                depth -= 1
                if depth == 0 { return String(text[start.upperBound..<i]) }
            }
            i = text.index(after: i)
        }
        return nil
    }

    /// The rest of the line after the last occurrence of `marker`, or nil.
    static func afterLast(_ marker: String, in text: String, caseInsensitive: Bool) -> String? {
        let options: String.CompareOptions = caseInsensitive ? [.backwards, .caseInsensitive] : [.backwards]
        guard let r = text.range(of: marker, options: options) else { return nil }
        let rest = text[r.upperBound...]
        let end = rest.firstIndex(where: { $0.isNewline }) ?? rest.endIndex
        return String(rest[..<end])
    }

    /// `\frac{a}{b}`, `\dfrac{a}{b}` or `a/b` as the whole (trimmed) span.
    static func fraction(in span: String) -> Double? {
        let s = PyText.strip(span)
        for prefix in ["\\frac{", "\\dfrac{", "\\tfrac{"] where s.hasPrefix(prefix) {
            let body = s.dropFirst(prefix.count)
            guard let mid = body.range(of: "}{"), body.hasSuffix("}") else { return nil }
            let a = String(body[..<mid.lowerBound])
            let b = String(body[mid.upperBound..<body.index(before: body.endIndex)])
            guard let x = exactNumber(a), let y = exactNumber(b), y != 0 else { return nil }
            return x / y
        }
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 2, let x = exactNumber(PyText.strip(String(parts[0]))),
           let y = exactNumber(PyText.strip(String(parts[1]))), y != 0 {
            return x / y
        }
        return nil
    }

    /// A string that is exactly one `-?\d+\.?\d*` number.
    static func exactNumber(_ s: String) -> Double? {
        let matches = numberMatches(in: s)
        guard matches.count == 1, matches[0] == s else { return nil }
        return numericValue(of: s)
    }

    // MARK: Pattern primitives (Python `re` semantics, written out)

    /// Python `\d` on one code point: general category Nd.
    @inline(__always) static func isDigit(_ s: Unicode.Scalar) -> Bool {
        s.properties.generalCategory == .decimalNumber
    }

    /// Every non-overlapping match of `-?\d+\.?\d*`, left to right, as `re.findall` returns them.
    /// The pattern's tail is all optional and greedy, so the leftmost match at each position is
    /// the maximal one and no backtracking is needed.
    static func numberMatches(in text: String) -> [String] {
        let s = Array(text.unicodeScalars)
        var out: [String] = []
        var i = 0
        while i < s.count {
            var j = i
            if s[j] == "-" { j += 1 }
            guard j < s.count, isDigit(s[j]) else { i += 1; continue }
            while j < s.count, isDigit(s[j]) { j += 1 }
            if j < s.count, s[j] == "." { j += 1 }
            while j < s.count, isDigit(s[j]) { j += 1 }
            var m = String.UnicodeScalarView()
            m.append(contentsOf: s[i..<j])
            out.append(String(m))
            i = j
        }
        return out
    }

    /// The last `-?\d+\.?\d*` match (`pred[-1]`), or nil.
    public static func lastNumber(in text: String) -> String? { numberMatches(in: text).last }

    /// The first `-?\d+\.?\d*` match, or nil.
    public static func firstNumber(in text: String) -> String? { numberMatches(in: text).first }

    /// The first match of the alternation `alts[0]|alts[1]|...` (leftmost position; at one
    /// position the alternatives are tried in order), as `re.findall(...)[0]`.
    public static func firstAlternative(in text: String, _ alts: [String]) -> String? {
        let s = Array(text.unicodeScalars)
        let patterns = alts.map { Array($0.unicodeScalars) }
        guard !s.isEmpty else { return nil }
        for i in 0..<s.count {
            for (k, p) in patterns.enumerated() where !p.isEmpty && i + p.count <= s.count {
                var ok = true
                for m in 0..<p.count where s[i + m] != p[m] { ok = false; break }
                if ok { return alts[k] }
            }
        }
        return nil
    }

    /// Python `float()` of a `-?\d+\.?\d*` match: Unicode decimal digits mapped to ASCII.
    public static func numericValue(of match: String) -> Double? {
        var ascii = ""
        for u in match.unicodeScalars {
            if u == "-" || u == "." { ascii.unicodeScalars.append(u); continue }
            guard isDigit(u), let v = u.properties.numericValue else { return nil }
            ascii += String(Int(v))
        }
        return Double(ascii)
    }

    /// The gold answer of a numeric task as Python `float(label)` reads it (surrounding
    /// whitespace allowed; `576.0`, `-3`, `1e3`, `inf`), plus thousands separators removed — our
    /// extension for original GSM8K answers such as `1,000` (the LLM-Adapters sets have none).
    /// Nil when it is not a number.
    public static func parseGoldNumber(_ answer: String) -> Double? {
        let s = PyText.strip(answer).replacingOccurrences(of: ",", with: "")
        guard !s.isEmpty else { return nil }
        if s.lowercased().contains("x") || s.lowercased().contains("p") { return nil } // no hex floats
        if let d = Double(s) { return d }
        // Unicode digits, as Python's float() accepts them.
        if numberMatches(in: s) == [s] { return numericValue(of: s) }
        return nil
    }

    // MARK: Correctness

    /// Whether `prediction` (from `compatible` or `strict`) matches the gold `answer`.
    /// Numbers: `|float(prediction) - float(answer)| <= 0.001`, an empty prediction is wrong
    /// (LLM-Adapters' `inf`); letters and alternatives: exact equality with the stripped answer.
    /// - Throws: `ScoringError.badAnswer` when a numeric answer is not a number, and
    ///   `missingAnswer` when it is empty (nothing to score against).
    public static func isCorrect(prediction: String, answer: String, rule: AnswerRule,
                                 at location: RecordLocation? = nil) throws -> Bool {
        let gold = PyText.strip(answer)
        if gold.isEmpty { throw ScoringError.missingAnswer(location ?? RecordLocation(file: "<memory>")) }
        switch rule {
        case .number:
            guard let label = parseGoldNumber(gold) else {
                throw ScoringError.badAnswer(location ?? RecordLocation(file: "<memory>"), answer: answer, expected: "a number")
            }
            guard let predicted = numericValue(of: prediction) ?? Double(prediction) else { return false }
            return abs(label - predicted) <= 0.001
        case .letter, .choice:
            return prediction == gold
        }
    }
}
