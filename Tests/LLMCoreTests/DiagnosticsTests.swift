import Foundation
import Testing
import TestSupport
@testable import LLMCore

/// Issue 20, class 7: non-finite weights found by tensor in every stored float dtype, and
/// Foundation's errors turned into one line naming the file, field and reason.
@Suite struct DiagnosticsTests {
    /// Heap memory that outlives the views pointing into it.
    final class Bytes {
        let pointer: UnsafeMutablePointer<UInt16>
        init(_ bits: [UInt16]) {
            pointer = .allocate(capacity: bits.count)
            pointer.initialize(from: bits, count: bits.count)
        }
        deinit { pointer.deallocate() }
    }

    /// A tensor view of `bits` (16-bit dtypes) stored in memory.
    static func view(_ dtype: DType, _ bits: [UInt16]) -> (TensorView, Bytes) {
        let owner = Bytes(bits)
        return (TensorView(name: "t.\(dtype.rawValue)", dtype: dtype, shape: [bits.count], data: UnsafeRawPointer(owner.pointer),
                           byteCount: bits.count * 2, owner: owner), owner)
    }

    @Test func nonFiniteValuesAreFoundInEveryFloatDType() {
        // f32: the first NaN/Inf, by index.
        for (bad, expect) in [(Float.nan, "NaN"), (Float.infinity, "+Inf"), (-Float.infinity, "-Inf")] {
            var v = [Float](repeating: 1, count: 10)
            v[7] = bad
            let hit = NonFiniteScan.first(in: TensorView.owned(name: "w", shape: [10], floats: v))
            #expect(hit?.index == 7 && hit?.tensor == "w" && hit?.description == "tensor 'w' holds \(expect) at element 7")
        }
        #expect(NonFiniteScan.first(in: TensorView.owned(name: "w", shape: [3], floats: [Float.greatestFiniteMagnitude, -0.0, 1e-45])) == nil)
        // bf16: 0x7FC0 NaN, 0xFF80 -Inf, 0x7F7F the largest finite.
        for (bits, index, isNaN) in [([0x3F80, 0x7F7F, 0x7FC0], 2, true), ([0xFF80, 0x3F80], 0, false)] as [([UInt16], Int, Bool)] {
            let (v, owner) = Self.view(.bf16, bits)
            let hit = NonFiniteScan.first(in: v)
            #expect(hit?.index == index && hit?.value.isNaN == isNaN, "\(bits)")
            withExtendedLifetime(owner) {}
        }
        // f16: 0x7E00 NaN, 0x7C00 +Inf, 0x7BFF (65504) finite.
        let (h, owner) = Self.view(.f16, [0x7BFF, 0x3C00, 0x7C00, 0x7E00])
        #expect(NonFiniteScan.first(in: h)?.index == 2 && NonFiniteScan.first(in: h)?.value == .infinity)
        let (ok, owner2) = Self.view(.f16, [0x7BFF, 0xFBFF, 0x0001])
        #expect(NonFiniteScan.first(in: ok) == nil)
        withExtendedLifetime((owner, owner2)) {}
        // Counting all of them for merged values.
        #expect(NonFiniteScan.first(in: [1, .nan, 2, .infinity], tensor: "m")?.count == 2)
    }

    @Test func aBaseWithANaNIsNamedByFileAndTensor() throws {
        let f = FixtureModel.llamaTiny
        let w = try f.load()
        #expect(w.firstNonFinite() == nil)
        var views = w.views
        let name = "model.layers.0.mlp.up_proj.weight"
        var v = views[name]!.floats()
        v[11] = .nan
        views[name] = TensorView.owned(name: name, shape: views[name]!.shape, floats: v)
        let bad = try ModelWeights(config: w.config, views: views, source: "tiny/model.safetensors")
        #expect { try bad.checkFinite(context: "why") } throws: { e in
            "\(e)" == "tiny/model.safetensors: the base model's tensor '\(name)' holds NaN at element 11; expected finite numbers (why)"
        }
    }

    @Test func foundationFileErrorsSayWhatIsWrongWithWhichFile() throws {
        let dir = try temporaryDirectory("diag")
        defer { try? FileManager.default.removeItem(at: dir) }
        // Reading a directory.
        do { _ = try Data(contentsOf: dir); Issue.record("reading a directory succeeded") } catch {
            #expect(ErrorText.reason(error, path: dir.path) == "is a directory, not a file", "\(error)")
        }
        // Creating a directory under a file.
        let file = dir.appendingPathComponent("f")
        try "x".write(to: file, atomically: true, encoding: .utf8)
        let under = file.appendingPathComponent("sub/deeper")
        do { try FileManager.default.createDirectory(at: under, withIntermediateDirectories: true); Issue.record("created") } catch {
            let text = ErrorText.describe(error)
            #expect(text.hasPrefix(file.path + "/sub") && text.hasSuffix(": \(file.path) is a file, not a directory"), "\(text)")
        }
        // A missing file.
        do { _ = try Data(contentsOf: dir.appendingPathComponent("none")); Issue.record("read") } catch {
            #expect(ErrorText.describe(error) == "\(dir.path)/none: no such file or directory", "\(ErrorText.describe(error))")
        }
    }

    @Test func codingErrorsNameTheField() throws {
        struct Inner: Codable { var offset: Int }
        struct State: Codable { var step: Int; var position: Inner }
        func reason(_ json: String) -> String {
            let r = Result { try JSONDecoder().decode(State.self, from: Data(json.utf8)) }
            if case let .failure(error) = r { return ErrorText.reason(error) }
            return ""
        }
        #expect(reason(#"{"step": "x", "position": {"offset": 1}}"#) == "field 'step': expected an integer, found a string")
        #expect(reason(#"{"step": 1, "position": {}}"#) == "field 'offset' is missing in 'position'")
        #expect(reason(#"{"step": 1, "position": {"offset": null}}"#) == "field 'position.offset': expected an integer, found null")
        #expect(reason("{not json").hasPrefix("not valid JSON"))
        struct Config: Encodable { var alpha: Float }
        do { _ = try JSONEncoder().encode(Config(alpha: .nan)); Issue.record("encoded NaN") } catch {
            #expect(ErrorText.reason(error).hasPrefix("field 'alpha' cannot be written as JSON"), "\(ErrorText.reason(error))")
        }
    }
}
