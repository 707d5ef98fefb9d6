import Foundation
import LLMCore
import Tokenize

// MARK: - JSON with its key order

/// A JSON value whose objects keep their keys in file order: a chat template may iterate a
/// message's or a tool's keys, and `tojson` writes them in order, as Python's `json` keeps them.
public indirect enum OrderedJSON: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([OrderedJSON])
    case object([Member])

    public struct Member: Sendable, Equatable {
        public var key: String
        public var value: OrderedJSON
    }

    /// Parses one JSON document.
    static func parse(_ bytes: ArraySlice<UInt8>) throws -> OrderedJSON {
        try JSONReader.read(Data(bytes)) { r in
            let v = try read(&r, depth: 0)
            try r.expectEnd()
            return v
        }
    }

    private static func read(_ r: inout JSONReader, depth: Int) throws -> OrderedJSON {
        guard depth < JSONReader.maxDepth else { throw r.error("nesting deeper than \(JSONReader.maxDepth) levels") }
        var first = true
        switch r.peek() {
        case UInt8(ascii: "{"):
            try r.beginObject()
            var members: [Member] = []
            var key: [UInt8] = []
            while try r.nextMember(key: &key, first: &first) {
                members.append(Member(key: String(decoding: key, as: UTF8.self), value: try read(&r, depth: depth + 1)))
            }
            return .object(members)
        case UInt8(ascii: "["):
            try r.beginArray()
            var items: [OrderedJSON] = []
            while try r.nextElement(first: &first) { items.append(try read(&r, depth: depth + 1)) }
            return .array(items)
        default:
            switch try r.readValue() {
            case .null: return .null
            case let .bool(b): return .bool(b)
            case let .int(i): return .int(i)
            case let .double(d): return .double(d)
            case let .string(s): return .string(s)
            case .array, .object: preconditionFailure("containers are read above")
            }
        }
    }

    /// The value of `key` in an object (the last one, as Python's `json` keeps duplicates).
    public subscript(key: String) -> OrderedJSON? {
        guard case let .object(members) = self else { return nil }
        return members.last { $0.key == key }?.value
    }

    /// As the chat template sees it (Python's `json.loads` result).
    public var jinja: JinjaValue {
        switch self {
        case .null: return .none
        case let .bool(b): return .bool(b)
        case let .int(i): return .int(i)
        case let .double(d): return .double(d)
        case let .string(s): return .string(s)
        case let .array(a): return .list(a.map(\.jinja))
        case let .object(m): return .dict(JinjaDict(m.map { ($0.key, $0.value.jinja) }))
        }
    }

    public var string: String? { if case let .string(s) = self { return s }; return nil }

    /// "a string", "an array", ... for error messages.
    var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .int, .double: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }
}

// MARK: - Conversations

/// The conversation of a `messages` record or of a conversational prompt/completion record.
public struct ChatConversation: Sendable, Equatable {
    public struct Message: Sendable, Equatable {
        public var role: String
        public var content: String
        /// False for an assistant message with `"weight": 0` (OpenAI's format): not trained.
        public var trained: Bool
        /// The message as the template sees it: every field of the record's object but
        /// `weight`, in file order (`tool_calls`, `name`, ... pass through).
        public var value: OrderedJSON
    }

    public var messages: [Message]
    /// The record's top-level `tools`, passed to the template.
    public var tools: OrderedJSON?
    /// For prompt/completion records: the first `promptCount` messages are the prompt
    /// (rendered with the generation prompt) and the rest the trained completion. Nil for
    /// `messages` records, where every assistant turn is trained.
    public var promptCount: Int?

    public init(messages: [Message], tools: OrderedJSON? = nil, promptCount: Int? = nil) {
        self.messages = messages
        self.tools = tools
        self.promptCount = promptCount
    }

