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
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
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
        // `finetune serve`: the OpenAI-compatible HTTP server and its continuous-batching scheduler.
        .target(name: "Serve", dependencies: ["LLMCore", "Adapters", "Tokenize", .product(name: "Hummingbird", package: "hummingbird"),
                                        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")], swiftSettings: release),
        // Model ids → the Hugging Face cache; downloads from the Hub (or HF_ENDPOINT).
        .target(name: "Hub", dependencies: [
            .product(name: "AsyncHTTPClient", package: "async-http-client"), .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .executableTarget(
            name: "finetune",
            dependencies: [
                "LLMCore", "Adapters", "Tokenize", "Training", "Hub", "Serve",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: release
        ),
        .target(name: "TestSupport", dependencies: ["LLMCore"], path: "Tests/TestSupport"),
        .testTarget(name: "LLMCoreTests", dependencies: ["LLMCore", "TestSupport"]),
        .testTarget(name: "AdaptersTests", dependencies: ["Adapters", "LLMCore", "TestSupport"]),
        .testTarget(name: "TokenizeTests", dependencies: ["Tokenize", "LLMCore", "TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Tokenize", "LLMCore", "Adapters", "TestSupport"]),
        .testTarget(name: "ServeTests", dependencies: ["Serve", "LLMCore", "Adapters", "Tokenize", "TestSupport",
                                                     .product(name: "HummingbirdTesting", package: "hummingbird"),
                                                     .product(name: "AsyncHTTPClient", package: "async-http-client")]),
        .testTarget(name: "HubTests", dependencies: [
            "Hub", "TestSupport",
            .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "Crypto", package: "swift-crypto"),
        ]),
    ],
    swiftLanguageModes: [.v5]
)
