import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport

/// Each adapter's forward against its dense ΔW, its backward against finite differences, and
/// the published trainable-parameter counts.
@Suite struct AdapterKernelTests {
    static func adapters() -> [any LinearAdapter] {
        var rng = SplitMix64(seed: 3)
        let lora = LoRAAdapter(weightName: "model.layers.0.mlp.down_proj.weight", inFeatures: 12, outFeatures: 10, rank: 3, alpha: 6, rng: &rng)
        for i in 0..<lora.b.count { lora.b.value[i] = Float(i % 7) * 0.1 - 0.3 }
        let rs = LoRAAdapter(weightName: "model.layers.0.mlp.up_proj.weight", inFeatures: 12, outFeatures: 10, rank: 4, alpha: 4, useRSLoRA: true, rng: &rng)
        for i in 0..<rs.b.count { rs.b.value[i] = Float(i % 5) * 0.1 - 0.2 }
        let nd = NdLinearAdapter(weightName: "model.layers.0.mlp.gate_proj.weight", inFeatures: 12, outFeatures: 10, alpha: 2, rng: &rng)
        return [lora, rs, nd]
    }

    static func run(_ a: any LinearAdapter, _ x: [Float], rows: Int, training: Bool = true) -> [Float] {
        var y = [Float](repeating: 0, count: rows * a.outFeatures)
        a.forward(x: x, rows: rows, y: &y, training: training)
        return y
    }

    @Test func forwardEqualsDenseDelta() {
        for a in Self.adapters() {
            let rows = 4, x = randomFloats(rows * a.inFeatures, seed: 5)
            let y = Self.run(a, x, rows: rows)
            let dw = a.deltaWeight()
            var ref = [Float](repeating: 0, count: rows * a.outFeatures)
            for r in 0..<rows { for o in 0..<a.outFeatures {
                ref[r * a.outFeatures + o] = Float((0..<a.inFeatures).reduce(0.0) { $0 + Double(dw[o * a.inFeatures + $1]) * Double(x[r * a.inFeatures + $1]) })
            } }
            #expect(maxAbsDiff(y, ref) < 1e-5, "\(a.weightName)")
        }
    }

    @Test func backwardMatchesFiniteDifferences() {
        for a in Self.adapters() {
            let rows = 3, x = randomFloats(rows * a.inFeatures, seed: 7), r = randomFloats(rows * a.outFeatures, seed: 8)
            _ = Self.run(a, x, rows: rows)
            a.zeroGradients()
            var dx = [Float](repeating: 0, count: x.count)
            a.backward(x: x, dy: r, rows: rows, dx: &dx)
            #expect(relativeError(dx, finiteDifference(x, h: 1e-2) { dot(Self.run(a, $0, rows: rows), r) }) < 2e-3, "\(a.weightName) dx")
            for p in a.parameters {
                let v0 = p.value.array
                let fd = finiteDifference(v0, h: 1e-2) { v in
                    for i in v.indices { p.value[i] = v[i] }
                    defer { for i in v0.indices { p.value[i] = v0[i] } }
                    return dot(Self.run(a, x, rows: rows), r)
                }
                #expect(relativeError(p.grad.array, fd) < 2e-3, "\(a.weightName) \(p.role)")
            }
        }
    }

    @Test func dropoutMasksAreReproducibleAndScaled() {
        var rng = SplitMix64(seed: 1)
        let a = NdLinearAdapter(weightName: "w", inFeatures: 16, outFeatures: 16, alpha: 1, rng: &rng)
        a.dropout = 0.5
        a.dropoutSeed = 42
        let x = randomFloats(4 * 16, seed: 2)
        let y1 = Self.run(a, x, rows: 4), y2 = Self.run(a, x, rows: 4)
        #expect(y1 == y2, "same seed, same mask (checkpoint recomputation relies on it)")
        #expect(y1 != Self.run(a, x, rows: 4, training: false), "dropout applies only in training")
        a.dropoutSeed = 43
        #expect(y1 != Self.run(a, x, rows: 4))
        // Backward with dropout still matches finite differences of the (fixed-mask) forward.
        let r = randomFloats(4 * 16, seed: 3)
        _ = Self.run(a, x, rows: 4)
        a.zeroGradients()
        var dx = [Float](repeating: 0, count: x.count)
        a.backward(x: x, dy: r, rows: 4, dx: &dx)
        #expect(relativeError(dx, finiteDifference(x, h: 1e-2) { dot(Self.run(a, $0, rows: 4), r) }) < 2e-3)
    }

