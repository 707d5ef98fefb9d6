import Foundation

// MARK: - Inputs

/// A batch of token rows for a full-sequence forward (training, `logits`, loss evaluation).
public struct ModelInput: Sendable {
    public let batch: Int
    public let seqLen: Int
    /// `[B·T]` token ids.
    public let tokens: [Int32]
    /// `[B·T]` RoPE positions (0..<T per row by default; restart per packed example).
    public let positions: [Int32]
    public let mask: AttentionMask

    /// `attentionMask` `[B·T]` (1 = real token), `positions` `[B·T]`, `segments` `[B·T]` packed example ids.
    public init(batch: Int, seqLen: Int, tokens: [Int], attentionMask: [Int]? = nil,
                positions: [Int]? = nil, segments: [Int]? = nil) {
        precondition(tokens.count == batch * seqLen, "ModelInput: \(tokens.count) tokens for [\(batch), \(seqLen)]")
        self.batch = batch
        self.seqLen = seqLen
        self.tokens = tokens.map { Int32(truncatingIfNeeded: $0) }
        self.positions = positions.map { $0.map { Int32($0) } } ?? (0..<batch).flatMap { _ in (0..<seqLen).map { Int32($0) } }
        mask = AttentionMask(batch: batch, seqLen: seqLen,
                             padding: attentionMask.map { $0.map { $0 != 0 ? 1 : 0 } },
                             segments: segments.map { $0.map { Int32($0) } })
    }

    public var rows: Int { batch * seqLen }
}

// MARK: - Activation arena

/// Per-layer saved activations of one forward pass (`N = B·T` rows).
final class LayerActivations {
    let rstd1, h1, q, k, v, probs, att, xMid, rstd2, h2, gate, up, act: FloatBuffer
    let qPre, kPre, rstdQ, rstdK: FloatBuffer?

    init(_ c: ModelConfig, batch: Int, seqLen: Int) {
        let n = batch * seqLen
        rstd1 = FloatBuffer(count: n); h1 = FloatBuffer(count: n * c.hiddenSize)
        q = FloatBuffer(count: n * c.qDim); k = FloatBuffer(count: n * c.kvDim); v = FloatBuffer(count: n * c.kvDim)
        probs = FloatBuffer(count: batch * c.numHeads * seqLen * seqLen)
        att = FloatBuffer(count: n * c.qDim); xMid = FloatBuffer(count: n * c.hiddenSize)
        rstd2 = FloatBuffer(count: n); h2 = FloatBuffer(count: n * c.hiddenSize)
        gate = FloatBuffer(count: n * c.intermediateSize); up = FloatBuffer(count: n * c.intermediateSize)
        act = FloatBuffer(count: n * c.intermediateSize)
        if c.hasQKNorm {
            qPre = FloatBuffer(count: n * c.qDim); kPre = FloatBuffer(count: n * c.kvDim)
            rstdQ = FloatBuffer(count: n * c.numHeads); rstdK = FloatBuffer(count: n * c.numKVHeads)
        } else {
            qPre = nil; kPre = nil; rstdQ = nil; rstdK = nil
        }
    }
}

/// The one arena of a step: every activation the backward pass needs, plus its scratch.
/// Allocated once per (batch, seqLen, checkpointing) and reused across steps.
public final class Activations {
    public let batch, seqLen: Int
    public let checkpointing: Bool
    /// Residual stream at each layer boundary: `residuals[l]` is layer l's input, `[N, C]`.
    let residuals: [FloatBuffer]
    let layers: [LayerActivations]
    let rstdF, hF: FloatBuffer
    /// `[N, V]` logits; after `lossAndGradient` it holds the logits' gradient. After a forward
    /// given targets, only the first `logitRows.count` rows are used (see `logitRows`).
    public let logits: FloatBuffer
    /// The input rows whose logits the last forward computed, in order (`logits` row k is input
    /// row `logitRows[k]`), or nil when it computed every row.
    public internal(set) var logitRows: [Int]?
    let cos, sin: FloatBuffer
    // Backward scratch.
    let dResid, dH, dQ, dK, dV, dAtt, dGate, dUp, dAct: FloatBuffer
    /// Qwen3's per-head norm backward reads a copy of dQ / dK (allocated once, not per layer).
    let dHeadCopy: FloatBuffer?

