import Foundation

// Forward and backward kernels side by side with the same argument order (outputs, inputs,
// sizes), llm.c style. Shapes are written once in the doc comment. All f32; reductions that
// decide numerics (norm statistics, softmax sums) accumulate in Double or are max-shifted.

// MARK: - Parallel helper

/// Runs `body` over `0..<n` split into contiguous chunks across the cores, or inline when
/// the work is small (`n * costPerItem` below ~64K).
@inline(__always)
public func parallelRanges(_ n: Int, costPerItem: Int = 1, _ body: (Range<Int>) -> Void) {
    let work = n * max(costPerItem, 1)
    let cores = BLAS.threads
    if n <= 1 || work < 65_536 || cores <= 1 {
        body(0..<n)
        return
    }
    let chunks = min(n, cores * 4)
    DispatchQueue.concurrentPerform(iterations: chunks) { c in
        let lo = n * c / chunks, hi = n * (c + 1) / chunks
        if lo < hi { body(lo..<hi) }
    }
}

// MARK: - RMSNorm

/// `out[N,C] = w[C] * x[N,C] / sqrt(mean(x²) + eps)`; saves `rstd[N]` for backward.
public func rmsnormForward(out: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>?,
                           x: UnsafePointer<Float>, w: UnsafePointer<Float>, rows: Int, cols: Int, eps: Float) {
    parallelRanges(rows, costPerItem: cols) { range in
        for r in range {
            let xr = x + r * cols, o = out + r * cols
            var ss: Double = 0
            for c in 0..<cols { let v = Double(xr[c]); ss += v * v }
            let s = Float(1.0 / (ss / Double(cols) + Double(eps)).squareRoot())
            rstd?[r] = s
            for c in 0..<cols { o[c] = w[c] * (xr[c] * s) }
        }
    }
}

/// Input gradient of RMSNorm: `dx[N,C] (+)= rstd·(w⊙dy) − x·rstd³/C · Σ(w⊙dy⊙x)`.
/// `accumulate` adds into `dx` (residual streams) instead of overwriting.
public func rmsnormBackward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                            x: UnsafePointer<Float>, w: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                            rows: Int, cols: Int, accumulate: Bool) {
    parallelRanges(rows, costPerItem: cols) { range in
        for r in range {
            let xr = x + r * cols, dyr = dy + r * cols, dxr = dx + r * cols
            let s = rstd[r]
            var dot: Double = 0
            for c in 0..<cols { dot += Double(w[c] * dyr[c]) * Double(xr[c]) }
            let k = Float(dot) * s * s * s / Float(cols)
            if accumulate {
                for c in 0..<cols { dxr[c] += s * w[c] * dyr[c] - k * xr[c] }
            } else {
                for c in 0..<cols { dxr[c] = s * w[c] * dyr[c] - k * xr[c] }
            }
        }
    }
}

// MARK: - RoPE (rotate-half convention of the HF checkpoints)

