import Foundation
import LLMCore
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The stored-dtype GEMV (decode path) against the path it replaces: widen the weights to f32,
/// then `cblas_sgemm`. Equal within 1e-5 relative to the output's scale Σ|x·w| (float32
/// summation order, and block scales applied to block sums), for every dtype, sizes that are not
/// multiples of the SIMD width, several input rows, unaligned weight bytes, several matrices per
/// call, strided outputs and both the inline and the parallel split. Every test of `multiply` runs
/// over each kernel set this CPU has (`GEMV.availableKernelSets`: AVX-512, AVX2, portable), so a
/// broken vector tail or block decoder in any of them fails here whatever `FINETUNE_ISA` says.
/// Block formats run `.exact` here unless a test names both precisions; GEMVQuantDotTests covers
/// `.int8` (ggml's 8-bit activations) against its own reference.
@Suite struct GEMVTests {
    static let dtypes: [DType] = [.f32, .bf16, .f16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K]

    /// `n × k` weights of `dtype` (stored bytes), realistic magnitudes; block formats get valid
    /// f16 scale fields over random payload bytes when they cannot be quantized from f32.
    static func weightBytes(_ dtype: DType, n: Int, k: Int, seed: UInt64) -> [UInt8] {
        let count = n * k
        let values = randomFloats(count, seed: seed, scale: 0.05)
        var bytes = [UInt8](repeating: 0, count: dtype.storageBytes(elements: count))
        bytes.withUnsafeMutableBytes { raw in
            let p = raw.baseAddress!
            switch dtype {
            case .f32: p.copyMemory(from: values, byteCount: count * 4)
            case .bf16: for i in 0..<count { p.storeBytes(of: floatToBF16(values[i]), toByteOffset: 2 * i, as: UInt16.self) }
            case .f16: for i in 0..<count { p.storeBytes(of: floatToF16(values[i]), toByteOffset: 2 * i, as: UInt16.self) }
            default:
                if canQuantize(dtype) {
                    values.withUnsafeBufferPointer { quantize($0.baseAddress!, dtype: dtype, count: count, into: p) }
                    return
                }
                var r = SplitMix64(seed: seed ^ 0x5EED)
                for i in 0..<raw.count { p.storeBytes(of: UInt8(truncatingIfNeeded: r.next()), toByteOffset: i, as: UInt8.self) }
                // Scale (and min) fields: small positive/negative halves, never inf/NaN.
                let fields: [Int]
                switch dtype {
                case .q5_0: fields = [0]
                case .q5_1, .q4_K, .q5_K: fields = [0, 2]
                case .q6_K: fields = [208]
                default: fields = []
                }
                for b in 0..<(count / dtype.blockElements) {
                    for f in fields {
                        let v = (r.nextFloat() * 2 - 1) * 0.01
                        p.storeBytes(of: floatToF16(v), toByteOffset: b * dtype.blockBytes + f, as: UInt16.self)
                    }
                }
            }
        }
        return bytes
    }

    /// Widen + sgemm reference and the scale Σ_k |x·w| of every output.
    static func reference(_ w: UnsafeRawPointer, _ dtype: DType, n: Int, k: Int, x: [Float], m: Int) -> (y: [Float], scale: [Float]) {
        var wf = [Float](repeating: 0, count: n * k)
        wf.withUnsafeMutableBufferPointer { widenToFloat(w, dtype: dtype, count: n * k, into: $0.baseAddress!) }
        var y = [Float](repeating: 0, count: m * n)
        BLAS.gemm(transB: true, m: m, n: n, k: k, a: x, b: wf, c: &y)
        var scale = [Float](repeating: 0, count: m * n)
        for r in 0..<m { for j in 0..<n {
            var s: Double = 0
            for e in 0..<k { s += abs(Double(x[r * k + e]) * Double(wf[j * k + e])) }
            scale[r * n + j] = Float(s)
        } }
        return (y, scale)
    }

    /// Largest |a − b| / scale (scale floored at 1e-20).
    static func worst(_ a: [Float], _ b: [Float], _ scale: [Float]) -> Float {
        var w: Float = 0
        for i in a.indices {
            if a[i].isNaN != b[i].isNaN { return .infinity }
            if a[i].isNaN || (a[i].isInfinite && a[i] == b[i]) { continue }
            w = max(w, abs(a[i] - b[i]) / max(scale[i], 1e-20))
        }
        return w
    }

