import Foundation
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Non-finite values

/// A NaN or ±Inf found in a tensor: which tensor, where, and what.
public struct NonFiniteValue: Sendable, Equatable, CustomStringConvertible {
    public let tensor: String
    /// Flat (row-major) index of the first non-finite element.
    public let index: Int
    public let value: Float
    /// How many elements of the tensor are non-finite (when counted; otherwise 1).
    public var count: Int

    public init(tensor: String, index: Int, value: Float, count: Int = 1) {
        self.tensor = tensor; self.index = index; self.value = value; self.count = count
    }

    public var description: String {
        "tensor '\(tensor)' holds \(value.isNaN ? "NaN" : value > 0 ? "+Inf" : "-Inf") at element \(index)"
            + (count > 1 ? " (\(count) non-finite elements)" : "")
    }
}

/// Weights that hold NaN or Inf: bad input (exit 2), named by file and tensor. A model or
/// adapter with one non-finite weight makes every logit NaN, so training "diverges" at step 1
/// and generation emits garbage; this says which tensor of which file to fix instead.
public struct NonFiniteWeightsError: Error, CustomStringConvertible {
    /// The file or directory the weights came from.
    public let source: String
    /// What the weights are ("the base model", "the adapter", "the merged weights").
    public let what: String
    public let value: NonFiniteValue
    /// What the scan was prompted by (e.g. "the logits of the first forward are NaN"), if anything.
    public let context: String?

    public init(source: String, what: String, value: NonFiniteValue, context: String? = nil) {
        self.source = source; self.what = what; self.value = value; self.context = context
    }

    public var description: String {
        "\(source): \(what) \(value); expected finite numbers" + (context.map { " (\($0))" } ?? "")
    }
}

/// Scans stored tensors for NaN/Inf without widening them where the dtype allows (the bit
/// patterns of f32, bf16 and f16 are checked in place; block-quantized data is dequantized a
/// few rows at a time).
public enum NonFiniteScan {
    /// The first non-finite element of `view`, or nil.
    public static func first(in view: TensorView) -> NonFiniteValue? {
        let n = view.count
        guard n > 0 else { return nil }
        switch view.dtype {
        case .f32:
            let p = view.data.assumingMemoryBound(to: UInt32.self)
            for i in 0..<n where p[i] & 0x7F80_0000 == 0x7F80_0000 {
                return NonFiniteValue(tensor: view.name, index: i, value: Float(bitPattern: p[i]))
            }
            return nil
        case .bf16:
            let p = view.data.assumingMemoryBound(to: UInt16.self)
            for i in 0..<n where p[i] & 0x7F80 == 0x7F80 {
                return NonFiniteValue(tensor: view.name, index: i, value: Float(bitPattern: UInt32(p[i]) << 16))
            }
            return nil
        case .f16:
            let p = view.data.assumingMemoryBound(to: UInt16.self)
            for i in 0..<n where p[i] & 0x7C00 == 0x7C00 {
                return NonFiniteValue(tensor: view.name, index: i, value: p[i] & 0x03FF == 0 ? (p[i] & 0x8000 == 0 ? .infinity : -.infinity) : .nan)
            }
            return nil
        case .f64:
            let p = view.data.assumingMemoryBound(to: Double.self)
            for i in 0..<n where !p[i].isFinite { return NonFiniteValue(tensor: view.name, index: i, value: Float(p[i])) }
            return nil
        default:
            guard view.dtype.isQuantized, let cols = view.shape.last, cols > 0, cols % view.dtype.blockElements == 0 else { return nil }
            let rows = n / cols
            let rowBytes = view.dtype.storageBytes(elements: cols)
            let rowsPerChunk = max(1, (1 << 16) / cols)
            var scratch = [Float](repeating: 0, count: rowsPerChunk * cols)
            var r = 0
            while r < rows {
                let k = min(rowsPerChunk, rows - r)
                let found: Int? = scratch.withUnsafeMutableBufferPointer { buf in
                    widenToFloat(view.data + r * rowBytes, dtype: view.dtype, count: k * cols, into: buf.baseAddress!)
                    return buf[0..<(k * cols)].firstIndex { !$0.isFinite }
                }
                if let j = found { return NonFiniteValue(tensor: view.name, index: r * cols + j, value: scratch[j]) }
                r += k
            }
            return nil
        }
    }