    /// A set's adapters share one scratch workspace. A model runs every forward, then the
    /// backwards in reverse order; each adapter must still produce exactly the gradients it
    /// produces alone (nothing of its forward may live in the shared scratch), with and without
    /// dropout.
    @Test(arguments: [Float(0), 0.3])
    func sharedWorkspaceGivesIsolatedResults(dropout: Float) {
        func build() -> [any LinearAdapter] {
            let a = Self.adapters()
            for (i, ad) in a.enumerated() { ad.dropout = dropout; ad.dropoutSeed = UInt64(10 + i) }
            return a
        }
        let rows = 5
        let xs = (0..<3).map { randomFloats(rows * 12, seed: 20 + UInt64($0)) }
        let dys = (0..<3).map { randomFloats(rows * 10, seed: 30 + UInt64($0)) }
        // Alone: forward then backward, one adapter at a time, each with its own workspace.
        var alone: [[Float]] = []
        for (i, a) in build().enumerated() {
            _ = Self.run(a, xs[i], rows: rows)
            a.zeroGradients()
            var dx = [Float](repeating: 0, count: xs[i].count)
            a.backward(x: xs[i], dy: dys[i], rows: rows, dx: &dx)
            alone.append(dx + a.parameters.flatMap(\.grad.array))
        }
        // In a set: all forwards (the largest rows last, so the scratch is reallocated), then
        // the backwards in reverse.
        let set = AdapterSet(build())
        #expect(set.adapters.allSatisfy { $0.workspace === set.workspace })
        var ys: [[Float]] = []
        for (i, a) in set.adapters.enumerated() { ys.append(Self.run(a, xs[i], rows: rows)) }
        _ = Self.run(set.adapters[0], randomFloats(4 * rows * 12, seed: 99), rows: 4 * rows, training: false)
        set.zeroGradients()
        var shared = [[Float]](repeating: [], count: 3)
        for (i, a) in set.adapters.enumerated().reversed() {
            var dx = [Float](repeating: 0, count: xs[i].count)
            a.backward(x: xs[i], dy: dys[i], rows: rows, dx: &dx)
            shared[i] = dx + a.parameters.flatMap(\.grad.array)
        }
        for i in 0..<3 {
            #expect(shared[i] == alone[i], "\(set.adapters[i].weightName): gradients differ with a shared workspace")
        }
        #expect(set.workspace.bytes > 0)
    }

    /// NdLinear-LoRA runs rows in cache-sized blocks spread over threads: many small blocks
    /// (some on each thread, a short last block) give the one-block result, with and without
    /// dropout, and the blocked backward still matches finite differences.
    @Test(arguments: [Float(0), 0.25])
    func ndlinearRowBlocksMatchOneBlock(dropout: Float) {
        func make(_ blockFloats: Int) -> NdLinearAdapter {
            var rng = SplitMix64(seed: 4)
            let a = NdLinearAdapter(weightName: "w", inFeatures: 12, outFeatures: 10, alpha: 2, rng: &rng)
            a.blockFloats = blockFloats; a.dropout = dropout; a.dropoutSeed = 5
            return a
        }
        let rows = 11, x = randomFloats(rows * 12, seed: 6), dy = randomFloats(rows * 10, seed: 7)
        func run(_ a: NdLinearAdapter) -> [Float] {
            let y = Self.run(a, x, rows: rows)
            a.zeroGradients()
            var dx = [Float](repeating: 0, count: x.count)
            a.backward(x: x, dy: dy, rows: rows, dx: &dx)
            return y + dx + a.w0.grad.array + a.w1.grad.array
        }
        let one = run(make(1 << 20)), blocked = make(15)  // 15 floats: one row (max(a·d, c·d) = 10) per block
        #expect(maxAbsDiff(run(blocked), one) < 1e-5)
        let w1 = blocked.w1.value.array
        let fd = finiteDifference(w1, h: 1e-2) { v in
            for i in v.indices { blocked.w1.value[i] = v[i] }
            defer { for i in w1.indices { blocked.w1.value[i] = w1[i] } }
            return dot(Self.run(blocked, x, rows: rows), dy)
        }
        _ = Self.run(blocked, x, rows: rows)
        blocked.zeroGradients()
        var dx = [Float](repeating: 0, count: x.count)
        blocked.backward(x: x, dy: dy, rows: rows, dx: &dx)
        #expect(relativeError(blocked.w1.grad.array, fd) < 2e-3)
    }

    @Test func balancedFactorsMatchReferenceSplits() {
        #expect(balancedFactors(176) == (11, 16))
        #expect(balancedFactors(32) == (4, 8))
        #expect(balancedFactors(896) == (28, 32))
        #expect(balancedFactors(4096) == (64, 64))
        #expect(balancedFactors(14336) == (112, 128))
        #expect(balancedFactors(8960) == (80, 112))
        #expect(balancedFactors(13) == (1, 13))
    }