    /// A conversation of plain `{role, content}` messages (tests, programmatic use).
    public init(_ messages: [(role: String, content: String)], untrained: Set<Int> = []) {
        self.init(messages: messages.enumerated().map { i, m in
            Message(role: m.role, content: m.content, trained: !untrained.contains(i),
                    value: .object([.init(key: "role", value: .string(m.role)), .init(key: "content", value: .string(m.content))]))
        })
    }
}

/// Reading `messages` and `prompt`/`completion` records, and turning a conversation into
/// token ids and labels.
///
/// The rule (`../shared/fixtures/README.md`, chat/): the conversation is rendered once by the
/// chat template (`add_generation_prompt=False`) and tokenized once without special tokens;
/// each trained assistant message's span is its content as it appears in the rendered text
/// (found left to right after the previous message; as written, else stripped, since a
/// template may trim it) plus the end-of-turn marker written right after it; a token is
/// trained (label = its id) iff its span of the text lies inside such a span, every other
/// token has label -100. Conversational prompt/completion records (TRL): the prompt rendered
/// with the generation prompt must begin the whole conversation's rendering, and everything
/// after it is the trained span.
public enum ChatRecords {
    public static let roles = ["system", "user", "assistant", "tool"]

    // MARK: Reading

    /// A `{messages[, tools]}` or `{prompt, completion}` record from its JSON text.
    /// - Throws: `DataError.badField` naming the file, line (or element), the message index and
    ///   what was expected.
    static func decode(_ bytes: ArraySlice<UInt8>, at loc: RecordLocation) throws -> Example {
        let record: OrderedJSON
        do { record = try OrderedJSON.parse(bytes) } catch {
            throw DataError.malformedRecord(loc, reason: "not valid JSON (\(error))")
        }
        if let m = record["messages"] {
            let messages = try messageList(m, field: "messages", loc, weights: true)
            guard messages.contains(where: { $0.role == "assistant" }) else {
                throw DataError.badField(loc, field: "messages", expected: "at least one assistant message to train on, found roles "
                                         + messages.map(\.role).joined(separator: ", "))
            }
            return Example(kind: .messages, conversation: ChatConversation(messages: messages, tools: try tools(record, loc)), location: loc)
        }
        let prompt = record["prompt"]!, completion = record["completion"]!
        switch (prompt, completion) {
        case let (.string(p), .string(c)):
            return Example(kind: .promptCompletion, prompt: p, completion: c, location: loc)
        case (.array, .array):
            let p = try messageList(prompt, field: "prompt", loc, weights: false)
            let c = try messageList(completion, field: "completion", loc, weights: false)
            guard c.contains(where: { $0.role == "assistant" }) else {
                throw DataError.badField(loc, field: "completion", expected: "at least one assistant message to train on, found roles "
                                         + c.map(\.role).joined(separator: ", "))
            }
            return Example(kind: .promptCompletion, conversation: ChatConversation(messages: p + c, tools: try tools(record, loc), promptCount: p.count),
                           location: loc)
        case (.string, _), (.array, _):
            throw DataError.badField(loc, field: "completion", expected: "\(prompt.typeName) like `prompt` (strings: raw text; "
                                     + "message lists: conversational), found \(completion.typeName)")
        default:
            throw DataError.badField(loc, field: "prompt", expected: "a string or a list of {role, content} messages, found \(prompt.typeName)")
        }
    }

    private static func tools(_ record: OrderedJSON, _ loc: RecordLocation) throws -> OrderedJSON? {
        guard let t = record["tools"], t != .null else { return nil }
        guard case .array = t else { throw DataError.badField(loc, field: "tools", expected: "an array of tool definitions, found \(t.typeName)") }
        return t
    }

