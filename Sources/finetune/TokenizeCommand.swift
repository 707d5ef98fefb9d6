import ArgumentParser
import Foundation
import LLMCore
import Tokenize

/// `finetune tokenize`: encode text to ids or decode ids to text with a model's tokenizer.
struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Encode text to token ids, or decode ids back to text.",
        discussion: """
        TOKENIZER is a model directory (tokenizer.json, vocab.json + merges.txt,
        or tokenizer.model; tokenizer_config.json is read when present) or one
        of those files.

        Encoding (default). No BOS/EOS is added unless --add-special.
        --text TEXT: prints the ids space-separated on one line, or one object
          {"ids": [...], "count": N} with --json.
        --file FILE: JSONL, one {"text": "..."} per line; each line gives one
          output line: the ids space-separated, or a JSON array with --json.
          Blank lines are skipped.

        Decoding (--decode): the input is ids, the output is text.
        --text IDS: ids separated by spaces or commas ("1 2 3", "1,2,3") or a
          JSON array ("[1,2,3]"); prints the text as is, or {"text": "..."}
          with --json.
        --file FILE: JSONL, one JSON array of ids (or an object with "ids" or
          "input_ids") per line; each gives one output line {"text": "..."},
          which --file can encode again.
        Special tokens are written out unless --skip-special.

        --stats prints to stderr the load time, input bytes, token count and
        the encode-only time (wall clock and thread CPU) with the throughput
        (MB/s, 10^6 bytes of UTF-8 input per second). The tokenizer's word
        cache starts empty: a cold, single pass.

        --config FILE gives defaults for these options as for every command
        (a YAML or JSON mapping of long option names); options on the command
        line win.
        """)

    @Option(name: .long, help: "Tokenizer directory or file.")
    var tokenizer: String?

    @Option(name: .long, help: "Text to encode (or ids to decode with --decode).")
    var text: String?

    @Option(name: .long, help: "JSONL input: {\"text\": ...} per line (or ids per line with --decode).")
    var file: String?

    @Flag(name: .long, help: "Add the tokenizer's special tokens (e.g. BOS) when encoding.")
    var addSpecial = false

    @Flag(name: .long, help: "Decode ids to text instead of encoding.")
    var decode = false

    @Flag(name: .long, help: "With --decode: drop special tokens from the text.")
    var skipSpecial = false

    @Flag(name: .long, help: "Print JSON (see the description above).")
    var json = false

    @Flag(name: .long, help: "Print load time and encode throughput to stderr.")
    var stats = false

    func validate() throws {
        guard tokenizer != nil else { throw ValidationError("--tokenizer DIR|FILE is required") }
        guard (text == nil) != (file == nil) else { throw ValidationError("give exactly one of --text or --file") }
    }

    func run() throws {
        guard let tokenizerPath = tokenizer else { throw TokenizeCommandError(message: "--tokenizer DIR|FILE is required") }
        let tok: any Tokenizer
        let loadStart = DispatchTime.now()
        do {
            tok = try loadTokenizer(from: URL(fileURLWithPath: tokenizerPath))
        } catch let error as TokenizerError {
            throw TokenizeCommandError(message: "--tokenizer: \(error)")
        }
        let loadSeconds = seconds(since: loadStart)
        var out = OutputBuffer()
        var meter = EncodeMeter()
        defer {
            out.flush()
            if stats {
                let mbps = meter.seconds > 0 ? Double(meter.bytes) / 1e6 / meter.seconds : 0
                let cpuMbps = meter.cpuSeconds > 0 ? Double(meter.bytes) / 1e6 / meter.cpuSeconds : 0
                let line = String(format: "tokenizer %@: load %.3f s; %d texts, %d bytes, %d tokens; encode %.3f s wall = %.2f MB/s, %.3f s cpu = %.2f MB/s\n",
                                  tokenizerPath, loadSeconds, meter.texts, meter.bytes, meter.tokens, meter.seconds, mbps, meter.cpuSeconds, cpuMbps)
                FileHandle.standardError.write(Data(line.utf8))
            }
        }
        if let text {
            if decode {
                let ids = try parseIdList(text, context: "--text")
                let decoded = tok.decode(ids, skipSpecialTokens: skipSpecial)
                out.write(json ? "{\"text\":\(JSONValue.quote(decoded))}\n" : decoded + "\n")
            } else {
                let ids = try encode(tok, text, addSpecial, context: "--text", meter: &meter)
                out.write(json ? "{\"ids\":\(jsonArray(ids)),\"count\":\(ids.count)}\n" : ids.map(String.init).joined(separator: " ") + "\n")
            }
            return
        }
        guard let path = file else { throw TokenizeCommandError(message: "give exactly one of --text or --file") }
        let url = URL(fileURLWithPath: path)
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw TokenizeCommandError(message: "--file \(path): cannot read: \(ErrorText.reason(error, path: path))")
        }
        var lineNumber = 0
        for lineBytes in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = Data(lineBytes)
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { continue }
            let where_ = "\(path):\(lineNumber)"
            let value: Any
            do {
                value = try JSONSerialization.jsonObject(with: line, options: [.fragmentsAllowed])
            } catch {
                throw TokenizeCommandError(message: "\(where_): not valid JSON")
            }
            if decode {
                let raw: Any? = (value as? [Any]) ?? (value as? [String: Any])?["ids"] ?? (value as? [String: Any])?["input_ids"]
                guard let list = raw as? [Any] else {
                    throw TokenizeCommandError(message: "\(where_): expected a JSON array of ids or an object with \"ids\"")
                }
                let ids = try list.map { item -> Int in
                    guard let n = item as? NSNumber, let id = Int(exactly: n.doubleValue) else {
                        throw TokenizeCommandError(message: "\(where_): ids must be integers")
                    }
                    return id
                }
                out.write("{\"text\":\(JSONValue.quote(tok.decode(ids, skipSpecialTokens: skipSpecial)))}\n")
            } else {
                guard let text = (value as? [String: Any])?["text"] as? String else {
                    throw TokenizeCommandError(message: "\(where_): expected a JSON object with a string \"text\"")
                }
                let ids = try encode(tok, text, addSpecial, context: where_, meter: &meter)
                out.write(json ? jsonArray(ids) + "\n" : ids.map(String.init).joined(separator: " ") + "\n")
            }
        }
    }

    private func encode(_ tok: any Tokenizer, _ text: String, _ addSpecial: Bool, context: String, meter: inout EncodeMeter) throws -> [Int] {
        do {
            let start = DispatchTime.now()
            let cpuStart = threadCPUSeconds()
            let ids = try tok.encode(text, addSpecialTokens: addSpecial)
            meter.cpuSeconds += threadCPUSeconds() - cpuStart
            meter.seconds += seconds(since: start)
            meter.texts += 1
            meter.bytes += text.utf8.count
            meter.tokens += ids.count
            return ids
        } catch {
            throw TokenizeCommandError(message: "\(context): \(error)")
        }
    }

    /// "1 2 3", "1,2,3" or "[1, 2, 3]".
    private func parseIdList(_ s: String, context: String) throws -> [Int] {
        var body = s.trimmingCharacters(in: .whitespacesAndNewlines)
        if body.hasPrefix("[") && body.hasSuffix("]") { body = String(body.dropFirst().dropLast()) }
        let parts = body.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "\t" || $0 == "\n" })
        return try parts.map { part in
            guard let id = Int(part), id >= 0 else {
                throw TokenizeCommandError(message: "\(context): \"\(part)\" is not a token id (expected non-negative integers)")
            }
            return id
        }
    }
}

/// A failure with a one-line reason naming the flag, file or line.
struct TokenizeCommandError: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

// MARK: - Output helpers

/// Encode-only totals for --stats.
private struct EncodeMeter {
    var texts = 0
    var bytes = 0
    var tokens = 0
    var seconds = 0.0
    /// CPU time of the encoding thread (less disturbed by other processes than wall time).
    var cpuSeconds = 0.0
}

private func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

private func seconds(since start: DispatchTime) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
}

/// Buffers stdout writes (JSONL inputs can have many lines).
private struct OutputBuffer {
    private var buffer: [UInt8] = []

    mutating func write(_ s: String) {
        buffer.append(contentsOf: s.utf8)
        if buffer.count > 1 << 16 { flush() }
    }

    mutating func flush() {
        guard !buffer.isEmpty else { return }
        FileHandle.standardOutput.write(Data(buffer))
        buffer.removeAll(keepingCapacity: true)
    }
}

private func jsonArray(_ ids: [Int]) -> String {
    "[" + ids.map(String.init).joined(separator: ",") + "]"
}

