import Foundation
import LLMCore

/// DoRA (weight-decomposed LoRA, Liu et al. 2024) as PEFT 0.22 computes it (`use_dora`):
/// `W' = m ⊙ V / ‖V‖` with `V = W + s·B·A` and `‖·‖` the norm of each output row over the input
/// dimension, so `y = g ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) (+ bias)` with `g = m / ‖V‖`. As in PEFT (and the
/// paper's §4.3) the norm is a constant in backward: gradients reach `A` and `B` through the
/// LoRA term scaled by `g`, and `m` through `∂y/∂m = (x·Wᵀ + s·x·Aᵀ·Bᵀ) / ‖V‖`.
///
/// `‖V‖` costs `O(out·in)` and depends only on `W`, `A` and `B`: it is computed once per
/// parameter change (an optimizer step) and kept, keyed by a copy of `A` and `B`, so a forward
/// costs LoRA's plus one row scale. Training keeps the unscaled product (`[rows, out]`) for the
/// magnitude gradient. New adapters start at `B = 0` and `m = ‖W‖` (rows), set when the adapter
/// is first bound to its base weight. Dropout is not supported (PEFT's DoRA then multiplies the
/// base weight by the dropped-out input a second time); `train` refuses it.
public final class DoRAAdapter: LinearAdapter {
    public let kind = AdapterKind.dora
    /// The low-rank direction update (`A`, `B`, scale), run as plain LoRA inside.
    public let lora: LoRAAdapter
    /// `m [out]`, PEFT's `lora_magnitude_vector`.
    public let magnitude: AdapterParameter

    public var weightName: String { lora.weightName }
    public var inFeatures: Int { lora.inFeatures }
    public var outFeatures: Int { lora.outFeatures }
    public var parameters: [AdapterParameter] { [lora.a, lora.b, magnitude] }
    public var dropout: Float {
        get { lora.dropout }
        set { lora.dropout = newValue }
    }
    public var dropoutSeed: UInt64 {
        get { lora.dropoutSeed }
        set { lora.dropoutSeed = newValue }
    }
    public var workspace: AdapterWorkspace {
        get { lora.workspace }
        set { lora.workspace = newValue }
    }

    /// The base weight this adapter was last bound to.
    private var base: TensorView?
    /// Whether `m` still waits for the base's row norms (a new adapter before its first bind).
    public private(set) var magnitudeNeedsInit: Bool
    /// `‖W + s·B·A‖` per output row, valid for `normKey` (the `A` and `B` it was computed from)
    /// and `normBase` (the base weight's memory).
    private let norm: FloatBuffer
    private var normKey: [Float] = []
    private var normBase: UnsafeRawPointer?
    /// The unscaled product `x·Wᵀ + s·x·Aᵀ·Bᵀ` of the last training forward, `[rows, out]`.
    private var saved: FloatBuffer?
    private var savedRows = 0
    /// How often `‖V‖` was computed (tests check it is once per parameter change).
    private(set) var normComputations = 0
    /// Tests only: keep the current `‖V‖` whatever `A` and `B` become, so a finite difference
    /// sees the function PEFT differentiates (the norm a constant).
    var holdsNorm = false

    /// A new adapter: `A` as LoRA's PEFT init, `B = 0`, `m` from the base at the first bind.
    public init(weightName: String, inFeatures: Int, outFeatures: Int, rank: Int, alpha: Float,
                useRSLoRA: Bool = false, rng: inout SplitMix64) {
        lora = LoRAAdapter(weightName: weightName, inFeatures: inFeatures, outFeatures: outFeatures, rank: rank, alpha: alpha,
                           useRSLoRA: useRSLoRA, rng: &rng)
        magnitude = AdapterParameter(role: "lora_magnitude_vector", shape: [outFeatures])
        norm = FloatBuffer(count: outFeatures)
        magnitudeNeedsInit = true
    }

