import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Errors

/// Everything that can be wrong with a safetensors file, each naming the file (and tensor).
public enum SafetensorsError: Error, CustomStringConvertible, Equatable {
    case cannotOpen(file: String, reason: String)
    case truncated(file: String, size: Int)
    case headerLengthPastEnd(file: String, headerLength: UInt64, fileSize: Int)
    case invalidHeader(file: String, reason: String)
    case invalidEntry(file: String, tensor: String, reason: String)
    case unknownDType(file: String, tensor: String, dtype: String)
    case offsetsOutOfRange(file: String, tensor: String, begin: Int, end: Int, dataSize: Int)
    case byteCountMismatch(file: String, tensor: String, shape: [Int], dtype: String, expected: Int, actual: Int)
    case overlap(file: String, tensor: String, other: String)
    case missingTensor(file: String, tensor: String)
    case writeFailed(file: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotOpen(f, r): return "\(f): cannot open safetensors file: \(r)"
        case let .truncated(f, s): return "\(f): truncated safetensors file (\(s) bytes; at least 8 bytes of header length expected)"
        case let .headerLengthPastEnd(f, h, s): return "\(f): header length \(h) runs past the end of the file (\(s) bytes)"
        case let .invalidHeader(f, r): return "\(f): invalid safetensors header: \(r)"
        case let .invalidEntry(f, t, r): return "\(f): tensor '\(t)': \(r)"
        case let .unknownDType(f, t, d): return "\(f): tensor '\(t)': unknown dtype '\(d)' (expected one of \(DType.safetensorsTypes.map(\.rawValue).joined(separator: ", ")))"
        case let .offsetsOutOfRange(f, t, b, e, s): return "\(f): tensor '\(t)': data_offsets [\(b), \(e)] outside the data section of \(s) bytes"
        case let .byteCountMismatch(f, t, sh, d, exp, act): return "\(f): tensor '\(t)': shape \(sh) of \(d) needs \(exp) bytes but data_offsets span \(act)"
        case let .overlap(f, t, o): return "\(f): tensors '\(t)' and '\(o)' overlap in the data section"
        case let .missingTensor(f, t): return "\(f): no tensor named '\(t)'"
        case let .writeFailed(f, r): return "\(f): cannot write safetensors file: \(r)"
        }
    }
}

// MARK: - Memory-mapped file

/// A read-only memory map of a whole file, unmapped when the last view is gone.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let base: UnsafeRawPointer
    public let size: Int

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw SafetensorsError.cannotOpen(file: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SafetensorsError.cannotOpen(file: path, reason: String(cString: strerror(errno))) }
        size = Int(st.st_size)
        if size == 0 {
            base = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 8))
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw SafetensorsError.cannotOpen(file: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        base = UnsafeRawPointer(p)
    }

    deinit {
        if size == 0 { UnsafeMutableRawPointer(mutating: base).deallocate() } else { munmap(UnsafeMutableRawPointer(mutating: base), size) }
    }
}

/// Heap bytes that own tensor data (random weights, unaligned copies, in-memory tensors).
public final class OwnedBytes: @unchecked Sendable {
    public let pointer: UnsafeMutableRawPointer
    public let byteCount: Int
    public init(byteCount: Int) {
        self.byteCount = byteCount
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
    }
    deinit { pointer.deallocate() }
}

// MARK: - Tensor views

/// A tensor inside a file (or owned memory) in its stored dtype; nothing is converted until asked.
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    public let data: UnsafeRawPointer
    public let byteCount: Int
    let owner: AnyObject

    public init(name: String, dtype: DType, shape: [Int], data: UnsafeRawPointer, byteCount: Int, owner: AnyObject) {
        self.name = name; self.dtype = dtype; self.shape = shape
        self.data = data; self.byteCount = byteCount; self.owner = owner
    }

    public var count: Int { shape.reduce(1, *) }

    /// Widens into `dst` (which must hold `count` floats).
    public func widen(into dst: UnsafeMutablePointer<Float>) {
        widenToFloat(data, dtype: dtype, count: count, into: dst)
    }

    /// The values as f32 (a copy).
    public func floats() -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buf, n in
            if count > 0 { widen(into: buf.baseAddress!) }
            n = count
        }
    }

    /// Integer values (I64/I32/I16/I8/U8/BOOL, or integral floats).
    public func ints() -> [Int] {
        let n = count
        switch dtype {
        case .i64: let p = data.assumingMemoryBound(to: Int64.self); return (0..<n).map { Int(p[$0]) }
        case .i32: let p = data.assumingMemoryBound(to: Int32.self); return (0..<n).map { Int(p[$0]) }
        default: return floats().map { Int($0) }
        }
    }

    /// f32 data pointer without copying, when stored as f32.
    public var f32Pointer: UnsafePointer<Float>? {
        dtype == .f32 ? data.assumingMemoryBound(to: Float.self) : nil
    }

    /// A view over owned f32 values (tests, random weights).
    public static func owned(name: String, shape: [Int], floats: [Float], dtype: DType = .f32) -> TensorView {
        precondition(shape.reduce(1, *) == floats.count)
        let bytes = OwnedBytes(byteCount: floats.count * dtype.byteSize)
        switch dtype {
        case .f32: floats.withUnsafeBytes { bytes.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        case .bf16: let p = bytes.pointer.assumingMemoryBound(to: UInt16.self); for i in floats.indices { p[i] = floatToBF16(floats[i]) }
        case .f16: let p = bytes.pointer.assumingMemoryBound(to: UInt16.self); for i in floats.indices { p[i] = floatToF16(floats[i]) }
        default: preconditionFailure("owned views hold floating-point data")
        }
        return TensorView(name: name, dtype: dtype, shape: shape, data: bytes.pointer, byteCount: bytes.byteCount, owner: bytes)
    }
}