    static func kValues(_ dtype: DType) -> [Int] {
        // Element types: k % 16 of 13 / 5 / 13 / 0 (a whole 8-lane step and a partial one, or 8
        // lanes and 5 scalar values, after none or several 16-value steps). Blocks: one, and an
        // odd count (the AVX-512 one-row loop takes blocks in pairs).
        dtype.blockElements > 1 ? [dtype.blockElements, 3 * dtype.blockElements] : [13, 53, 77, 96]
    }

    /// The explicit kernel sets this CPU runs (`.best` is one of them).
    static let kernelSets = GEMV.availableKernelSets

    /// The sets follow the detected ISA; `.best` follows the (possibly capped) `CPU.isa`.
    @Test func kernelSetsFollowTheCPU() {
        #expect(Self.kernelSets.last == .portable)
        #expect(Self.kernelSets.contains(.avx2) == (CPU.detectedISA >= .avx2))
        #expect(Self.kernelSets.contains(.avx512) == (CPU.detectedISA >= .avx512))
        #expect(GEMV.Kernels.best.level == CPU.isa)
    }

    @Test(arguments: dtypes, kernelSets)
    func matchesWidenThenSgemm(_ dtype: DType, _ kernels: GEMV.Kernels) throws {
        for k in Self.kValues(dtype) {
            let n = 37
            let bytes = Self.weightBytes(dtype, n: n, k: k, seed: UInt64(k))
            for m in [1, 2, 3, 4, 5, 8, 16] {  // row groups of 3, 2 and 1, alone and after others; 16 = rowLimit
                let x = randomFloats(m * k, seed: UInt64(100 + m))
                // Unaligned weights: GGUF tensors hold 18/20/34-byte blocks at any offset.
                for offset in dtype.isQuantized ? [0, 1, 3] : [0, 2] {
                    var buf = [UInt8](repeating: 0xA5, count: bytes.count + offset)
                    buf.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
                    var y = [Float](repeating: .nan, count: m * n)
                    let ref = buf.withUnsafeBytes { raw -> (y: [Float], scale: [Float]) in
                        let w = raw.baseAddress! + offset
                        x.withUnsafeBufferPointer { xp in
                            y.withUnsafeMutableBufferPointer { yp in
                                GEMV.multiply(x: xp.baseAddress!, rows: m, inFeatures: k,
                                              targets: [GEMVTarget(weights: w, dtype: dtype, outFeatures: n, y: yp.baseAddress!)],
                                              kernels: kernels, quantDot: .exact)
                            }
                        }
                        return Self.reference(w, dtype, n: n, k: k, x: x, m: m)
                    }
                    let err = Self.worst(y, ref.y, ref.scale)
                    #expect(err <= 1e-5, "\(dtype.rawValue) \(kernels) n \(n) k \(k) m \(m) offset \(offset): relative error \(err)")
                }
            }
        }
    }

    /// Several matrices sharing x in one call (q/k/v), strided outputs, a size that splits
    /// across threads, and a strided x; block formats in both activation precisions (`.int8`
    /// against ggml's semantics, `GGMLInt8Reference`).
    @Test(arguments: [DType.bf16, .f32, .f16, .q8_0, .q4_0, .q5_1, .q4_K, .q6_K], kernelSets)
    func groupedStridedAndParallel(_ dtype: DType, _ kernels: GEMV.Kernels) throws {
        for mode in dtype.isQuantized ? GEMV.QuantDot.allCases : [.exact] { groupedStridedAndParallel(dtype, kernels, mode) }
    }

