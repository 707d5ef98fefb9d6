import Foundation
import FuzzSupport
import Training

/// `--config FILE`: the YAML/JSON reader with its alias-expansion limit
/// (`ConfigFile.arguments(fromText:path:)`, after the same UTF-8 check `--config` makes).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzYAMLConfig(_ input: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let bytes = input else { return 0 }
    guard let text = String(data: FuzzInput.data(bytes, count), encoding: .utf8) else { return 0 }
    _ = try? ConfigFile.arguments(fromText: text, path: "config.yaml")
    return 0
}

@_cdecl("fuzz_yaml_config_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runFuzzer(argc, argv, fuzzYAMLConfig) }
