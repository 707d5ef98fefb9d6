/// What the model calls on each projection that carries an adapter. The Adapters target
/// implements it (LoRA, NdLinear-LoRA); the model knows nothing else about adapters
/// (llama.cpp's `build_lora_mm`: one place applies adapters, keyed by the base weight name).
public protocol LinearDelta: AnyObject {
    /// `y[rows, out] += Δ(x[rows, in])`. With `training`, keep what `backward` needs
    /// (a later forward with the same inputs, e.g. checkpoint recomputation, may overwrite it).
    func forward(x: UnsafePointer<Float>, rows: Int, y: UnsafeMutablePointer<Float>, training: Bool)
    /// Given `dy[rows, out]` for the last training forward on the same `x`, accumulate the
    /// parameter gradients and ADD the input gradient into `dx[rows, in]`.
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
