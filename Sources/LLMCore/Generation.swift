import Foundation

// MARK: - KV cache

/// Keys and values of one sequence for every layer, `[capacity, kvDim]` each (post-RoPE keys).
public final class KVCache {
    public let capacity: Int
    public internal(set) var length: Int = 0
    let k: [FloatBuffer]
    let v: [FloatBuffer]

    public init(config: ModelConfig, capacity: Int) {
        self.capacity = capacity
        k = (0..<config.numLayers).map { _ in FloatBuffer(count: capacity * config.kvDim, zeroed: false) }
        v = (0..<config.numLayers).map { _ in FloatBuffer(count: capacity * config.kvDim, zeroed: false) }
    }

    /// An independent copy (beam search forks sequences).
    public func copy() -> KVCache {
        let c = KVCache(capacity: capacity, k: k.map { _ in FloatBuffer(count: k[0].count, zeroed: false) },
                        v: v.map { _ in FloatBuffer(count: v[0].count, zeroed: false) })
        let used = length * (k[0].count / max(capacity, 1))
        for l in k.indices {
            c.k[l].pointer.update(from: k[l].pointer, count: used)
            c.v[l].pointer.update(from: v[l].pointer, count: used)
        }
        c.length = length
        return c
    }

    private init(capacity: Int, k: [FloatBuffer], v: [FloatBuffer]) {
        self.capacity = capacity; self.k = k; self.v = v
    }

    /// Forget everything after `newLength` tokens.
    public func truncate(to newLength: Int) { length = min(length, max(0, newLength)) }
}

/// Growable scratch for cached forward passes, so decoding does not allocate per token.
final class InferenceWorkspace {
    var rows = 0
    var x, h, q, k, v, att, mid, gate, up, act, cos, sin, scores: FloatBuffer
    init() {
        x = FloatBuffer(count: 0); h = x; q = x; k = x; v = x; att = x; mid = x
        gate = x; up = x; act = x; cos = x; sin = x; scores = x
    }
    func reserve(rows n: Int, config c: ModelConfig, maxContext: Int) {
        if n > rows {
            rows = n
            x = FloatBuffer(count: n * c.hiddenSize, zeroed: false); h = FloatBuffer(count: n * c.hiddenSize, zeroed: false)
            q = FloatBuffer(count: n * c.qDim, zeroed: false); att = FloatBuffer(count: n * c.qDim, zeroed: false)
            k = FloatBuffer(count: n * c.kvDim, zeroed: false); v = FloatBuffer(count: n * c.kvDim, zeroed: false)
            mid = FloatBuffer(count: n * c.hiddenSize, zeroed: false)
            gate = FloatBuffer(count: n * c.intermediateSize, zeroed: false); up = FloatBuffer(count: n * c.intermediateSize, zeroed: false)
            act = FloatBuffer(count: n * c.intermediateSize, zeroed: false)
            cos = FloatBuffer(count: n * c.headDim / 2, zeroed: false); sin = FloatBuffer(count: n * c.headDim / 2, zeroed: false)
        }
        let need = c.numHeads * n * maxContext
        if scores.count < need { scores = FloatBuffer(count: need, zeroed: false) }
    }
}

// MARK: - Cached forward

/// One sequence's new tokens in a cached forward step.
public struct CachedSequence {
    public var tokens: [Int32]
    public var cache: KVCache
    /// The adapters this sequence's rows apply (a server batches requests for different
    /// adapters into one forward); nil: the model's `adapters`.
    public var adapters: AdapterProvider?
    public init(tokens: [Int], cache: KVCache, adapters: AdapterProvider? = nil) {
        self.tokens = tokens.map { Int32(truncatingIfNeeded: $0) }
        self.cache = cache
        self.adapters = adapters
    }
}