    public init(config c: ModelConfig, batch: Int, seqLen: Int, checkpointing: Bool = false) {
        self.batch = batch; self.seqLen = seqLen; self.checkpointing = checkpointing
        let n = batch * seqLen
        residuals = (0...c.numLayers).map { _ in FloatBuffer(count: n * c.hiddenSize) }
        layers = (0..<(checkpointing ? 1 : c.numLayers)).map { _ in LayerActivations(c, batch: batch, seqLen: seqLen) }
        rstdF = FloatBuffer(count: n); hF = FloatBuffer(count: n * c.hiddenSize)
        logits = FloatBuffer(count: n * c.vocabSize)
        cos = FloatBuffer(count: n * c.headDim / 2); sin = FloatBuffer(count: n * c.headDim / 2)
        dResid = FloatBuffer(count: n * c.hiddenSize); dH = FloatBuffer(count: n * c.hiddenSize)
        dQ = FloatBuffer(count: n * c.qDim); dK = FloatBuffer(count: n * c.kvDim); dV = FloatBuffer(count: n * c.kvDim)
        dAtt = FloatBuffer(count: n * c.qDim)
        dGate = FloatBuffer(count: n * c.intermediateSize); dUp = FloatBuffer(count: n * c.intermediateSize)
        dAct = FloatBuffer(count: n * c.intermediateSize)
        dHeadCopy = c.hasQKNorm ? FloatBuffer(count: n * max(c.qDim, c.kvDim), zeroed: false) : nil
    }

    func layer(_ l: Int) -> LayerActivations { checkpointing ? layers[0] : layers[l] }

    /// Whether a batch of this shape fits the arena (sized for `batch × seqLen`); smaller
    /// batches reuse it, so padding to each batch's longest row does not reallocate.
    public func fits(_ input: ModelInput) -> Bool {
        input.rows <= batch * seqLen && input.batch * input.seqLen * input.seqLen <= batch * seqLen * seqLen
    }

    /// Bytes held by the arena.
    public var byteCount: Int {
        var total = residuals.reduce(0) { $0 + $1.count } + rstdF.count + hF.count + logits.count + cos.count + sin.count
        total += [dResid, dH, dQ, dK, dV, dAtt, dGate, dUp, dAct].reduce(0) { $0 + $1.count } + (dHeadCopy?.count ?? 0)
        for a in layers {
            total += [a.rstd1, a.h1, a.q, a.k, a.v, a.probs, a.att, a.xMid, a.rstd2, a.h2, a.gate, a.up, a.act].reduce(0) { $0 + $1.count }
            total += [a.qPre, a.kPre, a.rstdQ, a.rstdK].compactMap { $0 }.reduce(0) { $0 + $1.count }
        }
        return total * 4
    }
}

// MARK: - The model

/// A decoder-only transformer (Llama / Mistral / Qwen2 / Qwen3 as data) with hand-written
/// forward and backward passes. Base weights are frozen; gradients flow only to adapters.
public final class TransformerModel: @unchecked Sendable {
    public let config: ModelConfig
    public let weights: ModelWeights
    /// Adapters applied in `linear`, looked up by layer and projection.
    public var adapters: AdapterProvider?
    /// Per-row adapters of the cached forward running now (`forwardCached` with sequences that
    /// carry their own): each sequence's rows and the adapters they apply; `adapters` is then
    /// not used. Nil otherwise.
    var rowAdapters: [(rows: Range<Int>, provider: AdapterProvider?)]?
    let invFreq: [Double]
    /// Every layer's weights, resolved once from `weights` (no name lookups per pass).
    let layers: [LayerWeights]
    let embedding: TensorView
    let finalNorm: [Float]
    let lmHeadView: TensorView

