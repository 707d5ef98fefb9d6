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

    public init(batch: Int, seqLen: Int, padding: [UInt8]? = nil, segments: [Int32]? = nil) {
        self.batch = batch; self.seqLen = seqLen; self.padding = padding; self.segments = segments
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
    DispatchQueue.concurrentPerform(iterations: B * heads) { task in
        let b = task / heads, h = task % heads, g = h / group
        let qb = q + b * T * qDim + h * D
        let kb = k + b * T * kvDim + g * D
        let vb = v + b * T * kvDim + g * D
        let p = probs + (b * heads + h) * T * T
        BLAS.gemm(transB: true, m: T, n: T, k: D, alpha: scale, a: qb, lda: qDim, b: kb, ldb: kvDim, c: p)
        for i in 0..<T {
            let row = p + i * T
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
        BLAS.gemm(m: T, n: D, k: T, a: p, b: vb, ldb: kvDim, c: out + b * T * qDim + h * D, ldc: qDim)
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
    DispatchQueue.concurrentPerform(iterations: B * kvHeads) { task in
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
            BLAS.gemm(transA: true, m: T, n: D, k: T, a: p, b: dob, ldb: qDim, beta: beta, c: dvb, ldc: kvDim)
            // dP = dO Vᵀ, then dS = P ⊙ (dP − Σ_j P dP) · scale
            BLAS.gemm(transB: true, m: T, n: T, k: D, a: dob, lda: qDim, b: vb, ldb: kvDim, c: ds)
            for i in 0..<T {
                let pr = p + i * T, dr = ds + i * T
                var dot: Float = 0
                for j in 0...i { dot += pr[j] * dr[j] }
                for j in 0..<T { dr[j] = j <= i ? pr[j] * (dr[j] - dot) * scale : 0 }
            }
            // dQ = dS K ; dK += dSᵀ Q
            BLAS.gemm(m: T, n: D, k: T, a: ds, b: kb, ldb: kvDim, c: dq + b * T * qDim + h * D, ldc: qDim)
            BLAS.gemm(transA: true, m: T, n: D, k: T, a: ds, b: qb, ldb: qDim, beta: beta, c: dkb, ldc: kvDim)
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
        BLAS.gemm(transB: true, m: n, n: L, k: D, alpha: scale, a: q + h * D, lda: qDim, b: kCache + g * D, ldb: kvDim, c: s)
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
        BLAS.gemm(m: n, n: D, k: L, a: s, b: vCache + g * D, ldb: kvDim, c: out + h * D, ldc: qDim)
    }
    if n * L * D * heads < 32_768 {
        for h in 0..<heads { body(h) }
    } else {
        DispatchQueue.concurrentPerform(iterations: heads, execute: body)
    }
}
