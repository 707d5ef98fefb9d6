import Adapters
import Foundation
import LLMCore
#if canImport(Glibc)
import Glibc
#endif

/// What `finetune bench` measures.
public enum BenchMode: String, Sendable, CaseIterable {
    case train, prefill, decode
    /// The GEMM library alone on the model's GEMM shapes (forward `X·Wᵀ` and input-gradient
    /// `dY·W` of every projection and the lm_head), with the library's own threads: the machine's
    /// GEMM rate that the train/prefill figures are judged against.
    case gemm
    /// The machine's read bandwidth with the engine's threads (each summing its own contiguous
    /// slice of a buffer far larger than the caches, as decode's GEMV streams weights): the
    /// bound that decode's GB/s is judged against, measured in the same run.
    case bandwidth
}

public struct BenchOptions: Sendable {
    public var mode: BenchMode
    public var seq: Int = 256
    public var batch: Int = 1
    /// Timed steps (train/prefill) or decoded tokens (decode).
    public var steps: Int = 3
    public var warmup: Int = 1
    public var checkpointing = false
    /// Prefill only: compute the logits of the last position only and fill a KV cache, as
    /// generation does (`forwardCached`), instead of logits at every position as the training
    /// forward (and the PyTorch reference's prefill) does.
    public var lastLogitsOnly = false
    /// Train only: the fraction of each row's first positions without a target, as prompt
    /// masking gives (their logits are not computed).
    public var promptFraction: Double = 0
    /// GEMM mode: the library's own thread count for the reference rate (nil: the engine's).
    /// OpenBLAS's thread count is process-wide; tests pass 1 so that GEMMs running
    /// concurrently elsewhere in the process are untouched.
    public var openBLASThreads: Int?
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
    /// Prefill only: "all" (logits at every position) or "last" (generation's prefill).
    public var logits: String?
    /// Train only: fraction of each row's positions masked as prompt (no target, no logits).
    public var prompt_fraction: Double?
    /// Decode only: weight bytes streamed per token and the achieved read bandwidth.
    public var weight_bytes_per_token: Double?
    public var gb_per_s: Double?
    /// GEMM only: each shape's figures; `gflops` above is the GEMM library's own threading
    /// (`cpu.gemm_backend`) over the step's GEMMs, `engine_gflops` the engine's `BLAS.gemm` (its
    /// own row/column split).
    public var shapes: [GEMMShapeResult]?
    public var engine_gflops: Double?
    /// The CPU, the ISA level and the GEMM library the figures were taken with.
    public var cpu: CPUReport = CPU.report
}

