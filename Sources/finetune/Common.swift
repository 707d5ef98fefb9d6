import Adapters
import ArgumentParser
import Foundation
import Hub
import LLMCore
import Tokenize
import Training

// MARK: - Output and errors

/// Human text goes to stderr so `--json` output on stdout stays machine-readable.
func note(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

/// Prints one JSON object on stdout.
func printJSON<T: Encodable>(_ value: T) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.sortedKeys]
    print(String(decoding: try enc.encode(value), as: UTF8.self))
}

/// Bad input or usage (exit 2), vs a run that failed (exit 1).
struct InputError: Error, CustomStringConvertible {
    let description: String
    init(_ s: String) { description = s }
}

/// Runs a command body: typed errors become a one-line `error: …` on stderr and the exit
/// status of `exitStatus(for:)` (130 interrupted, 1 for a failed run, 2 for bad input), never
/// a crash trace.
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ExitCode {
        throw e
    } catch {
        note("error: " + errorMessage(error))
        throw ExitCode(exitStatus(for: error))
    }
}

/// The one-line text of an error: this package's typed errors as they describe themselves;
/// Foundation's (`NSCocoaErrorDomain`, `DecodingError`, `EncodingError`) as `PATH: reason` with
/// the path from the error's userInfo — a last resort, the sites that know the file and field
/// say more. Control characters are escaped and the text is capped, so bytes read from a
/// hostile file never reach the terminal raw.
func errorMessage(_ error: Error) -> String {
    printable(ErrorText.describe(error))
}

/// `s` with control characters escaped (`\u{1B}`) and at most `limit` characters.
func printable(_ s: String, limit: Int = 4000) -> String {
    var out = ""
    var n = 0
    for c in s.unicodeScalars {
        n += 1
        if n > limit { return out + "… (\(s.unicodeScalars.count - limit) more characters)" }
        if c.properties.generalCategory == .control && c != "\n" && c != "\t" {
            out += "\\u{" + String(c.value, radix: 16) + "}"
        } else {
            out.unicodeScalars.append(c)
        }
    }
    return out
}

// MARK: - Exit status

/// The exit codes of every command (CLI.md "Exit status"), shown at the end of each command's
/// help.
let exitCodesHelp = """
    EXIT STATUS:
      0    success
      1    the run failed (training diverged)
      2    bad input or usage: flags, arguments, model/adapter/data/config files
      130  interrupted (SIGINT/SIGTERM; train writes a checkpoint first)
    """

// MARK: - Shared options

let gemmHelp = """
    GEMM library: auto (from the CPU's features: oneDNN at AVX-512 when libdnnl2 is installed, \
    else OpenBLAS with its kernels matched to the CPU), openblas, or onednn. FINETUNE_GEMM sets \
    the same; FINETUNE_ISA=avx2 (or sse) caps every kernel, ours and the library's, at that level.
    """

/// Chooses the GEMM library and the ISA level for this process (`--gemm` wins over
/// FINETUNE_GEMM); a bad value or a missing library is bad input (exit 2).
func configureCPU(gemm: String) throws {
    do {
        try CPU.configure(backend: CPU.parseBackend(gemm, source: "--gemm"))
    } catch let e as CPUConfigError {
        throw InputError(e.description)
    }
}

/// `--threads` and `--gemm`: how this process computes (every command that runs a model).
struct RuntimeOptions: ParsableArguments {
    @Option(help: "Threads for GEMMs and kernels (default: all cores).")
    var threads: Int?

    @Option(help: ArgumentHelp(gemmHelp))
    var gemm: String = "auto"

    /// Sets the thread count and chooses the GEMM library and ISA level (before any GEMM).
    func apply() throws {
        if let t = threads, t > 0 { BLAS.setThreads(t) }
        try configureCPU(gemm: gemm)
    }
}

struct ModelOptions: ParsableArguments {
    @Option(help: ArgumentHelp(modelHelp))
    var model: String

    @OptionGroup var runtime: RuntimeOptions

    var threads: Int? { runtime.threads }
    var path: ModelPath { ModelPath(model) }

    func apply() throws { try runtime.apply() }

    /// Loads weights (random of `randomDType` for a bare config.json).
    func load(randomDType: DType = .bf16) throws -> ModelWeights { try path.load(runtime: runtime, randomDType: randomDType) }

    /// The model directory's tokenizer, if it has one.
    func tokenizer() throws -> (any Tokenizer)? { try path.tokenizer() }
}