/// Inverse frequencies `1/θ^(2i/D)` for `i < D/2`, with Llama 3.1 scaling when configured
/// (transformers `_compute_llama3_parameters`). Computed in Double.
public func ropeInverseFrequencies(headDim: Int, theta: Double, scaling: Llama3RopeScaling?) -> [Double] {
    let half = headDim / 2
    var inv = (0..<half).map { i in 1.0 / pow(theta, Double(2 * i) / Double(headDim)) }
    if let s = scaling {
        let old = Double(s.originalMaxPositionEmbeddings)
        let lowWavelen = old / s.lowFreqFactor
        let highWavelen = old / s.highFreqFactor
        inv = inv.map { f in
            let wavelen = 2 * Double.pi / f
            var scaled = wavelen > lowWavelen ? f / s.factor : f
            let isMedium = !(wavelen < highWavelen) && !(wavelen > lowWavelen)
            if isMedium {
                let smooth = (old / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
                scaled = (1 - smooth) * scaled / s.factor + smooth * scaled
            }
            return scaled
        }
    }
    return inv
}

/// cos/sin tables `[N, D/2]` for the given positions.
public func ropeTables(positions: [Int32], invFreq: [Double], cos: UnsafeMutablePointer<Float>, sin: UnsafeMutablePointer<Float>) {
    let half = invFreq.count
    for (n, p) in positions.enumerated() {
        for i in 0..<half {
            let a = Double(p) * invFreq[i]
            cos[n * half + i] = Float(Foundation.cos(a))
            sin[n * half + i] = Float(Foundation.sin(a))
        }
    }
}

/// In-place rotation of `x[N, H, D]`: `(x1, x2) → (x1·c − x2·s, x2·c + x1·s)` on the two halves.
public func ropeForward(_ x: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>,
                        rows: Int, heads: Int, headDim: Int) {
    let half = headDim / 2
    parallelRanges(rows, costPerItem: heads * headDim) { range in
        for n in range {
            let c = cos + n * half, s = sin + n * half
            for h in 0..<heads {
                let p = x + (n * heads + h) * headDim
                for i in 0..<half {
                    let x1 = p[i], x2 = p[i + half]
                    p[i] = x1 * c[i] - x2 * s[i]
                    p[i + half] = x2 * c[i] + x1 * s[i]
                }
            }
        }
    }
}

/// In-place backward of `ropeForward`: the rotation's transpose.
public func ropeBackward(_ dx: UnsafeMutablePointer<Float>, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>,
                         rows: Int, heads: Int, headDim: Int) {
    let half = headDim / 2
    parallelRanges(rows, costPerItem: heads * headDim) { range in
        for n in range {
            let c = cos + n * half, s = sin + n * half
            for h in 0..<heads {
                let p = dx + (n * heads + h) * headDim
                for i in 0..<half {
                    let d1 = p[i], d2 = p[i + half]
                    p[i] = d1 * c[i] + d2 * s[i]
                    p[i + half] = d2 * c[i] - d1 * s[i]
                }
            }
        }
    }
}

// MARK: - SwiGLU


/// `out[N,I] = silu(gate) ⊙ up`.
public func swigluForward(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
    @inline(__always) func body(_ i: Int, _ n: Int) {
        let g = load8(gate + i, count: n)
        store8(g / (1 + exp8(-g)) * load8(up + i, count: n), out + i, count: n)
    }
    parallelRanges(count) { range in
        var i = range.lowerBound
        while i + 8 <= range.upperBound { body(i, 8); i += 8 }
        if i < range.upperBound { body(i, range.upperBound - i) }
    }
}

/// `dgate = dout ⊙ up ⊙ silu'(gate)`, `dup = dout ⊙ silu(gate)`.
public func swigluBackward(dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>,
                           dout: UnsafePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, count: Int) {
    @inline(__always) func body(_ i: Int, _ n: Int) {
        let g = load8(gate + i, count: n), d = load8(dout + i, count: n)
        // PyTorch's order: silu = g / (1 + e^-g), sigmoid = 1 / (1 + e^-g).
        let e1 = 1 + exp8(-g), s = 1 / e1
        store8(d * (g / e1), dup + i, count: n)
        store8(d * load8(up + i, count: n) * s * (1 + g * (1 - s)), dgate + i, count: n)
    }
    parallelRanges(count) { range in
        var i = range.lowerBound
        while i + 8 <= range.upperBound { body(i, 8); i += 8 }
        if i < range.upperBound { body(i, range.upperBound - i) }
    }
}

// MARK: - Softmax cross-entropy

/// Mean-free cross-entropy over rows with a target (`targets[n] >= 0`): returns the summed loss
/// and, when `dlogits` is given, writes `(softmax − onehot) · scale` there for targeted rows and 0
/// elsewhere (`dlogits` may alias `logits`). Sums in Double.
public func crossEntropy(logits: UnsafeMutablePointer<Float>, targets: [Int32], vocab: Int,
                         dlogits: UnsafeMutablePointer<Float>?, scale: Float) -> Double {
    let rows = targets.count
    var partial = [Double](repeating: 0, count: rows)
    partial.withUnsafeMutableBufferPointer { part in
        let part = part.baseAddress!
        parallelRanges(rows, costPerItem: vocab) { range in
            for n in range {
                let l = logits + n * vocab
                let t = Int(targets[n])
                guard t >= 0 else {
                    if let d = dlogits { (d + n * vocab).update(repeating: 0, count: vocab) }
                    continue
                }
                let mx = maxValue(l, count: vocab), lt = l[t]
                // The exponentials go straight into the gradient row (which may be this row).
                let dn = dlogits.map { $0 + n * vocab }
                let sum = expShifted(l, into: dn, count: vocab, shift: mx)
                part[n] = Double(mx) + log(sum) - Double(lt)
                if let dn {
                    let f = Float(1 / sum) * scale
                    for v in 0..<vocab { dn[v] *= f }
                    dn[t] -= scale
                }
            }
        }
    }
    return partial.reduce(0, +)
}

/// Targets for the causal shift: position t of a row predicts `labels[t+1]`; the last position
/// of each row predicts nothing (-1). Labels of -100 (or any negative) are ignored.
public func shiftedTargets(labels: [Int32], batch: Int, seqLen: Int) -> [Int32] {
    var out = [Int32](repeating: -1, count: batch * seqLen)
    for b in 0..<batch {
        for t in 0..<(seqLen - 1) {
            let l = labels[b * seqLen + t + 1]
            out[b * seqLen + t] = l >= 0 ? l : -1
        }
    }
    return out
}

// MARK: - Elementwise

@inline(__always) public func addInPlace(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { y[i] += x[i] }
}

/// `y[N, C] += bias[C]` for each row.
@inline(__always) public func addBias(_ y: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, rows: Int, cols: Int) {
    for r in 0..<rows { let yr = y + r * cols; for c in 0..<cols { yr[c] += bias[c] } }
}

/// Runs `body(i)` for `0..<n` on the engine's threads (inline with one thread).
@inline(__always)
public func parallelTasks(_ n: Int, _ body: (Int) -> Void) {
    if BLAS.threads <= 1 || n <= 1 {
        for i in 0..<n { body(i) }
    } else {
        DispatchQueue.concurrentPerform(iterations: n, execute: body)
    }
}