/// One GEMM shape of `bench --mode gemm`: `[m, k] · [k, n]`, run `count` times per step.
public struct GEMMShapeResult: Encodable, Sendable {
    public var name: String
    public var m: Int, n: Int, k: Int
    public var count: Int
    public var library_gflops: Double
    public var engine_gflops: Double
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
        let perLayer = Projection.allCases.reduce(0) { let s = c.shape(of: $1); return $0 + s.out * s.in }
        return Double(perLayer * c.numLayers + c.vocabSize * c.hiddenSize)
    }

    /// Forward FLOPs per token of the adapters.
    public static func adapterForward(_ set: AdapterSet?) -> Double {
        guard let set else { return 0 }
        return set.adapters.reduce(0.0) { sum, a in
            if let l = (a as? LoRAAdapter) ?? (a as? DoRAAdapter)?.lora {
                // DoRA: LoRA's plus its row scale (one multiply per output).
                return sum + 2 * Double(l.rank * (l.inFeatures + l.outFeatures)) + (a is DoRAAdapter ? Double(l.outFeatures) : 0)
            }
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

    /// A prefill of `sequences` sequences of `seq` tokens that computes logits only at each
    /// sequence's last position.
    public static func prefillLastLogits(_ c: ModelConfig, sequences: Int, seq: Int, adapters: AdapterSet?) -> Double {
        forward(c, tokens: sequences * seq, seq: seq, adapters: adapters)
            - Double(sequences * (seq - 1)) * 2 * Double(c.vocabSize * c.hiddenSize)
    }

    /// `logitRows`: rows whose logits the step computes (those with a target; default all).
    public static func trainStep(_ c: ModelConfig, tokens: Int, seq: Int, adapters: AdapterSet?, logitRows: Int? = nil) -> Double {
        let t = Double(tokens)
        let skipped = Double(tokens - (logitRows ?? tokens)) * 4 * Double(c.vocabSize * c.hiddenSize)
        return t * (4 * projectionParameters(c) + 12 * Double(c.numLayers * seq * c.qDim) + 3 * adapterForward(adapters)) - skipped
    }

    /// Bytes of weights one decoded token reads (every projection and the lm_head, stored dtype).
    public static func weightBytesPerToken(_ w: ModelWeights) -> Double {
        let c = w.config
        var bytes = 0
        for l in 0..<c.numLayers { for p in Projection.allCases {
            let v = w.view(p.weightName(layer: l)); bytes += v.byteCount
        } }
        bytes += w.view(c.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight").byteCount
        return Double(bytes)
    }
}

public enum Benchmark {
    static func median(_ x: [Double]) -> Double { let s = x.sorted(); return s[s.count / 2] }

    // MARK: Sizes checked before anything is allocated

    /// Refuses options that would overflow, run past the model's context or not fit in memory
    /// (`SystemMemory`), naming the flags, before the weights or any buffer are allocated.
    /// `trainableParameters`: the adapter's, when there is one.
    public static func check(config c: ModelConfig, options o: BenchOptions, trainableParameters: Int = 0) throws {
        guard o.mode != .bandwidth else { return }
        let flags = "--seq \(o.seq) × --batch-size \(o.batch)"
        guard let tokens = Checked.mul(o.seq, o.batch) else {
            throw TrainingError.invalidOption("\(flags): overflows a 64-bit count of tokens")
        }
        let context = c.maxPositionEmbeddings
        switch o.mode {
        case .train, .prefill:
            guard o.seq <= context else {
                throw TrainingError.invalidOption("--seq \(o.seq): more positions than the model's context of \(context) (max_position_embeddings)")
            }
        case .decode:
            guard let positions = Checked.add(o.seq, o.warmup, o.steps, 1), positions <= context else {
                throw TrainingError.invalidOption("--seq \(o.seq) + --steps \(o.steps) (+ \(o.warmup) warm-up): more positions than the model's "
                    + "context of \(context) (max_position_embeddings)")
            }
        case .gemm, .bandwidth:
            break
        }
        let need = memoryBytes(config: c, options: o, tokens: tokens, trainableParameters: trainableParameters)
        if let problem = SystemMemory.shortfall(need) {
            throw TrainingError.invalidOption("\(flags): bench --mode \(o.mode.rawValue) needs about \(SystemMemory.format(need)) "
                + "besides the weights; \(problem)")
        }
    }

    /// The bytes a benchmark allocates besides the weights (nil on overflow): the activation
    /// arena or KV caches of its mode, its token arrays, the adapter's state (train) or the
    /// largest GEMM's three matrices (gemm).
    static func memoryBytes(config c: ModelConfig, options o: BenchOptions, tokens: Int, trainableParameters: Int) -> Int? {
        let tokenArrays = Checked.mul(tokens, 32)
        switch o.mode {
        case .train:
            return Checked.add(c.activationBytes(batch: o.batch, seqLen: o.seq, checkpointing: o.checkpointing), tokenArrays,
                               Checked.mul(trainableParameters, 16))
        case .prefill where o.lastLogitsOnly:
            return Checked.add(Checked.mul(o.batch, c.kvCacheBytes(capacity: o.seq)),
                               c.activationBytes(batch: o.batch, seqLen: o.seq, checkpointing: true), tokenArrays)
        case .prefill:
            return Checked.add(c.activationBytes(batch: o.batch, seqLen: o.seq, checkpointing: false), tokenArrays)
        case .decode:
            return Checked.add(c.kvCacheBytes(capacity: Checked.add(o.seq, o.warmup, o.steps, 1) ?? .max),
                               c.activationBytes(batch: 1, seqLen: o.seq, checkpointing: true), tokenArrays)
        case .gemm:
            var most: Int? = 0
            for s in gemmShapes(c, rows: tokens) {
                let b = Checked.mul(4, Checked.add(Checked.mul(s.m, s.k), Checked.mul(s.k, s.n), Checked.mul(s.m, s.n)))
                guard let b, let m = most else { return nil }
                most = max(m, b)
            }
            return most
        case .bandwidth:
            return 1 << 30
        }
    }

    /// Median seconds of `body` over `steps` runs after `warmup`.
    static func timeMedian(warmup: Int, steps: Int, _ body: () -> Void) -> Double {
        var t: [Double] = []
        for i in 0..<(warmup + steps) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            if i >= warmup { t.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9) }
        }
        return median(t)
    }

    /// The distinct GEMMs of a training step on `rows` tokens: forward `X[rows,in]·Wᵀ` and
    /// input-gradient `dY[rows,out]·W` per projection (× layers) and for the lm_head.
    static func gemmShapes(_ c: ModelConfig, rows: Int) -> [(name: String, m: Int, n: Int, k: Int, transB: Bool, count: Int)] {
        var out: [(String, Int, Int, Int, Bool, Int)] = []
        var seen = Set<String>()
        for p in Projection.allCases {
            let s = c.shape(of: p), key = "\(s.out)x\(s.in)"
            let n = Projection.allCases.filter { c.shape(of: $0) == s }.count * c.numLayers
            guard seen.insert(key).inserted else { continue }
            out.append(("\(p) fwd", rows, s.out, s.in, true, n))
            out.append(("\(p) dx", rows, s.in, s.out, false, n))
        }
        out.append(("lm_head fwd", rows, c.vocabSize, c.hiddenSize, true, 1))
        out.append(("lm_head dx", rows, c.hiddenSize, c.vocabSize, false, 1))
        return out
    }

    /// The library's sgemm on the model's training GEMM shapes, its own threading vs the engine's.
    static func gemmRates(_ c: ModelConfig, rows: Int, options o: BenchOptions) -> (shapes: [GEMMShapeResult], library: Double, engine: Double, flops: Double) {
        var results: [GEMMShapeResult] = []
        var flops = 0.0, tOpen = 0.0, tEngine = 0.0
        var rng = SplitMix64(seed: 7)
        for s in gemmShapes(c, rows: rows) {
            let a = FloatBuffer(count: s.m * s.k, zeroed: false), b = FloatBuffer(count: s.k * s.n, zeroed: false)
            let cc = FloatBuffer(count: s.m * s.n, zeroed: false)
            for i in 0..<a.count { a[i] = rng.nextFloat() - 0.5 }
            for i in 0..<b.count { b[i] = rng.nextFloat() - 0.5 }
            let f = 2 * Double(s.m * s.n * s.k)
            // One GEMM takes milliseconds: repeat it so each timed sample lasts ≥ ~50 ms at
            // 100 GFLOP/s, and take the median sample per call.
            let reps = max(1, Int(5e9 / f))
            let open = BLAS.withLibraryThreads(o.openBLASThreads ?? BLAS.threads) {
                timeMedian(warmup: o.warmup, steps: max(o.steps, 5)) {
                    for _ in 0..<reps {
                        BLAS.gemm(transB: s.transB, m: s.m, n: s.n, k: s.k, a: a.pointer, b: b.pointer, c: cc.pointer, parallel: false)
                    }
                }
            } / Double(reps)
            let engine = timeMedian(warmup: o.warmup, steps: max(o.steps, 5)) {
                for _ in 0..<reps { BLAS.gemm(transB: s.transB, m: s.m, n: s.n, k: s.k, a: a.pointer, b: b.pointer, c: cc.pointer) }
            } / Double(reps)
            results.append(GEMMShapeResult(name: s.name, m: s.m, n: s.n, k: s.k, count: s.count,
                                           library_gflops: f / open / 1e9, engine_gflops: f / engine / 1e9))
            flops += f * Double(s.count); tOpen += open * Double(s.count); tEngine += engine * Double(s.count)
        }
        return (results, flops / tOpen / 1e9, flops / tEngine / 1e9, flops)
    }

    /// `--mode gemm`: needs only the config. `seconds_per_step` is the time of one training
    /// step's GEMMs at the library's own threading (`gflops`); `engine_gflops` the engine's split.
    public static func runGEMM(config c: ModelConfig, options o: BenchOptions, modelName: String) -> BenchResult {
        let g = gemmRates(c, rows: o.batch * o.seq, options: o)
        let step = g.flops / g.library / 1e9
        return BenchResult(
            mode: BenchMode.gemm.rawValue, model: modelName, dtype: "float32", adapter: "none", trainable_parameters: 0,
            seq: o.seq, batch: o.batch, threads: o.openBLASThreads ?? BLAS.threads, steps: o.steps,
            tokens_per_s: Double(o.batch * o.seq) / step, seconds_per_step: step, step_seconds: [step],
            flops_per_step: g.flops, gflops: g.library, peak_rss_mb: peakRSSMegabytes(),
            shapes: g.shapes, engine_gflops: g.engine)
    }

    /// `--mode bandwidth`: median GB/s of `steps` passes (after one warm-up) reading `bytes`.
    public static func runBandwidth(options o: BenchOptions, bytes: Int = 1 << 30, modelName: String) -> BenchResult {
        let count = bytes / 4
        let buffer = FloatBuffer(count: count, zeroed: false)
        // Written once, so every page is really backed (untouched pages would read as the zero page).
        buffer.pointer.update(repeating: 1, count: count)
        let threads = BLAS.threads, p = UnsafePointer(buffer.pointer)
        var sums = [Float](repeating: 0, count: threads)
        var times: [Double] = []
        for i in 0..<(o.warmup + o.steps) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            sums.withUnsafeMutableBufferPointer { out in
                let out = out.baseAddress!
                DispatchQueue.concurrentPerform(iterations: threads) { t in
                    let lo = count * t / threads, hi = count * (t + 1) / threads
                    var acc = SIMD8<Float>()
                    var j = lo
                    while j + 8 <= hi { acc += UnsafeRawPointer(p + j).loadUnaligned(as: SIMD8<Float>.self); j += 8 }
                    out[t] = acc.sum()
                }
            }
            let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            if i >= o.warmup { times.append(dt) }
        }
        precondition(sums.reduce(0, +) > 0, "bandwidth pass read nothing")
        let step = median(times)
        return BenchResult(
            mode: BenchMode.bandwidth.rawValue, model: modelName, dtype: "float32", adapter: "none", trainable_parameters: 0,
            seq: 0, batch: 0, threads: threads, steps: o.steps, tokens_per_s: 0, seconds_per_step: step, step_seconds: times,
            flops_per_step: 0, gflops: 0, peak_rss_mb: peakRSSMegabytes(),
            weight_bytes_per_token: nil, gb_per_s: Double(count * 4) / step / 1e9)
    }

    /// Runs the benchmark in-process with warm-up; weights, adapters and threads are set up by the caller.
    public static func run(model: TransformerModel, adapters: AdapterSet?, options o: BenchOptions, modelName: String) throws -> BenchResult {
        let c = model.config
        var rng = SplitMix64(seed: 1)
        let tokens = (0..<(o.batch * o.seq)).map { _ in Int(rng.next() % UInt64(c.vocabSize)) }
        var times: [Double] = []
        var flops = 0.0
        var bytesPerToken: Double?
        switch o.mode {
        case .gemm:
            return runGEMM(config: c, options: o, modelName: modelName)
        case .bandwidth:
            return runBandwidth(options: o, modelName: modelName)
        case .train:
            let input = ModelInput(batch: o.batch, seqLen: o.seq, tokens: tokens)
            let masked = Int(o.promptFraction * Double(o.seq))
            let labels = tokens.enumerated().map { i, t in i % o.seq < masked ? Int32(-100) : Int32(t) }
            let targets = shiftedTargets(labels: labels, batch: o.batch, seqLen: o.seq)
            let acts = Activations(config: c, batch: o.batch, seqLen: o.seq, checkpointing: o.checkpointing)
            let opt = AdamW(parameters: adapters?.parameters ?? [], weightDecay: 0)
            let count = targets.filter { $0 >= 0 }.count
            for i in 0..<(o.warmup + o.steps) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                adapters?.zeroGradients()
                try model.forward(input, acts: acts, training: true, targets: targets)
                _ = model.lossAndGradient(acts: acts, targets: targets, normalizer: count)
                model.backward(input, acts: acts)
                opt.update(lr: 1e-4)
                let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                if i >= o.warmup { times.append(dt) }
            }
            flops = FlopCount.trainStep(c, tokens: o.batch * o.seq, seq: o.seq, adapters: adapters, logitRows: count)
        case .prefill where o.lastLogitsOnly:
            let rows = (0..<o.batch).map { b in Array(tokens[(b * o.seq)..<((b + 1) * o.seq)]) }
            for i in 0..<(o.warmup + o.steps) {
                let caches = rows.map { _ in KVCache(config: c, capacity: o.seq) }
                let t0 = DispatchTime.now().uptimeNanoseconds
                _ = try model.forwardCached(zip(rows, caches).map { CachedSequence(tokens: $0, cache: $1) })
                let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                if i >= o.warmup { times.append(dt) }
            }
            flops = FlopCount.prefillLastLogits(c, sequences: o.batch, seq: o.seq, adapters: adapters)
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
            logits: o.mode == .prefill ? (o.lastLogitsOnly ? "last" : "all") : nil,
            prompt_fraction: o.mode == .train ? o.promptFraction : nil,
            weight_bytes_per_token: bytesPerToken, gb_per_s: bytesPerToken.map { $0 / step / 1e9 })
    }
}