    // f32 scratch for projection weights: one buffer per projection kind (`Projection.index`),
    // tagged with the layer held and, when an adapter's ΔW is folded in, the forward pass it
    // was formed for.
    private var scratch: [(layer: Int, foldPass: Int?, buffer: FloatBuffer)?] = Array(repeating: nil, count: Projection.allCases.count)
    private var lmScratch: FloatBuffer?
    private static let lmChunkRows = 8192
    /// Counts top-level forward passes: adapter parameters may change between passes (an
    /// optimizer step), never inside one (its backward and checkpoint recomputation included).
    private var pass = 0
    /// Scratch for cached (generation) forwards.
    lazy var workspace = InferenceWorkspace()
    /// Fold adapters that can (`LinearDelta.canFold`) into the f32 weight of GEMM-sized
    /// multiplies. Off: every adapter runs its own forward and backward (tests compare both).
    public var foldAdapters = true

    public init(weights: ModelWeights, adapters: AdapterProvider? = nil) {
        self.config = weights.config
        self.weights = weights
        self.adapters = adapters
        layers = (0..<weights.config.numLayers).map { LayerWeights(layer: $0, weights: weights) }
        embedding = weights.view(TensorNames.embedding)
        finalNorm = weights.vector(TensorNames.finalNorm)
        lmHeadView = weights.view(weights.config.tieWordEmbeddings ? TensorNames.embedding : TensorNames.lmHead)
        invFreq = ropeInverseFrequencies(headDim: config.headDim, theta: config.ropeTheta, scaling: config.ropeScaling)
    }

    // MARK: Weights

    /// Marks the start of a top-level forward pass (folded weights of earlier passes are stale).
    func beginPass() { pass &+= 1 }

    /// f32 pointer to a projection weight `[out, in]`: the file's own memory for F32, otherwise
    /// widened into per-projection scratch (one layer resident at a time). With `fold`, the
    /// scratch holds `W + ΔW` of that adapter for the current pass.
    func projectionWeight(layer l: Int, _ proj: Projection, fold: LinearDelta? = nil) -> UnsafePointer<Float> {
        let pw = layers[l][proj], view = pw.view
        if fold == nil, let p = view.f32Pointer { return p }
        let tag = fold == nil ? nil : pass
        if let s = scratch[proj.index], s.layer == l, s.foldPass == tag { return UnsafePointer(s.buffer.pointer) }
        let buffer = scratch[proj.index]?.buffer ?? FloatBuffer(count: view.count, zeroed: false)
        if let fold {
            // Widen (or copy) a few rows, then add ΔW to them while they are in cache.
            let outF = pw.outFeatures, inF = pw.inFeatures
            let w = buffer.pointer, rowBytes = view.dtype.storageBytes(elements: inF)
            let block = max(1, 8192 / inF)
            parallelRanges(outF, costPerItem: inF) { range in
                for r0 in stride(from: range.lowerBound, to: range.upperBound, by: block) {
                    let r1 = min(r0 + block, range.upperBound)
                    widenToFloat(view.data + r0 * rowBytes, dtype: view.dtype, count: (r1 - r0) * inF, into: w + r0 * inF)
                    fold.addDelta(into: w, rows: r0..<r1)
                }
            }
        } else {
            view.widen(into: buffer.pointer)
        }
        scratch[proj.index] = (l, tag, buffer)
        return UnsafePointer(buffer.pointer)
    }

    /// The adapter on a projection, and whether a GEMM on it folds the adapter in.
    func adapter(layer l: Int, _ proj: Projection, training: Bool) -> (delta: LinearDelta?, folds: Bool) {
        guard rowAdapters == nil, let d = adapters?.delta(layer: l, projection: proj) else { return (nil, false) }
        d.bind(base: layers[l][proj].view)
        return (d, foldAdapters && d.canFold(training: training))
    }

