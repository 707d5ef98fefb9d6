import Foundation
import LLMCore
import Testing

/// The one JSON type (`JSONValue`, `JSONReader`): numbers as Python's `json` reads them, exact
/// string unescaping, key order on request, bounded nesting, errors with line and byte.
@Suite struct JSONTests {
    static func parse(_ s: String) throws -> JSONValue { try JSONValue.parse(Data(s.utf8)) }

    static func error(_ s: String) -> JSONError? {
        do { _ = try parse(s); return nil } catch { return error as? JSONError }
    }

    // MARK: - Numbers

    @Test(arguments: [
        ("8", JSONValue.int(8)), ("-12", .int(-12)), ("-0", .int(0)), ("0", .int(0)),
        ("9007199254740993", .int(9_007_199_254_740_993)),  // 2^53 + 1: not representable as Double
        ("9223372036854775807", .int(Int.max)), ("-9223372036854775808", .int(Int.min)),
        ("8.0", .double(8)), ("1e2", .double(100)), ("1E+2", .double(100)), ("2.5e-3", .double(0.0025)),
        ("0.1", .double(0.1)), ("1.7976931348623157e308", .double(.greatestFiniteMagnitude)),
        ("12345678901234567890", .double(12_345_678_901_234_567_890)),  // beyond Int: nearest Double
        ("5e-324", .double(.leastNonzeroMagnitude)),
    ])
    func numbersReadAsWritten(text: String, expected: JSONValue) throws {
        #expect(try Self.parse(text) == expected)
    }

    @Test func negativeZeroFloatKeepsItsSign() throws {
        guard case let .double(d) = try Self.parse("-0.0") else { Issue.record("not a double"); return }
        #expect(d == 0 && d.sign == .minus)
    }

    @Test(arguments: ["01", "-01", "1.", ".5", "-", "1e", "1e+", "+1", "NaN", "Infinity", "-Infinity", "0x10", "1e400", "-1e400"])
    func invalidOrOutOfRangeNumbersAreRefused(text: String) {
        #expect(Self.error(text) != nil, "\(text) parsed")
    }

