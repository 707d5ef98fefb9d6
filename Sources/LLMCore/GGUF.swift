import Foundation

// GGUF (llama.cpp's checkpoint format), versions 2 and 3:
//   magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
//   metadata: (string key, u32 value type, value)*, tensor infos: (string name, u32 n_dims,
//   u64 ne[n_dims], u32 ggml type, u64 offset)*, padding to `general.alignment` (default 32),
//   then the tensor data (each tensor's offset is relative to the data start and aligned).
// Strings are u64 length + UTF-8 bytes; everything is little-endian.

/// Typed errors naming the file and, where there is one, the key or tensor.
public enum GGUFError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(file: String, reason: String)
    case notGGUF(file: String)
    case unsupportedVersion(file: String, version: UInt32)
    case truncated(file: String, at: Int, what: String)
    case invalidMetadata(file: String, key: String, reason: String)
    case invalidTensor(file: String, tensor: String, reason: String)
    case unsupportedType(file: String, tensor: String, ggmlType: UInt32)
    case missingKey(file: String, key: String)

    public var description: String {
        switch self {
        case let .cannotOpen(f, r): return "\(f): cannot open GGUF file: \(r)"
        case let .notGGUF(f): return "\(f): not a GGUF file (the first 4 bytes are not 'GGUF')"
        case let .unsupportedVersion(f, v): return "\(f): GGUF version \(v) is not supported (expected 2 or 3)"
        case let .truncated(f, at, w): return "\(f): truncated GGUF file: \(w) runs past the end (at byte \(at))"
        case let .invalidMetadata(f, k, r): return "\(f): metadata '\(k)': \(r)"
        case let .invalidTensor(f, t, r): return "\(f): tensor '\(t)': \(r)"
        case let .unsupportedType(f, t, g):
            return "\(f): tensor '\(t)': ggml type \(g) (\(GGMLType.name(g))) is not supported; supported: \(GGMLType.supported.map(\.dtype.rawValue).joined(separator: ", "))"
        case let .missingKey(f, k): return "\(f): metadata key '\(k)' is missing"
        }
    }
}

/// A metadata value of any GGUF type.
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), uint64(UInt64), int64(Int64), float64(Double)
    /// Element type code and the elements.
    case array(UInt32, [GGUFValue])

    public static let typeCodes: [String: UInt32] = [
        "uint8": 0, "int8": 1, "uint16": 2, "int16": 3, "uint32": 4, "int32": 5, "float32": 6, "bool": 7,
        "string": 8, "array": 9, "uint64": 10, "int64": 11, "float64": 12,
    ]

    public var typeCode: UInt32 {
        switch self {
        case .uint8: return 0
        case .int8: return 1
        case .uint16: return 2
        case .int16: return 3
        case .uint32: return 4
        case .int32: return 5
        case .float32: return 6
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        case .uint64: return 10
        case .int64: return 11
        case .float64: return 12
        }
    }

    /// Integer value of any integer type (nil for others or out of range).
    public var int: Int? {
        switch self {
        case let .uint8(v): return Int(v)
        case let .int8(v): return Int(v)
        case let .uint16(v): return Int(v)
        case let .int16(v): return Int(v)
        case let .uint32(v): return Int(v)
        case let .int32(v): return Int(v)
        case let .uint64(v): return Int(exactly: v)
        case let .int64(v): return Int(v)
        default: return nil
        }
    }

    public var double: Double? {
        switch self {
        case let .float32(v): return Double(v)
        case let .float64(v): return v
        default: return int.map(Double.init)
        }
    }

    public var string: String? { if case let .string(s) = self { return s }; return nil }
    public var bool: Bool? { if case let .bool(b) = self { return b }; return nil }
    public var array: [GGUFValue]? { if case let .array(_, a) = self { return a }; return nil }
}

/// GGML tensor types the engine reads (ggml.h `enum ggml_type` codes).
public enum GGMLType {
    public static let supported: [(code: UInt32, dtype: DType)] = [
        (0, .f32), (1, .f16), (2, .q4_0), (3, .q4_1), (6, .q5_0), (7, .q5_1), (8, .q8_0),
        (12, .q4_K), (13, .q5_K), (14, .q6_K), (24, .i8), (25, .i16), (26, .i32), (27, .i64), (28, .f64), (30, .bf16),
    ]

