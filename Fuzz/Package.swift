// swift-tools-version:6.0
import PackageDescription

// libFuzzer harnesses for the parsers of files and text a user hands to finetune (issue 20,
// docs/RELIABILITY.md). Built only by scripts/fuzz.sh, which passes
// `-sanitize=fuzzer,address -parse-as-library` to every module so that the product's own code
// (LLMCore, Tokenize, Training, Yams) is instrumented, not just the harnesses. A separate
// package, so the root package's `swift build` / `swift test` never see them.

/// One executable per target: `Sources/<name>/Harness.swift` defines `LLVMFuzzerTestOneInput` and
/// the entry point `<name with _>_main` that hands it to libFuzzer (FuzzSupport `runFuzzer`).
let targets: [(name: String, dependencies: [Target.Dependency])] = [
    ("fuzz-safetensors", [.product(name: "LLMCore", package: "finetune")]),
    ("fuzz-gguf", [.product(name: "LLMCore", package: "finetune"), .product(name: "Tokenize", package: "finetune")]),
    ("fuzz-tokenizer-json", [.product(name: "Tokenize", package: "finetune")]),
    ("fuzz-sentencepiece", [.product(name: "Tokenize", package: "finetune")]),
    ("fuzz-records", [.product(name: "LLMCore", package: "finetune"), .product(name: "Training", package: "finetune")]),
    ("fuzz-yaml-config", [.product(name: "Training", package: "finetune")]),
    ("fuzz-jinja", [.product(name: "Tokenize", package: "finetune")]),
]

let package = Package(
    name: "finetune-fuzz",
    platforms: [.macOS(.v13)],
    products: targets.map { .executable(name: $0.name, targets: [$0.name]) },
    // The product under test: this checkout, or FUZZ_PRODUCT_ROOT (e.g. a `git archive`
    // snapshot, to fuzz a known revision while the working tree is being edited).
    dependencies: [.package(name: "finetune", path: Context.environment["FUZZ_PRODUCT_ROOT"] ?? "..")],
    targets: [.target(name: "CLibFuzzer"), .target(name: "FuzzSupport", dependencies: ["CLibFuzzer"])]
        + targets.map { .executableTarget(name: $0.name, dependencies: ["FuzzSupport"] + $0.dependencies) },
    swiftLanguageModes: [.v5]
)
