import Foundation
import LLMCore

/// Merging adapters into the base: `W' = W + ΔW`, computed in f32 (one rounding at the end when
/// a lower-precision dtype is written).
public enum AdapterMerge {
    /// Base weights with every adapted projection replaced by its merged f32 value, plus the max
    /// absolute change per merged tensor. Untouched tensors keep their original views.
    public static func merge(_ weights: ModelWeights, _ set: AdapterSet) throws -> (weights: ModelWeights, maxChange: [String: Float]) {
        var views = weights.views
        var changes: [String: Float] = [:]
        for a in set.adapters {
            guard let base = weights.views[a.weightName] else { throw ModelError.missingWeight(name: a.weightName, files: weights.source) }
            var w = base.floats()
            let d = a.deltaWeight()
            precondition(d.count == w.count, "\(a.weightName): ΔW has \(d.count) values for \(w.count)")
            var m: Float = 0
            for i in w.indices { w[i] += d[i]; m = max(m, abs(d[i])) }
            changes[a.weightName] = m
            views[a.weightName] = TensorView.owned(name: a.weightName, shape: base.shape, floats: w)
        }
        return (try ModelWeights(config: weights.config, views: views, source: weights.source + " + merged adapter"), changes)
    }
}