extension TransformerModel {
    /// Runs the new tokens of several sequences at once (their rows share every GEMM; attention
    /// runs per sequence against its own cache), appends their keys/values to the caches, and
    /// returns the logits of each sequence's last new token (`[S][V]`), or of every new token
    /// when `allPositions` (`[Σn][V]` flattened per sequence in order).
    public func forwardCached(_ seqs: [CachedSequence], allPositions: Bool = false) throws -> [[Float]] {
        let c = config, C = c.hiddenSize
        let rows = seqs.reduce(0) { $0 + $1.tokens.count }
        guard rows > 0 else { return [] }
        var tokens: [Int32] = [], positions: [Int32] = []
        var maxContext = 0
        for s in seqs {
            guard s.cache.length + s.tokens.count <= s.cache.capacity else {
                throw ModelError.invalidInput("KV cache full: \(s.cache.length) + \(s.tokens.count) tokens exceed its capacity \(s.cache.capacity)")
            }
            tokens += s.tokens
            positions += (0..<s.tokens.count).map { Int32(s.cache.length + $0) }
            maxContext = max(maxContext, s.cache.length + s.tokens.count)
        }
        try validate(tokens: tokens)
        beginPass()
        // Per-row adapters: each sequence applies its own on its rows, after the shared base
        // product (nothing folds into the shared weight: the rows' adapters differ).
        if seqs.contains(where: { $0.adapters != nil }) {
            var r0 = 0
            rowAdapters = seqs.map { s in
                defer { r0 += s.tokens.count }
                return (r0..<(r0 + s.tokens.count), s.adapters ?? adapters)
            }
        }
        defer { rowAdapters = nil }
        let ws = workspace
        ws.reserve(rows: rows, config: c, maxContext: maxContext)
        let x = ws.x.pointer, h = ws.h.pointer
        embed(tokens, into: x)
        ropeTables(positions: positions, invFreq: invFreq, cos: ws.cos.pointer, sin: ws.sin.pointer)
        // The layer updates `x` in place; q/k are normalised in place (nothing is kept for backward).
        let b = LayerBuffers(h1: h, qPre: ws.q.pointer, kPre: ws.k.pointer, q: ws.q.pointer, k: ws.k.pointer, v: ws.v.pointer,
                             att: ws.att.pointer, xMid: ws.mid.pointer, h2: h, gate: ws.gate.pointer, up: ws.up.pointer,
                             act: ws.act.pointer, rstd1: nil, rstd2: nil, rstdQ: nil, rstdK: nil)
        for l in 0..<c.numLayers {
            decoderLayer(l, x: x, out: x, rows: rows, buffers: b, cos: ws.cos.pointer, sin: ws.sin.pointer, training: false) {
                // Each sequence appends its new keys/values to its own cache and attends to it.
                var r0 = 0
                for s in seqs {
                    let n = s.tokens.count, start = s.cache.length
                    (s.cache.k[l].pointer + start * c.kvDim).update(from: b.k + r0 * c.kvDim, count: n * c.kvDim)
                    (s.cache.v[l].pointer + start * c.kvDim).update(from: b.v + r0 * c.kvDim, count: n * c.kvDim)
                    cachedAttention(out: b.att + r0 * c.qDim, q: b.q + r0 * c.qDim,
                                    kCache: s.cache.k[l].pointer, vCache: s.cache.v[l].pointer, start: start, n: n,
                                    heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim, scores: ws.scores.pointer)
                    r0 += n
                }
            }
        }
        for s in seqs { s.cache.length += s.tokens.count }
        // Final norm and lm_head only on the rows whose logits are wanted.
        var wanted: [Int] = []
        var r0 = 0
        for s in seqs {
            if allPositions { wanted += Array(r0..<(r0 + s.tokens.count)) } else { wanted.append(r0 + s.tokens.count - 1) }
            r0 += s.tokens.count
        }
        let m = wanted.count
        for (i, r) in wanted.enumerated() { (ws.mid.pointer + i * C).update(from: x + r * C, count: C) }
        rmsnormForward(out: h, rstd: nil, x: ws.mid.pointer, w: finalNorm, rows: m, cols: C, eps: c.rmsNormEps)
        let V = c.vocabSize
        if m == 1 {
            // Decode: the lm_head writes straight into the returned array.
            let out = [[Float](unsafeUninitializedCapacity: V) { buf, n in
                lmHead(h, rows: 1, logits: buf.baseAddress!)
                n = V
            }]
            try checkFiniteLogits(out)
            return out
        }
        var logits = [Float](repeating: 0, count: m * V)
        logits.withUnsafeMutableBufferPointer { lmHead(h, rows: m, logits: $0.baseAddress!) }
        try checkFiniteLogits([logits])
        return (0..<m).map { Array(logits[($0 * V)..<(($0 + 1) * V)]) }
    }
}

extension TransformerModel {
    /// `linear`'s per-row adapters: each sequence's adapter on its own (contiguous) rows of
    /// `y[rows, out]`, which holds the shared `x·Wᵀ` without the bias, as a model-wide adapter sees it.
    func applyRowAdapters(_ segments: [(rows: Range<Int>, provider: AdapterProvider?)], layer l: Int, _ pw: ProjectionWeights,
                          x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        for s in segments where !s.rows.isEmpty {
            guard let delta = s.provider?.delta(layer: l, projection: pw.projection) else { continue }
            delta.bind(base: pw.view)
            delta.forward(x: x + s.rows.lowerBound * pw.inFeatures, rows: s.rows.count,
                          y: y + s.rows.lowerBound * pw.outFeatures, training: false)
        }
    }
}