    public static func dtype(_ code: UInt32) -> DType? { supported.first { $0.code == code }?.dtype }
    public static func code(_ dtype: DType) -> UInt32? { supported.first { $0.dtype == dtype }?.code }

    static let names: [UInt32: String] = [
        0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K",
        12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
        20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
        29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
    ]
    static func name(_ code: UInt32) -> String { names[code] ?? "unknown" }
}

/// A parsed, validated GGUF file. Tensor views point into the memory map; their `shape` is in
/// PyTorch order (outermost first), i.e. GGUF's `ne` reversed: a [out, in] weight has ne = [in, out].
public struct GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let keys: [String]
    public let tensors: [TensorView]
    public let alignment: Int
    private let index: [String: Int]

    public subscript(name: String) -> TensorView? { index[name].map { tensors[$0] } }

    public init(path: String) throws {
        let file: MappedFile
        do { file = try MappedFile(path: path) } catch let e as SafetensorsError {
            if case let .cannotOpen(_, r) = e { throw GGUFError.cannotOpen(file: path, reason: r) }
            throw e
        }
        var r = Reader(base: file.base, size: file.size, file: path)
        guard file.size >= 4, try r.u32("magic") == 0x4655_4747 else { throw GGUFError.notGGUF(file: path) }
        let version = try r.u32("version")
        guard version == 2 || version == 3 else { throw GGUFError.unsupportedVersion(file: path, version: version) }
        let tensorCount = try r.count("tensor count", max: file.size / 8)
        let kvCount = try r.count("metadata count", max: file.size / 8)
        var meta: [String: GGUFValue] = [:], keys: [String] = []
        for _ in 0..<kvCount {
            let key = try r.name("metadata key")
            guard meta[key] == nil else { throw GGUFError.invalidMetadata(file: path, key: key, reason: "duplicate key") }
            let type = try r.u32("type of '\(key)'")
            meta[key] = try r.value(type: type, key: key)
            keys.append(key)
        }
        var alignment = 32
        if let a = meta["general.alignment"] {
            guard let v = a.int, v > 0, v & (v - 1) == 0, v <= 1 << 20 else {
                throw GGUFError.invalidMetadata(file: path, key: "general.alignment", reason: "must be a power of two, found \(a)")
            }
            alignment = v
        }
        typealias Info = (name: String, ne: [Int], type: UInt32, offset: Int)
        var infos: [Info] = []
        var seen = Set<String>()
        for _ in 0..<tensorCount {
            let name = try r.name("tensor name")
            guard seen.insert(name).inserted else { throw GGUFError.invalidTensor(file: path, tensor: name, reason: "duplicate tensor name") }
            let nd = try r.u32("n_dims of '\(name)'")
            guard nd >= 1, nd <= 4 else { throw GGUFError.invalidTensor(file: path, tensor: name, reason: "n_dims \(nd) (expected 1...4)") }
            var ne: [Int] = []
            for _ in 0..<nd {
                let d = try r.u64("dims of '\(name)'")
                guard d > 0, d < 1 << 40 else { throw GGUFError.invalidTensor(file: path, tensor: name, reason: "dimension \(d)") }
                ne.append(Int(d))
            }
            let type = try r.u32("type of '\(name)'")
            let off = try r.u64("offset of '\(name)'")
            guard off < UInt64(file.size) else {
                throw GGUFError.invalidTensor(file: path, tensor: name, reason: "offset \(off) past the end of the file (\(file.size) bytes)")
            }
            infos.append((name, ne, type, Int(off)))
        }
        let dataStart = (r.offset + alignment - 1) / alignment * alignment
        var views: [TensorView] = []
        var spans: [(begin: Int, end: Int, name: String)] = []
        for t in infos {
            guard let dtype = GGMLType.dtype(t.type) else { throw GGUFError.unsupportedType(file: path, tensor: t.name, ggmlType: t.type) }
            // Each dimension is < 2^40, their product need not fit: checked before any use.
            guard let count = t.ne.reduce(Optional(1), { Checked.mul($0, $1) }), count <= file.size * max(1, dtype.blockElements) else {
                throw GGUFError.invalidTensor(file: path, tensor: t.name, reason: "dimensions \(t.ne) hold more elements than the file (\(file.size) bytes) can store")
            }
            guard t.ne[0] % dtype.blockElements == 0 else {
                throw GGUFError.invalidTensor(file: path, tensor: t.name, reason: "row length \(t.ne[0]) is not a multiple of the \(dtype.rawValue) block size \(dtype.blockElements)")
            }
            guard t.offset % alignment == 0 else {
                throw GGUFError.invalidTensor(file: path, tensor: t.name, reason: "data offset \(t.offset) is not a multiple of the alignment \(alignment)")
            }
            let bytes = count / dtype.blockElements * dtype.blockBytes   // count ≤ size·32: no overflow
            let begin = dataStart + t.offset
            guard bytes <= file.size - min(begin, file.size), begin <= file.size else {
                throw GGUFError.invalidTensor(file: path, tensor: t.name,
                                              reason: "data [\(begin), \(begin) + \(bytes)) runs past the end of the file (\(file.size) bytes)")
            }
            spans.append((begin, begin + bytes, t.name))
            views.append(TensorView(name: t.name, dtype: dtype, shape: Array(t.ne.reversed()), data: file.base + begin, byteCount: bytes, owner: file))
        }
        spans.sort { $0.begin < $1.begin }
        for i in spans.indices.dropFirst() where spans[i].begin < spans[i - 1].end {
            throw GGUFError.invalidTensor(file: path, tensor: spans[i].name, reason: "data overlaps tensor '\(spans[i - 1].name)'")
        }
        self.path = path
        self.version = version
        self.metadata = meta
        self.keys = keys
        self.alignment = alignment
        self.tensors = views
        var idx: [String: Int] = [:]
        for (i, v) in views.enumerated() { idx[v.name] = i }
        self.index = idx
    }

    // MARK: Typed metadata access

    public func string(_ key: String) throws -> String {
        guard let v = metadata[key] else { throw GGUFError.missingKey(file: path, key: key) }
        guard let s = v.string else { throw GGUFError.invalidMetadata(file: path, key: key, reason: "expected a string") }
        return s
    }

    public func int(_ key: String) throws -> Int {
        guard let v = metadata[key] else { throw GGUFError.missingKey(file: path, key: key) }
        guard let i = v.int else { throw GGUFError.invalidMetadata(file: path, key: key, reason: "expected an integer, found \(v)") }
        return i
    }

    public func double(_ key: String) throws -> Double {
        guard let v = metadata[key] else { throw GGUFError.missingKey(file: path, key: key) }
        guard let d = v.double else { throw GGUFError.invalidMetadata(file: path, key: key, reason: "expected a number, found \(v)") }
        return d
    }

    /// A string array (e.g. `tokenizer.ggml.tokens`).
    public func strings(_ key: String) throws -> [String] {
        guard let v = metadata[key] else { throw GGUFError.missingKey(file: path, key: key) }
        guard case let .array(t, a) = v, t == 8 else { throw GGUFError.invalidMetadata(file: path, key: key, reason: "expected an array of strings") }
        return a.map { $0.string! }
    }

    /// A numeric array (e.g. `tokenizer.ggml.scores`, `tokenizer.ggml.token_type`).
    public func numbers(_ key: String) throws -> [Double] {
        guard let v = metadata[key] else { throw GGUFError.missingKey(file: path, key: key) }
        guard let a = v.array else { throw GGUFError.invalidMetadata(file: path, key: key, reason: "expected an array") }
        return try a.map {
            guard let d = $0.double else { throw GGUFError.invalidMetadata(file: path, key: key, reason: "expected numbers") }
            return d
        }
    }

    // MARK: Reader

    private struct Reader {
        let base: UnsafeRawPointer
        let size: Int
        let file: String
        var offset = 0

        mutating func take(_ n: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawPointer {
            guard n >= 0, offset <= size - n else { throw GGUFError.truncated(file: file, at: offset, what: what()) }
            defer { offset += n }
            return base + offset
        }
        mutating func load<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
            T(littleEndian: try take(MemoryLayout<T>.size, what()).loadUnaligned(as: T.self))
        }
        mutating func u32(_ what: @autoclosure () -> String) throws -> UInt32 { try load(UInt32.self, what()) }
        mutating func u64(_ what: @autoclosure () -> String) throws -> UInt64 { try load(UInt64.self, what()) }
        mutating func count(_ what: String, max: Int) throws -> Int {
            let n = try u64(what)
            guard n <= UInt64(max) else { throw GGUFError.truncated(file: file, at: offset, what: "\(what) \(n)") }
            return Int(n)
        }
        /// A metadata key or tensor name: at most 65,535 bytes (the GGUF spec's key limit) of
        /// printable UTF-8. A lying length would otherwise turn kilobytes of binary into a "name"
        /// that every later error message prints.
        mutating func name(_ what: String) throws -> String {
            let start = offset
            func corrupt(_ reason: String) -> GGUFError {
                what == "tensor name" ? .invalidTensor(file: file, tensor: "<name at byte \(start)>", reason: reason)
                    : .invalidMetadata(file: file, key: "<key at byte \(start)>", reason: reason)
            }
            let n = try u64(what)
            guard n <= 65_535 else { throw corrupt("a \(what) of \(n) bytes (at most 65535): the length is corrupt") }
            offset = start
            let s = try string(what)
            let bad = s.unicodeScalars.contains { $0 == "\u{FFFD}" || $0.properties.generalCategory == .control }
            guard !bad, !s.isEmpty else {
                let shown = String(String.UnicodeScalarView(s.unicodeScalars.prefix(32).map {
                    $0.properties.generalCategory == .control || $0 == "\u{FFFD}" ? "?" : $0 }))
                throw corrupt("the \(n) bytes of the \(what) are not printable text (\"\(shown)\"\(s.unicodeScalars.count > 32 ? "…" : "")): "
                    + "its length or the file is corrupt")
            }
            return s
        }

        mutating func string(_ what: @autoclosure () -> String) throws -> String {
            let n = try u64(what())
            guard n <= UInt64(size - offset) else { throw GGUFError.truncated(file: file, at: offset, what: what()) }
            let p = try take(Int(n), what())
            let s = String(decoding: UnsafeRawBufferPointer(start: p, count: Int(n)), as: UTF8.self)
            return s
        }
        mutating func value(type: UInt32, key: String, depth: Int = 0) throws -> GGUFValue {
            let what = "value of '\(key)'"
            switch type {
            case 0: return .uint8(try load(UInt8.self, what))
            case 1: return .int8(try load(Int8.self, what))
            case 2: return .uint16(try load(UInt16.self, what))
            case 3: return .int16(try load(Int16.self, what))
            case 4: return .uint32(try load(UInt32.self, what))
            case 5: return .int32(try load(Int32.self, what))
            case 6: return .float32(Float(bitPattern: try load(UInt32.self, what)))
            case 7:
                let b = try load(UInt8.self, what)
                guard b <= 1 else { throw GGUFError.invalidMetadata(file: file, key: key, reason: "bool byte \(b)") }
                return .bool(b == 1)
            case 8: return .string(try string(what))
            case 9:
                guard depth < 4 else { throw GGUFError.invalidMetadata(file: file, key: key, reason: "arrays nested too deeply") }
                let et = try u32(what)
                // Every element takes at least `minBytes` of the file: a count the rest of the
                // file cannot hold is refused before anything is reserved for it.
                let minBytes: Int
                switch et {
                case 0, 1, 7: minBytes = 1
                case 2, 3: minBytes = 2
                case 4, 5, 6: minBytes = 4
                case 8, 10, 11, 12: minBytes = 8
                case 9: minBytes = 12
                default: throw GGUFError.invalidMetadata(file: file, key: key, reason: "unknown array element type \(et)")
                }
                let n = try count(what, max: max(0, size - offset - 8) / minBytes)
                var items: [GGUFValue] = []
                items.reserveCapacity(min(n, 1 << 16))
                for _ in 0..<n { items.append(try value(type: et, key: key, depth: depth + 1)) }
                return .array(et, items)
            case 10: return .uint64(try load(UInt64.self, what))
            case 11: return .int64(try load(Int64.self, what))
            case 12: return .float64(Double(bitPattern: try load(UInt64.self, what)))
            default: throw GGUFError.invalidMetadata(file: file, key: key, reason: "unknown value type \(type)")
            }
        }
    }
}