let modelHelp = """
    A Hugging Face model directory, a llama.cpp .gguf file, a bare config.json (random weights), or a model on the \
    Hugging Face Hub: ORG/NAME[@REVISION] or ORG/NAME:FILE.gguf (or :Q4_K_M), taken from the HF cache or downloaded \
    (HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE/HF_HOME; --offline or HF_HUB_OFFLINE=1: the cache only). A path that exists wins.
    """

// MARK: - Models by name

/// `--model ORG/NAME[@REVISION][:FILE]` in every command: resolved here, once, before the
/// command runs, by replacing the name in the arguments with the local path (a snapshot
/// directory of the Hugging Face cache, or the GGUF file in it), so every command — and a
/// `--config` file's `model:` — takes names without knowing of them.
///
/// Ambiguity: a value that exists as a path (file or directory, relative to the working
/// directory) is that path; otherwise a value of the form ORG/NAME[@REV][:FILE] (one `/`,
/// the Hub's name characters) is a Hub name; anything else is left as a path (and reported
/// missing by the command as before). `./ORG/NAME` always means a path.
enum ModelNames {
    /// Removes the global `--offline` flag (accepted after any command, like `--config`).
    static func extractOffline(_ args: [String]) -> (args: [String], offline: Bool) {
        let end = args.firstIndex(of: "--") ?? args.count
        let kept = args[..<end].filter { $0 != "--offline" }
        return (Array(kept + args[end...]), kept.count != end)
    }

    /// The `--model` values of `args` (`--model X` or `--model=X`, before any `--`) as indices
    /// into `args` with the value.
    static func modelValues(_ args: [String]) -> [(index: Int, value: String, joined: Bool)] {
        var out: [(index: Int, value: String, joined: Bool)] = []
        var i = 0
        while i < args.count, args[i] != "--" {
            if args[i] == "--model", i + 1 < args.count { out.append((i + 1, args[i + 1], false)); i += 2; continue }
            if args[i].hasPrefix("--model=") { out.append((i, String(args[i].dropFirst("--model=".count)), true)) }
            i += 1
        }
        return out
    }

    /// The Hub name `value` stands for, or nil when it is a path.
    static func hubName(_ value: String) -> HubModelName? {
        FileManager.default.fileExists(atPath: value) ? nil : HubModelName(parsing: value)
    }

    /// `args` with every `--model` Hub name replaced by its local path (downloaded unless
    /// cached; offline: the cache only). A failed transfer exits 1 (the run failed); every
    /// other error — unknown repository or revision, refused token, corrupted file, offline
    /// miss — is bad input (exit 2) naming the repository and file.
    static func resolve(_ args: [String], offline: Bool, environment: [String: String] = ProcessInfo.processInfo.environment) throws -> [String] {
        var args = args
        let values = modelValues(args).compactMap { v in hubName(v.value).map { (v, $0) } }
        guard !values.isEmpty else { return args }
        let hub = Hub(settings: HubSettings(environment: environment, offline: offline), progress: ProgressLine.stderr())
        for (v, name) in values {
            let url: URL
            do { url = try hub.resolveBlocking(name) } catch let e as HubError where !e.isBadInput {
                note("error: " + errorMessage(e))
                throw ExitCode(1)
            }
            note("--model \(name): \(url.path)")
            args[v.index] = v.joined ? "--model=" + url.path : url.path
        }
        return args
    }
}

/// A `--model` argument and what is read from it (for commands where `--model` is optional,
/// as `eval --score`, too).
struct ModelPath {
    let model: String
    init(_ model: String) { self.model = model }

    /// Applies `runtime`, then loads the weights (random of `randomDType` for a bare config.json).
    func load(runtime: RuntimeOptions, randomDType: DType = .bf16) throws -> ModelWeights {
        try runtime.apply()
        return try ModelWeights.load(path: model, randomDType: randomDType)
    }

    /// The model's tokenizer, if it has one.
    func tokenizer() throws -> (any Tokenizer)? {
        var isDir: ObjCBool = false
        if model.lowercased().hasSuffix(".gguf") {
            // A GGUF without tokenizer metadata is like a directory without tokenizer files.
            let g = try GGUFFile(path: model)
            return g.metadata["tokenizer.ggml.model"] == nil ? nil : try loadTokenizer(gguf: g)
        }
        guard FileManager.default.fileExists(atPath: model, isDirectory: &isDir), isDir.boolValue else { return nil }
        let dir = URL(fileURLWithPath: model)
        let names = ["tokenizer.json", "vocab.json", "tokenizer.model"]
        guard names.contains(where: { FileManager.default.fileExists(atPath: dir.appendingPathComponent($0).path) }) else { return nil }
        return try loadTokenizer(from: dir)
    }