    /// An adapter with given values (read from files).
    public init(lora: LoRAAdapter, magnitude m: [Float]) {
        precondition(m.count == lora.outFeatures)
        self.lora = lora
        magnitude = AdapterParameter(role: "lora_magnitude_vector", shape: [lora.outFeatures], values: m)
        norm = FloatBuffer(count: lora.outFeatures)
        magnitudeNeedsInit = false
    }

    public var rank: Int { lora.rank }
    public var alpha: Float { lora.alpha }
    public var useRSLoRA: Bool { lora.useRSLoRA }

    // MARK: The row norms

    public func bind(base: TensorView) {
        precondition(base.shape == [outFeatures, inFeatures], "\(weightName): DoRA bound to a \(base.shape) weight")
        self.base = base
        if magnitudeNeedsInit {
            let n = rowNorms()
            magnitude.value.pointer.update(from: n, count: outFeatures)
            magnitudeNeedsInit = false
        }
    }

    /// `V = W + s·B·A` for output rows `rows` into `v` (`[rows.count, in]`), f32.
    func adaptedRows(_ rows: Range<Int>, base: TensorView, into v: UnsafeMutablePointer<Float>) {
        let inF = inFeatures, r = lora.rank
        widenToFloat(base.data + base.dtype.storageBytes(elements: rows.lowerBound * inF), dtype: base.dtype,
                     count: rows.count * inF, into: v)
        BLAS.gemm(m: rows.count, n: inF, k: r, alpha: lora.scale, a: lora.b.value.pointer + rows.lowerBound * r,
                  b: lora.a.value.pointer, beta: 1, c: v, parallel: false)
    }

    /// `body(rows, V rows)` over every output row in blocks, on the engine's threads.
    private func forEachAdaptedBlock(base: TensorView, _ body: (Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
        let inF = inFeatures, block = max(1, 16_384 / inF)
        parallelRanges(outFeatures, costPerItem: inF * (lora.rank + 2)) { range in
            let v = UnsafeMutablePointer<Float>.allocate(capacity: block * inF)
            defer { v.deallocate() }
            for r0 in stride(from: range.lowerBound, to: range.upperBound, by: block) {
                let rows = r0..<min(r0 + block, range.upperBound)
                adaptedRows(rows, base: base, into: v)
                body(rows, v)
            }
        }
    }

    /// `‖V‖` per output row (squares summed in Double), recomputed only when `A`, `B` or the
    /// base changed since the last call.
    func rowNorms() -> UnsafePointer<Float> {
        guard let base else { preconditionFailure("\(weightName): DoRA used before it was bound to its base weight") }
        let a = lora.a.value, b = lora.b.value
        let fresh = normBase == base.data && normKey.count == a.count + b.count && normKey.withUnsafeBufferPointer { k in
            memcmp(k.baseAddress!, a.pointer, a.count * 4) == 0 && memcmp(k.baseAddress! + a.count, b.pointer, b.count * 4) == 0
        }
        if fresh || holdsNorm && normBase == base.data { return UnsafePointer(norm.pointer) }
        normComputations += 1
        let n = norm.pointer, inF = inFeatures
        forEachAdaptedBlock(base: base) { rows, v in
            for j in rows { n[j] = Self.norm(v + (j - rows.lowerBound) * inF, count: inF) }
        }
        normKey = Array(UnsafeBufferPointer(start: a.pointer, count: a.count)) + Array(UnsafeBufferPointer(start: b.pointer, count: b.count))
        normBase = base.data
        return UnsafePointer(n)
    }

    /// The L2 norm of `count` floats, squares summed in Double.
    static func norm(_ v: UnsafePointer<Float>, count: Int) -> Float {
        var s = 0.0
        for i in 0..<count { let x = Double(v[i]); s += x * x }
        return Float(s.squareRoot())
    }

    /// `g = m / ‖V‖` into workspace slot 4.
    private func rowScale() -> UnsafeMutablePointer<Float> {
        let n = rowNorms(), m = magnitude.value.pointer
        let g = workspace.slot(4, outFeatures)
        for j in 0..<outFeatures { g[j] = m[j] / n[j] }
        return g
    }

    // MARK: Forward and backward

    public func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, training: Bool) {
        precondition(!training || dropout == 0, "\(weightName): DoRA with dropout is not supported")
        lora.forward(x: x, rows: rows, y: y, training: training)
        let out = outFeatures
        if training {
            if saved == nil || saved!.count < rows * out { saved = FloatBuffer(count: rows * out, zeroed: false) }
            saved!.pointer.update(from: y, count: rows * out)
            savedRows = rows
        }
        let g = UnsafePointer(rowScale())
        parallelRanges(rows, costPerItem: out) { range in
            for r in range { let yr = y + r * out; for j in 0..<out { yr[j] *= g[j] } }
        }
    }