// MARK: - Reader

/// A parsed, fully validated safetensors file (FORMATS.md "safetensors"). Zero-copy: views point
/// into the memory map. Metadata is optional.
public struct SafetensorsFile: @unchecked Sendable {
    public let path: String
    public let metadata: [String: String]
    /// Tensors in file order of their data offsets.
    public let tensors: [TensorView]
    private let index: [String: Int]

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        try self.init(mapped: file)
    }

    public init(url: URL) throws { try self.init(path: url.path) }

    init(mapped file: MappedFile) throws {
        let path = file.path
        self.path = path
        guard file.size >= 8 else { throw SafetensorsError.truncated(file: path, size: file.size) }
        let n = file.base.loadUnaligned(as: UInt64.self).littleEndian
        guard n <= UInt64(file.size - 8) else {
            throw SafetensorsError.headerLengthPastEnd(file: path, headerLength: n, fileSize: file.size)
        }
        let headerLength = Int(n)
        let headerData = Data(bytes: file.base + 8, count: headerLength)
        let json: JSONValue
        do {
            json = try JSONValue.parse(headerData)
        } catch {
            throw SafetensorsError.invalidHeader(file: path, reason: "not valid JSON")
        }
        guard let dict = json.object else {
            throw SafetensorsError.invalidHeader(file: path, reason: "the header is not a JSON object")
        }
        let dataStart = 8 + headerLength
        let dataSize = file.size - dataStart
        var meta: [String: String] = [:]
        var entries: [(name: String, dtype: DType, shape: [Int], begin: Int, end: Int)] = []
        for (name, value) in dict {
            if name == "__metadata__" {
                guard let m = value.object else {
                    throw SafetensorsError.invalidHeader(file: path, reason: "__metadata__ is not an object of strings")
                }
                for (k, v) in m {
                    guard let s = v.string else {
                        throw SafetensorsError.invalidHeader(file: path, reason: "__metadata__['\(k)'] is not a string")
                    }
                    meta[k] = s
                }
                continue
            }
            guard value.object != nil else {
                throw SafetensorsError.invalidEntry(file: path, tensor: name, reason: "entry is not an object")
            }
            guard let ds = value["dtype"]?.string else {
                throw SafetensorsError.invalidEntry(file: path, tensor: name, reason: "missing string 'dtype'")
            }
            guard let dtype = DType(rawValue: ds), DType.safetensorsTypes.contains(dtype) else {
                throw SafetensorsError.unknownDType(file: path, tensor: name, dtype: ds)
            }
            guard let shapeAny = value["shape"]?.array, let shape = Self.nonNegativeInts(shapeAny) else {
                throw SafetensorsError.invalidEntry(file: path, tensor: name, reason: "'shape' must be an array of non-negative integers")
            }
            guard let offAny = value["data_offsets"]?.array, let offs = Self.nonNegativeInts(offAny), offs.count == 2 else {
                throw SafetensorsError.invalidEntry(file: path, tensor: name, reason: "'data_offsets' must be [begin, end] non-negative integers")
            }
            let (b, en) = (offs[0], offs[1])
            guard b <= en, en <= dataSize else {
                throw SafetensorsError.offsetsOutOfRange(file: path, tensor: name, begin: b, end: en, dataSize: dataSize)
            }
            var numel = 1
            for d in shape {
                let (r, o) = numel.multipliedReportingOverflow(by: d)
                guard !o else { throw SafetensorsError.invalidEntry(file: path, tensor: name, reason: "shape \(shape) overflows") }
                numel = r
            }
            let (expected, o2) = numel.multipliedReportingOverflow(by: dtype.byteSize)
            guard !o2, en - b == expected else {
                throw SafetensorsError.byteCountMismatch(file: path, tensor: name, shape: shape, dtype: ds, expected: expected, actual: en - b)
            }
            entries.append((name, dtype, shape, b, en))
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        for i in entries.indices.dropFirst() where entries[i].begin < entries[i - 1].end {
            throw SafetensorsError.overlap(file: path, tensor: entries[i].name, other: entries[i - 1].name)
        }
        var views: [TensorView] = []
        views.reserveCapacity(entries.count)
        for e in entries {
            let ptr = file.base + dataStart + e.begin
            let count = e.end - e.begin
            if Int(bitPattern: ptr) % e.dtype.byteSize != 0 {
                // The format does not promise alignment; typed loads need it, so copy.
                let owned = OwnedBytes(byteCount: count)
                owned.pointer.copyMemory(from: ptr, byteCount: count)
                views.append(TensorView(name: e.name, dtype: e.dtype, shape: e.shape, data: owned.pointer, byteCount: count, owner: owned))
            } else {
                views.append(TensorView(name: e.name, dtype: e.dtype, shape: e.shape, data: ptr, byteCount: count, owner: file))
            }
        }
        tensors = views
        metadata = meta
        var idx: [String: Int] = [:]
        for (i, v) in views.enumerated() { idx[v.name] = i }
        index = idx
    }

    private static func nonNegativeInts(_ a: [JSONValue]) -> [Int]? {
        var out: [Int] = []
        for v in a {
            guard case let .int(i) = v, i >= 0 else { return nil }
            out.append(i)
        }
        return out
    }

    public var names: [String] { tensors.map(\.name) }
    public subscript(name: String) -> TensorView? { index[name].map { tensors[$0] } }

    public func tensor(_ name: String) throws -> TensorView {
        guard let v = self[name] else { throw SafetensorsError.missingTensor(file: path, tensor: name) }
        return v
    }
}

