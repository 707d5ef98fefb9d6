import Foundation

/// Element types of tensors: the safetensors names, plus the GGML block-quantized formats of
/// GGUF files (which hold whole blocks of `blockElements` values in `blockBytes` bytes).
public enum DType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", bool = "BOOL"
    case q4_0 = "Q4_0", q4_1 = "Q4_1", q5_0 = "Q5_0", q5_1 = "Q5_1", q8_0 = "Q8_0"
    case q4_K = "Q4_K", q5_K = "Q5_K", q6_K = "Q6_K"

    /// The safetensors dtypes (quantized formats exist only in GGUF files).
    public static let safetensorsTypes: [DType] = [.f64, .f32, .f16, .bf16, .i64, .i32, .i16, .i8, .u8, .bool]

    /// Bytes per element; only for element (non-block) types.
    public var byteSize: Int {
        switch self {
        case .f64, .i64: return 8
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8, .u8, .bool: return 1
        default: preconditionFailure("\(rawValue) is block-quantized: use storageBytes(elements:)")
        }
    }

    public var isQuantized: Bool { blockElements > 1 }

    /// Elements per block (1 for element types; 32 or 256 for GGML quantized formats).
    public var blockElements: Int {
        switch self {
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: return 32
        case .q4_K, .q5_K, .q6_K: return 256
        default: return 1
        }
    }

    /// Bytes per block (ggml's `type_size`).
    public var blockBytes: Int {
        switch self {
        case .q4_0: return 18
        case .q4_1: return 20
        case .q5_0: return 22
        case .q5_1: return 24
        case .q8_0: return 34
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        default: return byteSize
        }
    }

    /// Bytes that `elements` values occupy (`elements` must be a multiple of `blockElements`).
    public func storageBytes(elements: Int) -> Int { elements / blockElements * blockBytes }

    /// Float-valued weights: IEEE types and the quantized formats.
    public var isFloatingPoint: Bool { self == .f64 || self == .f32 || self == .f16 || self == .bf16 || isQuantized }

    /// The name transformers writes in config.json (`torch_dtype` / `dtype`).
    public var torchName: String {
        switch self {
        case .f64: return "float64"
        case .f32: return "float32"
        case .f16: return "float16"
        case .bf16: return "bfloat16"
        case .i64: return "int64"
        case .i32: return "int32"
        case .i16: return "int16"
        case .i8: return "int8"
        case .u8: return "uint8"
        case .bool: return "bool"
        default: return rawValue.lowercased()
        }
    }
}

// MARK: - Half-precision conversions

/// bfloat16 → f32 is exact: the bf16 bits are the top half of the f32 bits.
@inline(__always) public func bf16ToFloat(_ bits: UInt16) -> Float {
    Float(bitPattern: UInt32(bits) << 16)
}

/// f32 → bfloat16 with round-to-nearest-even, NaN kept quiet (as PyTorch's `.to(torch.bfloat16)`).
@inline(__always) public func floatToBF16(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    if x.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x40) }
    let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
}

@inline(__always) public func f16ToFloat(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }
@inline(__always) public func floatToF16(_ x: Float) -> UInt16 { Float16(x).bitPattern }

/// Widens `count` elements of `dtype` at `src` to f32 at `dst`.
public func widenToFloat(_ src: UnsafeRawPointer, dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
    switch dtype {
    case .f32:
        dst.update(from: src.assumingMemoryBound(to: Float.self), count: count)
    case .bf16:
        // Chunked so both cores share big tensors; tiny ones stay on this thread.
        let chunk = 1 << 16
        if count > 4 * chunk {
            let n = (count + chunk - 1) / chunk
            DispatchQueue.concurrentPerform(iterations: n) { c in
                let lo = c * chunk, hi = min(count, lo + chunk)
                widenBF16(src + 2 * lo, count: hi - lo, into: dst + lo)
            }
        } else {
            widenBF16(src, count: count, into: dst)
        }
    case .f16:
        let chunk = 1 << 16
        if count > 4 * chunk {
            let n = (count + chunk - 1) / chunk
            DispatchQueue.concurrentPerform(iterations: n) { c in
                let lo = c * chunk, hi = min(count, lo + chunk)
                widenF16(src + 2 * lo, count: hi - lo, into: dst + lo)
            }
        } else {
            widenF16(src, count: count, into: dst)
        }
    case .f64:
        let s = src.assumingMemoryBound(to: Double.self)
        for i in 0..<count { dst[i] = Float(s[i]) }
    case .i64:
        let s = src.assumingMemoryBound(to: Int64.self)
        for i in 0..<count { dst[i] = Float(s[i]) }
    case .i32:
        let s = src.assumingMemoryBound(to: Int32.self)
        for i in 0..<count { dst[i] = Float(s[i]) }
    case .i16:
        let s = src.assumingMemoryBound(to: Int16.self)
        for i in 0..<count { dst[i] = Float(s[i]) }
    case .i8:
        let s = src.assumingMemoryBound(to: Int8.self)
        for i in 0..<count { dst[i] = Float(s[i]) }
    case .u8, .bool:
        let s = src.assumingMemoryBound(to: UInt8.self)
        for i in 0..<count { dst[i] = Float(s[i]) }
    case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K:
        dequantize(src, dtype: dtype, count: count, into: dst)
    }
}

