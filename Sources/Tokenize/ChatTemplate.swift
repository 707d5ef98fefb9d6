import Foundation

// MARK: - Errors

/// Why a chat template could not be parsed or rendered. Lines and columns are 1-based and count
/// Unicode scalars in the template source (after `\r\n` → `\n`).
public enum ChatTemplateError: Error, CustomStringConvertible, Equatable {
    /// The template text does not parse: where, and what was expected there.
    case syntax(line: Int, column: Int, message: String)
    /// Rendering failed: an undefined value used, a type error, an unknown filter or test, ...
    case runtime(line: Int, column: Int, message: String)
    /// The template called `raise_exception(message)`.
    case raised(message: String, line: Int, column: Int)
    /// Rendering was stopped by one of the `JinjaLimits` (a runaway template: output, string or
    /// list too large, values nested too deep, too many loop iterations, too slow). `file` names
    /// where the template came from, when known (`ChatTemplate.origin`).
    case limitExceeded(file: String?, line: Int, column: Int, message: String)

    /// Whether this is `limitExceeded`: a property of the template, not of the conversation, so
    /// callers stop rather than skip the record that triggered it.
    public var isLimit: Bool { if case .limitExceeded = self { return true }; return false }

    public var description: String {
        switch self {
        case let .syntax(line, column, message):
            return "chat template line \(line), column \(column): syntax error: \(message)"
        case let .runtime(line, column, message):
            return "chat template line \(line), column \(column): \(message)"
        case let .raised(message, line, column):
            return "chat template line \(line), column \(column): raise_exception: \(message)"
        case let .limitExceeded(file, line, column, message):
            return "chat template \(file.map { "\($0) " } ?? "")line \(line), column \(column): rendering stopped: \(message) "
                + "(a runaway template: a loop that never ends or a value that grows without bound)"
        }
    }
}

// MARK: - Chat templates

/// A model's Jinja chat template, parsed once and rendered byte for byte as transformers'
/// `apply_chat_template(..., tokenize=False)` renders it: jinja2 with `trim_blocks=True`,
/// `lstrip_blocks=True`, the loop-control extension, the default `Undefined`, and
/// transformers' globals (`raise_exception`, `strftime_now`, `namespace`, `dict`) and `tojson`
/// (`json.dumps(x, ensure_ascii=False, ...)`, no HTML escaping).
///
/// The supported subset (see `JinjaParser`, `JinjaRenderer`, `JinjaFilters`): `{{ }}`,
/// `{% %}`, `{# #}`, whitespace control, `if`/`elif`/`else`, `for` (with `loop.*`, `else`,
/// an `if` filter, `break`/`continue`), `set` (names, tuples, `ns.attr`, block capture),
/// `raw`, `generation`; Python literals, operators, subscripts and slices, string/dict
/// methods and jinja2's common filters and tests. Macros, `call`, `with`, filter blocks,
/// includes and inheritance are rejected with a `.syntax` error; tuples behave as lists.
///
/// Every rendering runs under `limits` (`JinjaLimits`: output and string size, list size,
/// nesting, loop iterations, time), so a runaway template fails with `.limitExceeded` naming
/// `origin` instead of exhausting memory or hanging.
public struct ChatTemplate: Sendable, Equatable {
    /// The Jinja source.
    public let source: String
    /// Where the template was read from (`model/chat_template.jinja`,
    /// `model/tokenizer_config.json (chat_template)`, `model.gguf (tokenizer.chat_template)`),
    /// named by `limitExceeded` errors; nil when it was given as text.
    public var origin: String?
    /// What one rendering may spend (`JinjaLimits.default` unless changed).
    public var limits = JinjaLimits.default
    private let nodes: [JinjaNode]

    /// Parses `source`. Throws `ChatTemplateError.syntax` naming the line, column and what was
    /// expected.
    public init(source: String, origin: String? = nil) throws {
        self.source = source
        self.origin = origin
        nodes = try JinjaParser.parse(source)
    }

    public static func == (a: ChatTemplate, b: ChatTemplate) -> Bool { a.source == b.source }

    /// Renders a conversation. The template sees what transformers passes: `messages` (dicts
    /// with `role` and `content`), `add_generation_prompt`, `tools` and `documents` (None),
    /// `bos_token` / `eos_token` when given (transformers passes the tokenizer's special-token
    /// strings and leaves unset ones undefined), then `extra` (e.g. `date_string`,
    /// `enable_thinking`), which overrides any of them.
    /// - Throws: `ChatTemplateError` (`.raised` when the template calls `raise_exception`).
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String? = nil, eosToken: String? = nil,
                       extra: [String: JinjaValue] = [:]) throws -> String {
        try render(messageValues: messages.map { .dict(["role": .string($0.role), "content": .string($0.content)]) },
                   addGenerationPrompt: addGenerationPrompt, bosToken: bosToken, eosToken: eosToken, extra: extra)
    }

    /// Renders messages given as the template sees them (dicts with `role`, `content` and any
    /// other fields, e.g. `tool_calls`), with `tools` (None when nil), as
    /// `render(messages:addGenerationPrompt:...)` does.
    public func render(messageValues: [JinjaValue], tools: JinjaValue? = nil, addGenerationPrompt: Bool, bosToken: String? = nil,
                       eosToken: String? = nil, extra: [String: JinjaValue] = [:]) throws -> String {
        var context: [String: JinjaValue] = [
            "messages": .list(messageValues),
            "add_generation_prompt": .bool(addGenerationPrompt), "tools": tools ?? .none, "documents": .none,
        ]
        if let bosToken { context["bos_token"] = .string(bosToken) }
        if let eosToken { context["eos_token"] = .string(eosToken) }
        context.merge(extra) { $1 }
        return try render(context: context)
    }

    /// Renders with exactly these top-level variables (the globals `raise_exception`,
    /// `strftime_now`, `namespace`, `dict` and `range` are always there).
    /// - Throws: `ChatTemplateError`; `.limitExceeded` (naming `origin`) when the rendering
    ///   reaches one of `limits`.
    public func render(context: [String: JinjaValue]) throws -> String {
        do {
            return try JinjaRenderer(context: context, limits: limits).render(nodes)
        } catch let ChatTemplateError.limitExceeded(_, line, column, message) {
            throw ChatTemplateError.limitExceeded(file: origin, line: line, column: column, message: message)
        }
    }
}
