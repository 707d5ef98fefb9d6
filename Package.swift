// swift-tools-version:6.0
import PackageDescription

/// Hot numeric code: exclusivity checks cost a lot in tight loops over buffers.
var release: [SwiftSetting] { [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))] }

let package = Package(
    name: "finetune",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "finetune", targets: ["finetune"]),
        .library(name: "LLMCore", targets: ["LLMCore"]),
        .library(name: "Adapters", targets: ["Adapters"]),
        .library(name: "Tokenize", targets: ["Tokenize"]),
        .library(name: "Training", targets: ["Training"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
    ],
    targets: [
        // cpuid, and the GEMM libraries (OpenBLAS, oneDNN) loaded at run time with their kernels
        // chosen from the CPU's features.
        .target(name: "CBackend", cSettings: [.unsafeFlags(["-O2"])], linkerSettings: [.linkedLibrary("dl")]),
        .target(
            name: "CSentencePiece",
            cxxSettings: [.unsafeFlags(["-std=c++17"])],
            linkerSettings: [.linkedLibrary("sentencepiece"), .linkedLibrary("stdc++")]
        ),
        // Kernels compiled for AVX2 and AVX-512 via function target attributes, chosen at run
        // time by CPU.isa (cpuid capped by FINETUNE_ISA).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "LLMCore", dependencies: ["CBackend", "CKernels"], swiftSettings: release),
        .target(name: "Adapters", dependencies: ["LLMCore"], swiftSettings: release),
        .target(name: "Tokenize", dependencies: ["CSentencePiece", "LLMCore"], swiftSettings: release),
        .target(name: "Training", dependencies: ["LLMCore", "Adapters", "Tokenize", "Yams"], swiftSettings: release),
        .executableTarget(
            name: "finetune",
            dependencies: [
                "LLMCore", "Adapters", "Tokenize", "Training",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: release
        ),
        .target(name: "TestSupport", dependencies: ["LLMCore"], path: "Tests/TestSupport"),
        .testTarget(name: "LLMCoreTests", dependencies: ["LLMCore", "TestSupport"]),
        .testTarget(name: "AdaptersTests", dependencies: ["Adapters", "LLMCore", "TestSupport"]),
        .testTarget(name: "TokenizeTests", dependencies: ["Tokenize", "LLMCore", "TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Tokenize", "LLMCore", "Adapters", "TestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