    /// `g ⊙ dy` into workspace slot 3.
    public func baseOutputGradient(dy: UnsafePointer<Float>, rows: Int) -> UnsafePointer<Float> {
        let out = outFeatures, g = UnsafePointer(rowScale())
        let gdy = workspace.slot(3, rows * out)
        parallelRanges(rows, costPerItem: out) { range in
            for r in range { for j in 0..<out { gdy[r * out + j] = g[j] * dy[r * out + j] } }
        }
        return UnsafePointer(gdy)
    }

    public func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, dx: UnsafeMutablePointer<Float>) {
        precondition(savedRows == rows, "\(weightName): DoRA backward without its training forward")
        let out = outFeatures, pre = UnsafePointer(saved!.pointer), n = rowNorms(), dm = magnitude.grad.pointer
        // dm_j += Σ_rows dy·(x·Wᵀ + s·x·Aᵀ·Bᵀ)_j / ‖V‖_j (columns split over threads).
        parallelRanges(out, costPerItem: rows) { cols in
            var acc = [Double](repeating: 0, count: cols.count)
            for r in 0..<rows {
                let d = dy + r * out, p = pre + r * out
                for j in cols { acc[j - cols.lowerBound] += Double(d[j]) * Double(p[j]) }
            }
            for j in cols { dm[j] += Float(acc[j - cols.lowerBound] / Double(n[j])) }
        }
        // A, B and the adapter's input gradient see g ⊙ dy.
        lora.backward(x: x, dy: baseOutputGradient(dy: dy, rows: rows), rows: rows, dx: dx)
    }

    // MARK: Merging

    /// `ΔW = W' − W` needs the base: only `deltaWeight(base:)` forms it.
    public func deltaWeight() -> [Float] {
        guard let base else { preconditionFailure("\(weightName): a DoRA ΔW needs the base weight (deltaWeight(base:))") }
        return deltaWeight(base: base)
    }

    /// `W' − W` with `W' = m ⊙ V / ‖V‖` formed in f32 (`V` as the forward forms it).
    public func deltaWeight(base: TensorView) -> [Float] {
        precondition(base.shape == [outFeatures, inFeatures], "\(weightName): DoRA merged into a \(base.shape) weight")
        let inF = inFeatures, m = magnitude.value.pointer
        var out = [Float](repeating: 0, count: outFeatures * inF)
        out.withUnsafeMutableBufferPointer { o in
            let d = o.baseAddress!
            forEachAdaptedBlock(base: base) { rows, v in
                let w = UnsafeMutablePointer<Float>.allocate(capacity: rows.count * inF)
                defer { w.deallocate() }
                widenToFloat(base.data + base.dtype.storageBytes(elements: rows.lowerBound * inF), dtype: base.dtype,
                             count: rows.count * inF, into: w)
                for j in rows {
                    let row = v + (j - rows.lowerBound) * inF, wr = w + (j - rows.lowerBound) * inF
                    let g = m[j] / Self.norm(row, count: inF)
                    for i in 0..<inF { d[j * inF + i] = g * row[i] - wr[i] }
                }
            }
        }
        return out
    }
}
