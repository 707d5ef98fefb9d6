import Foundation
import LLMCore
import Testing
import TestSupport

/// Reader validation (FORMATS.md "safetensors"): every malformed file gives a typed error that
/// names the file (and tensor), never a crash; the writer round-trips.
@Suite struct SafetensorsTests {
    static func tempFile(_ bytes: Data) throws -> String {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("st-\(UUID().uuidString).safetensors")
        try bytes.write(to: url)
        return url.path
    }

    /// A file with the given header text and `dataBytes` zero bytes of data.
    static func file(header: String, dataBytes: Int, lengthOverride: UInt64? = nil) throws -> String {
        var d = Data()
        var n = (lengthOverride ?? UInt64(header.utf8.count)).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
        d.append(Data(header.utf8))
        d.append(Data(count: dataBytes))
        return try tempFile(d)
    }

    func expectError(_ path: String, _ check: (SafetensorsError) -> Bool) {
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("no error for \(path)")
        } catch let e as SafetensorsError {
            #expect(check(e), "unexpected error \(e)")
            #expect(e.description.contains(path), "error must name the file: \(e)")
        } catch {
            Issue.record("untyped error \(error)")
        }
    }

    @Test func truncatedFile() throws {
        expectError(try Self.tempFile(Data([1, 2, 3]))) { if case .truncated = $0 { return true }; return false }
    }

    @Test func headerLengthPastEOF() throws {
        expectError(try Self.file(header: "{}", dataBytes: 0, lengthOverride: 1 << 40)) { if case .headerLengthPastEnd = $0 { return true }; return false }
    }

    @Test func nonJSONHeader() throws {
        expectError(try Self.file(header: "not json!", dataBytes: 0)) { if case .invalidHeader = $0 { return true }; return false }
        expectError(try Self.file(header: "[1,2]", dataBytes: 0)) { if case .invalidHeader = $0 { return true }; return false }
    }

    @Test func offsetsOutsideData() throws {
        let h = #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        expectError(try Self.file(header: h, dataBytes: 4)) {
            if case let .offsetsOutOfRange(_, t, _, _, _) = $0 { return t == "w" }; return false
        }
    }

    @Test func byteCountMismatch() throws {
        let h = #"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#
        expectError(try Self.file(header: h, dataBytes: 8)) {
            if case let .byteCountMismatch(_, t, _, _, exp, act) = $0 { return t == "w" && exp == 12 && act == 8 }; return false
        }
    }

    @Test func overlappingTensors() throws {
        let h = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        expectError(try Self.file(header: h, dataBytes: 12)) { if case .overlap = $0 { return true }; return false }
    }

    @Test func unknownDType() throws {
        let h = #"{"w":{"dtype":"F8_E9","shape":[2],"data_offsets":[0,2]}}"#
        expectError(try Self.file(header: h, dataBytes: 2)) {
            if case let .unknownDType(_, t, d) = $0 { return t == "w" && d == "F8_E9" }; return false
        }
    }

    @Test func badShapeAndMissingFields() throws {
        expectError(try Self.file(header: #"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}"#, dataBytes: 0)) {
            if case .invalidEntry = $0 { return true }; return false
        }
        expectError(try Self.file(header: #"{"w":{"shape":[1],"data_offsets":[0,4]}}"#, dataBytes: 4)) {
            if case .invalidEntry = $0 { return true }; return false
        }
        expectError(try Self.file(header: #"{"w":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}"#, dataBytes: 4)) {
            if case .invalidEntry = $0 { return true }; return false
        }
    }

    @Test func missingFileIsTyped() {
        expectError("/nonexistent/x.safetensors") { if case .cannotOpen = $0 { return true }; return false }
    }

    @Test func writerRoundTripAllDtypesWithAndWithoutMetadata() throws {
        let values: [Float] = [1, -2.5, 0.15625, 3e-3, 1e4, -0.0]
        let entries = [
            SafetensorsEntry(name: "f32", shape: [2, 3], floats: values),
            SafetensorsEntry(name: "bf16", shape: [6], floats: values, dtype: .bf16),
            SafetensorsEntry(name: "f16", shape: [3, 2], floats: values, dtype: .f16),
            SafetensorsEntry(name: "ids", shape: [2], int64s: [7, -100]),
        ]
        for meta in [["format": "pt"], nil] {
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("rt-\(UUID().uuidString).safetensors")
            try SafetensorsWriter.write(entries, metadata: meta, to: url)
            let f = try SafetensorsFile(url: url)
            #expect(f.metadata == (meta ?? [:]))
            #expect(try f.tensor("f32").floats() == values)
            #expect(try f.tensor("f32").shape == [2, 3])
            #expect(maxAbsDiff(try f.tensor("bf16").floats(), values) <= 0.004 * 1e4)
            #expect(try f.tensor("bf16").dtype == .bf16)
            #expect(maxAbsDiff(try f.tensor("f16").floats(), values) <= 4)
            #expect(try f.tensor("ids").ints() == [7, -100])
            #expect(throws: SafetensorsError.self) { try f.tensor("nope") }
        }
    }

    @Test func unalignedDataIsCopiedNotMisread() throws {
        // Header of odd length → data starts at an odd address.
        var header = #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        if (8 + header.utf8.count) % 4 == 0 { header += " " }
        var d = Data()
        var n = UInt64(header.utf8.count).littleEndian
        withUnsafeBytes(of: &n) { d.append(contentsOf: $0) }
        d.append(Data(header.utf8))
        var vals: [Float] = [1.5, -7]
        d.append(Data(bytes: &vals, count: 8))
        let f = try SafetensorsFile(path: try Self.tempFile(d))
        #expect(try f.tensor("w").floats() == [1.5, -7])
    }

    @Test func modelDirectoryIgnoresStraySafetensors() throws {
        // Fixture dirs hold expected.safetensors beside the weights; loading must not read it.
        let w = try FixtureModel.llamaTiny.load()
        #expect(w.views["logits"] == nil)
        #expect(w.source.hasSuffix("model.safetensors"))
    }
}

@Suite struct ModelConfigTests {
    @Test func bothTransformersLayouts() throws {
        let c4 = try ModelConfig.load(FixtureModel.llama3Tiny.directory.appendingPathComponent("config.json"))
        #expect(c4.ropeTheta == 500000 && c4.ropeScaling?.factor == 32 && c4.dtype == .bf16 && c4.tieWordEmbeddings)
        let c5 = try ModelConfig.load(FixtureModel.qwen3Tiny.directory.appendingPathComponent("config.json"))
        #expect(c5.ropeTheta == 1_000_000 && c5.ropeScaling == nil && c5.dtype == .f16 && c5.headDim == 24 && c5.family == .qwen3)
        let q2 = try ModelConfig.load(FixtureModel.qwen2Tiny.directory.appendingPathComponent("config.json"))
        #expect(q2.qkvBias && q2.family == .qwen2)
    }

    @Test func transformers5Llama3RopeParameters() throws {
        let json = #"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":128,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,"rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#
        let c = try ModelConfig.parse(Data(json.utf8))
        #expect(c.ropeTheta == 500000 && c.ropeScaling?.factor == 8 && c.numKVHeads == 4 && c.headDim == 16)
    }

    @Test func unsupportedIsRefusedClearly() throws {
        let bad = [
            (#"{"architectures":["GPT2LMHeadModel"],"hidden_size":8}"#, "GPT2LMHeadModel"),
            (#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":4,"vocab_size":10,"rope_scaling":{"rope_type":"yarn","factor":4}}"#, "yarn"),
            (#"{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":8,"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":3,"vocab_size":10}"#, "multiple"),
            (#"{"architectures":["LlamaForCausalLM"],"intermediate_size":8}"#, "hidden_size"),
            ("{nope", "JSON"),
        ]
        for (json, word) in bad {
            #expect {
                _ = try ModelConfig.parse(Data(json.utf8), file: "cfg.json")
            } throws: { e in
                "\(e)".contains(word) && "\(e)".contains("cfg.json")
            }
        }
    }

    @Test func parameterCountsFromConfigAlone() throws {
        let dir = TestPaths.fixtures.appendingPathComponent("model-configs")
        // Published totals (config only, no allocation).
        let qwen3 = try ModelConfig.load(dir.appendingPathComponent("qwen3-0.6b.json"))
        #expect(qwen3.parameterCount == 596_049_920)
        let llama8b = try ModelConfig.load(dir.appendingPathComponent("llama-3-8b.json"))
        #expect(llama8b.parameterCount == 8_030_261_248)
    }
}