// MARK: - Sampling and generation

/// Decoding options: temperature 0 is greedy; otherwise temperature + nucleus (top-p) sampling
/// from a seeded generator.
public struct SamplingOptions: Sendable {
    public var temperature: Float
    public var topP: Float
    public var seed: UInt64
    public init(temperature: Float = 0, topP: Float = 1, seed: UInt64 = 0) {
        self.temperature = temperature; self.topP = topP; self.seed = seed
    }
}

/// Index of the largest logit (the first one on ties, as `torch.argmax`).
public func argmax(_ x: [Float]) -> Int {
    var best = 0
    for i in 1..<x.count where x[i] > x[best] { best = i }
    return best
}

/// Samples from `softmax(logits / T)` restricted to the smallest top-p nucleus.
public func sample(_ logits: [Float], options: SamplingOptions, rng: inout SplitMix64) -> Int {
    if options.temperature <= 0 { return argmax(logits) }
    let mx = logits.max()!
    var probs = logits.map { Double(expf(($0 - mx) / options.temperature)) }
    let total = probs.reduce(0, +)
    for i in probs.indices { probs[i] /= total }
    var order = Array(probs.indices)
    if options.topP < 1 {
        order.sort { probs[$0] > probs[$1] }
        var cum = 0.0, keep = 0
        for (n, i) in order.enumerated() {
            cum += probs[i]; keep = n + 1
            if cum >= Double(options.topP) { break }
        }
        order = Array(order.prefix(keep))
    }
    let mass = order.reduce(0.0) { $0 + probs[$1] }
    var r = rng.nextDouble() * mass
    for i in order {
        r -= probs[i]
        if r < 0 { return i }
    }
    return order.last!
}

extension TransformerModel {
    /// Generates up to `maxNewTokens` after each prompt (batched: prompts of different lengths
    /// share every GEMM), stopping a sequence at any of `stopTokens`. Returns only the new ids
    /// (a stop token is included when it ended the sequence).
    public func generate(prompts: [[Int]], maxNewTokens: Int, stopTokens: Set<Int> = [],
                         sampling: SamplingOptions = SamplingOptions(),
                         shouldStop: ((Int, [Int]) -> Bool)? = nil) throws -> [[Int]] {
        guard !prompts.isEmpty else { return [] }
        guard maxNewTokens > 0 else { return prompts.map { _ in [] } }
        for (i, p) in prompts.enumerated() where p.isEmpty {
            throw ModelError.invalidInput("prompt \(i) is empty: generation needs at least one token (e.g. BOS)")
        }
        var rng = SplitMix64(seed: sampling.seed)
        let caches = prompts.map { KVCache(config: config, capacity: $0.count + maxNewTokens) }
        var outputs = [[Int]](repeating: [], count: prompts.count)
        var active = Array(prompts.indices)
        var next = prompts
        while !active.isEmpty {
            let logits = try forwardCached(active.map { CachedSequence(tokens: next[$0], cache: caches[$0]) })
            var still: [Int] = []
            for (k, i) in active.enumerated() {
                let t = sample(logits[k], options: sampling, rng: &rng)
                outputs[i].append(t)
                next[i] = [t]
                let done = stopTokens.contains(t) || outputs[i].count >= maxNewTokens || (shouldStop?(i, outputs[i]) ?? false)
                if !done { still.append(i) }
            }
            active = still
        }
        return outputs
    }

    /// Greedy decoding without a KV cache: a full forward over the whole sequence per token.
    /// Slow; it exists to check the cached path against the plain one.
    public func greedyUncached(prompt: [Int], maxNewTokens: Int) throws -> [Int] {
        var seq = prompt, out: [Int] = []
        for _ in 0..<maxNewTokens {
            let input = ModelInput(batch: 1, seqLen: seq.count, tokens: seq)
            let acts = Activations(config: config, batch: 1, seqLen: seq.count)
            try forward(input, acts: acts, training: false)
            let V = config.vocabSize
            let last = Array(UnsafeBufferPointer(start: acts.logits.pointer + (seq.count - 1) * V, count: V))
            let t = argmax(last)
            out.append(t); seq.append(t)
        }
        return out
    }
}
