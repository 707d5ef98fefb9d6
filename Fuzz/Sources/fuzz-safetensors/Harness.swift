import FuzzSupport
import LLMCore

/// The safetensors reader (`SafetensorsFile(path:)`: 8-byte length, JSON header, dtypes, shapes,
/// data offsets, overlaps, alignment copies), then every tensor widened to Float as a model
/// load does.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ input: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let bytes = input else { return 0 }
    let url = FuzzInput.file(bytes, count, name: "model.safetensors")
    guard let file = try? SafetensorsFile(path: url.path) else { return 0 }
    var sink: Float = 0
    for t in file.tensors {
        _ = t.shape.reduce(1, *)
        if t.dtype == .i64 || t.dtype == .i32 { _ = t.ints().first } else { sink += t.floats().first ?? 0 }
    }
    _ = file.metadata.count
    _ = sink
    return 0
}

@_cdecl("fuzz_safetensors_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runFuzzer(argc, argv, fuzzSafetensors) }