    private static func messageList(_ value: OrderedJSON, field: String, _ loc: RecordLocation, weights: Bool) throws -> [ChatConversation.Message] {
        guard case let .array(items) = value, !items.isEmpty else {
            throw DataError.badField(loc, field: field, expected: "a non-empty array of {role, content} messages, found "
                                     + (value == .array([]) ? "an empty array" : value.typeName))
        }
        return try items.enumerated().map { i, item in
            let at = "\(field)[\(i)]"
            guard case let .object(members) = item else {
                throw DataError.badField(loc, field: at, expected: "a message object {role, content}, found \(item.typeName)")
            }
            let expectedRole = "one of \(roles.joined(separator: ", "))"
            guard let r = item["role"] else { throw DataError.badField(loc, field: at + ".role", expected: expectedRole + " (the field is missing)") }
            guard case let .string(role) = r, roles.contains(role) else {
                let found = r.string.map { "`\($0)`" } ?? r.typeName
                throw DataError.badField(loc, field: at + ".role", expected: "\(expectedRole), found \(found)")
            }
            guard let c = item["content"] else { throw DataError.badField(loc, field: at + ".content", expected: "a string (the field is missing)") }
            guard case let .string(content) = c else {
                throw DataError.badField(loc, field: at + ".content", expected: "a string, found \(c.typeName)")
            }
            var trained = true
            if let w = item["weight"] {
                guard weights, role == "assistant" else {
                    throw DataError.badField(loc, field: at + ".weight", expected: weights
                        ? "no weight on a \(role) message (only assistant messages have one: 0 or 1)"
                        : "no weight in prompt/completion records (the completion is trained)")
                }
                switch w {
                case .int(0): trained = false
                case .int(1): trained = true
                case let .double(d): throw DataError.badField(loc, field: at + ".weight", expected: "0 or 1, found \(d)")
                case let .int(n): throw DataError.badField(loc, field: at + ".weight", expected: "0 or 1, found \(n)")
                default: throw DataError.badField(loc, field: at + ".weight", expected: "0 or 1, found \(w.typeName)")
                }
            }
            return ChatConversation.Message(role: role, content: content, trained: trained, value: .object(members.filter { $0.key != "weight" }))
        }
    }

    // MARK: Rendering and labels

    /// The conversation rendered once (`add_generation_prompt=False`).
    static func render(_ conversation: ChatConversation, chat: PromptTemplate.Chat, upTo count: Int? = nil, generationPrompt: Bool = false) throws -> String {
        try chat.template.render(messageValues: conversation.messages.prefix(count ?? conversation.messages.count).map(\.value.jinja),
                                 tools: conversation.tools?.jinja, addGenerationPrompt: generationPrompt,
                                 bosToken: chat.bosToken, eosToken: chat.eosToken)
    }

    /// The UTF-8 byte ranges of `text` to train on: for a `messages` conversation, each trained
    /// assistant message's content plus the end-of-turn marker right after it; for a
    /// prompt/completion conversation, everything after the rendered prompt.
    /// - Throws: `templateMismatch` naming the message the rendering lost.
    static func trainedSpans(_ conversation: ChatConversation, text: String, chat: PromptTemplate.Chat, example: Example,
                             template: String) throws -> [Range<Int>] {
        func mismatch(_ reason: String) -> DataError {
            DataError.templateMismatch(example.location, template: template, kind: example.kind.rawValue, reason: reason)
        }
        let bytes = Array(text.utf8)
        if let promptCount = conversation.promptCount {
            let prompt = Array(try render(conversation, chat: chat, upTo: promptCount, generationPrompt: true).utf8)
            guard bytes.starts(with: prompt) else {
                throw mismatch("the chat template renders the whole conversation so that it does not start with its rendering of the "
                               + "prompt's \(promptCount) message(s) + generation prompt (it rewrites earlier turns), so the completion cannot be found")
            }
            return [prompt.count..<bytes.count]
        }
        let endOfTurn = chat.endOfTurn.map { Array($0.utf8) } ?? []
        var spans: [Range<Int>] = []
        var pos = 0
        for (i, m) in conversation.messages.enumerated() {
            var found = find(Array(m.content.utf8), in: bytes, from: pos)
            if found == nil { found = find(Array(PyText.strip(m.content).utf8), in: bytes, from: pos) }
            guard let content = found else {
                guard m.role == "assistant" else { continue }   // a template may fold other turns into one
                throw mismatch("assistant message \(i) (messages[\(i)], \(preview(m.content))) is not in the chat template's rendering "
                               + "after the messages before it, so its tokens cannot be found to train on")
            }
            guard m.role == "assistant" else { pos = content.upperBound; continue }
            var end = content.upperBound
            if !endOfTurn.isEmpty, bytes[end...].starts(with: endOfTurn) { end += endOfTurn.count }
            if m.trained { spans.append(content.lowerBound..<end) }
            pos = end
        }
        return spans
    }

