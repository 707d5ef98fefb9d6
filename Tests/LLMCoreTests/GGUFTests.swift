import Foundation
import LLMCore
import Testing
import TestSupport

/// GGUF reading and writing, validation, llama.cpp name mapping and the real SmolLM2 checkpoint.
@Suite struct GGUFTests {
    static let dir: URL = try! temporaryDirectory("gguf")
    static func tmp(_ name: String) throws -> URL { dir.appendingPathComponent(name) }

    static func sampleWriter() -> (GGUFWriter, [String: [Float]]) {
        var w = GGUFWriter()
        w.alignment = 64
        w.metadata = [
            ("general.architecture", .string("llama")), ("u8", .uint8(200)), ("i8", .int8(-5)), ("u16", .uint16(60000)),
            ("i16", .int16(-3000)), ("u32", .uint32(4_000_000_000)), ("i32", .int32(-7)), ("f32", .float32(1.5)),
            ("bool", .bool(true)), ("u64", .uint64(1 << 40)), ("i64", .int64(-(1 << 40))), ("f64", .float64(-2.25)),
            ("unicode", .string("héllo ✓")), ("strings", .array(8, [.string("a"), .string(""), .string("b c")])),
            ("nested", .array(9, [.array(5, [.int32(1), .int32(2)]), .array(5, [])])),
        ]
        var values: [String: [Float]] = [:]
        for (name, dtype, shape) in [("a", DType.f32, [3, 5]), ("b", .f16, [7]), ("c", .bf16, [2, 2, 3]), ("d", .q8_0, [2, 64])] {
            w.tensors.append(.init(name: name, dtype: dtype, shape: shape))
            values[name] = (0..<shape.reduce(1, *)).map { Float($0 % 13) * 0.25 - 1 }
        }
        return (w, values)
    }

    static func bytes(_ values: [Float], _ dtype: DType) -> Data {
        var d = Data(count: dtype.storageBytes(elements: values.count))
        d.withUnsafeMutableBytes { p in
            values.withUnsafeBufferPointer { v in
                switch dtype {
                case .f32: p.baseAddress!.copyMemory(from: v.baseAddress!, byteCount: v.count * 4)
                case .f16: for i in v.indices { p.storeBytes(of: floatToF16(v[i]), toByteOffset: 2 * i, as: UInt16.self) }
                case .bf16: for i in v.indices { p.storeBytes(of: floatToBF16(v[i]), toByteOffset: 2 * i, as: UInt16.self) }
                default: quantize(v.baseAddress!, dtype: dtype, count: v.count, into: p.baseAddress!)
                }
            }
        }
        return d
    }

