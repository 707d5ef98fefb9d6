import Foundation

// MARK: - Masks

/// Which keys each query may attend to within one batch row: causal (`j ≤ i`), key not padding
/// (`mask[j] != 0`), and same packed segment (`segment[i] == segment[j]`).
public struct AttentionMask: Sendable {
    public let batch: Int
    public let seqLen: Int
    /// `[B, T]` key padding mask (1 = real token), or nil for all-real.
    public let padding: [UInt8]?
    /// `[B, T]` packed-example ids, or nil for one example per row.
    public let segments: [Int32]?

    /// `[B, T]`: for query i, the first key of a contiguous allowed run `start...i`, or -1 when
    /// the allowed keys are not such a run (a padding query after the real tokens) and each key
    /// must be checked. Computed once per batch so the per-head loops need no mask lookups.
    public let spanStart: [Int32]

    public init(batch: Int, seqLen: Int, padding: [UInt8]? = nil, segments: [Int32]? = nil) {
        self.batch = batch; self.seqLen = seqLen; self.padding = padding; self.segments = segments
        var spans = [Int32](repeating: -1, count: batch * seqLen)
        let probe = Self(batch: batch, seqLen: seqLen, padding: padding, segments: segments, spans: [])
        for b in 0..<batch {
            for i in 0..<seqLen where probe.allowed(b, i, i) {
                var r = i
                while r > 0 && probe.allowed(b, i, r - 1) { r -= 1 }
                let isolated = r < 2 || !(0..<(r - 1)).contains { probe.allowed(b, i, $0) }
                if isolated { spans[b * seqLen + i] = Int32(r) }
            }
        }
        spanStart = spans
    }

    private init(batch: Int, seqLen: Int, padding: [UInt8]?, segments: [Int32]?, spans: [Int32]) {
        self.batch = batch; self.seqLen = seqLen; self.padding = padding; self.segments = segments; spanStart = spans
    }

    @inline(__always) func allowed(_ b: Int, _ i: Int, _ j: Int) -> Bool {
        if j > i { return false }
        let base = b * seqLen
        if let p = padding, p[base + j] == 0 { return false }
        if let s = segments, s[base + i] != s[base + j] { return false }
        return true
    }
}

// MARK: - Training attention (full sequences, probabilities kept for backward)

/// Scaled dot-product attention with GQA over `[B, T, H, D]` rows.
/// `out[B,T,Hq,D]`, `probs[B,Hq,T,T]` (saved for backward), from `q[B,T,Hq,D]`, `k,v[B,T,Hk,D]`.
/// A query with no allowed key (cannot happen for real tokens) gets a zero output.
public func attentionForward(out: UnsafeMutablePointer<Float>, probs: UnsafeMutablePointer<Float>,
                             q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                             mask: AttentionMask, heads: Int, kvHeads: Int, headDim: Int) {
    let B = mask.batch, T = mask.seqLen, D = headDim
    let qDim = heads * D, kvDim = kvHeads * D, group = heads / kvHeads
    let scale = 1 / Float(D).squareRoot()
    parallelTasks(B * heads) { task in
        let b = task / heads, h = task % heads, g = h / group
        let qb = q + b * T * qDim + h * D
        let kb = k + b * T * kvDim + g * D
        let vb = v + b * T * kvDim + g * D
        let p = probs + (b * heads + h) * T * T
        BLAS.gemm(transB: true, m: T, n: T, k: D, alpha: scale, a: qb, lda: qDim, b: kb, ldb: kvDim, c: p, parallel: false)
        for i in 0..<T {
            let row = p + i * T
            let start = Int(mask.spanStart[b * T + i])
            if start >= 0 {
                // Contiguous keys start...i: no per-key mask lookups.
                var mx = -Float.infinity
                for j in start...i { mx = max(mx, row[j]) }
                var sum: Float = 0
                for j in start...i { let e = expf(row[j] - mx); row[j] = e; sum += e }
                let inv = 1 / sum
                if start > 0 { row.update(repeating: 0, count: start) }
                for j in start...i { row[j] *= inv }
                if i + 1 < T { (row + i + 1).update(repeating: 0, count: T - i - 1) }
                continue
            }
            var mx = -Float.infinity
            for j in 0..<T where mask.allowed(b, i, j) { mx = max(mx, row[j]) }
            if mx == -Float.infinity { row.update(repeating: 0, count: T); continue }
            var sum: Float = 0
            for j in 0..<T {
                if mask.allowed(b, i, j) { let e = expf(row[j] - mx); row[j] = e; sum += e } else { row[j] = 0 }
            }
            let inv = 1 / sum
            for j in 0..<T { row[j] *= inv }
        }
        BLAS.gemm(m: T, n: D, k: T, a: p, b: vb, ldb: kvDim, c: out + b * T * qDim + h * D, ldc: qDim, parallel: false)
    }
}

