import Foundation

// MARK: - Resolved weights

/// One projection of one layer, resolved once when the model is built: its stored weight, its
/// bias (Qwen2's q/k/v) and its shape. No name lookups on the hot path.
struct ProjectionWeights {
    let projection: Projection
    let view: TensorView
    let bias: [Float]?
    let outFeatures: Int
    let inFeatures: Int
}

/// The frozen weights of one decoder layer (llama.cpp's per-layer struct), resolved at load.
struct LayerWeights {
    let inputNorm: [Float]
    let postAttentionNorm: [Float]
    /// Qwen3's per-head q/k norms.
    let qNorm: [Float]?
    let kNorm: [Float]?
    /// Indexed by `Projection.index`.
    let projections: [ProjectionWeights]

    subscript(_ p: Projection) -> ProjectionWeights { projections[p.index] }

    init(layer l: Int, weights: ModelWeights) {
        let c = weights.config
        inputNorm = weights.vector(TensorNames.inputNorm(layer: l))
        postAttentionNorm = weights.vector(TensorNames.postAttentionNorm(layer: l))
        qNorm = c.hasQKNorm ? weights.vector(TensorNames.qNorm(layer: l)) : nil
        kNorm = c.hasQKNorm ? weights.vector(TensorNames.kNorm(layer: l)) : nil
        projections = Projection.allCases.map { p in
            let (outF, inF) = c.shape(of: p)
            return ProjectionWeights(projection: p, view: weights.view(p.weightName(layer: l)),
                                     bias: c.qkvBias && p.hasQKVBias ? weights.vector(p.biasName(layer: l)) : nil,
                                     outFeatures: outF, inFeatures: inF)
        }
    }
}

// MARK: - One decoder layer, for every caller

/// Where one pass of a decoder layer over `rows` rows reads and writes. Training points these at
/// the arena's saved activations (what backward reads); cached generation at reusable scratch,
/// keeping no statistics and normalising Qwen3's q/k in place (`qPre == q`, `kPre == k`).
struct LayerBuffers {
    var h1, qPre, kPre, q, k, v, att, xMid, h2, gate, up, act: UnsafeMutablePointer<Float>
    /// RMSNorm statistics backward needs, or nil when nothing is kept.
    var rstd1, rstd2, rstdQ, rstdK: UnsafeMutablePointer<Float>?
}

extension TransformerModel {
    /// One decoder layer: `out = xMid + MLP(norm(xMid))`, `xMid = x + Attn(norm(x))`. Training,
    /// cached generation and batched decoding all run this; only attention differs (`attention`
    /// reads `b.q`, `b.k`, `b.v` after RoPE and writes `b.att`: causal over the batch, or against
    /// each sequence's KV cache). `out` may equal `x` (the cached path updates in place).
    func decoderLayer(_ l: Int, x: UnsafePointer<Float>, out: UnsafeMutablePointer<Float>, rows n: Int, buffers b: LayerBuffers,
                      cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, training: Bool, attention: () -> Void) {
        let c = config, C = c.hiddenSize, w = layers[l]
        // Attention block.
        rmsnormForward(out: b.h1, rstd: b.rstd1, x: x, w: w.inputNorm, rows: n, cols: C, eps: c.rmsNormEps)
        linear(layer: l, [(.q, b.qPre), (.k, b.kPre), (.v, b.v)], x: b.h1, rows: n, training: training)
        if let qNorm = w.qNorm, let kNorm = w.kNorm {
            rmsnormForward(out: b.q, rstd: b.rstdQ, x: b.qPre, w: qNorm, rows: n * c.numHeads, cols: c.headDim, eps: c.rmsNormEps)
            rmsnormForward(out: b.k, rstd: b.rstdK, x: b.kPre, w: kNorm, rows: n * c.numKVHeads, cols: c.headDim, eps: c.rmsNormEps)
        }
        ropeForward(b.q, cos: cos, sin: sin, rows: n, heads: c.numHeads, headDim: c.headDim)
        ropeForward(b.k, cos: cos, sin: sin, rows: n, heads: c.numKVHeads, headDim: c.headDim)
        attention()
        linear(layer: l, [(.o, b.xMid)], x: b.att, rows: n, training: training)
        addInPlace(b.xMid, x, count: n * C)
        // MLP block.
        rmsnormForward(out: b.h2, rstd: b.rstd2, x: b.xMid, w: w.postAttentionNorm, rows: n, cols: C, eps: c.rmsNormEps)
        linear(layer: l, [(.gate, b.gate), (.up, b.up)], x: b.h2, rows: n, training: training)
        swigluForward(out: b.act, gate: b.gate, up: b.up, count: n * c.intermediateSize)
        linear(layer: l, [(.down, out)], x: b.act, rows: n, training: training)
        addInPlace(out, b.xMid, count: n * C)
    }

