import Foundation
import Tokenize

// MARK: - Tokenized records

/// One record as token ids with its labels (unshifted, as transformers: the loss at position
/// `t` compares the logits at `t` with `labels[t + 1]`; -100 is ignored).
public struct TokenizedExample: Sendable, Equatable {
    public var inputIds: [Int]
    public var labels: [Int]
    /// How many leading tokens are the (masked) prompt, as the template measured it.
    public var promptLength: Int
    /// Whether `--max-length` cut the record (its beginning is kept).
    public var truncated: Bool

    public init(inputIds: [Int], labels: [Int], promptLength: Int = 0, truncated: Bool = false) {
        precondition(inputIds.count == labels.count, "inputIds and labels must have the same length")
        self.inputIds = inputIds
        self.labels = labels
        self.promptLength = promptLength
        self.truncated = truncated
    }

    /// The number of tokens that contribute to the loss (labels at positions >= 1 that are not
    /// -100; position 0 has no preceding token to predict it).
    public var targetCount: Int {
        labels.dropFirst().reduce(0) { $0 + ($1 == ignoreIndex ? 0 : 1) }
    }
}

/// Checks that every input id of `example` is a token of a `vocabSize`-token vocabulary and
/// every label is one too or -100, before any id indexes an embedding row or a logit column.
/// - Throws: `DataError.badField` naming the record's file and line, the field and index, the
///   id found and the range expected.
public func checkTokenIds(_ example: TokenizedExample, vocabSize: Int, at location: RecordLocation) throws {
    if let i = example.inputIds.firstIndex(where: { $0 < 0 || $0 >= vocabSize }) {
        throw DataError.badField(location, field: "input_ids[\(i)]",
                                 expected: "a token id in [0, \(vocabSize)) (the model's vocabulary), found \(example.inputIds[i])")
    }
    if let i = example.labels.firstIndex(where: { ($0 < 0 && $0 != ignoreIndex) || $0 >= vocabSize }) {
        throw DataError.badField(location, field: "labels[\(i)]",
                                 expected: "a token id in [0, \(vocabSize)) (the model's vocabulary) or \(ignoreIndex), found \(example.labels[i])")
    }
}

/// Options for `tokenize(_:template:tokenizer:options:)`.
public struct TokenizeOptions: Sendable, Equatable {
    /// Set the prompt's labels to -100 (train on the target only). Default true.
    public var maskPrompt: Bool
    /// Truncate to this many tokens (after BOS/EOS are added, as the references do).
    public var maxLength: Int?
    /// Let the tokenizer add the special tokens it adds by default (BOS for Llama and
    /// SentencePiece models, nothing for Qwen), as `tokenizer(text)` does in both references.
    public var addSpecialTokens: Bool
    /// Append the EOS id after the target (both references do).
    public var appendEOS: Bool

    public init(maskPrompt: Bool = true, maxLength: Int? = nil, addSpecialTokens: Bool = true, appendEOS: Bool = true) {
        self.maskPrompt = maskPrompt
        self.maxLength = maxLength
        self.addSpecialTokens = addSpecialTokens
        self.appendEOS = appendEOS
    }
}

// MARK: - Tokenizing one record

