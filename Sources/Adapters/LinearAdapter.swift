import Foundation
import LLMCore

/// A trainable f32 tensor of an adapter with its gradient (same shape).
public final class AdapterParameter {
    /// Role inside the adapter: `lora_A`, `lora_B`, `w0`, `w1`.
    public let role: String
    public let shape: [Int]
    public let value: FloatBuffer
    public let grad: FloatBuffer

    public init(role: String, shape: [Int], values: [Float]? = nil) {
        self.role = role
        self.shape = shape
        let n = shape.reduce(1, *)
        value = values.map { precondition($0.count == n); return FloatBuffer($0) } ?? FloatBuffer(count: n)
        grad = FloatBuffer(count: n)
    }

    public var count: Int { value.count }
}

/// The kinds of adapter the engine trains.
public enum AdapterKind: String, Sendable, CaseIterable {
    case lora, ndlinear, dora

    /// The α when none is given: LoRA and DoRA `lora_alpha` = 2r (the usual PEFT recipe),
    /// NdLinear α = 1 (the reference's default). The one place this rule is written.
    public func defaultAlpha(rank: Int) -> Float {
        switch self {
        case .lora, .dora: return 2 * Float(rank)   // (not Float(2 * rank): a rank from a flag may overflow twice over)
        case .ndlinear: return 1
        }
    }
}

/// An adapter on one frozen projection `W [out, in]`: forward adds `Δ(x)`, backward produces
/// its parameter gradients and the input gradient (protocol `LinearDelta` of LLMCore), and it
/// can express itself as a dense `ΔW` for merging.
public protocol LinearAdapter: LinearDelta {
    var kind: AdapterKind { get }
    /// Base weight name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    var weightName: String { get }
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    var parameters: [AdapterParameter] { get }
    /// Dropout probability on the adapter's input while training.
    var dropout: Float { get set }
    /// Seed of the current step's dropout masks (identical masks on recomputation).
    var dropoutSeed: UInt64 { get set }
    /// Scratch memory for forward/backward temporaries. An `AdapterSet` gives all its adapters
    /// ONE workspace (they run one after another), so temporaries cost one module's worth of
    /// memory instead of one per adapted projection.
    var workspace: AdapterWorkspace { get set }
    /// The dense `ΔW [out, in]` this adapter adds to the base weight (for merging and checks).
    func deltaWeight() -> [Float]
    /// `ΔW` added to `base` (DoRA's depends on it; the others ignore it).
    func deltaWeight(base: TensorView) -> [Float]
}

public extension LinearAdapter {
    var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }
    func zeroGradients() { for p in parameters { p.grad.zero() } }
    /// Module path without `.weight`, e.g. `model.layers.0.self_attn.q_proj`.
    var modulePath: String { String(weightName.dropLast(".weight".count)) }
    func deltaWeight(base: TensorView) -> [Float] { deltaWeight() }
}

// MARK: - Scratch

/// Reusable f32 scratch slots, grown on demand, shared by the adapters of one model. Nothing
/// in it survives from a forward to the backward: adapters keep what backward needs themselves
/// (LoRA its `[rows, r]` projection) or recompute it (NdLinear-LoRA).
public final class AdapterWorkspace {
    private var slots: [FloatBuffer?] = []

    public init() {}

    /// Slot 0 holds the dropout-masked input; the others are free for an adapter's temporaries
    /// (NdLinear-LoRA: 1 for per-block gradient partials, 2... for each thread's buffers).
    /// Contents are undefined on return; the pointer stays valid until the next call for the
    /// slot. Not thread-safe: take every slot before a parallel region.
    func slot(_ i: Int, _ n: Int) -> UnsafeMutablePointer<Float> {
        while slots.count <= i { slots.append(nil) }
        if slots[i] == nil || slots[i]!.count < n { slots[i] = FloatBuffer(count: n, zeroed: false) }
        return slots[i]!.pointer
    }

    /// Bytes currently held.
    public var bytes: Int { slots.reduce(0) { $0 + ($1?.count ?? 0) * 4 } }
}

// MARK: - Dropout

/// Inverted dropout on an adapter's input (as `nn.Dropout` in train mode): keeps each element
/// with probability 1−p and scales kept ones by 1/(1−p). The mask is a pure function of
/// (seed, element index), so a recomputed forward sees the same mask.
enum AdapterDropout {
    /// Returns the input to use: `x` itself when no dropout applies, else a masked copy in
    /// workspace slot 0.
    static func apply(x: UnsafePointer<Float>, count: Int, p: Float, seed: UInt64, training: Bool,
                      workspace: AdapterWorkspace) -> UnsafePointer<Float> {
        guard training, p > 0 else { return x }
        let out = workspace.slot(0, count)
        let keep = 1 - p, scale = 1 / keep
        for i in 0..<count { out[i] = Self.kept(seed, i, keep) ? x[i] * scale : 0 }
        return UnsafePointer(out)
    }

    /// Multiplies a gradient by the same mask and scale (`d[i]` is element `offset + i`).
    static func backward(_ d: UnsafeMutablePointer<Float>, count: Int, p: Float, seed: UInt64, offset: Int = 0) {
        let keep = 1 - p, scale = 1 / keep
        for i in 0..<count { d[i] = Self.kept(seed, offset + i, keep) ? d[i] * scale : 0 }
    }

    @inline(__always) static func kept(_ seed: UInt64, _ i: Int, _ keep: Float) -> Bool {
        var r = SplitMix64(seed: seed ^ (UInt64(i) &* 0x9E37_79B9_7F4A_7C15))
        return r.nextFloat() < keep
    }
}