    @Test func streamedIntegers() throws {
        let ids = try JSONReader.read(Data(#"[7, -3, 5.0, 1e1]"#.utf8)) { r -> [Int] in
            try r.beginArray()
            var first = true, out: [Int] = []
            while try r.nextElement(first: &first) { out.append(try r.readInt()) }
            try r.expectEnd()
            return out
        }
        #expect(ids == [7, -3, 5, 10])
        #expect(throws: JSONError.self) { try JSONReader.read(Data("5.5".utf8)) { r in try r.readInt() } }
        #expect(throws: JSONError.self) { try JSONReader.read(Data("007".utf8)) { r in try r.readInt() } }
    }

    // MARK: - Strings

    @Test(arguments: [
        (#""\u00e9\/\"\\\b\f\n\r\t""#, "é/\"\\\u{8}\u{C}\n\r\t"),
        (#""\ud83d\ude00""#, "😀"),                 // a surrogate pair is one scalar
        (#""\uD83D\uDE00""#, "😀"),                 // hex digits in either case
        (#""a\ud83db""#, "a\u{FFFD}b"),             // lone high surrogate
        (#""\ud83d\u0041""#, "\u{FFFD}A"),          // high surrogate followed by a non-surrogate
        (#""\ude00""#, "\u{FFFD}"),                 // lone low surrogate
        (#""\u0000x""#, "\u{0}x"),
        ("\"héllo 世界 😀\"", "héllo 世界 😀"),      // raw UTF-8 passes through
    ])
    func stringsUnescapeExactly(text: String, expected: String) throws {
        #expect(try Self.parse(text) == .string(expected))
    }

    @Test(arguments: ["\"a\u{1}b\"", #""\x""#, #""\u12""#, #""\u12G4""#, "\"abc"])
    func malformedStringsAreRefused(text: String) {
        #expect(Self.error(text) != nil, "\(text) parsed")
    }

    @Test func quoteRoundTrips() throws {
        let s = "q\"b\\ \n\t\u{1} é 😀"
        #expect(try Self.parse(JSONValue.quote(s)) == .string(s))
    }

    // MARK: - Structure

    @Test func nestingIsBoundedWithAClearError() throws {
        let limit = JSONReader.maxDepth
        let ok = String(repeating: "[", count: limit) + String(repeating: "]", count: limit)
        #expect(throws: Never.self) { try Self.parse(ok) }
        for open in ["[", "{\"a\":"] {
            let closer = open == "[" ? "]" : "}"
            for n in [limit + 1, 100_000] {
                let deep = String(repeating: open, count: n) + "1" + String(repeating: closer, count: n)
                let e = try #require(Self.error(deep))
                #expect(e.reason.contains("nesting deeper than \(limit)"), "\(e)")
            }
        }
    }

    @Test(arguments: [
        ("{\"a\": 1,\n}", 2, "trailing comma in an object"), ("[1,\n\n]", 3, "trailing comma in an array"),
        ("{\"a\": 1} x", 1, "unexpected trailing content"), ("", 1, "unexpected end of input"),
        ("{\"a\"\n 1}", 2, "expected ':'"), ("[tru]", 1, "invalid literal"),
    ])
    func errorsSayWhereAndWhat(text: String, line: Int, reason: String) throws {
        let e = try #require(Self.error(text))
        #expect(e.line == line)
        #expect(e.reason.contains(reason), "\(e)")
    }

    @Test func duplicateKeysKeepTheLastValueAsPythonDoes() throws {
        #expect(try Self.parse(#"{"a": 1, "b": 2, "a": 3}"#) == .object(["a": .int(3), "b": .int(2)]))
    }

    @Test func byteOrderMarkIsSkipped() throws {
        #expect(try JSONValue.parse(Data([0xEF, 0xBB, 0xBF]) + Data("{\"a\": true}".utf8)) == .object(["a": .bool(true)]))
    }

    // MARK: - Key order

    @Test func keysComeInFileOrder() throws {
        let text = Data(#"{"z": 1, "rank_pattern": {"q_proj": 4, "model.layers.0.q_proj": 8, "a": 2, "q_proj": 6}, "m": {}}"#.utf8)
        #expect(try JSONValue.keys(in: text) == ["z", "rank_pattern", "m"])
        // A repeated key stays where it first appeared (a Python dict), with the last value.
        #expect(try JSONValue.keys(in: text, at: ["rank_pattern"]) == ["q_proj", "model.layers.0.q_proj", "a"])
        #expect(try JSONValue.parse(text)["rank_pattern"]?["q_proj"] == .int(6))
        #expect(try JSONValue.keys(in: text, at: ["m"]) == [])
        #expect(throws: JSONError.self) { try JSONValue.keys(in: text, at: ["missing"]) }
        #expect(throws: JSONError.self) { try JSONValue.keys(in: text, at: ["z"]) }  // not an object
    }

    @Test func memberRangesCoverEachValueExactly() throws {
        let text = "{\n  \"rope_theta\": 1000000.0 ,\n  \"torch_dtype\":\"bfloat16\",\n  \"ids\": [1, 2]\n}"
        let data = Data(text.utf8)
        let members = try JSONValue.members(in: data)
        #expect(members.map(\.key) == ["rope_theta", "torch_dtype", "ids"])
        #expect(members.map { String(decoding: data[$0.range], as: UTF8.self) } == ["1000000.0", "\"bfloat16\"", "[1, 2]"])
        #expect(members[0].value == .double(1_000_000))
    }

    // MARK: - Writing

    @Test func serializedSortsKeysAndRoundTrips() throws {
        let v = try Self.parse(#"{"b": [1, 2.5, -0.0, null], "a": "x\ny", "c": {}, "d": [], "e": 1e20}"#)
        #expect(v.serialized() == "{\n  \"a\": \"x\\ny\",\n  \"b\": [\n    1,\n    2.5,\n    -0.0,\n    null\n  ],\n  \"c\": {},\n  \"d\": [],\n  \"e\": 1e+20\n}")
        #expect(v.serialized(pretty: false) == #"{"a":"x\ny","b":[1,2.5,-0.0,null],"c":{},"d":[],"e":1e+20}"#)
        #expect(try JSONValue.parse(Data(v.serialized().utf8)) == v)
        #expect(JSONValue.array([.double(.nan), .double(-.infinity)]).serialized(pretty: false) == "[NaN,-Infinity]")
    }
}