/// Tokenizes one record with a template, masking the prompt as the reference for that template
/// does (see `PromptTemplate` for the facts followed):
///
/// - `ndlinear` / `raw`: prompt + target tokenized as ONE text (tokenizing the two parts
///   separately can split differently at the seam), EOS appended unless the text already ends
///   with the EOS token's string, truncated to `maxLength`; the first
///   `len(tokenize(prompt))` tokens are masked.
/// - `alpaca` / `llm-adapters`: prompt + output tokenized as one text and truncated, then the
///   EOS id appended when the last id is not EOS and the length is below `maxLength`
///   (LLM-Adapters `tokenize(..., add_eos_token=True)`); the first `len(tokenize(prompt))`
///   tokens are masked.
/// - `chat`: the full conversation text tokenized as one text WITHOUT special tokens and with no
///   EOS (the model's chat template wrote BOS and the end-of-turn token into the text, as
///   `apply_chat_template(tokenize=True)` tokenizes it), truncated; the first
///   `len(tokenize(prompt))` tokens (also without special tokens) are masked.
/// - pre-tokenized: ids and labels as given (labels default to the ids), truncated; no special
///   tokens are added and `maskPrompt` does not apply.
///
/// - Parameters:
///   - tokenizer: required except for pre-tokenized records.
///   - chat: the model's chat template, required by the `chat` template.
/// - Throws: `DataError` naming the record's file and line.
public func tokenize(_ example: Example, template: PromptTemplate, tokenizer: (any Tokenizer)?,
                     options: TokenizeOptions = TokenizeOptions(), chat: PromptTemplate.Chat? = nil) throws -> TokenizedExample {
    if let m = options.maxLength, m < 1 { throw DataError.invalidArgument("maxLength must be >= 1, got \(m)") }
    var truncated = false
    func truncate(_ a: [Int]) -> [Int] {
        if let m = options.maxLength, a.count > m { truncated = true; return Array(a[..<m]) }
        return a
    }

    if template.mode(for: example) == .pretokenized {
        let ids = truncate(example.inputIds)
        let labels = truncate(example.labels ?? example.inputIds)
        if ids.isEmpty { throw DataError.emptySequence(example.location) }
        return TokenizedExample(inputIds: ids, labels: labels, promptLength: 0, truncated: truncated)
    }

    guard let tokenizer else {
        throw DataError.tokenizer("\(example.location): a tokenizer is needed to tokenize a \(example.kind.rawValue) record")
    }
    if template.mode(for: example) == .conversation, let conversation = example.conversation {
        return try ChatRecords.tokenize(example, conversation, template: template, tokenizer: tokenizer, options: options,
                                        chat: try PromptTemplate.requireChat(chat))
    }
    let rendered = try template.render(example, chat: chat)
    let eos = tokenizer.eosTokenId
    let ownTokens = rendered.mode.textHasSpecialTokens
    let appendEOS = options.appendEOS && !ownTokens
    if appendEOS && eos == nil {
        throw DataError.tokenizer("template `\(template.rawValue)` appends an EOS token but the tokenizer defines none")
    }
    let encode: (String) throws -> [Int] = { try tokenizer.encode($0, addSpecialTokens: options.addSpecialTokens && !ownTokens) }

    var ids = try encode(rendered.full)
    switch rendered.mode {
    case .ndlinear, .raw, .chat, .promptCompletion:
        // NdLinear-LoRA GeneralTextDataset: `if not full.endswith(eos_token): full += eos_token`,
        // then one tokenizer call with truncation (`chat`: no EOS, the text ends its turn).
        if appendEOS, let eos {
            let eosText = tokenizer.token(eos)
            let endsWithEOS = eosText.map { !$0.isEmpty && rendered.full.hasSuffix($0) } ?? false
            if !endsWithEOS { ids.append(eos) }
        }
        ids = truncate(ids)
    case .alpaca, .llmAdapters:
        // LLM-Adapters tokenize(): truncate first, then append the EOS id if there is room.
        ids = truncate(ids)
        if appendEOS, let eos, ids.last != eos, options.maxLength.map({ ids.count < $0 }) ?? true {
            ids.append(eos)
        }
    case .pretokenized, .conversation:
        preconditionFailure("handled above")
    }
    if ids.isEmpty { throw DataError.emptySequence(example.location) }
    let cut = truncated

    // Both references measure the prompt by tokenizing it alone, with the same special tokens
    // and truncation (and no EOS).
    let promptLength = min(truncate(try encode(rendered.prompt)).count, ids.count)
    var labels = ids
    if options.maskPrompt {
        for i in 0..<promptLength { labels[i] = ignoreIndex }
    }
    return TokenizedExample(inputIds: ids, labels: labels, promptLength: promptLength, truncated: cut)
}