    func groupedStridedAndParallel(_ dtype: DType, _ kernels: GEMV.Kernels, _ mode: GEMV.QuantDot) {
        let k = 256, m = 3, ldx = k + 5
        let shapes = [(n: 700, ldy: 700), (n: 129, ldy: 140), (n: 1, ldy: 1)]
        let x = randomFloats(m * ldx, seed: 7)
        let weights = shapes.enumerated().map { Self.weightBytes(dtype, n: $0.element.n, k: k, seed: UInt64(20 + $0.offset)) }
        // Raw copies so all targets' pointers live at once (no nested array accesses).
        let stored = weights.map { w -> UnsafeMutableRawPointer in
            let p = UnsafeMutableRawPointer.allocate(byteCount: w.count, alignment: 1)
            w.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: w.count) }
            return p
        }
        defer { stored.forEach { $0.deallocate() } }
        let ys = shapes.map { s in FloatBuffer([Float](repeating: .nan, count: m * s.ldy)) }
        let targets = shapes.indices.map {
            GEMVTarget(weights: stored[$0], dtype: dtype, outFeatures: shapes[$0].n, y: ys[$0].pointer, ldy: shapes[$0].ldy)
        }
        x.withUnsafeBufferPointer {
            GEMV.multiply(x: $0.baseAddress!, rows: m, inFeatures: k, ldx: ldx, targets: targets, kernels: kernels, quantDot: mode)
        }
        let outs = ys.map { $0.array }
        let dense = (0..<m).flatMap { r in x[(r * ldx)..<(r * ldx + k)] }
        for (i, s) in shapes.enumerated() {
            let ref = weights[i].withUnsafeBytes { w -> (y: [Float], scale: [Float]) in
                if mode == .int8 {
                    let r = GGMLInt8Reference.evaluate(w.baseAddress!, dtype, n: s.n, k: k, x: dense, m: m)
                    return (r.y, r.scale)
                }
                return Self.reference(w.baseAddress!, dtype, n: s.n, k: k, x: dense, m: m)
            }
            let got = (0..<m).flatMap { r in outs[i][(r * s.ldy)..<(r * s.ldy + s.n)] }
            let err = Self.worst(got, ref.y, ref.scale)
            #expect(err <= 1e-5, "\(dtype.rawValue) \(kernels) \(mode) target \(i): relative error \(err)")
            // Padding between strided rows is untouched.
            for r in 0..<m { for j in s.n..<s.ldy { #expect(outs[i][r * s.ldy + j].isNaN) } }
        }
    }

    /// f16 rows holding inf/NaN take the exact scalar path: the same non-finite outputs as the
    /// reference (the vector converter alone would turn them into finite values).
    @Test(arguments: kernelSets)
    func f16NonFinite(_ kernels: GEMV.Kernels) throws {
        let n = 4, k = 64
        var bytes = Self.weightBytes(.f16, n: n, k: k, seed: 3)
        func put(_ row: Int, _ col: Int, _ bits: UInt16) {
            bytes.withUnsafeMutableBytes { $0.storeBytes(of: bits, toByteOffset: 2 * (row * k + col), as: UInt16.self) }
        }
        put(1, 5, 0x7C00)   // +inf
        put(2, 40, 0x7E00)  // NaN
        put(3, 7, 0x0001)   // smallest subnormal (exact through the vector path too)
        let x = randomFloats(k, seed: 4).map { abs($0) + 0.1 }
        var y = [Float](repeating: 0, count: n)
        bytes.withUnsafeBytes { w in
            y.withUnsafeMutableBufferPointer {
                GEMV.multiply(x: x, rows: 1, inFeatures: k, targets: [GEMVTarget(weights: w.baseAddress!, dtype: .f16, outFeatures: n, y: $0.baseAddress!)],
                              kernels: kernels)
            }
        }
        let ref = bytes.withUnsafeBytes { Self.reference($0.baseAddress!, .f16, n: n, k: k, x: x, m: 1) }
        #expect(y[1] == .infinity && ref.y[1] == .infinity)
        #expect(y[2].isNaN && ref.y[2].isNaN)
        #expect(Self.worst([y[0], y[3]], [ref.y[0], ref.y[3]], [ref.scale[0], ref.scale[3]]) <= 1e-5)
    }

    /// Block decoders load up to 3 bytes past a block's payload and vector tails could read a
    /// whole vector: the last row of a matrix must not read past the tensor, nor the last input
    /// value past x (weights and x each ending right before an inaccessible page).
    @Test(arguments: [DType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K, .bf16, .f16, .f32], kernelSets)
    func lastRowStaysInsideTheTensor(_ dtype: DType, _ kernels: GEMV.Kernels) throws {
        let n = 3
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        // Pages: weights | guard | x | guard.
        guard let region = mmap(nil, 4 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              region != MAP_FAILED else { Issue.record("mmap failed"); return }
        defer { munmap(region, 4 * page) }
        #expect(mprotect(region + page, page, PROT_NONE) == 0)
        #expect(mprotect(region + 3 * page, page, PROT_NONE) == 0)
        for k in dtype.blockElements == 256 ? [256] : (dtype.blockElements > 1 ? [64] : [13, 64, 77]) {
            let bytes = Self.weightBytes(dtype, n: n, k: k, seed: 9)
            let w = region + page - bytes.count
            bytes.withUnsafeBytes { w.copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            let xs = randomFloats(k, seed: 10)
            let x = (region + 3 * page - 4 * k).bindMemory(to: Float.self, capacity: k)
            x.update(from: xs, count: k)
            for mode in dtype.isQuantized ? GEMV.QuantDot.allCases : [.exact] {
                var y = [Float](repeating: 0, count: n)
                y.withUnsafeMutableBufferPointer {
                    GEMV.multiply(x: x, rows: 1, inFeatures: k,
                                  targets: [GEMVTarget(weights: UnsafeRawPointer(w), dtype: dtype, outFeatures: n, y: $0.baseAddress!)],
                                  kernels: kernels, quantDot: mode)
                }
                let ref: (y: [Float], scale: [Float])
                if mode == .int8 {
                    let r = GGMLInt8Reference.evaluate(UnsafeRawPointer(w), dtype, n: n, k: k, x: xs, m: 1)
                    ref = (r.y, r.scale)
                } else {
                    ref = Self.reference(UnsafeRawPointer(w), dtype, n: n, k: k, x: xs, m: 1)
                }
                #expect(Self.worst(y, ref.y, ref.scale) <= 1e-5, "\(dtype.rawValue) \(kernels) \(mode) k \(k)")
            }
        }
    }

    /// Every bf16/f16 bit pattern (inf, NaN, subnormals, ±0) through `multiply`, each picked out
    /// by one-hot input rows: the output is exactly the standard library's conversion (one
    /// nonzero product; other lanes add ±0, or NaN where a row holds inf/NaN, which any summation
    /// order gives alike). k = 44 leaves a tail after the 16-value steps (AVX-512: a whole and a
    /// partial masked step; AVX2: an 8-lane step and 4 scalar values; portable: 12 scalar).
    @Test(arguments: [DType.bf16, .f16], kernelSets)
    func everyHalfPatternExact(_ dtype: DType, _ kernels: GEMV.Kernels) {
        let k = 44, n = (65536 + k - 1) / k, m = 3
        var bytes = [UInt8](repeating: 0, count: 2 * n * k)
        bytes.withUnsafeMutableBytes { raw in
            for i in 0..<65536 { raw.storeBytes(of: UInt16(i), toByteOffset: 2 * i, as: UInt16.self) }
        }
        func value(_ i: Int) -> Float {
            let h = i < 65536 ? UInt16(i) : 0
            return dtype == .bf16 ? bf16ToFloat(h) : Float(Float16(bitPattern: h))
        }
        var bad = 0, first = ""
        for c0 in stride(from: 0, to: k, by: m) {
            let cols = (c0..<min(c0 + m, k)).map { $0 }
            var x = [Float](repeating: 0, count: cols.count * k)
            for (r, c) in cols.enumerated() { x[r * k + c] = 1 }
            var y = [Float](repeating: 0, count: cols.count * n)
            bytes.withUnsafeBytes { w in
                y.withUnsafeMutableBufferPointer {
                    GEMV.multiply(x: x, rows: cols.count, inFeatures: k,
                                  targets: [GEMVTarget(weights: w.baseAddress!, dtype: dtype, outFeatures: n, y: $0.baseAddress!)],
                                  kernels: kernels)
                }
            }
            for (r, c) in cols.enumerated() {
                for j in 0..<n {
                    var ref: Float = 0
                    for i in 0..<k { ref += x[r * k + i] * value(j * k + i) }
                    let got = y[r * n + j]
                    if ref.isNaN ? !got.isNaN : got != ref {
                        bad += 1
                        if first.isEmpty { first = "pattern 0x\(String(j * k + c, radix: 16)): \(got) vs \(ref)" }
                    }
                }
            }
        }
        #expect(bad == 0, "\(dtype.rawValue) \(kernels): \(bad) outputs differ, first \(first)")
    }

    /// The vectorized bf16/f16 widening (prefill, lm_head chunks, embeddings) is exact: every
    /// finite half pattern through the vector path, and spans holding inf/NaN through the scalar
    /// one, against the standard library's conversions; unaligned sources and odd counts.
    @Test(arguments: [DType.bf16, .f16])
    func wideningIsExact(_ dtype: DType) {
        let all = (0...0xFFFF).map { UInt16($0) }
        let finite = all.filter { dtype == .bf16 || ($0 & 0x7C00) != 0x7C00 }
        for patterns in [finite, all] {
            var bytes = [UInt8](repeating: 0, count: 2 * patterns.count + 1)
            bytes.withUnsafeMutableBytes { raw in
                for (i, h) in patterns.enumerated() { raw.storeBytes(of: h, toByteOffset: 1 + 2 * i, as: UInt16.self) }
            }
            for count in [patterns.count, 13] {
                var out = [Float](repeating: 0, count: count)
                bytes.withUnsafeBytes { raw in out.withUnsafeMutableBufferPointer { widenToFloat(raw.baseAddress! + 1, dtype: dtype, count: count, into: $0.baseAddress!) } }
                var bad = 0
                for i in 0..<count {
                    let ref = dtype == .bf16 ? bf16ToFloat(patterns[i]) : Float(Float16(bitPattern: patterns[i]))
                    if ref.isNaN ? !out[i].isNaN : ref.bitPattern != out[i].bitPattern { bad += 1 }
                }
                #expect(bad == 0, "\(dtype.rawValue): \(bad) of \(count) values differ")
            }
        }
    }

    /// `BLAS.gemm` with one output row goes to sgemv: every transpose combination, strides,
    /// alpha/beta, and garbage (NaN) in C with beta 0.
    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func gemmOneRowUsesGemv(_ ta: Bool, _ tb: Bool) {
        let n = 7, k = 5, lda = ta ? 3 : k, ldb = (tb ? k : n) + 2, ldc = n
        let a = randomFloats(max(k * lda, 1), seed: 11), b = randomFloats((tb ? n : k) * ldb, seed: 12)
        for beta: Float in [0, 2] {
            var c = beta == 0 ? [Float](repeating: .nan, count: n) : randomFloats(n, seed: 13)
            let c0 = c
            BLAS.gemm(transA: ta, transB: tb, m: 1, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: &c, ldc: ldc)
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k { s += Double(ta ? a[p * lda] : a[p]) * Double(tb ? b[j * ldb + p] : b[p * ldb + j]) }
                let expected = Float(0.5 * s) + (beta == 0 ? 0 : beta * c0[j])
                #expect(abs(expected - c[j]) < 1e-5, "transA \(ta) transB \(tb) beta \(beta) j \(j): \(c[j]) vs \(expected)")
            }
        }
    }

    /// Decoding through the model: the cached one-token forward (GEMV for every projection and
    /// the lm_head) gives the logits of the full uncached forward (sgemm) at the same position.
    @Test(arguments: [DType.bf16, .f32, .f16])
    func cachedDecodeMatchesFullForward(_ dtype: DType) throws {
        let config = try FixtureModel.qwen2Tiny.load().config
        let model = TransformerModel(weights: try ModelWeights.random(config: config, dtype: dtype, seed: 5))
        let tokens = (0..<12).map { ($0 * 7 + 3) % config.vocabSize }
        let cache = KVCache(config: config, capacity: tokens.count)
        _ = try model.forwardCached([CachedSequence(tokens: Array(tokens.dropLast()), cache: cache)])
        let step = try model.forwardCached([CachedSequence(tokens: [tokens.last!], cache: cache)])[0]
        let acts = Activations(config: config, batch: 1, seqLen: tokens.count)
        try model.forward(ModelInput(batch: 1, seqLen: tokens.count, tokens: tokens), acts: acts, training: false)
        let V = config.vocabSize
        let full = Array(UnsafeBufferPointer(start: acts.logits.pointer + (tokens.count - 1) * V, count: V))
        #expect(maxAbsDiff(step, full) <= 1e-4 * max(1, maxAbs(full)), "\(dtype.rawValue)")
    }
}