    /// The numbers published for the method (FORMATS.md), from the config alone.
    @Test func publishedTrainableParameterCounts() throws {
        let dir = TestPaths.fixtures.appendingPathComponent("model-configs")
        let qwen = try ModelConfig.load(dir.appendingPathComponent("qwen3-1.7b.json"))
        let llama = try ModelConfig.load(dir.appendingPathComponent("llama-3-8b.json"))
        #expect(AdapterSet.parameterCount(spec: AdapterSpec(kind: .ndlinear), config: qwen) == 1_146_880)
        #expect(AdapterSet.parameterCount(spec: AdapterSpec(kind: .ndlinear), config: llama) == 2_260_992)
        #expect(AdapterSet.parameterCount(spec: AdapterSpec(kind: .lora, rank: 4), config: qwen) == 4_358_144)
        #expect(AdapterSet.parameterCount(spec: AdapterSpec(kind: .lora, rank: 4), config: llama) == 10_485_760)
        #expect(AdapterSet.parameterCount(spec: AdapterSpec(kind: .lora, rank: 8), config: qwen) == 8_716_288)
        #expect(AdapterSet.parameterCount(spec: AdapterSpec(kind: .lora, rank: 8), config: llama) == 20_971_520)
    }

    @Test func targetSelectionParsingAndErrors() throws {
        let t = try TargetSelection.parse(modules: "q_proj, v_proj", layers: "0-1,3")
        #expect(t.modules == [.q, .v] && t.layers == [0, 1, 3])
        #expect(try TargetSelection.parse(modules: "all-linear", layers: nil).modules.count == 7)
        #expect { try TargetSelection.parse(modules: "q_proj,qkv", layers: nil) } throws: { e in
            "\(e)".contains("qkv") && "\(e)".contains("gate_proj")
        }
        #expect(throws: AdapterError.self) { try TargetSelection.parse(modules: nil, layers: "3-1") }
        let c = try FixtureModel.llamaTiny.load().config
        #expect(throws: AdapterError.self) { try TargetSelection.parse(modules: nil, layers: "5").validate(for: c) }
    }
}

/// The whole model's adapter gradient against finite differences of the whole model's loss
/// (every kernel's backward composed), on a packed, padded batch.
@Suite struct WholeModelGradientTests {
    @Test(arguments: FixtureModel.allCases)
    func packedPaddedBatch(_ f: FixtureModel) throws {
        let w = try f.load()
        // DoRA's gradient treats its weight norm as a constant (PEFT), so a plain finite
        // difference is not its reference: DoraTests holds the norm for its own check.
        for kind in AdapterKind.allCases where kind != .dora {
            let set = try AdapterSet.create(spec: AdapterSpec(kind: kind, rank: 2, alpha: kind == .lora ? 4 : 0.5), config: w.config, seed: 9)
            for a in set.adapters { if let l = a as? LoRAAdapter { for i in 0..<l.b.count { l.b.value[i] = Float((i * 7) % 11) * 0.02 - 0.1 } } }
            try checkWholeModelGradients(w, set, probe: [set.adapters[0], set.adapters[5], set.adapters.last!], label: "\(f) \(kind)")
        }
    }
}

/// The whole model's adapter gradients on the fixture batch (one forward and backward) against
/// central finite differences of the batch loss, at three coordinates of every parameter of the
/// `probe` adapters (a few: full differences over the model are slow in debug). `holdFixed` runs
/// between the two, and `release` after (DoRA holds its weight norm constant there, as its
/// gradient does).
func checkWholeModelGradients(_ w: ModelWeights, _ set: AdapterSet, probe: [any LinearAdapter], label: String,
                              holdFixed: () -> Void = {}, release: () -> Void = {}) throws {
    let model = TransformerModel(weights: w, adapters: set)
    let (input, targets) = FixtureBatch.packedPadded
    let acts = Activations(config: w.config, batch: input.batch, seqLen: input.seqLen)
    func loss() throws -> Double {
        try model.forward(input, acts: acts, training: false)
        return model.loss(acts: acts, targets: targets).sum
    }
    try model.forward(input, acts: acts, training: true)
    _ = model.lossAndGradient(acts: acts, targets: targets, normalizer: 1)
    set.zeroGradients()
    model.backward(input, acts: acts)
    holdFixed()
    defer { release() }
    for a in probe {
        for p in a.parameters {
            for i in [0, p.count / 2, p.count - 1] {
                let v = p.value[i], h: Float = 1e-2
                p.value[i] = v + h; let lp = try loss()
                p.value[i] = v - h; let lm = try loss()
                p.value[i] = v
                let fd = Float((lp - lm) / Double(2 * h))
                #expect(abs(p.grad[i] - fd) <= 5e-3 * max(abs(fd), 1e-1), "\(label) \(a.weightName) \(p.role)[\(i)]: \(p.grad[i]) vs \(fd)")
            }
        }
    }
}
