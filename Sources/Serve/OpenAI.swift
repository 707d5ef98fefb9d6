import Foundation
import LLMCore
import Tokenize

// MARK: - Errors

/// An OpenAI-style error: the HTTP status and `{"error": {"message", "type", "param", "code"}}`.
public struct APIError: Error, Equatable, CustomStringConvertible {
    public let statusCode: Int
    public let message: String
    public let type: String
    public let param: String?
    public let code: String?

    public init(status: Int, message: String, type: String = "invalid_request_error", param: String? = nil, code: String? = nil) {
        self.statusCode = status; self.message = message; self.type = type; self.param = param; self.code = code
    }

    public var description: String { message }

    /// 400: a malformed body or a bad field (`param` names it).
    static func invalid(_ message: String, param: String? = nil, code: String = "invalid_value") -> APIError {
        APIError(status: 400, message: message, param: param, code: code)
    }

    public var body: JSONValue {
        .object(["error": .object(["message": .string(message), "type": .string(type),
                                   "param": param.map(JSONValue.string) ?? .null, "code": code.map(JSONValue.string) ?? .null])])
    }
}

// MARK: - Request fields

/// The sampling and stopping fields shared by `/v1/completions` and `/v1/chat/completions`.
struct CompletionParameters {
    var model: String?
    var maxTokens: Int?
    var temperature: Float = 1
    var topP: Float = 1
    var seed: UInt64?
    var stop: [String] = []
    var stream = false
    /// `stream_options.include_usage`: a last chunk with `usage` and no choices.
    var includeUsage = false
    /// `ignore_eos` (llama.cpp's and vLLM's extension): generate exactly `max_tokens`.
    var ignoreEOS = false

    /// Reads the fields of a request object; anything else in it is ignored (clients send
    /// fields such as `user` or `presence_penalty` at their defaults).
    /// - Parameter maxTokensLimit: the server's `--max-tokens`.
    init(_ o: [String: JSONValue], maxTokensLimit: Int) throws {
        func present(_ k: String) -> JSONValue? { o[k].flatMap { $0.isNull ? nil : $0 } }
        if let v = present("model") {
            guard let s = v.string else { throw APIError.invalid("'model' must be a string", param: "model") }
            model = s
        }
        for key in ["max_tokens", "max_completion_tokens"] {
            guard let v = present(key) else { continue }
            guard let n = v.int, n >= 0 else { throw APIError.invalid("'\(key)' must be an integer ≥ 0, got \(v.serialized(pretty: false))", param: key) }
            guard n <= maxTokensLimit else {
                throw APIError.invalid("'\(key)' \(n) is above this server's limit of \(maxTokensLimit) (--max-tokens)", param: key)
            }
            maxTokens = n
        }
        if let v = present("temperature") {
            guard let t = v.double, t >= 0, t <= 2 else { throw APIError.invalid("'temperature' must be a number in [0, 2]", param: "temperature") }
            temperature = Float(t)
        }
        if let v = present("top_p") {
            guard let p = v.double, p > 0, p <= 1 else { throw APIError.invalid("'top_p' must be a number in (0, 1]", param: "top_p") }
            topP = Float(p)
        }
        if let v = present("seed") {
            guard let s = v.int else { throw APIError.invalid("'seed' must be an integer", param: "seed") }
            seed = UInt64(bitPattern: Int64(s))
        }
        if let v = present("stop") {
            if let s = v.string {
                stop = [s]
            } else if let a = v.array, a.count <= 4, a.allSatisfy({ $0.string != nil }) {
                stop = a.map { $0.string! }
            } else {
                throw APIError.invalid("'stop' must be a string or an array of at most 4 strings", param: "stop")
            }
        }
        if let v = present("stream") {
            guard let b = v.bool else { throw APIError.invalid("'stream' must be a boolean", param: "stream") }
            stream = b
        }
        if let v = present("stream_options") {
            guard let so = v.object else { throw APIError.invalid("'stream_options' must be an object", param: "stream_options") }
            if let u = so["include_usage"], !u.isNull {
                guard let b = u.bool else { throw APIError.invalid("'stream_options.include_usage' must be a boolean", param: "stream_options") }
                includeUsage = b
            }
        }
        if let v = present("ignore_eos") {
            guard let b = v.bool else { throw APIError.invalid("'ignore_eos' must be a boolean", param: "ignore_eos") }
            ignoreEOS = b
        }
        if let v = present("n") {
            guard v.int == 1 else { throw APIError.invalid("'n' must be 1: one choice per request", param: "n", code: "unsupported_value") }
        }
    }