    private static func preview(_ s: String) -> String {
        let p = s.count > 40 ? String(s.prefix(40)) + "…" : s
        return p.debugDescription
    }

    /// The first occurrence of `needle` in `haystack` at or after `from`.
    static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Range<Int>? {
        if needle.isEmpty { return from..<from }
        guard haystack.count >= needle.count, from <= haystack.count - needle.count else { return nil }
        let first = needle[0]
        var i = from
        while i <= haystack.count - needle.count {
            if haystack[i] == first && haystack[i..<(i + needle.count)].elementsEqual(needle) { return i..<(i + needle.count) }
            i += 1
        }
        return nil
    }

    /// Token ids and labels of a conversation record (see the type's rule), truncated to
    /// `options.maxLength` (the beginning is kept); with `maskPrompt` off every label is its id.
    static func tokenize(_ example: Example, _ conversation: ChatConversation, template: PromptTemplate, tokenizer: any Tokenizer,
                         options: TokenizeOptions, chat: PromptTemplate.Chat) throws -> TokenizedExample {
        guard template == .chat || template == .auto else {
            throw DataError.templateMismatch(example.location, template: template.rawValue, kind: example.kind.rawValue,
                                             reason: "conversations are rendered by the model's chat template: use --template chat (or auto)")
        }
        let text: String
        do { text = try render(conversation, chat: chat) } catch let error as ChatTemplateError where !error.isLimit {
            throw DataError.templateMismatch(example.location, template: template.rawValue, kind: example.kind.rawValue, reason: "\(error)")
        }
        let spans = try trainedSpans(conversation, text: text, chat: chat, example: example, template: template.rawValue)
        let encoded: TokenOffsets
        do { encoded = try tokenizer.encodeWithOffsets(text) } catch let e as TokenizerError {
            throw DataError.tokenizer("\(example.location): \(e)")
        }
        var ids = encoded.ids
        var labels = zip(encoded.ids, encoded.spans).map { id, t in
            !options.maskPrompt || (!t.isEmpty && spans.contains { $0.lowerBound <= t.lowerBound && t.upperBound <= $0.upperBound }) ? id : ignoreIndex
        }
        var truncated = false
        if let m = options.maxLength, ids.count > m {
            ids = Array(ids[..<m])
            labels = Array(labels[..<m])
            truncated = true
        }
        if ids.isEmpty { throw DataError.emptySequence(example.location) }
        return TokenizedExample(inputIds: ids, labels: labels, promptLength: labels.firstIndex { $0 != ignoreIndex } ?? ids.count,
                                truncated: truncated)
    }

    /// The prompt a conversation is continued from at evaluation time: a prompt/completion
    /// record's prompt, or the messages before the last assistant message, with the
    /// generation prompt.
    static func evalPrompt(_ conversation: ChatConversation, chat: PromptTemplate.Chat) throws -> String {
        let count = conversation.promptCount ?? conversation.messages.lastIndex { $0.role == "assistant" } ?? conversation.messages.count
        return try render(conversation, chat: chat, upTo: count, generationPrompt: true)
    }
}