    /// The first non-finite element of `values` (named `tensor`), counting all of them.
    public static func first(in values: UnsafeBufferPointer<Float>, tensor: String) -> NonFiniteValue? {
        guard let i = values.firstIndex(where: { !$0.isFinite }) else { return nil }
        let count = values[i...].reduce(0) { $0 + ($1.isFinite ? 0 : 1) }
        return NonFiniteValue(tensor: tensor, index: i, value: values[i], count: count)
    }

    public static func first(in values: [Float], tensor: String) -> NonFiniteValue? {
        values.withUnsafeBufferPointer { first(in: $0, tensor: tensor) }
    }
}

extension ModelWeights {
    /// The first non-finite weight, tensors in name order; nil when every weight is finite.
    /// A full pass over the weights: callers run it when a NaN has already appeared (the first
    /// forward's loss or logits), not on every load.
    public func firstNonFinite() -> NonFiniteValue? {
        for name in views.keys.sorted() {
            let v = views[name]!
            guard v.dtype.isFloatingPoint else { continue }
            if let hit = NonFiniteScan.first(in: v) { return hit }
        }
        return nil
    }

    /// Throws `NonFiniteWeightsError` naming the first non-finite base weight, if any.
    public func checkFinite(context: String? = nil) throws {
        if let hit = firstNonFinite() {
            throw NonFiniteWeightsError(source: source, what: "the base model's", value: hit, context: context)
        }
    }
}

extension TransformerModel {
    /// Generation's logits must be finite: NaN logits decode as garbage (`⁇`) with nothing to
    /// say why. When they are not, the base weights are scanned (one pass, only then) and the
    /// first non-finite tensor named; adapters are checked when they are loaded.
    /// - Throws: `NonFiniteWeightsError`, or `ModelError.invalidInput` when every base weight is
    ///   finite (an adapter or the activations overflowed).
    public func checkFiniteLogits(_ logits: [[Float]]) throws {
        var finite = true
        for row in logits where finite {
            row.withUnsafeBufferPointer { b in
                for x in b where !x.isFinite { finite = false; break }
            }
        }
        guard !finite else { return }
        try weights.checkFinite(context: "found because the logits were not finite")
        throw ModelError.invalidInput("\(weights.source): the logits are not finite (NaN/Inf) although every base weight is finite: "
            + "the adapter or the activations overflowed")
    }
}

// MARK: - Readable Foundation errors

/// One-line descriptions of Foundation's errors, for messages that name a file: `NSError`s of
/// the Cocoa and POSIX domains (with the path from their userInfo), and `DecodingError` /
/// `EncodingError` (with the field path), instead of their raw dumps.
public enum ErrorText {
    /// A readable reason for `error`, without the file name; `path` (when given) is used to tell
    /// a directory or a missing parent from other failures.
    public static func reason(_ error: Error, path: String? = nil) -> String {
        switch error {
        case let e as DecodingError: return decoding(e)
        case let e as EncodingError: return encoding(e)
        default: break
        }
        let ns = error as NSError
        guard ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain else { return "\(error)" }
        let file = path ?? self.path(of: error)
        var posix: Int32?
        if ns.domain == NSPOSIXErrorDomain { posix = Int32(ns.code) }
        if let u = ns.userInfo[NSUnderlyingErrorKey] as? NSError, u.domain == NSPOSIXErrorDomain { posix = Int32(u.code) }
        if let file {
            var isDir: ObjCBool = false
            let exists = FileManager.default.fileExists(atPath: file, isDirectory: &isDir)
            if posix == ENOTDIR || (!exists && posix == ENOENT) || ns.code == CocoaError.fileNoSuchFile.rawValue
                || ns.code == CocoaError.fileWriteUnknown.rawValue && !exists {
                if let blocker = fileInPath(file) { return "\(blocker) is a file, not a directory" }
            }
            if exists, isDir.boolValue, ns.code == CocoaError.fileReadUnknown.rawValue || posix == EISDIR {
                return "is a directory, not a file"
            }
        }
        if let posix {
            let text = String(cString: strerror(posix))   // "No such file or directory" → "no such …", as the rest
            return text.prefix(1).lowercased() + text.dropFirst()
        }
        switch CocoaError.Code(rawValue: ns.code) {
        case .fileNoSuchFile, .fileReadNoSuchFile: return "no such file or directory"
        case .fileReadNoPermission, .fileWriteNoPermission: return "permission denied"
        case .fileWriteOutOfSpace: return "no space left on the device"
        case .fileWriteFileExists: return "a file of that name already exists"
        case .fileReadCorruptFile: return "the file is corrupt or not in the expected format"
        case .fileReadInapplicableStringEncoding, .fileWriteInapplicableStringEncoding: return "not valid UTF-8 text"
        case .fileReadTooLarge: return "the file is too large"
        default: return ns.localizedFailureReason ?? ns.localizedDescription
        }
    }

