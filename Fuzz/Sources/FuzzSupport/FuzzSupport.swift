import CLibFuzzer
import Foundation

/// What every harness needs: the fuzzer's input as `Data`, and as a file for the entry points
/// that read one (the product's loaders take paths; memory maps included).
public enum FuzzInput {
    /// A directory private to this process (libFuzzer's `-jobs`/`-fork` workers are processes),
    /// on tmpfs when there is one.
    public static let directory: URL = {
        let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        let url = URL(fileURLWithPath: base).appendingPathComponent("finetune-fuzz-\(getpid())", isDirectory: true)
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }()

    public static func data(_ bytes: UnsafePointer<UInt8>, _ count: Int) -> Data { Data(bytes: bytes, count: count) }

    /// Writes the input to `name` in this process's directory and returns its URL.
    public static func file(_ bytes: UnsafePointer<UInt8>, _ count: Int, name: String) -> URL {
        let url = directory.appendingPathComponent(name)
        try! data(bytes, count).write(to: url)
        return url
    }
}

/// Text every tokenizer harness encodes with the tokenizer it loaded: ASCII, spaces, digits,
/// punctuation, a control-token-like string, accents, CJK and an emoji.
public let fuzzSampleText = "Hello world!  It's 2024: x=3.14;\n\t<|im_start|>user café 日本語 🙂 </s>"

/// Runs libFuzzer with the process's arguments on `testOneInput` (the harness's
/// `LLVMFuzzerTestOneInput`); the return value is the process's exit status.
public func runFuzzer(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?,
                      _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv, testOneInput)
}
