import Foundation
import FuzzSupport
import Tokenize

/// A `tokenizer.json` loaded as `--model DIR` loads it (`loadTokenizer(from:)` on a directory
/// holding only that file: model, vocab, merges, added tokens, normalizer, pre-tokenizer,
/// decoder), then a sample encoded and decoded.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTokenizerJSON(_ input: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let bytes = input else { return 0 }
    let url = FuzzInput.file(bytes, count, name: "tokenizer.json")
    guard let tokenizer = try? loadTokenizer(from: url.deletingLastPathComponent()) else { return 0 }
    if let ids = try? tokenizer.encode(fuzzSampleText, addSpecialTokens: true) {
        _ = tokenizer.decode(ids, skipSpecialTokens: false)
        _ = tokenizer.decode(ids, skipSpecialTokens: true)
    }
    _ = tokenizer.decode([0, 1, 2, 255, 256, -1, Int.max], skipSpecialTokens: false)
    return 0
}

@_cdecl("fuzz_tokenizer_json_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runFuzzer(argc, argv, fuzzTokenizerJSON) }
