import FuzzSupport
import LLMCore
import Tokenize

/// The GGUF reader (`GGUFFile(path:)`: magic, version, counts, metadata keys and typed values,
/// arrays, tensor infos, alignment, data spans), then what `--model x.gguf` derives from the
/// metadata: the model config, the tokenizer (BPE or SentencePiece built from `tokenizer.*`,
/// which then encodes and decodes a sample) and the chat template.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGGUF(_ input: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let bytes = input else { return 0 }
    let url = FuzzInput.file(bytes, count, name: "model.gguf")
    guard let gguf = try? GGUFFile(path: url.path) else { return 0 }
    for key in gguf.keys { _ = "\(gguf.metadata[key]!)" }
    _ = try? ModelConfig.fromGGUF(gguf)
    if let tokenizer = try? loadTokenizer(gguf: gguf), let ids = try? tokenizer.encode(fuzzSampleText, addSpecialTokens: true) {
        _ = tokenizer.decode(ids, skipSpecialTokens: true)
    }
    _ = try? TokenizerConfig(gguf: gguf)
    _ = try? loadChatTemplate(from: url)
    return 0
}

@_cdecl("fuzz_gguf_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runFuzzer(argc, argv, fuzzGGUF) }
