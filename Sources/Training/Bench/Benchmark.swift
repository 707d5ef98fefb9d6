import Adapters
import Foundation
import LLMCore
#if canImport(Glibc)
import Glibc
#endif

/// What `finetune bench` measures.
public enum BenchMode: String, Sendable, CaseIterable {
    case train, prefill, decode
}

public struct BenchOptions: Sendable {
    public var mode: BenchMode
    public var seq: Int = 256
    public var batch: Int = 1
    /// Timed steps (train/prefill) or decoded tokens (decode).
    public var steps: Int = 3
    public var warmup: Int = 1
    public var checkpointing = false
    public init(mode: BenchMode) { self.mode = mode }
}

/// One benchmark's figures (CLI.md keys: tokens_per_s, seconds_per_step, gflops, peak_rss_mb).
public struct BenchResult: Encodable, Sendable {
    public var mode: String
    public var model: String
    public var dtype: String
    public var adapter: String
    public var trainable_parameters: Int
    public var seq: Int
    public var batch: Int
    public var threads: Int
    public var steps: Int
    public var tokens_per_s: Double
    public var seconds_per_step: Double
    /// All timed steps, seconds (the median is reported above).
    public var step_seconds: [Double]
    public var flops_per_step: Double
    public var gflops: Double
    public var peak_rss_mb: Double
    /// Decode only: weight bytes streamed per token and the achieved read bandwidth.
    public var weight_bytes_per_token: Double?
    public var gb_per_s: Double?
}

/// Peak resident set size of this process so far, in MB (getrusage's ru_maxrss is in KiB on Linux).
public func peakRSSMegabytes() -> Double {
    var u = rusage()
    getrusage(RUSAGE_SELF.rawValue, &u)
    return Double(u.ru_maxrss) / 1024
}

/// Model FLOPs (multiply-add = 2) of the engine's computation, the same formula for us and the
/// PyTorch reference so GFLOP/s compare like with like:
/// forward = 2·P·tokens (every projection and the lm_head) + 4·L·T·qDim per token (QKᵀ and P·V
/// over the full T×T, as both implementations compute them) + adapters; a training step adds the
/// input-gradient pass of the frozen base (2·P·tokens, no weight gradients), 8·L·T·qDim per token
/// of attention backward, and twice the adapters' forward for their backward.
public enum FlopCount {
    public static func projectionParameters(_ c: ModelConfig) -> Double {
        let perLayer = ModelConfig.projections.reduce(0) { let s = c.projectionShape($1); return $0 + s.out * s.in }
        return Double(perLayer * c.numLayers + c.vocabSize * c.hiddenSize)
    }

    /// Forward FLOPs per token of the adapters.
    public static func adapterForward(_ set: AdapterSet?) -> Double {
        guard let set else { return 0 }
        return set.adapters.reduce(0.0) { sum, a in
            if let l = a as? LoRAAdapter { return sum + 2 * Double(l.rank * (l.inFeatures + l.outFeatures)) }
            if let n = a as? NdLinearAdapter {
                let (a0, b) = n.inFactors, (c, d) = n.outFactors
                return sum + 2 * Double(a0 * b * d + c * a0 * d)
            }
            return sum
        }
    }

    public static func forward(_ c: ModelConfig, tokens: Int, seq: Int, adapters: AdapterSet?) -> Double {
        let t = Double(tokens)
        return t * (2 * projectionParameters(c) + 4 * Double(c.numLayers * seq * c.qDim) + adapterForward(adapters))
    }

    public static func trainStep(_ c: ModelConfig, tokens: Int, seq: Int, adapters: AdapterSet?) -> Double {
        let t = Double(tokens)
        return t * (4 * projectionParameters(c) + 12 * Double(c.numLayers * seq * c.qDim) + 3 * adapterForward(adapters))
    }