/// The eval prompt of a record as token ids, tokenized the way the reference eval scripts do
/// (`tokenizer(prompt)`: default special tokens, so BOS where the tokenizer adds one; never for
/// `chat`, whose text holds its own).
public func evalPromptIds(_ example: Example, template: PromptTemplate, tokenizer: any Tokenizer,
                          addSpecialTokens: Bool = true, chat: PromptTemplate.Chat? = nil) throws -> [Int] {
    try tokenizer.encode(template.evalPrompt(for: example, chat: chat),
                         addSpecialTokens: addSpecialTokens && !template.mode(for: example).textHasSpecialTokens)
}

// MARK: - Tokenizing a data set

/// The result of `prepareExamples`.
public struct PreparedData: Sendable {
    /// Tokenized records, in input order; `sourceIndex[i]` is the index into the input examples.
    public var examples: [TokenizedExample]
    public var sourceIndex: [Int]
    /// Records that could not be rendered/tokenized (0 in strict mode).
    public var skipped: Int
    /// Records dropped because nothing was left to train on (every label -100 after masking and
    /// truncation); they would only add a 0/0 term to the loss.
    public var droppedNoTarget: Int
    /// Kept records that `maxLength` cut (their beginning kept).
    public var truncated: Int
    public var warnings: [String]

    /// Tokens, and tokens that are trained (labels other than -100 after the first position,
    /// as the loss counts them).
    public var tokenCount: Int { examples.reduce(0) { $0 + $1.inputIds.count } }
    public var trainedTokenCount: Int { examples.reduce(0) { $0 + $1.targetCount } }
}

/// Tokenizes a whole data set. Records the template cannot render are skipped and counted
/// (or, with `strict`, the first one throws), records left with no trained token are dropped
/// with a warning, and a warning notes when `ndlinear` ignored non-empty `input` fields (as
/// the reference does). `chat` without a chat template fails at once (`DataError.tokenizer`).
public func prepareExamples(_ examples: [Example], template: PromptTemplate, tokenizer: (any Tokenizer)?,
                            options: TokenizeOptions = TokenizeOptions(), strict: Bool = false,
                            chat: PromptTemplate.Chat? = nil) throws -> PreparedData {
    if template == .chat || examples.contains(where: { template.mode(for: $0) == .conversation }) {
        _ = try PromptTemplate.requireChat(chat)
    }
    var out: [TokenizedExample] = []
    var index: [Int] = []
    out.reserveCapacity(examples.count)
    var skipped = 0, noTarget = 0, ignoredInput = 0, truncated = 0
    var warnings: [String] = []
    for (i, e) in examples.enumerated() {
        do {
            let t = try tokenize(e, template: template, tokenizer: tokenizer, options: options, chat: chat)
            if template.mode(for: e) == .ndlinear && !PyText.strip(e.input).isEmpty { ignoredInput += 1 }
            if t.targetCount == 0 {
                noTarget += 1
                if warnings.count < LoadedData.maxWarnings {
                    warnings.append("\(e.location): no trained token left after masking/truncation (\(t.inputIds.count) tokens); dropped")
                }
                continue
            }
            if t.truncated { truncated += 1 }
            out.append(t)
            index.append(i)
        } catch let error as DataError {
            if strict { throw error }
            skipped += 1
            if warnings.count < LoadedData.maxWarnings { warnings.append("skipped: \(error)") }
        }
    }
    if skipped > 0 { warnings.append("skipped \(skipped) record(s) the `\(template.rawValue)` template cannot tokenize") }
    if truncated > 0 { warnings.append("truncated \(truncated) record(s) to the max length (their beginning kept)") }
    if noTarget > 0 { warnings.append("dropped \(noTarget) record(s) with no trained token (consider a larger max length)") }
    if ignoredInput > 0 {
        warnings.append("\(ignoredInput) record(s) have a non-empty `input` that the ndlinear template ignores, as the reference does; use --template alpaca to include it")
    }
    return PreparedData(examples: out, sourceIndex: index, skipped: skipped, droppedNoTarget: noTarget, truncated: truncated, warnings: warnings)
}
