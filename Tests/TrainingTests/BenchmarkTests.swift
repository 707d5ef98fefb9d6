import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport
import Training

/// `finetune bench`'s measurement code on a tiny model: the FLOP model by hand, and every mode
/// producing the figures its JSON promises (no timing thresholds: speed is for `bench` itself).
@Suite struct BenchmarkTests {
    static func model(_ kind: AdapterKind?) throws -> (TransformerModel, AdapterSet?) {
        let w = try FixtureModel.llamaTiny.load()
        let set = try kind.map { try AdapterSet.create(spec: AdapterSpec(kind: $0, rank: 4), config: w.config, seed: 1) }
        return (TransformerModel(weights: w, adapters: set), set)
    }

    @Test func flopModelByHand() throws {
        let c = try FixtureModel.llamaTiny.load().config
        var p = c.vocabSize * c.hiddenSize
        for proj in Projection.allCases { let s = c.shape(of: proj); p += c.numLayers * s.out * s.in }
        let seq = 16, attn = 4.0 * Double(c.numLayers * seq * c.qDim)
        #expect(FlopCount.forward(c, tokens: 2 * seq, seq: seq, adapters: nil) == Double(2 * seq) * (2 * Double(p) + attn))
        #expect(FlopCount.trainStep(c, tokens: seq, seq: seq, adapters: nil) == Double(seq) * (4 * Double(p) + 3 * attn))
        // Rows without a target skip the lm_head's forward and input gradient.
        #expect(FlopCount.trainStep(c, tokens: seq, seq: seq, adapters: nil, logitRows: 5)
                == Double(seq) * (4 * Double(p) + 3 * attn) - Double(seq - 5) * 4 * Double(c.vocabSize * c.hiddenSize))
        // Last-position logits save the lm_head GEMM of every other position.
        let saved = FlopCount.forward(c, tokens: 2 * seq, seq: seq, adapters: nil)
            - FlopCount.prefillLastLogits(c, sequences: 2, seq: seq, adapters: nil)
        #expect(saved == Double(2 * (seq - 1)) * 2 * Double(c.vocabSize * c.hiddenSize))
        // LoRA r on [out, in]: 2·r·(in + out) per token.
        let (_, lora) = try Self.model(.lora)
        let expected = lora!.adapters.reduce(0) { $0 + 2 * 4 * ($1.inFeatures + $1.outFeatures) }
        #expect(FlopCount.adapterForward(lora) == Double(expected))
    }

    /// Last-position logits only apply to prefill: the other modes run without them only.
    @Test(arguments: [(BenchMode.train, false), (.prefill, false), (.prefill, true), (.decode, false)])
    func everyModeReportsItsFigures(_ mode: BenchMode, lastLogits: Bool) throws {
        let (m, set) = try Self.model(.ndlinear)
        var o = BenchOptions(mode: mode)
        o.seq = 12; o.batch = 2; o.steps = 2; o.lastLogitsOnly = lastLogits
        let r = try Benchmark.run(model: m, adapters: set, options: o, modelName: "llama-tiny")
        #expect(r.step_seconds.count == 2 && r.step_seconds.allSatisfy { $0 > 0 })
        #expect(r.tokens_per_s > 0 && r.gflops > 0 && r.peak_rss_mb > 0)
        #expect(r.adapter == "ndlinear" && r.trainable_parameters == set!.parameterCount)
        let c = m.config
        switch mode {
        case .train:
            // The last position of each row has no target: 22 rows of logits.
            #expect(r.flops_per_step == FlopCount.trainStep(c, tokens: 24, seq: 12, adapters: set, logitRows: 22))
            #expect(r.logits == nil && r.gb_per_s == nil && r.prompt_fraction == 0)
        case .prefill:
            #expect(r.logits == (lastLogits ? "last" : "all"))
            #expect(r.flops_per_step == (lastLogits ? FlopCount.prefillLastLogits(c, sequences: 2, seq: 12, adapters: set)
                                                    : FlopCount.forward(c, tokens: 24, seq: 12, adapters: set)))
            #expect(r.tokens_per_s == 24 / r.seconds_per_step)
        case .decode:
            #expect(r.tokens_per_s == 1 / r.seconds_per_step)
            #expect(r.weight_bytes_per_token == FlopCount.weightBytesPerToken(m.weights))
            #expect(r.gb_per_s != nil)
        case .gemm, .bandwidth:
            Issue.record("tested by gemmModeCoversTheStepsShapes / bandwidthModeReportsReadRate")
        }
    }
}

extension BenchmarkTests {
    /// `--mode bandwidth` reads the whole buffer each pass and reports bytes / median time.
    @Test func bandwidthModeReportsReadRate() throws {
        var o = BenchOptions(mode: .bandwidth)
        o.steps = 3
        let r = Benchmark.runBandwidth(options: o, bytes: 64 << 20, modelName: "none")
        #expect(r.mode == "bandwidth" && r.step_seconds.count == 3)
        let sorted = r.step_seconds.sorted()
        #expect(r.seconds_per_step == sorted[1])
        #expect(abs(r.gb_per_s! - Double(64 << 20) / sorted[1] / 1e9) <= 1e-9 * r.gb_per_s!)
    }

    /// `--prompt-fraction`: the masked positions get no target and no logits.
    @Test func promptFractionMasksTheFirstPositions() throws {
        let (m, set) = try Self.model(.lora)
        var o = BenchOptions(mode: .train)
        o.seq = 12; o.batch = 2; o.steps = 1; o.promptFraction = 0.5
        let r = try Benchmark.run(model: m, adapters: set, options: o, modelName: "llama-tiny")
        // Labels 0–5 masked: positions 0–4 predict masked labels, 5–10 predict labels 6–11,
        // position 11 predicts nothing: 6 rows of logits per row.
        #expect(r.flops_per_step == FlopCount.trainStep(m.config, tokens: 24, seq: 12, adapters: set, logitRows: 12))
        #expect(r.prompt_fraction == 0.5)
    }

    /// `--mode gemm` times each distinct training GEMM shape of the config once and weighs it
    /// by how often a step runs it.
    @Test func gemmModeCoversTheStepsShapes() throws {
        let c = try FixtureModel.llamaTiny.load().config
        var o = BenchOptions(mode: .gemm)
        o.seq = 8; o.batch = 2; o.steps = 1
        o.openBLASThreads = 1  // process-wide setting: leave the tests running alongside alone
        let r = Benchmark.runGEMM(config: c, options: o, modelName: "llama-tiny")
        let shapes = try #require(r.shapes)
        // A training step's frozen-base GEMMs: forward + input gradient of every projection and the lm_head.
        let total = shapes.reduce(0.0) { $0 + 2 * Double($1.m * $1.n * $1.k * $1.count) }
        #expect(total == r.flops_per_step)
        #expect(r.flops_per_step == 2 * 2 * 16 * FlopCount.projectionParameters(c))
        #expect(shapes.allSatisfy { $0.m == 16 && $0.library_gflops > 0 && $0.engine_gflops > 0 })
        #expect(r.engine_gflops != nil && r.gflops > 0)
    }
}
