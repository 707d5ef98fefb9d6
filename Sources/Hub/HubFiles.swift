import Foundation

/// Which files of a repository the engine needs: only these are downloaded (never the
/// PyTorch, ONNX or other copies of the weights a repository may also hold).
enum ModelFiles {
    /// The config, tokenizer and template files read when present (top level only).
    static let optional = [
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
        "tokenizer.model", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja", "chat_template.json",
    ]
    static let weights = "model.safetensors", index = "model.safetensors.index.json"

    /// The shard files a `model.safetensors.index.json` lists (its `weight_map` values).
    static func shards(index data: Data, file: String) throws -> [String] {
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let map = obj["weight_map"] as? [String: Any] else {
            throw HubError.badResponse(url: file, reason: "not a safetensors index: expected a JSON object with a \"weight_map\" object")
        }
        var shards = Set<String>()
        for (tensor, v) in map {
            guard let s = v as? String, HubModelName.isSafeRelativePath(Substring(s)) else {
                throw HubError.badResponse(url: file, reason: "weight_map[\"\(tensor)\"]: expected a relative file name")
            }
            shards.insert(s)
        }
        return shards.sorted()
    }

    /// Why the engine cannot load the model from `files` without more (nil: it can), given
    /// the index's text when the weights are sharded.
    static func missing(in files: Set<String>, index: (String) -> Data?) -> String? {
        guard files.contains("config.json") else { return "no config.json" }
        if files.contains(weights) { return nil }
        guard files.contains(Self.index), let data = index(Self.index) else { return "no \(weights) or \(Self.index)" }
        guard let shards = try? ModelFiles.shards(index: data, file: Self.index) else { return "an unreadable \(Self.index)" }
        let absent = shards.filter { !files.contains($0) }
        return absent.isEmpty ? nil : "no \(absent.joined(separator: ", ")) (listed in \(Self.index))"
    }

    /// The GGUF files of `files` whose name ends in the quantisation tag (`-Q4_K_M.gguf`,
    /// `.q4_k_m.gguf`: any case, after `-`, `.` or `_`, or the whole name).
    static func gguf(tag: String, in files: some Sequence<String>) -> [String] {
        let t = tag.uppercased()
        return files.filter { f in
            guard f.lowercased().hasSuffix(".gguf") else { return false }
            let stem = String(f.split(separator: "/").last ?? "").dropLast(5).uppercased()
            guard stem.hasSuffix(t) else { return false }
            let before = stem.dropLast(t.count)
            return before.isEmpty || "-._".contains(before.last!)
        }.sorted()
    }

    static func ggufs(_ files: some Sequence<String>) -> [String] { files.filter { $0.lowercased().hasSuffix(".gguf") }.sorted() }

    /// The one file `name.file` designates among `files`.
    static func requested(_ name: HubModelName, in files: Set<String>, revision: String) throws -> String {
        guard let f = name.file else { preconditionFailure("a model name without :FILE") }
        if files.contains(f) { return f }
        guard name.isQuantTag else { throw HubError.fileNotFound(repo: name.repo, revision: revision, file: f, available: ggufs(files)) }
        let m = gguf(tag: f, in: files)
        guard m.count == 1 else { throw HubError.quantTag(repo: name.repo, tag: f, matches: m, available: ggufs(files)) }
        return m[0]
    }

    /// The reason a repository listing holds no model the engine can load.
    static func notAModel(_ files: Set<String>, name: HubModelName) -> String {
        let g = ggufs(files)
        if !files.contains("config.json") {
            return g.isEmpty ? "the repository has no config.json" + HubError.listing(files.sorted())
                : "the repository holds GGUF files, not a Hugging Face model: name one as \(name.repo):FILE.gguf or by its "
                + "quantisation tag (\(name.repo):Q4_K_M)" + HubError.listing(g)
        }
        return "the repository has no safetensors weights (\(weights) or \(index)); the engine loads safetensors or GGUF"
            + HubError.listing(files.sorted())
    }
}
