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
}

/// The adapters attached to a model, looked up by base weight name
/// (e.g. `model.layers.0.self_attn.q_proj.weight`).
public protocol AdapterProvider: AnyObject {
    func delta(for weightName: String) -> LinearDelta?
}
