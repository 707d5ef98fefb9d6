import Adapters
import Foundation
import LLMCore
import Testing
import TestSupport

/// Writing GGUF for llama.cpp: whole models (optionally with adapters merged) and llama.cpp LoRA
/// adapter files, checked by reading them back through the GGUF loader.
@Suite struct GGUFExportTests {
    static let dir: URL = try! temporaryDirectory("gguf-export")

    static func logits(_ weights: ModelWeights, _ set: AdapterSet? = nil, _ f: FixtureModel) throws -> [Float] {
        let model = TransformerModel(weights: weights, adapters: set)
        let batch = try FixtureBatch(try f.expected())
        let acts = Activations(config: weights.config, batch: batch.batch, seqLen: batch.seqLen)
        try model.forward(batch.input, acts: acts, training: false)
        return acts.logits.array
    }

    static let families: [FixtureModel] = [.llamaTiny, .qwen2Tiny, .qwen3Tiny]

    /// HF fixture → GGUF (llama.cpp names, q/k rows permuted for llama) → GGUF loader: the same
    /// config and bit-identical logits. This pins the name map and the permutation both ways.
    @Test(arguments: families)
    func modelRoundTripsThroughGGUF(_ f: FixtureModel) throws {
        let hf = try f.load()
        let url = Self.dir.appendingPathComponent("\(f).gguf")
        _ = try GGUFExport.writeMergedModel(hf, adapters: nil, base: nil, to: url)
        let g = try GGUFFile(path: url.path)
        #expect(try g.string("general.architecture") == GGUFExport.architecture(hf.config))
        if f == .llamaTiny {
            // The q rows really are stored in llama.cpp's order.
            let q = try #require(g["blk.0.attn_q.weight"]).floats(), qHF = hf.view("model.layers.0.self_attn.q_proj.weight").floats()
            #expect(q != qHF)
        }
        let back = try ModelWeights.load(gguf: url.path)
        let (a, b) = (hf.config, back.config)
        #expect(a.family == b.family && a.hiddenSize == b.hiddenSize && a.numKVHeads == b.numKVHeads && a.headDim == b.headDim
                && a.tieWordEmbeddings == b.tieWordEmbeddings && a.qkvBias == b.qkvBias && a.rmsNormEps == b.rmsNormEps && a.ropeTheta == b.ropeTheta)
        #expect(try Self.logits(back, nil, f) == Self.logits(hf, nil, f))
    }

    @Test func llama3RopeScalingIsRefusedNotDropped() throws {
        #expect(throws: ModelError.self) {
            _ = try GGUFExport.writeMergedModel(try FixtureModel.llama3Tiny.load(), adapters: nil, base: nil,
                                                to: Self.dir.appendingPathComponent("l3.gguf"))
        }
    }

    /// LoRA merged into a GGUF copy of a GGUF base: untouched tensors and all metadata are copied
    /// byte for byte; the merged model gives PEFT's adapter logits.
    @Test(arguments: [(FixtureModel.llamaTiny, "lora"), (.qwen2Tiny, "ndlinear"), (.qwen3Tiny, "lora")])
    func mergeIntoGGUFBase(_ f: FixtureModel, _ kind: String) throws {
        let baseURL = Self.dir.appendingPathComponent("\(f)-base.gguf")
        _ = try GGUFExport.writeMergedModel(try f.load(), adapters: nil, base: nil, dtype: .f16, to: baseURL)
        let base = try GGUFFile(path: baseURL.path)
        let weights = try ModelWeights.load(gguf: baseURL.path)
        let set = try AdapterIO.load(f.directory.appendingPathComponent(kind), config: weights.config)
        let out = Self.dir.appendingPathComponent("\(f)-\(kind)-merged.gguf")
        let report = try GGUFExport.writeMergedModel(weights, adapters: set, base: base, dtype: .f32, to: out)
        #expect(report.merged.count == set.adapters.count)
        let merged = try GGUFFile(path: out.path)
        #expect(merged.keys == base.keys)
        for k in base.keys { #expect(merged.metadata[k] == base.metadata[k]) }
        for t in base.tensors {
            let m = try #require(merged[t.name])
            #expect(m.shape == t.shape)
            if set.adapter(for: GGUFNames.hfName(t.name) ?? "") == nil {
                #expect(m.dtype == t.dtype && Data(bytes: m.data, count: m.byteCount) == Data(bytes: t.data, count: t.byteCount), "\(t.name)")
            } else {
                #expect(m.dtype == .f32)
            }
        }
        let adapted = try Self.logits(weights, set, f)
        let viaMerge = try Self.logits(try ModelWeights.load(gguf: out.path), nil, f)
        #expect(maxAbsDiff(adapted, viaMerge) <= 1e-4 * max(1, maxAbs(adapted)), "\(f) \(kind)")
    }

    /// A quantized base merges to F16 by default; asked for, the merge is stored quantized (Q8_0
    /// here) and what that rounding costs is reported.
    @Test func mergeKeepsQuantizedPrecision() throws {
        let f = FixtureModel.qwen2Tiny
        let baseURL = Self.dir.appendingPathComponent("q8-base.gguf")
        _ = try GGUFExport.writeMergedModel(try f.load(), adapters: nil, base: nil, dtype: .q8_0, to: baseURL)
        let weights = try ModelWeights.load(gguf: baseURL.path)
        #expect(weights.storageDType == .q8_0)
        let set = try AdapterIO.load(f.directory.appendingPathComponent("lora"), config: weights.config)
        let out = Self.dir.appendingPathComponent("q8-merged.gguf")
        let byDefault = try GGUFExport.writeMergedModel(weights, adapters: set, base: try GGUFFile(path: baseURL.path), to: out)
        #expect(byDefault.dtype == "F16")
        let report = try GGUFExport.writeMergedModel(weights, adapters: set, base: try GGUFFile(path: baseURL.path), dtype: .q8_0, to: out)
        #expect(report.dtype == "Q8_0")
        #expect(report.maxRoundingError > 0 && report.maxRoundingError < 0.01)
        let merged = try GGUFFile(path: out.path)
        #expect(merged["blk.0.attn_q.weight"]?.dtype == .q8_0)
    }

    /// llama.cpp LoRA file: metadata, names, ggml shapes (lora_a ne = [in, r], lora_b ne = [r, out]),
    /// and scale·B·A (with B's rows put back in HF order) equals the adapter's ΔW.
    @Test(arguments: [FixtureModel.llamaTiny, .qwen3Tiny])
    func loraAdapterFileForLlamaCpp(_ f: FixtureModel) throws {
        let weights = try f.load()
        let set = try AdapterIO.load(f.directory.appendingPathComponent("lora"), config: weights.config)
        let url = Self.dir.appendingPathComponent("\(f)-lora.gguf")
        let (modules, alpha) = try GGUFExport.writeLoRA(set, config: weights.config, baseName: "tiny", to: url)
        #expect(modules == set.adapters.count)
        let g = try GGUFFile(path: url.path)
        #expect(try g.string("general.type") == "adapter" && g.string("adapter.type") == "lora")
        #expect(try g.string("general.architecture") == GGUFExport.architecture(weights.config))
        #expect(try g.double("adapter.lora.alpha") == Double(alpha))
        #expect(g.tensors.count == 2 * set.adapters.count)
        for case let l as LoRAAdapter in set.adapters {
            let name = try #require(GGUFNames.ggufName(l.weightName))
            let a = try #require(g[name + ".lora_a"]), b = try #require(g[name + ".lora_b"])
            #expect(a.shape == [l.rank, l.inFeatures] && b.shape == [l.outFeatures, l.rank] && a.dtype == .f32)
            var bHF = b.floats()
            if GGUFExport.architecture(weights.config) == "llama", l.weightName.contains("q_proj") || l.weightName.contains("k_proj") {
                let src = bHF
                src.withUnsafeBytes { s in bHF.withUnsafeMutableBytes {
                    RoPEPermutation.permuteRows(s.baseAddress!, rows: l.outFeatures, rowBytes: 4 * l.rank, headDim: weights.config.headDim, toHF: true, into: $0.baseAddress!)
                } }
                #expect(src != bHF || l.b.value.array.allSatisfy { $0 == 0 })
            }
            let aV = a.floats(), scale = alpha / Float(l.rank)
            var delta = [Float](repeating: 0, count: l.outFeatures * l.inFeatures)
            for o in 0..<l.outFeatures { for i in 0..<l.inFeatures {
                var s: Float = 0
                for r in 0..<l.rank { s += bHF[o * l.rank + r] * aV[r * l.inFeatures + i] }
                delta[o * l.inFeatures + i] = scale * s
            } }
            let expected = l.deltaWeight()
            #expect(maxAbsDiff(delta, expected) <= 1e-6 * max(1, maxAbs(expected)), "\(l.weightName)")
        }
        // NdLinear-LoRA has no llama.cpp adapter form: the error says to merge instead.
        let nd = try AdapterIO.load(f.directory.appendingPathComponent("ndlinear"), config: weights.config)
        #expect { _ = try GGUFExport.writeLoRA(nd, config: weights.config, baseName: nil, to: url) } throws: { "\($0)".contains("merge") }
    }
}