    @Test func writeThenReadRoundTrips() throws {
        let (w, values) = Self.sampleWriter()
        let url = try Self.tmp("rt.gguf")
        try w.write(to: url) { Self.bytes(values[$0.name]!, $0.dtype) }
        let g = try GGUFFile(path: url.path)
        #expect(g.version == 3 && g.alignment == 64)
        #expect(g.keys == w.metadata.map(\.0) + ["general.alignment"])
        for (k, v) in w.metadata { #expect(g.metadata[k] == v, "\(k)") }
        #expect(g.tensors.map(\.name) == ["a", "b", "c", "d"])
        for t in w.tensors {
            let v = try #require(g[t.name])
            #expect(v.shape == t.shape && v.dtype == t.dtype)
            #expect(Int(bitPattern: v.data) % 64 == Int(bitPattern: g.tensors[0].data) % 64, "aligned like the first tensor")
            let expected = values[t.name]!
            // Every sample value is exactly representable in each type (Q8_0 scale = 2/127… is not,
            // so compare against the rounding the format itself does).
            let tol: Float = t.dtype == .q8_0 ? 1.0 / 127 : 0
            #expect(maxAbsDiff(v.floats(), expected) <= tol, "\(t.name)")
        }
        #expect(try g.strings("strings") == ["a", "", "b c"])
        #expect(try g.int("u32") == 4_000_000_000)
        #expect(try g.double("f64") == -2.25)
    }

    /// Each kind of damage gives its own typed error naming the file (and key or tensor).
    @Test func malformedFilesGiveTypedErrors() throws {
        let (w, values) = Self.sampleWriter()
        let url = try Self.tmp("good.gguf")
        try w.write(to: url) { Self.bytes(values[$0.name]!, $0.dtype) }
        let good = try Data(contentsOf: url)
        func damaged(_ name: String, _ f: (inout Data) -> Void) throws -> Error? {
            var d = good
            f(&d)
            let u = try Self.tmp(name)
            try d.write(to: u)
            do { _ = try GGUFFile(path: u.path); return nil } catch { return error }
        }
        let path = { (n: String) in url.deletingLastPathComponent().appendingPathComponent(n).path }
        #expect(try damaged("magic.gguf") { $0[0] = 0x48 } as? GGUFError == .notGGUF(file: path("magic.gguf")))
        #expect(try damaged("v1.gguf") { $0[4] = 1 } as? GGUFError == .unsupportedVersion(file: path("v1.gguf"), version: 1))
        let truncated = try damaged("cut.gguf") { $0 = $0.prefix(100) }
        guard case .truncated(let f, _, _)? = truncated as? GGUFError else { Issue.record("\(String(describing: truncated))"); return }
        #expect(f == path("cut.gguf"))
        // The first tensor's type field → 10 (Q2_K, not supported).
        var info = Data([1, 0, 0, 0, 0, 0, 0, 0, UInt8(ascii: "a"), 2, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 3])
        info.append(Data(count: 7))
        let typeOffset = try #require(good.range(of: info)).upperBound
        let e = try damaged("q2k.gguf") { $0[typeOffset] = 10 }
        #expect(e as? GGUFError == .unsupportedType(file: path("q2k.gguf"), tensor: "a", ggmlType: 10))
        #expect("\(e!)".contains("Q2_K") && "\(e!)".contains("Q4_1"))
        // Data of the last tensor past the end.
        let short = try damaged("short.gguf") { $0 = $0.prefix($0.count - 100) }  // past the 56 bytes of end padding
        guard case .invalidTensor(_, "d", let reason)? = short as? GGUFError else { Issue.record("\(String(describing: short))"); return }
        #expect(reason.contains("past the end"))
        // A wrong file is an error too, not a crash.
        #expect(throws: GGUFError.self) { try GGUFFile(path: TestPaths.fixtures.appendingPathComponent("llama-tiny/config.json").path) }
        #expect(throws: GGUFError.self) { try GGUFFile(path: "/nonexistent/x.gguf") }
    }

    /// llama.cpp's converter (`LlamaModel.permute`): reshape(n_head, 2, d/2, …).swapaxes(1, 2).
    @Test func ropePermutationMatchesLlamaCppConverter() {
        // head_dim 4, two heads: GGUF row g holds HF row perm[g].
        let d = 4, rows = 8
        var fromConverter = [Int](repeating: -1, count: rows)
        for h in 0..<2 { for i in 0..<2 { for j in 0..<(d / 2) { fromConverter[h * d + j * 2 + i] = h * d + i * (d / 2) + j } } }
        #expect(fromConverter == [0, 2, 1, 3, 4, 6, 5, 7])
        for r in 0..<rows { #expect(fromConverter[RoPEPermutation.ggufRow(forHF: r, headDim: d)] == r) }
        // permuteRows there and back is the identity.
        let src: [UInt8] = Array(0..<UInt8(rows * 3))
        var ggufOrder = [UInt8](repeating: 0, count: src.count), back = ggufOrder
        src.withUnsafeBytes { s in ggufOrder.withUnsafeMutableBytes { RoPEPermutation.permuteRows(s.baseAddress!, rows: rows, rowBytes: 3, headDim: d, toHF: false, into: $0.baseAddress!) } }
        ggufOrder.withUnsafeBytes { s in back.withUnsafeMutableBytes { RoPEPermutation.permuteRows(s.baseAddress!, rows: rows, rowBytes: 3, headDim: d, toHF: true, into: $0.baseAddress!) } }
        #expect(back == src && ggufOrder != src)
        #expect(Array(ggufOrder[3..<6]) == Array(src[6..<9]), "GGUF row 1 is HF row 2")
    }

    @Test func namesMapBothWays() {
        #expect(GGUFNames.hfName("blk.12.attn_q.weight") == "model.layers.12.self_attn.q_proj.weight")
        #expect(GGUFNames.hfName("blk.0.ffn_down.weight") == "model.layers.0.mlp.down_proj.weight")
        #expect(GGUFNames.hfName("blk.3.attn_k_norm.weight") == "model.layers.3.self_attn.k_norm.weight")
        #expect(GGUFNames.hfName("token_embd.weight") == "model.embed_tokens.weight")
        #expect(GGUFNames.hfName("rope_freqs.weight") == nil)
        for n in ["lm_head.weight", "model.norm.weight", "model.layers.7.self_attn.v_proj.bias", "model.layers.1.post_attention_layernorm.weight"] {
            #expect(GGUFNames.ggufName(n).flatMap(GGUFNames.hfName) == n)
        }
    }

    // MARK: The real checkpoint

    struct Golden: Decodable {
        struct Position: Decodable { let argmax: Int; let max_abs: Float; let ids: [Int]; let logits: [Float] }
        struct Case: Decodable { let text: String; let input_ids: [Int]; let greedy_8: [Int]; let positions: [Position] }
        let cases: [Case]
    }

    /// SmolLM2-135M-Instruct Q4_1 read directly matches transformers on the same file converted by
    /// gguf_to_hf.py --dtype float32 (scripts/gguf_logits_golden.py): within 2e-3·max|logit| on
    /// the 64 top ids and every 97th id of each position, same argmax everywhere, same greedy tokens.
    @Test(.requires(Assets.smolLM2GGUF)) func smolLM2LogitsMatchTransformers() throws {
        let url = try Assets.smolLM2GGUF.url()
        let weights = try ModelWeights.load(gguf: url.path)
        let c = weights.config
        #expect(c.family == .llama && c.numLayers == 30 && c.hiddenSize == 576 && c.numKVHeads == 3 && c.tieWordEmbeddings)
        #expect(weights.storageDType == .q4_1 && weights.view("model.embed_tokens.weight").dtype == .q8_0)
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: TestPaths.fixtures.appendingPathComponent("gguf/smollm2_logits.json")))
        let model = TransformerModel(weights: weights)
        for g in golden.cases {
            let T = g.input_ids.count
            let acts = Activations(config: c, batch: 1, seqLen: T)
            try model.forward(ModelInput(batch: 1, seqLen: T, tokens: g.input_ids), acts: acts, training: false)
            let logits = acts.logits.array
            let V = c.vocabSize
            for (t, p) in g.positions.enumerated() {
                let row = Array(logits[(t * V)..<((t + 1) * V)])
                let argmax = row.indices.max { row[$0] < row[$1] }!
                #expect(argmax == p.argmax, "\(g.text) position \(t)")
                let worst = zip(p.ids, p.logits).map { abs(row[$0] - $1) }.max()!
                #expect(worst <= 2e-3 * p.max_abs, "\(g.text) position \(t): max |Δ| \(worst), max |logit| \(p.max_abs)")
            }
        }
        // Greedy decoding (KV cache) on the first prompt: " Paris." and on; one prompt keeps the
        // debug-build test short (every decode step dequantizes the whole model).
        let g = golden.cases[0]
        #expect(try model.generate(prompts: [g.input_ids], maxNewTokens: 8)[0] == g.greedy_8, "\(g.text)")
    }
}
