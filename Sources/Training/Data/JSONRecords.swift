import Foundation

// MARK: - Splitting a data file into located records

/// One raw record: its JSON text and where it starts.
struct RawRecord {
    var bytes: ArraySlice<UInt8>
    var location: RecordLocation
}

/// Splits data files into records without parsing them, so that each record can be parsed (and
/// reported) on its own with an exact line number.
enum JSONRecordSplitter {
    /// Decides JSONL vs JSON array: `.jsonl`/`.ndjson` files are JSONL; otherwise a file whose
    /// first non-blank byte is `[` is a JSON array and anything else is read as JSONL
    /// (Hugging Face writes JSON lines under a `.json` name too).
    static func detectFormat(path: String, bytes: [UInt8]) -> DataFileFormat {
        let ext = (path as NSString).pathExtension.lowercased()
        if ext == "jsonl" || ext == "ndjson" { return .jsonl }
        var i = skipBOM(bytes)
        while i < bytes.count, isJSONSpace(bytes[i]) { i += 1 }
        return (i < bytes.count && bytes[i] == UInt8(ascii: "[")) ? .jsonArray : .jsonl
    }

    static func skipBOM(_ bytes: [UInt8]) -> Int {
        bytes.count >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0
    }

    @inline(__always) static func isJSONSpace(_ b: UInt8) -> Bool {
        b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09
    }

    /// JSONL: one record per non-blank line.
    static func splitLines(_ bytes: [UInt8], file: String) -> [RawRecord] {
        var records: [RawRecord] = []
        var start = skipBOM(bytes)
        var line = 1
        let n = bytes.count
        while start <= n {
            var end = start
            while end < n, bytes[end] != 0x0A { end += 1 }
            var lo = start, hi = end
            while lo < hi, isJSONSpace(bytes[lo]) { lo += 1 }
            while hi > lo, isJSONSpace(bytes[hi - 1]) { hi -= 1 }
            if lo < hi {
                records.append(RawRecord(bytes: bytes[lo..<hi], location: RecordLocation(file: file, line: line)))
            }
            line += 1
            start = end + 1
        }
        return records
    }

    /// A JSON array: the top-level elements, each with its 0-based index and starting line.
    /// Only the array's structure (brackets, braces, strings) is checked here; each element is
    /// parsed later on its own, so one bad element does not hide the others.
    static func splitArray(_ bytes: [UInt8], file: String) throws -> [RawRecord] {
        var records: [RawRecord] = []
        let n = bytes.count
        var i = skipBOM(bytes)
        var line = 1

        func skipSpace() {
            while i < n, isJSONSpace(bytes[i]) {
                if bytes[i] == 0x0A { line += 1 }
                i += 1
            }
        }
        func fail(_ reason: String, at l: Int? = nil) -> DataError {
            .invalidJSON(RecordLocation(file: file, line: l ?? line), reason: reason)
        }

        skipSpace()
        guard i < n, bytes[i] == UInt8(ascii: "[") else { throw fail("expected `[` starting a JSON array") }
        i += 1
        skipSpace()
        if i < n, bytes[i] == UInt8(ascii: "]") {
            i += 1
        } else {
            var index = 0
            while true {
                skipSpace()
                guard i < n else { throw fail("unexpected end of file inside the array (element \(index))") }
                let start = i, startLine = line
                var depth = 0
                var inString = false
                var escaped = false
                // Scan one element: stop at a `,` or `]` at depth 0 outside strings.
                scan: while i < n {
                    let b = bytes[i]
                    if inString {
                        if escaped { escaped = false }
                        else if b == UInt8(ascii: "\\") { escaped = true }
                        else if b == UInt8(ascii: "\"") { inString = false }
                        else if b == 0x0A { line += 1 }
                        i += 1
                        continue
                    }
                    switch b {
                    case UInt8(ascii: "\""): inString = true
                    case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                    case UInt8(ascii: "}"), UInt8(ascii: "]"):
                        if depth == 0 { break scan }
                        depth -= 1
                    case UInt8(ascii: ","):
                        if depth == 0 { break scan }
                    case 0x0A: line += 1
                    default: break
                    }
                    i += 1
                }
                if inString { throw fail("unterminated string in element \(index)", at: startLine) }
                guard i < n else { throw fail("unexpected end of file: element \(index) (starting here) is not closed", at: startLine) }
                var hi = i
                while hi > start, isJSONSpace(bytes[hi - 1]) { hi -= 1 }
                if hi == start {
                    throw fail(bytes[i] == UInt8(ascii: "]") ? "trailing `,` before `]`" : "empty element (two commas)")
                }
                records.append(RawRecord(bytes: bytes[start..<hi],
                                         location: RecordLocation(file: file, line: startLine, index: index)))
                index += 1
                if bytes[i] == UInt8(ascii: "]") {
                    i += 1
                    break
                }
                if bytes[i] != UInt8(ascii: ",") {
                    throw fail("unbalanced `\(Character(Unicode.Scalar(bytes[i])))` after element \(index - 1)")
                }
                i += 1
            }
        }
        skipSpace()
        if i < n { throw fail("unexpected content after the closing `]`") }
        return records
    }

    /// Parses one record's JSON text.
    static func parse(_ record: RawRecord) throws -> Any {
        do {
            return try JSONSerialization.jsonObject(with: Data(record.bytes), options: [.fragmentsAllowed])
        } catch {
            let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String
            throw DataError.malformedRecord(record.location, reason: "not valid JSON" + (detail.map { " (\($0))" } ?? ""))
        }
    }
}