    /// The model's chat template bound to its tokenizer when `template` is `chat` (nil for the
    /// other templates, which need none).
    func chat(template: PromptTemplate, tokenizer: (any Tokenizer)?) throws -> PromptTemplate.Chat? {
        guard template == .chat else { return nil }
        let chatTemplate: ChatTemplate?
        do { chatTemplate = try loadChatTemplate(from: URL(fileURLWithPath: model)) } catch let e as ChatTemplateError {
            throw InputError("--template chat: the chat template of \(model) cannot be used: \(e)")
        }
        guard let t = chatTemplate else {
            throw InputError("--template chat: \(model) has no chat template (chat_template.jinja, `chat_template` in "
                             + "tokenizer_config.json, or GGUF tokenizer.chat_template)")
        }
        return PromptTemplate.Chat(template: t, tokenizer: tokenizer)
    }
}

/// How records become text and tokens, shared by `train` and `eval`.
struct TemplateOptions: ParsableArguments {
    @Option(help: "Prompt template: chat is the model's own chat template; auto picks per record (eval: as training does).")
    var template: PromptTemplate = TrainConfig.defaults.template

    @Option(help: "Truncate records to this many tokens (eval: --metric loss, as training does).")
    var maxLength: Int = TrainConfig.defaults.maxLength

    @Flag(help: "A malformed data record is fatal (default: skipped and counted).")
    var strict = false
}

// Named choices on the command line: the names of `ConfigChoice` (case-insensitive, `_` or `-`).
extension AdapterKind: ExpressibleByArgument { public init?(argument: String) { self.init(choiceName: argument) } }
extension NdLinearInit: ExpressibleByArgument { public init?(argument: String) { self.init(choiceName: argument) } }
extension LRScheduleKind: ExpressibleByArgument { public init?(argument: String) { self.init(choiceName: argument) } }
extension PromptTemplate: ExpressibleByArgument { public init?(argument: String) { self.init(choiceName: argument) } }

extension ConfigChoice {
    init?(choiceName: String) {
        guard let v = Self.named(choiceName) else { return nil }
        self = v
    }
}

struct AdapterOptions: ParsableArguments {
    @Option(help: "An adapter directory (PEFT LoRA, PEFT LoKr or NdLinear-LoRA reference) or .safetensors file.")
    var adapter: String?

    @Option(help: "NdLinear α when the adapter files carry none (the reference's checkpoints; default 1.0).")
    var adapterAlpha: Float?

    func load(config: ModelConfig) throws -> AdapterSet? {
        guard let adapter else { return nil }
        return try AdapterIO.load(URL(fileURLWithPath: adapter), config: config, ndlinearAlpha: adapterAlpha)
    }
}

/// Parses `1,2,3` into integers, naming the flag on error.
func parseIntList(_ s: String, flag: String) throws -> [Int] {
    try s.split(separator: ",").map {
        guard let v = Int($0.trimmingCharacters(in: .whitespaces)) else { throw InputError("\(flag): '\($0)' is not an integer") }
        return v
    }
}

/// Parses `0.9,0.999` into numbers, naming the flag on error.
func parseDoubleList(_ s: String, flag: String) throws -> [Double] {
    try s.split(separator: ",").map {
        guard let v = Double($0.trimmingCharacters(in: .whitespaces)) else { throw InputError("\(flag) '\(s)': '\($0)' is not a number") }
        return v
    }
}

func parseDType(_ s: String, flag: String, gguf: Bool = false) throws -> DType {
    switch s.lowercased() {
    case "bf16", "bfloat16": return .bf16
    case "f16", "fp16", "float16": return .f16
    case "f32", "fp32", "float32": return .f32
    case "q8_0" where gguf: return .q8_0
    case "q4_0" where gguf: return .q4_0
    case "q4_1" where gguf: return .q4_1
    default: throw InputError("\(flag) '\(s)': expected bf16, f16 or f32" + (gguf ? ", q8_0, q4_0 or q4_1" : ""))
    }
}
