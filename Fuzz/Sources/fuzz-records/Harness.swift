import Foundation
import FuzzSupport
import LLMCore
import Training

/// The training-data reader on the same bytes as a `.jsonl` file and as a `.json` file
/// (`loadExamples(bytes:file:)`: record splitting, the JSON parser, every record layout), and
/// the JSON parser itself (`JSONValue.parse`, which also reads config.json and safetensors
/// headers).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRecords(_ input: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let bytes = input else { return 0 }
    let input = [UInt8](UnsafeBufferPointer(start: bytes, count: count))
    for name in ["data.jsonl", "data.json"] {
        _ = try? loadExamples(bytes: input, file: name)
        _ = try? loadExamples(bytes: input, file: name, strict: true)
    }
    _ = try? JSONValue.parse(FuzzInput.data(bytes, count))
    return 0
}

@_cdecl("fuzz_records_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runFuzzer(argc, argv, fuzzRecords) }