// MARK: - Writer

/// One tensor to write: raw little-endian bytes in `dtype`.
public struct SafetensorsEntry {
    public var name: String
    public var dtype: DType
    public var shape: [Int]
    public var bytes: Data

    public init(name: String, dtype: DType, shape: [Int], bytes: Data) {
        self.name = name; self.dtype = dtype; self.shape = shape; self.bytes = bytes
    }

    /// f32 values stored as `dtype` (F32, BF16 or F16; rounded to nearest even).
    public init(name: String, shape: [Int], floats: [Float], dtype: DType = .f32) {
        precondition(shape.reduce(1, *) == floats.count, "\(name): \(floats.count) values for shape \(shape)")
        var data: Data
        switch dtype {
        case .f32: data = floats.withUnsafeBytes { Data($0) }
        case .bf16: data = floats.map(floatToBF16).withUnsafeBytes { Data($0) }
        case .f16: data = floats.map(floatToF16).withUnsafeBytes { Data($0) }
        default: preconditionFailure("floats can be stored as F32, BF16 or F16")
        }
        self.init(name: name, dtype: dtype, shape: shape, bytes: data)
    }

    public init(name: String, shape: [Int], int64s: [Int64]) {
        self.init(name: name, dtype: .i64, shape: shape, bytes: int64s.withUnsafeBytes { Data($0) })
    }
}

public enum SafetensorsWriter {
    /// Serialises entries (sorted by name, as the reference library does) with an optional
    /// `__metadata__`, header padded with spaces to 8 bytes.
    public static func serialize(_ entries: [SafetensorsEntry], metadata: [String: String]? = nil) -> Data {
        let sorted = entries.sorted { $0.name < $1.name }
        var header = "{"
        var first = true
        if let metadata, !metadata.isEmpty {
            header += "\"__metadata__\":{" + metadata.keys.sorted().map { "\(JSONValue.quote($0)):\(JSONValue.quote(metadata[$0]!))" }.joined(separator: ",") + "}"
            first = false
        }
        var offset = 0
        for e in sorted {
            precondition(e.bytes.count == e.shape.reduce(1, *) * e.dtype.byteSize, "\(e.name): byte count does not match shape")
            if !first { header += "," }
            first = false
            header += "\(JSONValue.quote(e.name)):{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(e.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + e.bytes.count)]}"
            offset += e.bytes.count
        }
        header += "}"
        var headerBytes = Data(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        var out = Data(capacity: 8 + headerBytes.count + offset)
        var n = UInt64(headerBytes.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(headerBytes)
        for e in sorted { out.append(e.bytes) }
        return out
    }

    /// Writes atomically: a temporary file in the same directory, then rename.
    public static func write(_ entries: [SafetensorsEntry], metadata: [String: String]? = nil, to url: URL) throws {
        do {
            try AtomicFile.write(serialize(entries, metadata: metadata), to: url)
        } catch {
            throw SafetensorsError.writeFailed(file: url.path, reason: "\(error)")
        }
    }

}

// MARK: - Atomic writes

/// Writes files as temp + fsync + rename so a crash never leaves a half-written output.
public enum AtomicFile {
    public static func write(_ data: Data, to url: URL) throws {
        try stream(to: url) { try $0.write(contentsOf: data) }
    }

    /// Streams a file through `body` into a temporary name beside `url`, fsyncs, then renames;
    /// on any error the temporary file is removed and the error rethrown.
    public static func stream(to url: URL, _ body: (FileHandle) throws -> Void) throws {
        let dir = url.deletingLastPathComponent()
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: tmp.path])
        }
        let h = try FileHandle(forWritingTo: tmp)
        do {
            try body(h)
            try h.synchronize()
            try h.close()
        } catch {
            try? h.close()
            try? FileManager.default.removeItem(at: tmp)
            throw error
        }
        if rename(tmp.path, url.path) != 0 {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: tmp)
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path, NSLocalizedDescriptionKey: reason])
        }
    }

    public static func write(_ string: String, to url: URL) throws { try write(Data(string.utf8), to: url) }
}