    /// `error` as one line naming its file: typed errors of this package as they describe
    /// themselves; Foundation errors as `PATH: reason` (the path from their userInfo).
    public static func describe(_ error: Error) -> String {
        switch error {
        case is DecodingError, is EncodingError: return reason(error)
        default: break
        }
        let ns = error as NSError
        guard ns.domain == NSCocoaErrorDomain || ns.domain == NSPOSIXErrorDomain else { return "\(error)" }
        let file = path(of: error)
        return (file.map { "\($0): " } ?? "") + reason(error, path: file)
    }

    /// The file an `NSError` is about (`NSFilePath`, `NSURL`, or its underlying error's).
    public static func path(of error: Error) -> String? {
        let ns = error as NSError
        if let p = ns.userInfo[NSFilePathErrorKey] as? String { return p }
        if let u = ns.userInfo[NSURLErrorKey] as? URL { return u.path }
        if let u = ns.userInfo[NSUnderlyingErrorKey] as? NSError, u !== ns { return path(of: u) }
        return nil
    }

    /// The nearest existing ancestor of `path` that is a file rather than a directory (why a
    /// directory cannot be created there).
    public static func fileInPath(_ path: String) -> String? {
        var url = URL(fileURLWithPath: path).deletingLastPathComponent()
        while url.path != "/" && !url.path.isEmpty {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) { return isDir.boolValue ? nil : url.path }
            url = url.deletingLastPathComponent()
        }
        return nil
    }

    /// `a.b[2].c` from a coding path.
    public static func fieldPath(_ path: [CodingKey]) -> String {
        var out = ""
        for k in path {
            if let i = k.intValue, k.stringValue.hasPrefix("Index") { out += "[\(i)]" } else { out += (out.isEmpty ? "" : ".") + k.stringValue }
        }
        return out
    }

    static func decoding(_ e: DecodingError) -> String {
        func at(_ c: DecodingError.Context) -> String { c.codingPath.isEmpty ? "the top level" : "field '\(fieldPath(c.codingPath))'" }
        switch e {
        case let .typeMismatch(type, c):
            return "\(at(c)): expected \(typeName(type))" + found(c.debugDescription)
        case let .valueNotFound(type, c):
            return "\(at(c)): expected \(typeName(type)), found null"
        case let .keyNotFound(key, c):
            let parent = c.codingPath.isEmpty ? "" : " in '\(fieldPath(c.codingPath))'"
            return "field '\(key.stringValue)' is missing\(parent)"
        case let .dataCorrupted(c):
            if c.codingPath.isEmpty {
                let detail = (c.underlyingError as NSError?)?.userInfo[NSDebugDescriptionErrorKey] as? String
                return "not valid JSON" + (detail.map { " (\($0))" } ?? "")
            }
            return "\(at(c)): \(c.debugDescription)"
        @unknown default:
            return "\(e)"
        }
    }

    static func encoding(_ e: EncodingError) -> String {
        switch e {
        case let .invalidValue(value, c):
            let field = c.codingPath.isEmpty ? "a value" : "field '\(fieldPath(c.codingPath))'"
            return "\(field) cannot be written as JSON: \(value) is not a finite number or valid value"
        @unknown default:
            return "\(e)"
        }
    }

    static func typeName(_ t: Any.Type) -> String {
        switch t {
        case is Int.Type, is Int64.Type, is Int32.Type, is UInt64.Type, is UInt.Type: return "an integer"
        case is Double.Type, is Float.Type: return "a number"
        case is String.Type: return "a string"
        case is Bool.Type: return "true or false"
        default:
            let n = "\(t)"
            if n.hasPrefix("Array") || n.hasPrefix("[") { return "a JSON array" }
            if n.hasPrefix("Dictionary") { return "a JSON object" }
            return "a JSON object (\(n))"
        }
    }

    /// ", found a string" from Foundation's "Expected to decode Int but found a string instead."
    static func found(_ debug: String) -> String {
        guard let r = debug.range(of: "but found ") else { return "" }
        var s = String(debug[r.upperBound...])
        if s.hasSuffix(" instead.") { s.removeLast(" instead.".count) }
        return ", found " + s
    }
}