    /// Runs `body(rowStart, rowCount, pointer)` over the lm_head `[V, C]` in row chunks (whole
    /// for F32, widened chunk by chunk otherwise, so a 150k vocabulary never needs a full f32 copy).
    func forEachLMHeadChunk(_ body: (Int, Int, UnsafePointer<Float>) -> Void) {
        let view = lmHeadView
        let V = config.vocabSize, C = config.hiddenSize
        if let p = view.f32Pointer { body(0, V, p); return }
        let chunk = min(V, Self.lmChunkRows)
        if lmScratch == nil { lmScratch = FloatBuffer(count: chunk * C, zeroed: false) }
        let buf = lmScratch!.pointer
        var r0 = 0
        while r0 < V {
            let rows = min(chunk, V - r0)
            widenToFloat(view.data + view.dtype.storageBytes(elements: r0 * C), dtype: view.dtype, count: rows * C, into: buf)
            body(r0, rows, UnsafePointer(buf))
            r0 += rows
        }
    }

    /// Whether a multiply over `rows` input rows reads `view` in its stored dtype (GEMV) instead of
    /// widening it for sgemm: few rows (decode, batched generation) make it memory-bound.
    @inline(__always)
    func usesGEMV(rows: Int, _ view: TensorView) -> Bool {
        rows <= GEMV.rowLimit(view.dtype) && GEMV.supports(view.dtype)
    }

    // MARK: Linear (the single place adapters apply)

    /// `y[rows, out] = x[rows, in] · Wᵀ (+ bias) + Δ_adapter(x)`.
    /// `y[rows, out] = x[rows, in] · Wᵀ (+ bias) + Δ_adapter(x)` for each projection of the
    /// same input (q/k/v, gate/up): with few rows their stored weights are streamed by ONE
    /// parallel GEMV call; then each gets its bias and adapter, in order.
    func linear(layer l: Int, _ outputs: [(proj: Projection, y: UnsafeMutablePointer<Float>)], x: UnsafePointer<Float>,
                rows: Int, training: Bool) {
        let pws = outputs.map { layers[l][$0.proj] }
        let deltas = outputs.map { adapter(layer: l, $0.proj, training: training) }
        let gemv = pws.allSatisfy({ usesGEMV(rows: rows, $0.view) })
        if gemv {
            let inF = pws[0].inFeatures
            GEMV.multiply(x: x, rows: rows, inFeatures: inF, targets: zip(outputs, pws).map { o, pw in
                precondition(pw.inFeatures == inF, "grouped projections must share the input width")
                return GEMVTarget(weights: pw.view.data, dtype: pw.view.dtype, outFeatures: pw.outFeatures, y: o.y)
            })
        } else {
            for (o, (pw, d)) in zip(outputs, zip(pws, deltas)) {
                let w = projectionWeight(layer: l, o.proj, fold: d.folds ? d.delta : nil)
                BLAS.gemm(transB: true, m: rows, n: pw.outFeatures, k: pw.inFeatures, a: x, b: w, c: o.y)
            }
        }
        for (o, (pw, d)) in zip(outputs, zip(pws, deltas)) {
            // The adapter sees `x·Wᵀ` without the bias (DoRA scales it; PEFT's bias is unscaled).
            if let delta = d.delta, gemv || !d.folds { delta.forward(x: x, rows: rows, y: o.y, training: training) }
            if let segments = rowAdapters { applyRowAdapters(segments, layer: l, pw, x: x, y: o.y) }
            if let bias = pw.bias {
                bias.withUnsafeBufferPointer { addBias(o.y, $0.baseAddress!, rows: rows, cols: pw.outFeatures) }
            }
        }
    }

