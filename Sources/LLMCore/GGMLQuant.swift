import Foundation

// GGML block-quantized formats (GGUF tensors): dequantization into f32, and quantization from
// f32 for the formats a merged model may be written back in (Q8_0, Q4_0, Q4_1).
//
// Bit-exact with ggml's `dequantize_row_*` / the `gguf` Python package's `gguf.quants`: every
// value is computed with the same f32 operations in the same order, and Swift never fuses
// `a * b + c` into an FMA, so the results match numpy's (which never fuses either).
//
// Block layouts (all little-endian; "f16" is an IEEE half; QK = elements per block):
//   Q4_0 (32, 18 B): d f16 | qs[16]          y[j] = d·((qs[j]&15)−8), y[j+16] = d·((qs[j]>>4)−8)
//   Q4_1 (32, 20 B): d f16 | m f16 | qs[16]  y[j] = d·(qs[j]&15) + m,  y[j+16] = d·(qs[j]>>4) + m
//   Q5_0 (32, 22 B): d f16 | qh u32 | qs[16] 5th bit of element i is bit i of qh; value − 16
//   Q5_1 (32, 24 B): d f16 | m f16 | qh u32 | qs[16]
//   Q8_0 (32, 34 B): d f16 | qs[32] int8     y[j] = qs[j]·d
//   Q4_K (256, 144 B): d f16 | dmin f16 | scales[12] (8 × 6-bit scale + 8 × 6-bit min) | qs[128]
//        sub-block 2p / 2p+1 (32 values each) = low / high nibbles of qs[32p ..< 32p+32];
//        y = (d·sc)·q − dmin·m
//   Q5_K (256, 176 B): d | dmin | scales[12] | qh[32] | qs[128]; 5th bit of sub-block s,
//        element l is bit s of qh[l]
//   Q6_K (256, 210 B): ql[128] | qh[64] | scales[16] int8 | d f16; 16 groups of 16 values,
//        y = (d·scales[g])·(q − 32)

/// Values per parallel work item (whole blocks); tensors up to 4 items stay on this thread.
private let dequantChunkValues = 1 << 16

/// Dequantizes `count` values (a multiple of `dtype.blockElements`) stored in GGML block format
/// `dtype` at `src` into `dst`. `src` needs no alignment.
public func dequantize(_ src: UnsafeRawPointer, dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
    precondition(dtype.isQuantized, "dequantize: \(dtype.rawValue) is not a GGML block-quantized type")
    let be = dtype.blockElements, bb = dtype.blockBytes
    precondition(count >= 0 && count % be == 0, "dequantize(\(dtype.rawValue)): \(count) values is not a whole number of \(be)-value blocks")
    let kernel: (UnsafeRawPointer, UnsafeMutablePointer<Float>, Int) -> Void
    switch dtype {
    case .q4_0: kernel = dequantizeQ4_0
    case .q4_1: kernel = dequantizeQ4_1
    case .q5_0: kernel = dequantizeQ5_0
    case .q5_1: kernel = dequantizeQ5_1
    case .q8_0: kernel = dequantizeQ8_0
    case .q4_K: kernel = dequantizeQ4_K
    case .q5_K: kernel = dequantizeQ5_K
    case .q6_K: kernel = dequantizeQ6_K
    default: preconditionFailure("dequantize: \(dtype.rawValue) is not a GGML block-quantized type")
    }
    let blocks = count / be
    let chunkBlocks = max(1, dequantChunkValues / be)
    if blocks > 4 * chunkBlocks {
        let n = (blocks + chunkBlocks - 1) / chunkBlocks
        DispatchQueue.concurrentPerform(iterations: n) { c in
            let lo = c * chunkBlocks, hi = min(blocks, lo + chunkBlocks)
            kernel(src + lo * bb, dst + lo * be, hi - lo)
        }
    } else if blocks > 0 {
        kernel(src, dst, blocks)
    }
}

// MARK: - Per-format kernels (n whole blocks from p into y)