    /// Bytes of weights one decoded token reads (every projection and the lm_head, stored dtype).
    public static func weightBytesPerToken(_ w: ModelWeights) -> Double {
        let c = w.config
        var bytes = 0
        for l in 0..<c.numLayers { for p in ModelConfig.projections {
            let v = w.view(ModelConfig.weightName(layer: l, projection: p)); bytes += v.byteCount
        } }
        bytes += w.view(c.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight").byteCount
        return Double(bytes)
    }
}

public enum Benchmark {
    static func median(_ x: [Double]) -> Double { let s = x.sorted(); return s[s.count / 2] }

    /// Runs the benchmark in-process with warm-up; weights, adapters and threads are set up by the caller.
    public static func run(model: TransformerModel, adapters: AdapterSet?, options o: BenchOptions, modelName: String) throws -> BenchResult {
        let c = model.config
        var rng = SplitMix64(seed: 1)
        let tokens = (0..<(o.batch * o.seq)).map { _ in Int(rng.next() % UInt64(c.vocabSize)) }
        var times: [Double] = []
        var flops = 0.0
        var bytesPerToken: Double?
        switch o.mode {
        case .train:
            let input = ModelInput(batch: o.batch, seqLen: o.seq, tokens: tokens)
            let labels = tokens.map { Int32($0) }
            let targets = shiftedTargets(labels: labels, batch: o.batch, seqLen: o.seq)
            let acts = Activations(config: c, batch: o.batch, seqLen: o.seq, checkpointing: o.checkpointing)
            let opt = AdamW(parameters: adapters?.parameters ?? [], weightDecay: 0)
            let count = targets.filter { $0 >= 0 }.count
            for i in 0..<(o.warmup + o.steps) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                adapters?.zeroGradients()
                try model.forward(input, acts: acts, training: true)
                _ = model.lossAndGradient(acts: acts, targets: targets, normalizer: count)
                model.backward(input, acts: acts)
                opt.update(lr: 1e-4)
                let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                if i >= o.warmup { times.append(dt) }
            }
            flops = FlopCount.trainStep(c, tokens: o.batch * o.seq, seq: o.seq, adapters: adapters)
        case .prefill:
            let input = ModelInput(batch: o.batch, seqLen: o.seq, tokens: tokens)
            let acts = Activations(config: c, batch: o.batch, seqLen: o.seq)
            for i in 0..<(o.warmup + o.steps) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                try model.forward(input, acts: acts, training: false)
                let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                if i >= o.warmup { times.append(dt) }
            }
            flops = FlopCount.forward(c, tokens: o.batch * o.seq, seq: o.seq, adapters: adapters)
        case .decode:
            // Prefill `seq` tokens (untimed), then time each greedily decoded token.
            let cache = KVCache(config: c, capacity: o.seq + o.warmup + o.steps + 1)
            var logits = try model.forwardCached([CachedSequence(tokens: Array(tokens.prefix(o.seq)), cache: cache)])
            for i in 0..<(o.warmup + o.steps) {
                let next = argmax(logits[0])
                let t0 = DispatchTime.now().uptimeNanoseconds
                logits = try model.forwardCached([CachedSequence(tokens: [next], cache: cache)])
                let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                if i >= o.warmup { times.append(dt) }
            }
            flops = FlopCount.forward(c, tokens: 1, seq: o.seq, adapters: adapters) // one query over ~seq keys
            bytesPerToken = FlopCount.weightBytesPerToken(model.weights)
        }
        let step = o.mode == .decode ? times.reduce(0, +) / Double(times.count) : median(times)
        let tokensPerStep = o.mode == .decode ? 1.0 : Double(o.batch * o.seq)
        return BenchResult(
            mode: o.mode.rawValue, model: modelName, dtype: model.weights.storageDType.torchName,
            adapter: adapters?.kind?.rawValue ?? "none", trainable_parameters: adapters?.parameterCount ?? 0,
            seq: o.seq, batch: o.batch, threads: BLAS.threads, steps: o.steps,
            tokens_per_s: tokensPerStep / step, seconds_per_step: step, step_seconds: times,
            flops_per_step: flops, gflops: flops / step / 1e9, peak_rss_mb: peakRSSMegabytes(),
            weight_bytes_per_token: bytesPerToken, gb_per_s: bytesPerToken.map { $0 / step / 1e9 })
    }
}