    /// `logits[rows, V] (row stride ldc) = h[rows, C] · lm_headᵀ`: GEMV over the stored rows for
    /// few input rows (the tied 49k–150k-row embedding is the biggest matrix a decode step reads),
    /// otherwise sgemm over widened chunks.
    func lmHead(_ h: UnsafePointer<Float>, rows: Int, logits: UnsafeMutablePointer<Float>, ldc: Int? = nil) {
        let V = config.vocabSize, C = config.hiddenSize
        let view = lmHeadView
        if usesGEMV(rows: rows, view) {
            GEMV.multiply(x: h, rows: rows, inFeatures: C,
                          targets: [GEMVTarget(weights: view.data, dtype: view.dtype, outFeatures: V, y: logits, ldy: ldc ?? V)])
            return
        }
        forEachLMHeadChunk { r0, n, w in
            BLAS.gemm(transB: true, m: rows, n: n, k: C, a: h, b: w, c: logits + r0, ldc: ldc ?? V)
        }
    }

    /// `dx[rows, in] (+)= dy · W + Δ_adapterᵀ(dy)` and the adapter's own gradients.
    func linearBackward(layer l: Int, _ proj: Projection, x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int,
                        dx: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let (outF, inF) = config.shape(of: proj)
        let d = adapter(layer: l, proj, training: true)
        let w = projectionWeight(layer: l, proj, fold: d.folds ? d.delta : nil)
        let dyBase = d.folds ? dy : d.delta?.baseOutputGradient(dy: dy, rows: rows) ?? dy
        BLAS.gemm(m: rows, n: inF, k: outF, a: dyBase, b: w, beta: accumulate ? 1 : 0, c: dx)
        if d.folds {
            d.delta!.backwardParameters(x: x, dy: dy, rows: rows)
        } else {
            d.delta?.backward(x: x, dy: dy, rows: rows, dx: dx)
        }
    }

    // MARK: Input validation

