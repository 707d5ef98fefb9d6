import Foundation

/// One chat message.
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// Llama 3's chat token layout, as Meta's `ChatFormat` (llama_models) builds it:
/// `<|start_header_id|>role<|end_header_id|>\n\n` + content (stripped) + `<|eot_id|>`;
/// a dialog starts with `<|begin_of_text|>` and ends with an open assistant header.
public enum Llama3ChatFormat {
    /// `<|start_header_id|>` role `<|end_header_id|>` "\n\n".
    public static func encodeHeader(role: String, with tokenizer: any Tokenizer) throws -> [Int] {
        var ids = [try special("<|start_header_id|>", tokenizer)]
        ids += try tokenizer.encode(role, addSpecialTokens: false)
        ids.append(try special("<|end_header_id|>", tokenizer))
        ids += try tokenizer.encode("\n\n", addSpecialTokens: false)
        return ids
    }

    /// Header, the content with surrounding whitespace removed (Python `str.strip()`), `<|eot_id|>`.
    public static func encodeMessage(_ message: ChatMessage, with tokenizer: any Tokenizer) throws -> [Int] {
        var ids = try encodeHeader(role: message.role, with: tokenizer)
        ids += try tokenizer.encode(pythonStrip(message.content), addSpecialTokens: false)
        ids.append(try special("<|eot_id|>", tokenizer))
        return ids
    }

    /// `<|begin_of_text|>`, every message, then (by default) the assistant header that asks the
    /// model for a reply.
    public static func encodeDialogPrompt(_ dialog: [ChatMessage], with tokenizer: any Tokenizer, addGenerationPrompt: Bool = true) throws -> [Int] {
        var ids = [try special("<|begin_of_text|>", tokenizer)]
        for message in dialog { ids += try encodeMessage(message, with: tokenizer) }
        if addGenerationPrompt { ids += try encodeHeader(role: "assistant", with: tokenizer) }
        return ids
    }

    private static func special(_ name: String, _ tokenizer: any Tokenizer) throws -> Int {
        guard let id = tokenizer.tokenId(name) else {
            throw TokenizerError.invalidField(path: "(tokenizer)", field: name, expected: "a Llama 3 special token in the vocabulary")
        }
        return id
    }

    /// Python's `str.strip()` (Python whitespace: White_Space plus U+001C…U+001F).
    static func pythonStrip(_ s: String) -> String {
        let scalars = Array(s.unicodeScalars)
        var a = 0
        var b = scalars.count
        while a < b && isPythonSpace(scalars[a].value) { a += 1 }
        while b > a && isPythonSpace(scalars[b - 1].value) { b -= 1 }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[a..<b])
        return String(out)
    }
}
