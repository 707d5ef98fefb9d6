import Foundation

// MARK: - Tasks

/// The evaluation tasks `finetune eval --task` knows (CLI.md), with the LLM-Adapters dataset
/// directory each corresponds to.
public enum EvalTask: String, CaseIterable, Sendable, Codable {
    case gsm8k, svamp, aqua, addsub, multiarith, singleeq, mawps, mathqa
    case boolq, piqa, siqa
    case arcE = "arc-e"
    case arcC = "arc-c"
    case obqa, winogrande, hellaswag, csqa

    /// How answers of this task are extracted and compared (LLM-Adapters conventions).
    ///
    /// - gsm8k, svamp, addsub, multiarith, singleeq, mawps: `.number` (LLM-Adapters
    ///   `evaluate.py` `extract_answer_number`; its later forks add mawps to the same list).
    /// - aqua: `.letter` (`extract_answer_letter`). csqa: `.letter` (FORMATS.md). mathqa: not
    ///   scored by LLM-Adapters' scripts at all; its answers are letters A–E, so `.letter`.
    /// - the commonsense tasks: `.choice` with the alternation `commomsense_evaluate.py`
    ///   `extract_answer` uses for that dataset.
    public var rule: AnswerRule {
        switch self {
        case .gsm8k, .svamp, .addsub, .multiarith, .singleeq, .mawps: return .number
        case .aqua, .mathqa, .csqa: return .letter
        case .boolq: return .choice(["true", "false"])
        case .piqa: return .choice(["solution1", "solution2"])
        case .siqa, .arcE, .arcC, .obqa: return .choice(["answer1", "answer2", "answer3", "answer4", "answer5"])
        case .hellaswag: return .choice(["ending1", "ending2", "ending3", "ending4"])
        case .winogrande: return .choice(["option1", "option2"])
        }
    }

    /// The directory name under LLM-Adapters `dataset/` (CommonsenseQA is not one of them; its
    /// Hugging Face name is used).
    public var datasetDirectoryName: String {
        switch self {
        case .gsm8k: return "gsm8k"
        case .svamp: return "SVAMP"
        case .aqua: return "AQuA"
        case .addsub: return "AddSub"
        case .multiarith: return "MultiArith"
        case .singleeq: return "SingleEq"
        case .mawps: return "mawps"
        case .mathqa: return "mathqa"
        case .boolq: return "boolq"
        case .piqa: return "piqa"
        case .siqa: return "social_i_qa"
        case .arcE: return "ARC-Easy"
        case .arcC: return "ARC-Challenge"
        case .obqa: return "openbookqa"
        case .winogrande: return "winogrande"
        case .hellaswag: return "hellaswag"
        case .csqa: return "commonsense_qa"
        }
    }

    /// Names accepted for each task, normalised (lower case, without `-`, `_`, spaces).
    static let aliases: [(String, EvalTask)] = {
        var a: [(String, EvalTask)] = []
        for t in EvalTask.allCases {
            a.append((normalise(t.rawValue), t))
            a.append((normalise(t.datasetDirectoryName), t))
        }
        a += [("aquarat", .aqua), ("csqa", .csqa), ("commonsenseqa", .csqa), ("siqa", .siqa),
              ("arceasy", .arcE), ("arcchallenge", .arcC), ("openbookqa", .obqa)]
        return a
    }()

    static func normalise(_ s: String) -> String {
        String(s.lowercased().unicodeScalars.filter { $0 != "-" && $0 != "_" && $0 != " " })
    }

    /// Parses a CLI task name or an LLM-Adapters dataset directory name, case-insensitively
    /// (`arc-e`, `ARC-Easy`, `social_i_qa`, `siqa`, `AQuA`, ...). `auto` is not a task: nil.
    public init?(name: String) {
        let key = Self.normalise(name)
        guard let hit = Self.aliases.first(where: { $0.0 == key }) else { return nil }
        self = hit.1
    }

    /// Detects the task from a data or predictions path: a run of `-`/`_`/`.` separated words of
    /// the file name (`preds_social_i_qa.jsonl`, `gsm8k-test.json`), else the nearest directory
    /// component that is a task name (LLM-Adapters keeps `dataset/<name>/test.json`).
    public static func detect(path: String) -> EvalTask? {
        let components = URL(fileURLWithPath: path).pathComponents
        guard !components.isEmpty else { return nil }
        let fileName = components.last!
        // File name first (most specific): the longest run of consecutive words naming a task.
        let stem = fileName.split(separator: ".").first.map(String.init) ?? fileName
        let words = stem.lowercased().split(whereSeparator: { $0 == "-" || $0 == "_" || $0 == " " || $0 == "." }).map(String.init)
        var best: (len: Int, task: EvalTask)?
        for i in 0..<words.count {
            for j in i..<min(words.count, i + 4) {
                if let t = EvalTask(name: words[i...j].joined()), (best?.len ?? 0) < j - i + 1 {
                    best = (j - i + 1, t)
                }
            }
        }
        if let best { return best.task }
        for dir in components.dropLast().reversed() {
            if let t = EvalTask(name: dir) { return t }
        }
        return nil
    }

    /// Detects the task from loaded records: CSQA and GSM8K layouts name themselves; otherwise
    /// the set of gold answers identifies boolq, piqa, winogrande and hellaswag. Tasks that share
    /// an answer format (siqa/ARC/OBQA, the numeric sets, AQuA/MathQA) give nil; use
    /// `AnswerRule.infer(answers:)` for their scoring rule.
    public static func detect(examples: [Example]) -> EvalTask? {
        guard !examples.isEmpty else { return nil }
        if examples.allSatisfy({ $0.kind == .csqa }) { return .csqa }
        if examples.allSatisfy({ $0.kind == .gsm8k }) { return .gsm8k }
        let answers = Set(examples.compactMap { $0.answer.map(PyText.strip) })
        guard !answers.isEmpty else { return nil }
        for t in [EvalTask.boolq, .piqa, .winogrande, .hellaswag] {
            if case let .choice(alts) = t.rule, answers.isSubset(of: Set(alts)) { return t }
        }
        return nil
    }
}

// MARK: - Answer rules

/// How a prediction is extracted and compared with the gold answer.
public enum AnswerRule: Sendable, Equatable, CustomStringConvertible {
    /// The last number; correct when `|prediction - answer| <= 0.001`.
    case number
    /// The first capital letter A–E; exact equality.
    case letter
    /// The first occurrence of one of these literal alternatives (a regex alternation tried in
    /// this order); exact equality.
    case choice([String])

    public var description: String {
        switch self {
        case .number: return "number"
        case .letter: return "letter"
        case let .choice(alts): return alts.joined(separator: "|")
        }
    }

    /// Infers the rule from gold answers: all numbers → `.number`; all single letters A–E →
    /// `.letter`; all from one commonsense alternation → that `.choice`. Nil when mixed or empty.
    public static func infer(answers: [String]) -> AnswerRule? {
        let set = Set(answers.map(PyText.strip))
        guard !set.isEmpty, !set.contains("") else { return nil }
        if set.allSatisfy({ ["A", "B", "C", "D", "E"].contains($0) }) { return .letter }
        for t in [EvalTask.boolq, .piqa, .siqa, .hellaswag, .winogrande] {
            if case let .choice(alts) = t.rule, set.isSubset(of: Set(alts)) { return t.rule }
        }
        if set.allSatisfy({ AnswerExtractor.parseGoldNumber($0) != nil }) { return .number }
        return nil
    }
}