    /// Throws when a token id is outside the vocabulary.
    public func validate(tokens: [Int32]) throws {
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= config.vocabSize }) {
            throw ModelError.invalidInput("token id \(bad) is outside the vocabulary [0, \(config.vocabSize))")
        }
    }

    func embed(_ tokens: [Int32], into out: UnsafeMutablePointer<Float>) {
        let view = embedding
        let C = config.hiddenSize, rowBytes = view.dtype.storageBytes(elements: C)
        for (n, t) in tokens.enumerated() {
            widenToFloat(view.data + Int(t) * rowBytes, dtype: view.dtype, count: C, into: out + n * C)
        }
    }

    // MARK: Forward

    /// Full forward pass; `acts.logits` holds `[N, V]` logits afterwards. With `training`,
    /// everything the backward pass needs is kept in `acts` (and adapters keep their own).
    ///
    /// With `targets` (`[N]`, the shifted labels; < 0 ignored), logits are computed only for the
    /// rows that have a target: prompt-masked and padded positions cost no lm_head multiply in
    /// the forward or the backward (the lm_head is 20–26% of a small model's FLOPs). They are
    /// packed into the first rows of `acts.logits` (`acts.logitRows`); `loss` and
    /// `lossAndGradient` take the same targets.
    public func forward(_ input: ModelInput, acts: Activations, training: Bool, targets: [Int32]? = nil) throws {
        precondition(acts.fits(input), "activations sized for [\(acts.batch), \(acts.seqLen)] cannot hold [\(input.batch), \(input.seqLen)]")
        try validate(tokens: input.tokens)
        // A target indexes a logit column in the loss: one past the vocabulary reads (and
        // writes the gradient of) memory that is not the logits.
        if let bad = targets?.first(where: { Int($0) >= config.vocabSize }) {
            throw ModelError.invalidInput("target id \(bad) is outside the vocabulary [0, \(config.vocabSize))")
        }
        beginPass()
        let c = config, n = input.rows
        embed(input.tokens, into: acts.residuals[0].pointer)
        ropeTables(positions: input.positions, invFreq: invFreq, cos: acts.cos.pointer, sin: acts.sin.pointer)
        for l in 0..<c.numLayers {
            layerForward(l, input: input, acts: acts, training: training)
        }
        rmsnormForward(out: acts.hF.pointer, rstd: acts.rstdF.pointer, x: acts.residuals[c.numLayers].pointer,
                       w: finalNorm, rows: n, cols: c.hiddenSize, eps: c.rmsNormEps)
        acts.logitRows = nil
        var logitRows = n
        if let targets {
            precondition(targets.count == n, "forward: \(targets.count) targets for \(n) rows")
            let rows = targets.indices.filter { targets[$0] >= 0 }
            if rows.count < n {
                // Pack the normalised rows that have a target (hF is not read by backward).
                let C = c.hiddenSize, h = acts.hF.pointer
                for (k, r) in rows.enumerated() where k != r { (h + k * C).update(from: h + r * C, count: C) }
                acts.logitRows = rows
                logitRows = rows.count
            }
        }
        if logitRows > 0 { lmHead(acts.hF.pointer, rows: logitRows, logits: acts.logits.pointer) }
    }

    // MARK: Loss

    /// Cross-entropy of `acts.logits` against `targets[N]` (already shifted; < 0 ignored).
    /// Returns the summed loss; replaces the logits with their gradient `(p − y) / normalizer`
    /// so `backward` can run. `normalizer` is the target count of the whole (accumulated) batch.
    public func lossAndGradient(acts: Activations, targets: [Int32], normalizer: Int) -> Double {
        crossEntropy(logits: acts.logits.pointer, targets: Self.logitTargets(acts, targets), vocab: config.vocabSize,
                     dlogits: acts.logits.pointer, scale: 1 / Float(max(normalizer, 1)))
    }

    /// Summed loss and target count of `acts.logits` (the logits are left intact).
    public func loss(acts: Activations, targets: [Int32]) -> (sum: Double, count: Int) {
        let sum = crossEntropy(logits: acts.logits.pointer, targets: Self.logitTargets(acts, targets), vocab: config.vocabSize,
                               dlogits: nil, scale: 1)
        return (sum, targets.filter { $0 >= 0 }.count)
    }

    /// The targets of the rows `acts.logits` holds.
    static func logitTargets(_ acts: Activations, _ targets: [Int32]) -> [Int32] {
        guard let rows = acts.logitRows else { return targets }
        return rows.map { targets[$0] }
    }

    // MARK: Backward

    /// Backward from the logits' gradient in `acts.logits` to every adapter parameter.
    /// Requires a `forward(training: true)` on the same input just before.
    public func backward(_ input: ModelInput, acts: Activations) {
        let c = config, n = input.rows, C = c.hiddenSize, V = c.vocabSize
        // lm_head: dhF = dlogits · W.
        let dlogits = UnsafePointer(acts.logits.pointer), dH = acts.dH.pointer
        let m = acts.logitRows?.count ?? n
        if m > 0 {
            forEachLMHeadChunk { r0, rows, w in
                BLAS.gemm(m: m, n: C, k: rows, a: dlogits + r0, lda: V, b: w, beta: r0 == 0 ? 0 : 1, c: dH)
            }
        }
        if let rows = acts.logitRows {
            // Unpack: packed row k goes to row rows[k] ≥ k (from the last, so nothing is
            // overwritten before it moves); rows without a target get no gradient.
            for k in stride(from: m - 1, through: 0, by: -1) where rows[k] != k {
                (dH + rows[k] * C).update(from: dH + k * C, count: C)
            }
            var next = 0
            for r in 0..<n {
                if next < m, rows[next] == r { next += 1 } else { (dH + r * C).update(repeating: 0, count: C) }
            }
        }
        rmsnormBackward(dx: acts.dResid.pointer, dy: dH, x: acts.residuals[c.numLayers].pointer,
                        w: finalNorm, rstd: acts.rstdF.pointer, rows: n, cols: C, accumulate: false)
        for l in stride(from: c.numLayers - 1, through: 0, by: -1) {
            if acts.checkpointing { layerForward(l, input: input, acts: acts, training: true) }
            layerBackward(l, input: input, acts: acts)
        }
    }
}
