import Foundation
import FuzzSupport
import Tokenize

/// A chat template: lexer and parser (`ChatTemplate(source:)`), then the interpreter rendering a
/// short conversation under `JinjaLimits` (tighter than the defaults so that a runaway template
/// is stopped in milliseconds rather than seconds; the limits checked are the same).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJinja(_ input: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    guard let bytes = input else { return 0 }
    let source = String(decoding: UnsafeBufferPointer(start: bytes, count: count), as: UTF8.self)
    guard var template = try? ChatTemplate(source: source, origin: "chat_template.jinja") else { return 0 }
    template.limits = limits
    _ = try? template.render(messages: messages, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>",
                             extra: ["tools": .list([.dict(["name": .string("f"), "parameters": .dict([:])])])])
    _ = try? template.render(messages: [], addGenerationPrompt: false)
    return 0
}

private let limits = JinjaLimits(maxStringBytes: 1 << 20, maxItems: 100_000, maxNesting: 64, maxLoopIterations: 20_000, maxSeconds: 2)

private let messages = [
    ChatMessage(role: "system", content: "You are helpful."),
    ChatMessage(role: "user", content: "What is 2+2? {{ not a tag }}"),
    ChatMessage(role: "assistant", content: "4"),
    ChatMessage(role: "user", content: "Thanks 🙂"),
]

@_cdecl("fuzz_jinja_main")
public func fuzzerMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt { runFuzzer(argc, argv, fuzzJinja) }