    /// Sampling options: temperature 0 is greedy; without a seed, one is drawn.
    var sampling: SamplingOptions {
        SamplingOptions(temperature: temperature, topP: topP, seed: seed ?? UInt64.random(in: 0...UInt64.max))
    }
}

/// Parses a request body as a JSON object.
func requestObject(_ data: Data) throws -> [String: JSONValue] {
    let value: JSONValue
    do { value = try JSONValue.parse(data) } catch let e as JSONError {
        throw APIError.invalid("the request body is not valid JSON: \(e)", code: "invalid_json")
    }
    guard let o = value.object else { throw APIError.invalid("the request body must be a JSON object", code: "invalid_json") }
    return o
}

/// `/v1/completions`' `prompt`: a string (encoded with the tokenizer, BOS added as
/// `finetune generate --prompt` does), an array of token ids (used verbatim), or a one-element
/// array of either.
func completionPrompt(_ o: [String: JSONValue], tokenizer: (any Tokenizer)?) throws -> [Int] {
    guard var v = o["prompt"], !v.isNull else { throw APIError.invalid("'prompt' is required", param: "prompt", code: "missing_field") }
    if let a = v.array, a.count == 1, a[0].string != nil || a[0].array != nil { v = a[0] }
    if let s = v.string {
        guard let tokenizer else {
            throw APIError.invalid("this model has no tokenizer: give 'prompt' as an array of token ids", param: "prompt")
        }
        do { return try tokenizer.encode(s, addSpecialTokens: true) } catch {
            throw APIError.invalid("'prompt' cannot be encoded: \(error)", param: "prompt")
        }
    }
    if let a = v.array, !a.isEmpty, a.allSatisfy({ $0.int != nil }) { return a.map { $0.int! } }
    throw APIError.invalid("'prompt' must be a string, a non-empty array of token ids, or a one-element array of either (one prompt per request)",
                           param: "prompt")
}

/// `/v1/chat/completions`' `messages`: `role` and `content` (a string, or an array of
/// `{"type": "text", "text": …}` parts, joined).
func chatMessages(_ o: [String: JSONValue]) throws -> [ChatMessage] {
    guard let a = o["messages"]?.array, !a.isEmpty else {
        throw APIError.invalid("'messages' must be a non-empty array of {role, content}", param: "messages")
    }
    return try a.enumerated().map { i, m in
        guard let role = m["role"]?.string else { throw APIError.invalid("messages[\(i)].role must be a string", param: "messages") }
        let c = m["content"] ?? .null
        if let s = c.string { return ChatMessage(role: role, content: s) }
        if c.isNull { return ChatMessage(role: role, content: "") }
        if let parts = c.array {
            let texts = try parts.map { p -> String in
                guard p["type"]?.string == "text", let t = p["text"]?.string else {
                    throw APIError.invalid("messages[\(i)].content: only {\"type\": \"text\", \"text\": …} parts are supported", param: "messages")
                }
                return t
            }
            return ChatMessage(role: role, content: texts.joined())
        }
        throw APIError.invalid("messages[\(i)].content must be a string or an array of text parts", param: "messages")
    }
}

// MARK: - Chat prompts

/// A chat template bound to the tokenizer's BOS/EOS strings: messages → prompt ids.
public struct ChatPrompter: Sendable {
    public let template: ChatTemplate
    public let tokenizer: any Tokenizer

    public init(template: ChatTemplate, tokenizer: any Tokenizer) {
        self.template = template; self.tokenizer = tokenizer
    }

    /// The conversation rendered with the generation prompt and encoded as it is written (the
    /// template writes BOS and other special tokens itself).
    public func ids(for messages: [ChatMessage]) throws -> [Int] {
        let bos = tokenizer.bosTokenId.flatMap { tokenizer.token($0) }, eos = tokenizer.eosTokenId.flatMap { tokenizer.token($0) }
        let text = try template.render(messages: messages, addGenerationPrompt: true, bosToken: bos, eosToken: eos)
        return try tokenizer.encode(text, addSpecialTokens: false)
    }
}
