import Foundation
import FuzzSupport
import Tokenize

/// A SentencePiece `tokenizer.model` (ModelProto) loaded by `SentencePieceTokenizer(modelData:)`
/// (what `loadTokenizer` does with a tokenizer.model that is not tiktoken ranks: libsentencepiece
/// parses it, the tokenizer reads its pieces and special ids), then a sample encoded and decoded.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSentencePiece(_ input: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let bytes = input else { return 0 }
    guard let tokenizer = try? SentencePieceTokenizer(modelData: FuzzInput.data(bytes, count), path: "tokenizer.model") else { return 0 }
    if let ids = try? tokenizer.encode(fuzzSampleText, addSpecialTokens: true) {
        _ = tokenizer.decode(ids, skipSpecialTokens: false)
        _ = tokenizer.decode(ids, skipSpecialTokens: true)
    }
    _ = tokenizer.decode([0, 1, 2, 255, 256, -1, Int.max], skipSpecialTokens: false)
    for id in [0, 1, 2, -1, Int.max] { _ = tokenizer.token(id); _ = tokenizer.isControlToken(id) }
    return 0
}

@_cdecl("fuzz_sentencepiece_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runFuzzer(argc, argv, fuzzSentencePiece) }