/// A block's f16 scale. The bit-level widening (exact, as `Float(Float16)`): the package builds
/// for baseline x86-64, where `Float(Float16)` is a libgcc call (`__extendhfsf2`, 1.6% of a
/// Q8_0 prefill).
@inline(__always) private func loadF16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    f16ToFloatFast(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

@inline(__always) private func loadU32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 {
    UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
}

private func dequantizeQ4_0(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var p = p, y = y
    for _ in 0..<n {
        let d = loadF16(p, 0)
        let qs = (p + 2).assumingMemoryBound(to: UInt8.self)
        for j in 0..<16 {
            let b = qs[j]
            y[j] = d * Float(Int32(b & 0x0F) - 8)
            y[j + 16] = d * Float(Int32(b >> 4) - 8)
        }
        p += 18; y += 32
    }
}

private func dequantizeQ4_1(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var p = p, y = y
    for _ in 0..<n {
        let d = loadF16(p, 0), m = loadF16(p, 2)
        let qs = (p + 4).assumingMemoryBound(to: UInt8.self)
        for j in 0..<16 {
            let b = qs[j]
            y[j] = d * Float(b & 0x0F) + m
            y[j + 16] = d * Float(b >> 4) + m
        }
        p += 20; y += 32
    }
}

private func dequantizeQ5_0(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var p = p, y = y
    for _ in 0..<n {
        let d = loadF16(p, 0)
        let qh = loadU32(p, 2)
        let qs = (p + 6).assumingMemoryBound(to: UInt8.self)
        for j in 0..<16 {
            let b = UInt32(qs[j])
            let h0 = ((qh >> UInt32(j)) & 1) << 4, h1 = ((qh >> UInt32(j + 16)) & 1) << 4
            y[j] = d * Float(Int32(bitPattern: (b & 0x0F) | h0) - 16)
            y[j + 16] = d * Float(Int32(bitPattern: (b >> 4) | h1) - 16)
        }
        p += 22; y += 32
    }
}

private func dequantizeQ5_1(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var p = p, y = y
    for _ in 0..<n {
        let d = loadF16(p, 0), m = loadF16(p, 2)
        let qh = loadU32(p, 4)
        let qs = (p + 8).assumingMemoryBound(to: UInt8.self)
        for j in 0..<16 {
            let b = UInt32(qs[j])
            let h0 = ((qh >> UInt32(j)) & 1) << 4, h1 = ((qh >> UInt32(j + 16)) & 1) << 4
            y[j] = d * Float((b & 0x0F) | h0) + m
            y[j + 16] = d * Float((b >> 4) | h1) + m
        }
        p += 24; y += 32
    }
}

private func dequantizeQ8_0(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var p = p, y = y
    for _ in 0..<n {
        let d = loadF16(p, 0)
        let qs = (p + 2).assumingMemoryBound(to: Int8.self)
        for j in 0..<32 { y[j] = Float(qs[j]) * d }
        p += 34; y += 32
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` (0..<8) from the 12
/// packed bytes at `s`.
@inline(__always) private func scaleMinK4(_ j: Int, _ s: UnsafePointer<UInt8>) -> (Float, Float) {
    if j < 4 {
        return (Float(s[j] & 63), Float(s[j + 4] & 63))
    }
    let sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4)
    let m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4)
    return (Float(sc), Float(m))
}

private func dequantizeQ4_K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var p = p, y = y
    for _ in 0..<n {
        let d = loadF16(p, 0), dmin = loadF16(p, 2)
        let s = (p + 4).assumingMemoryBound(to: UInt8.self)
        var q = (p + 16).assumingMemoryBound(to: UInt8.self)
        var out = y
        for pair in 0..<4 {
            let (sc1, m1) = scaleMinK4(2 * pair, s), (sc2, m2) = scaleMinK4(2 * pair + 1, s)
            let d1 = d * sc1, dm1 = dmin * m1, d2 = d * sc2, dm2 = dmin * m2
            for l in 0..<32 {
                let b = q[l]
                out[l] = d1 * Float(b & 0x0F) - dm1
                out[l + 32] = d2 * Float(b >> 4) - dm2
            }
            q += 32; out += 64
        }
        p += 144; y += 256
    }
}

private func dequantizeQ5_K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var p = p, y = y
    for _ in 0..<n {
        let d = loadF16(p, 0), dmin = loadF16(p, 2)
        let s = (p + 4).assumingMemoryBound(to: UInt8.self)
        let qh = (p + 16).assumingMemoryBound(to: UInt8.self)
        var ql = (p + 48).assumingMemoryBound(to: UInt8.self)
        var out = y
        for pair in 0..<4 {
            let (sc1, m1) = scaleMinK4(2 * pair, s), (sc2, m2) = scaleMinK4(2 * pair + 1, s)
            let d1 = d * sc1, dm1 = dmin * m1, d2 = d * sc2, dm2 = dmin * m2
            let sh1 = UInt8(2 * pair), sh2 = UInt8(2 * pair + 1)
            for l in 0..<32 {
                let b = ql[l], h = qh[l]
                out[l] = d1 * Float((b & 0x0F) | (((h >> sh1) & 1) << 4)) - dm1
                out[l + 32] = d2 * Float((b >> 4) | (((h >> sh2) & 1) << 4)) - dm2
            }
            ql += 32; out += 64
        }
        p += 176; y += 256
    }
}

private func dequantizeQ6_K(_ p: UnsafeRawPointer, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var p = p, y = y
    for _ in 0..<n {
        let d = loadF16(p, 208)
        var ql = p.assumingMemoryBound(to: UInt8.self)
        var qh = (p + 128).assumingMemoryBound(to: UInt8.self)
        var sc = (p + 192).assumingMemoryBound(to: Int8.self)
        var out = y
        for _ in 0..<2 {  // two halves of 128 values
            for g in 0..<2 {  // l in 16g ..< 16g+16 uses scale groups g, g+2, g+4, g+6
                let s1 = d * Float(sc[g]), s2 = d * Float(sc[g + 2])
                let s3 = d * Float(sc[g + 4]), s4 = d * Float(sc[g + 6])
                for l in (16 * g)..<(16 * g + 16) {
                    let a = ql[l], b = ql[l + 32], h = qh[l]
                    let q1 = Int32((a & 0x0F) | ((h & 3) << 4)) - 32
                    let q2 = Int32((b & 0x0F) | (((h >> 2) & 3) << 4)) - 32
                    let q3 = Int32((a >> 4) | (((h >> 4) & 3) << 4)) - 32
                    let q4 = Int32((b >> 4) | ((h >> 6) << 4)) - 32
                    out[l] = s1 * Float(q1)
                    out[l + 32] = s2 * Float(q2)
                    out[l + 64] = s3 * Float(q3)
                    out[l + 96] = s4 * Float(q4)
                }
            }
            ql += 64; qh += 32; sc += 8; out += 128
        }
        p += 210; y += 256
    }
}

// MARK: - Quantization

/// Whether `quantize(_:dtype:count:into:)` can write `dtype`.
public func canQuantize(_ dtype: DType) -> Bool {
    dtype == .q8_0 || dtype == .q4_0 || dtype == .q4_1
}

/// Quantizes `count` f32 values (a multiple of 32) into GGML blocks of `dtype` (Q8_0, Q4_0 or
/// Q4_1) at `dst` (`dtype.storageBytes(elements: count)` bytes, no alignment needed).
///
/// Bit-exact with `gguf.quants.quantize` of the Python `gguf` package (all arithmetic in f32,
/// nothing fused, f16 scales rounded to nearest-even):
/// - Q8_0: d = max|x| / 127, q = round(x · (1/d)) with rounding half AWAY from zero (the
///   package's `np_roundf`, not `np.round`'s half-to-even; this is also what ggml's C
///   `quantize_row_q8_0_ref` does with `roundf`).
/// - Q4_0: d = x[argmax |x|] / −8 (first index on ties), q = min(15, trunc(x · (1/d) + 8.5)).
/// - Q4_1: d = (max − min) / 15, q = min(15, trunc((x − min) · (1/d) + 0.5)), m = min.
///   Both truncate like ggml's C reference (`(int8_t)(x + 8.5f)`), which agrees with the
///   package except where a C compiler contracts `x*id + 8.5f` into an FMA; we never fuse.
/// In all three, 1/d is replaced by 0 when d == 0.
public func quantize(_ src: UnsafePointer<Float>, dtype: DType, count: Int, into dst: UnsafeMutableRawPointer) {
    precondition(canQuantize(dtype), "quantize: writing \(dtype.rawValue) is not supported (only Q8_0, Q4_0, Q4_1)")
    precondition(count >= 0 && count % 32 == 0, "quantize(\(dtype.rawValue)): \(count) values is not a whole number of 32-value blocks")
    let blocks = count / 32
    switch dtype {
    case .q8_0: for b in 0..<blocks { quantizeBlockQ8_0(src + 32 * b, dst + 34 * b) }
    case .q4_0: for b in 0..<blocks { quantizeBlockQ4_0(src + 32 * b, dst + 18 * b) }
    case .q4_1: for b in 0..<blocks { quantizeBlockQ4_1(src + 32 * b, dst + 20 * b) }
    default: preconditionFailure("unreachable")
    }
}

@inline(__always) private func storeF16(_ x: Float, _ p: UnsafeMutableRawPointer, _ offset: Int) {
    p.storeBytes(of: floatToF16(x).littleEndian, toByteOffset: offset, as: UInt16.self)
}

/// `trunc(v)` as a 4-bit code, clipped to 0...15 (NaN → 0) without trapping.
@inline(__always) private func nibble(_ v: Float) -> UInt8 {
    let t = v.rounded(.towardZero)
    return t >= 15 ? 15 : (t > 0 ? UInt8(t) : 0)
}

private func quantizeBlockQ8_0(_ x: UnsafePointer<Float>, _ p: UnsafeMutableRawPointer) {
    var amax: Float = 0
    for j in 0..<32 { amax = max(amax, abs(x[j])) }
    let d = amax / 127
    let id: Float = d == 0 ? 0 : 1 / d
    storeF16(d, p, 0)
    for j in 0..<32 {
        let v = (x[j] * id).rounded(.toNearestOrAwayFromZero)
        let q: Int8 = v >= 127 ? 127 : (v <= -128 ? -128 : (v.isNaN ? 0 : Int8(v)))
        p.storeBytes(of: q, toByteOffset: 2 + j, as: Int8.self)
    }
}

private func quantizeBlockQ4_0(_ x: UnsafePointer<Float>, _ p: UnsafeMutableRawPointer) {
    var amax = abs(x[0]), vmax = x[0]  // numpy's argmax: the first index of the largest |x|
    for j in 1..<32 where abs(x[j]) > amax { amax = abs(x[j]); vmax = x[j] }
    let d = vmax / -8
    let id: Float = d == 0 ? 0 : 1 / d
    storeF16(d, p, 0)
    for j in 0..<16 {
        let lo = nibble(x[j] * id + 8.5), hi = nibble(x[j + 16] * id + 8.5)
        p.storeBytes(of: lo | (hi << 4), toByteOffset: 2 + j, as: UInt8.self)
    }
}

private func quantizeBlockQ4_1(_ x: UnsafePointer<Float>, _ p: UnsafeMutableRawPointer) {
    var vmin = x[0], vmax = x[0]
    for j in 1..<32 { vmin = min(vmin, x[j]); vmax = max(vmax, x[j]) }
    let d = (vmax - vmin) / 15
    let id: Float = d == 0 ? 0 : 1 / d
    storeF16(d, p, 0)
    storeF16(vmin, p, 2)
    for j in 0..<16 {
        let lo = nibble((x[j] - vmin) * id + 0.5), hi = nibble((x[j + 16] - vmin) * id + 0.5)
        p.storeBytes(of: lo | (hi << 4), toByteOffset: 4 + j, as: UInt8.self)
    }
}
