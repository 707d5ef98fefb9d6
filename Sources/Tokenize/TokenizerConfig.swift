import Foundation
import LLMCore

/// What this library reads from a Hugging Face `tokenizer_config.json`: the special token
/// names, whether BOS/EOS are added, added tokens, the tokenizer class and the chat template.
public struct TokenizerConfig: Sendable, Equatable {
    public var tokenizerClass: String?
    public var bosToken: String?
    public var eosToken: String?
    public var padToken: String?
    public var unkToken: String?
    /// `add_bos_token` / `add_eos_token` when the file states them.
    public var addBosToken: Bool?
    public var addEosToken: Bool?
    /// From `added_tokens_decoder` (id → token).
    public var addedTokens: [AddedToken]
    /// The default chat template (Jinja source), if any.
    public var chatTemplate: String?

    public init(tokenizerClass: String? = nil, bosToken: String? = nil, eosToken: String? = nil, padToken: String? = nil,
                unkToken: String? = nil, addBosToken: Bool? = nil, addEosToken: Bool? = nil,
                addedTokens: [AddedToken] = [], chatTemplate: String? = nil) {
        self.tokenizerClass = tokenizerClass
        self.bosToken = bosToken
        self.eosToken = eosToken
        self.padToken = padToken
        self.unkToken = unkToken
        self.addBosToken = addBosToken
        self.addEosToken = addEosToken
        self.addedTokens = addedTokens
        self.chatTemplate = chatTemplate
    }

    /// Parses a tokenizer_config.json file.
    public init(contentsOf url: URL) throws {
        let path = url.path
        let root = try parseJSON(try readFile(url, expected: "tokenizer_config.json"), path: path)
        guard root.object != nil else {
            throw TokenizerError.invalidField(path: path, field: "(root)", expected: "a JSON object")
        }
        /// Special tokens are written either as a string or as an AddedToken object.
        func tokenName(_ key: String) throws -> String? {
            guard let v = root[key], !v.isNull else { return nil }
            if let s = v.string { return s }
            if let s = v["content"]?.string { return s }
            throw TokenizerError.invalidField(path: path, field: key, expected: "a string, an object with \"content\", or null")
        }
        func flag(_ key: String) throws -> Bool? {
            guard let v = root[key], !v.isNull else { return nil }
            guard let b = v.bool else { throw TokenizerError.invalidField(path: path, field: key, expected: "true or false") }
            return b
        }
        var added: [AddedToken] = []
        if let decoder = root["added_tokens_decoder"], !decoder.isNull {
            guard let members = decoder.object else {
                throw TokenizerError.invalidField(path: path, field: "added_tokens_decoder", expected: "an object keyed by token id")
            }
            for (key, value) in members {
                guard let id = Int(key), id >= 0 else {
                    throw TokenizerError.invalidField(path: path, field: "added_tokens_decoder.\(key)", expected: "a non-negative integer key")
                }
                added.append(try AddedToken.parse(value, id: id, path: path, field: "added_tokens_decoder.\(key)"))
            }
            added.sort { $0.id < $1.id }
        }
        var template: String? = nil
        if let t = root["chat_template"] {
            if let s = t.string {
                template = s
            } else if let list = t.array {
                // A list of {"name", "template"}; "default" wins, else the first.
                let named = list.compactMap { item -> (String, String)? in
                    guard let n = item["name"]?.string, let s = item["template"]?.string else { return nil }
                    return (n, s)
                }
                template = named.first { $0.0 == "default" }?.1 ?? named.first?.1
            }
        }
        self.init(
            tokenizerClass: root["tokenizer_class"]?.string,
            bosToken: try tokenName("bos_token"), eosToken: try tokenName("eos_token"),
            padToken: try tokenName("pad_token"), unkToken: try tokenName("unk_token"),
            addBosToken: try flag("add_bos_token"), addEosToken: try flag("add_eos_token"),
            addedTokens: added, chatTemplate: template)
    }

    /// Loads `tokenizer_config.json` from a directory when it exists.
    static func load(inDirectory directory: URL) throws -> TokenizerConfig? {
        let url = directory.appendingPathComponent("tokenizer_config.json")
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        return try TokenizerConfig(contentsOf: url)
    }
}