// MARK: - Writer

/// Writes a GGUF v3 file atomically (temporary name, then rename): metadata in the given order,
/// then the tensors, whose bytes (already in their dtype's storage layout) come one at a time
/// from a closure so a multi-GB file never sits in memory. `shape` is in PyTorch order.
public struct GGUFWriter {
    public struct Tensor {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public init(name: String, dtype: DType, shape: [Int]) { self.name = name; self.dtype = dtype; self.shape = shape }
        public var byteCount: Int { dtype.storageBytes(elements: shape.reduce(1, *)) }
    }

    public var metadata: [(String, GGUFValue)] = []
    public var tensors: [Tensor] = []
    public var alignment = 32

    public init() {}

    /// Header, metadata and tensor infos, padded to the alignment.
    func header() -> Data {
        var out = Data()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: Array(s.utf8)) }
        func value(_ v: GGUFValue) {
            switch v {
            case let .uint8(x): out.append(x)
            case let .int8(x): out.append(UInt8(bitPattern: x))
            case let .uint16(x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case let .int16(x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case let .uint32(x): u32(x)
            case let .int32(x): u32(UInt32(bitPattern: x))
            case let .float32(x): u32(x.bitPattern)
            case let .bool(x): out.append(x ? 1 : 0)
            case let .string(s): str(s)
            case let .uint64(x): u64(x)
            case let .int64(x): u64(UInt64(bitPattern: x))
            case let .float64(x): u64(x.bitPattern)
            case let .array(t, items): u32(t); u64(UInt64(items.count)); items.forEach(value)
            }
        }
        u32(0x4655_4747); u32(3); u64(UInt64(tensors.count))
        var meta = metadata.filter { $0.0 != "general.alignment" }
        if alignment != 32 { meta.append(("general.alignment", .uint32(UInt32(alignment)))) }
        u64(UInt64(meta.count))
        for (k, v) in meta { str(k); u32(v.typeCode); value(v) }
        var offset = 0
        for t in tensors {
            str(t.name); u32(UInt32(t.shape.count))
            for d in t.shape.reversed() { u64(UInt64(d)) }
            u32(GGMLType.code(t.dtype)!); u64(UInt64(offset))
            offset += (t.byteCount + alignment - 1) / alignment * alignment
        }
        out.append(contentsOf: [UInt8](repeating: 0, count: (alignment - out.count % alignment) % alignment))
        return out
    }

    public func write(to url: URL, bytes: (Tensor) throws -> Data) throws {
        for t in tensors where GGMLType.code(t.dtype) == nil || t.shape.last.map({ $0 % t.dtype.blockElements != 0 }) ?? true {
            throw GGUFError.invalidTensor(file: url.path, tensor: t.name, reason: "cannot be written as \(t.dtype.rawValue) with shape \(t.shape)")
        }
        try AtomicFile.stream(to: url) { h in
            try h.write(contentsOf: header())
            for t in tensors {
                let d = try bytes(t)
                guard d.count == t.byteCount else {
                    throw GGUFError.invalidTensor(file: url.path, tensor: t.name, reason: "\(d.count) bytes written for \(t.byteCount)")
                }
                try h.write(contentsOf: d)
                let pad = (alignment - d.count % alignment) % alignment
                if pad > 0 { try h.write(contentsOf: Data(count: pad)) }
            }
        }
    }
}
