/// What the model calls on each projection that carries an adapter. The Adapters target
/// implements it (LoRA, NdLinear-LoRA, DoRA); the model knows nothing else about adapters
/// (llama.cpp's `build_lora_mm`: one place applies adapters, keyed by the base weight name).
/// Everything an adapter needs travels in these calls or lives in the adapter object itself
/// (no model-wide state), so different adapters may serve different rows of one batch.
public protocol LinearDelta: AnyObject {
    /// The frozen weight `[out, in]` (as stored) of the projection this adapter sits on, given
    /// before each pass over it. Adapters whose output depends on it (DoRA's row norms of
    /// `W + ΔW`) keep it; the default ignores it.
    func bind(base: TensorView)
    /// On entry `y[rows, out]` holds `x·Wᵀ` (no bias); on exit the adapted product: `y += Δ(x)`
    /// for LoRA and NdLinear-LoRA, `y = g ⊙ (y + Δ(x))` row-scaled for DoRA. With `training`,
    /// keep what `backward` needs (a later forward with the same inputs, e.g. checkpoint
    /// recomputation, may overwrite it).
    func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, training: Bool)
    /// The output gradient the frozen weight's part of the input gradient (`· W`) is formed
    /// from: `dy` itself (default), or, for an adapter that scales the base product (DoRA),
    /// its scaled copy, valid until the adapter's next call.
    func baseOutputGradient(dy: UnsafePointer<Float>, rows: Int) -> UnsafePointer<Float>
    /// Given `dy[rows, out]` for the last training forward on the same `x`, accumulate the
    /// parameter gradients and ADD the adapter's part of the input gradient into `dx[rows, in]`
    /// (the base weight's part, `baseOutputGradient(dy) · W`, is the model's).
    func backward(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int, dx: UnsafeMutablePointer<Float>)

    // Folding: for a GEMM (many rows) the model multiplies by a dense f32 copy of the base
    // weight (a widened bf16 layer; a copy of an f32 one), and an adapter whose `ΔW` is cheap
    // to form (out·in work, against the GEMM's rows·out·in) can be added to that copy. The forward and the input gradient then
    // come from the GEMM on `W + ΔW`, and only the parameter gradients remain for the adapter.

    /// Whether this pass may fold: `ΔW` is cheap to form and the adapter sees the layer's own
    /// input (no dropout mask in a training pass). Default: never.
    func canFold(training: Bool) -> Bool
    /// Rows `rows` of `w[out, in] += ΔW` (`w` is the whole f32 row-major matrix). Called on
    /// several threads at once with disjoint rows.
    func addDelta(into w: UnsafeMutablePointer<Float>, rows: Range<Int>)
    /// The parameter gradients of a folded pass (the input gradient came from `W + ΔW`).
    func backwardParameters(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int)
}

public extension LinearDelta {
    func bind(base: TensorView) {}
    func baseOutputGradient(dy: UnsafePointer<Float>, rows: Int) -> UnsafePointer<Float> { dy }
    func canFold(training: Bool) -> Bool { false }
    func addDelta(into w: UnsafeMutablePointer<Float>, rows: Range<Int>) {
        preconditionFailure("\(type(of: self)) does not fold into the base weight")
    }
    func backwardParameters(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, rows: Int) {
        preconditionFailure("\(type(of: self)) does not fold into the base weight")
    }
}

/// The adapters attached to a model, looked up by layer and projection (an array index, not a
/// name, on the hot path).
public protocol AdapterProvider: AnyObject {
    func delta(layer: Int, projection: Projection) -> LinearDelta?
}