/// Backward of `attentionForward`: `dq[B,T,Hq,D]` (overwritten), `dk, dv[B,T,Hk,D]` (overwritten),
/// from `dout[B,T,Hq,D]` and the saved `probs`. Parallel over (batch, kv head) so the GQA sums
/// into `dk`/`dv` need no locks.
public func attentionBackward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
                              dout: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                              probs: UnsafePointer<Float>, mask: AttentionMask, heads: Int, kvHeads: Int, headDim: Int) {
    let B = mask.batch, T = mask.seqLen, D = headDim
    let qDim = heads * D, kvDim = kvHeads * D, group = heads / kvHeads
    let scale = 1 / Float(D).squareRoot()
    parallelTasks(B * kvHeads) { task in
        let b = task / kvHeads, g = task % kvHeads
        let kb = k + b * T * kvDim + g * D, vb = v + b * T * kvDim + g * D
        let dkb = dk + b * T * kvDim + g * D, dvb = dv + b * T * kvDim + g * D
        let ds = UnsafeMutablePointer<Float>.allocate(capacity: T * T)
        defer { ds.deallocate() }
        for hh in 0..<group {
            let h = g * group + hh
            let p = probs + (b * heads + h) * T * T
            let dob = dout + b * T * qDim + h * D
            let qb = q + b * T * qDim + h * D
            let beta: Float = hh == 0 ? 0 : 1
            // dV += Pᵀ dO
            BLAS.gemm(transA: true, m: T, n: D, k: T, a: p, b: dob, ldb: qDim, beta: beta, c: dvb, ldc: kvDim, parallel: false)
            // dP = dO Vᵀ, then dS = P ⊙ (dP − Σ_j P dP) · scale
            BLAS.gemm(transB: true, m: T, n: T, k: D, a: dob, lda: qDim, b: vb, ldb: kvDim, c: ds, parallel: false)
            for i in 0..<T {
                let pr = p + i * T, dr = ds + i * T
                // Probabilities are 0 outside the allowed keys, so only start...i matters.
                let start = max(0, Int(mask.spanStart[b * T + i]))
                var dot: Float = 0
                for j in start...i { dot += pr[j] * dr[j] }
                if start > 0 { dr.update(repeating: 0, count: start) }
                for j in start...i { dr[j] = pr[j] * (dr[j] - dot) * scale }
                if i + 1 < T { (dr + i + 1).update(repeating: 0, count: T - i - 1) }
            }
            // dQ = dS K ; dK += dSᵀ Q
            BLAS.gemm(m: T, n: D, k: T, a: ds, b: kb, ldb: kvDim, c: dq + b * T * qDim + h * D, ldc: qDim, parallel: false)
            BLAS.gemm(transA: true, m: T, n: D, k: T, a: ds, b: qb, ldb: qDim, beta: beta, c: dkb, ldc: kvDim, parallel: false)
        }
    }
}

// MARK: - Cached attention (generation)

/// Attention of `n` new query rows of one sequence against its cache.
/// `q[n, Hq, D]` at absolute positions `start..<start+n`; `kCache, vCache[≥ start+n, Hk, D]`.
/// `scores` is scratch of at least `Hq · n · (start+n)` floats.
public func cachedAttention(out: UnsafeMutablePointer<Float>, q: UnsafePointer<Float>,
                            kCache: UnsafePointer<Float>, vCache: UnsafePointer<Float>,
                            start: Int, n: Int, heads: Int, kvHeads: Int, headDim: Int,
                            scores: UnsafeMutablePointer<Float>) {
    let D = headDim, qDim = heads * D, kvDim = kvHeads * D, group = heads / kvHeads
    let L = start + n
    let scale = 1 / Float(D).squareRoot()
    let body: (Int) -> Void = { h in
        let g = h / group
        let s = scores + h * n * L
        BLAS.gemm(transB: true, m: n, n: L, k: D, alpha: scale, a: q + h * D, lda: qDim, b: kCache + g * D, ldb: kvDim, c: s, parallel: false)
        for i in 0..<n {
            let row = s + i * L
            let last = start + i
            var mx = -Float.infinity
            for j in 0...last { mx = max(mx, row[j]) }
            var sum: Float = 0
            for j in 0...last { let e = expf(row[j] - mx); row[j] = e; sum += e }
            let inv = 1 / sum
            for j in 0...last { row[j] *= inv }
            if last + 1 < L { (row + last + 1).update(repeating: 0, count: L - last - 1) }
        }
        BLAS.gemm(m: n, n: D, k: L, a: s, b: vCache + g * D, ldb: kvDim, c: out + h * D, ldc: qDim, parallel: false)
    }
    if n * L * D * heads < 32_768 {
        for h in 0..<heads { body(h) }
    } else {
        parallelTasks(heads, body)
    }
}