// MARK: - Vectorized widening

/// bf16 → f32 (exact): each value becomes the top half of an f32. Eight at a time by
/// interleaving zero halves (`punpcklwd`/`punpckhwd`), which LLVM emits for this shuffle
/// pattern; a plain scalar loop is not vectorized on the baseline x86-64 target.
@inline(__always) func widenBF16(_ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
    var i = 0
    let z: UInt16 = 0
    while i + 8 <= count {
        let v = src.loadUnaligned(fromByteOffset: 2 * i, as: SIMD8<UInt16>.self)
        let lo = SIMD8<UInt16>(z, v[0], z, v[1], z, v[2], z, v[3])
        let hi = SIMD8<UInt16>(z, v[4], z, v[5], z, v[6], z, v[7])
        UnsafeMutableRawPointer(dst + i).storeBytes(of: unsafeBitCast(lo, to: SIMD4<Float>.self), as: SIMD4<Float>.self)
        UnsafeMutableRawPointer(dst + i + 4).storeBytes(of: unsafeBitCast(hi, to: SIMD4<Float>.self), as: SIMD4<Float>.self)
        i += 8
    }
    while i < count {
        dst[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        i += 1
    }
}

/// IEEE half → f32 (exact) with integer operations, eight at a time: |h| bits << 13 read as f32
/// times 2¹¹² rebiases the exponent (subnormal halves included), times ±1 for the sign. That
/// maps inf/NaN to finite values, so a span holding any goes through the scalar converter.
/// (`Float(Float16)` is a library call per value without F16C.)
@inline(__always) func widenF16(_ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>) {
    var i = 0
    if !containsNonFiniteF16(src, count: count) {
        let z: UInt16 = 0
        @inline(__always) func half4(_ h: SIMD4<UInt32>) -> SIMD4<Float> {
            let magnitude = unsafeBitCast((h & 0x7FFF) &<< 13, to: SIMD4<Float>.self) * 0x1p112
            let sign = unsafeBitCast(((h & 0x8000) &<< 16) | 0x3F80_0000, to: SIMD4<Float>.self)
            return magnitude * sign
        }
        while i + 8 <= count {
            let v = src.loadUnaligned(fromByteOffset: 2 * i, as: SIMD8<UInt16>.self)
            let lo = unsafeBitCast(SIMD8<UInt16>(v[0], z, v[1], z, v[2], z, v[3], z), to: SIMD4<UInt32>.self)
            let hi = unsafeBitCast(SIMD8<UInt16>(v[4], z, v[5], z, v[6], z, v[7], z), to: SIMD4<UInt32>.self)
            UnsafeMutableRawPointer(dst + i).storeBytes(of: half4(lo), as: SIMD4<Float>.self)
            UnsafeMutableRawPointer(dst + i + 4).storeBytes(of: half4(hi), as: SIMD4<Float>.self)
            i += 8
        }
    }
    while i < count {
        dst[i] = f16ToFloatFast(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        i += 1
    }
}

/// Whether `count` halves at `src` hold an inf or NaN (exponent all ones): `(h & 0x7FFF) + 0x400`
/// carries into bit 15 exactly then, two halves per 32-bit lane.
func containsNonFiniteF16(_ src: UnsafeRawPointer, count: Int) -> Bool {
    let bytes = 2 * count
    var flag = SIMD4<UInt32>()
    let mask = SIMD4<UInt32>(repeating: 0x7FFF_7FFF), carry = SIMD4<UInt32>(repeating: 0x0400_0400)
    var o = 0
    while o + 16 <= bytes {
        flag |= (src.loadUnaligned(fromByteOffset: o, as: SIMD4<UInt32>.self) & mask) &+ carry
        o += 16
    }
    if (flag & 0x8000_8000) != .zero { return true }
    while o < bytes {
        if (src.loadUnaligned(fromByteOffset: o, as: UInt16.self) & 0x7FFF) >= 0x7C00 { return true }
        o += 2
    }
    return false
}