    /// The training pass of layer `l`: `residuals[l] → residuals[l+1]`, keeping what backward reads.
    func layerForward(_ l: Int, input: ModelInput, acts: Activations, training: Bool) {
        let c = config, a = acts.layer(l)
        let b = LayerBuffers(h1: a.h1.pointer, qPre: (a.qPre ?? a.q).pointer, kPre: (a.kPre ?? a.k).pointer,
                             q: a.q.pointer, k: a.k.pointer, v: a.v.pointer, att: a.att.pointer, xMid: a.xMid.pointer,
                             h2: a.h2.pointer, gate: a.gate.pointer, up: a.up.pointer, act: a.act.pointer,
                             rstd1: a.rstd1.pointer, rstd2: a.rstd2.pointer, rstdQ: a.rstdQ?.pointer, rstdK: a.rstdK?.pointer)
        decoderLayer(l, x: acts.residuals[l].pointer, out: acts.residuals[l + 1].pointer, rows: input.rows, buffers: b,
                     cos: acts.cos.pointer, sin: acts.sin.pointer, training: training) {
            attentionForward(out: b.att, probs: a.probs.pointer, q: b.q, k: b.k, v: b.v,
                             mask: input.mask, heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim)
        }
    }

    // MARK: Backward

    /// `dResid` holds ∂L/∂residuals[l+1] on entry and ∂L/∂residuals[l] on exit.
    func layerBackward(_ l: Int, input: ModelInput, acts: Activations) {
        let c = config, n = input.rows, C = c.hiddenSize, I = c.intermediateSize
        let a = acts.layer(l), w = layers[l]
        let dR = acts.dResid.pointer
        // MLP block: out = xMid + down(silu(gate(h2)) ⊙ up(h2)), h2 = norm(xMid).
        linearBackward(layer: l, .down, x: a.act.pointer, dy: dR, rows: n, dx: acts.dAct.pointer, accumulate: false)
        swigluBackward(dgate: acts.dGate.pointer, dup: acts.dUp.pointer, dout: acts.dAct.pointer,
                       gate: a.gate.pointer, up: a.up.pointer, count: n * I)
        linearBackward(layer: l, .gate, x: a.h2.pointer, dy: acts.dGate.pointer, rows: n, dx: acts.dH.pointer, accumulate: false)
        linearBackward(layer: l, .up, x: a.h2.pointer, dy: acts.dUp.pointer, rows: n, dx: acts.dH.pointer, accumulate: true)
        rmsnormBackward(dx: dR, dy: acts.dH.pointer, x: a.xMid.pointer, w: w.postAttentionNorm,
                        rstd: a.rstd2.pointer, rows: n, cols: C, accumulate: true)
        // Attention block: xMid = x + o(attn(rope(q), rope(k), v)), q/k/v from h1 = norm(x).
        linearBackward(layer: l, .o, x: a.att.pointer, dy: dR, rows: n, dx: acts.dAtt.pointer, accumulate: false)
        attentionBackward(dq: acts.dQ.pointer, dk: acts.dK.pointer, dv: acts.dV.pointer, dout: acts.dAtt.pointer,
                          q: a.q.pointer, k: a.k.pointer, v: a.v.pointer, probs: a.probs.pointer,
                          mask: input.mask, heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim)
        ropeBackward(acts.dQ.pointer, cos: acts.cos.pointer, sin: acts.sin.pointer, rows: n, heads: c.numHeads, headDim: c.headDim)
        ropeBackward(acts.dK.pointer, cos: acts.cos.pointer, sin: acts.sin.pointer, rows: n, heads: c.numKVHeads, headDim: c.headDim)
        if let qNorm = w.qNorm, let kNorm = w.kNorm {
            // The per-head norm's input gradient overwrites dQ/dK in place: rows are independent
            // and each row reads its own dy before writing, via a row-sized copy.
            headNormBackward(acts.dQ.pointer, x: a.qPre!.pointer, w: qNorm,
                             rstd: a.rstdQ!.pointer, rows: n * c.numHeads, cols: c.headDim, copy: acts.dHeadCopy!.pointer)
            headNormBackward(acts.dK.pointer, x: a.kPre!.pointer, w: kNorm,
                             rstd: a.rstdK!.pointer, rows: n * c.numKVHeads, cols: c.headDim, copy: acts.dHeadCopy!.pointer)
        }
        linearBackward(layer: l, .q, x: a.h1.pointer, dy: acts.dQ.pointer, rows: n, dx: acts.dH.pointer, accumulate: false)
        linearBackward(layer: l, .k, x: a.h1.pointer, dy: acts.dK.pointer, rows: n, dx: acts.dH.pointer, accumulate: true)
        linearBackward(layer: l, .v, x: a.h1.pointer, dy: acts.dV.pointer, rows: n, dx: acts.dH.pointer, accumulate: true)
        rmsnormBackward(dx: dR, dy: acts.dH.pointer, x: acts.residuals[l].pointer, w: w.inputNorm,
                        rstd: a.rstd1.pointer, rows: n, cols: C, accumulate: true)
    }

    /// `copy` holds at least `rows × cols` floats (the arena's `dHeadCopy`).
    private func headNormBackward(_ d: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, w: [Float],
                                  rstd: UnsafePointer<Float>, rows: Int, cols: Int, copy: UnsafeMutablePointer<Float>) {
        copy.update(from: d, count: rows * cols)
        rmsnormBackward(dx: d, dy: copy, x: x, w: w, rstd: rstd, rows: rows, cols: cols, accumulate: false)
    }
}
