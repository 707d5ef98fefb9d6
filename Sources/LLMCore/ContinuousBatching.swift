import Foundation

// MARK: - Greedy decoding with continuous batching

extension TransformerModel {
    /// Greedy decoding of many prompts, at most `maxBatch` in flight: every step runs ONE
    /// `forwardCached` over all sequences in flight (the new prompts' whole prefill and one token
    /// of each decoding sequence share every GEMM), and a finished sequence's slot is refilled
    /// with the next waiting prompt right away, so the batch stays full while outputs of very
    /// different lengths finish. Each sequence has its own KV cache, so prompts of any lengths
    /// mix without padding and the tokens are those of `generate(prompts: [p], ...)` run one at a
    /// time (up to floating-point rounding of the shared GEMMs; `argmax` takes the first maximum).
    ///
    /// A sequence stops at a token in `stopTokens` (kept in its output, as `generate` does), when
    /// `shouldStop(promptIndex, generatedIds)` returns true, or after `maxNewTokens`.
    ///
    /// - Parameters:
    ///   - prefillTokenBudget: prompts are admitted in one step only while their total length
    ///     stays within this many tokens (at least one is always admitted), which bounds the
    ///     attention scratch of a step.
    ///   - onFinish: called with `(promptIndex, generatedIds)` as each sequence finishes.
    /// - Returns: the generated ids of each prompt, in prompt order.
    public func generateGreedy(prompts: [[Int]], maxNewTokens: Int, maxBatch: Int, stopTokens: Set<Int> = [],
                               prefillTokenBudget: Int = 2048,
                               shouldStop: ((Int, [Int]) -> Bool)? = nil,
                               onFinish: ((Int, [Int]) -> Void)? = nil) throws -> [[Int]] {
        guard maxBatch >= 1 else { throw ModelError.invalidInput("maxBatch must be ≥ 1, got \(maxBatch)") }
        for (i, p) in prompts.enumerated() where p.isEmpty {
            throw ModelError.invalidInput("prompt \(i) is empty: generation needs at least one token (e.g. BOS)")
        }
        var outputs = [[Int]](repeating: [], count: prompts.count)
        guard maxNewTokens > 0 else {
            for i in prompts.indices { onFinish?(i, []) }
            return outputs
        }
        struct Slot { let index: Int; let cache: KVCache; var next: [Int] }
        var slots: [Slot] = []
        var waiting = 0
        while waiting < prompts.count || !slots.isEmpty {
            var budget = prefillTokenBudget, admitted = 0
            while slots.count < maxBatch, waiting < prompts.count {
                let p = prompts[waiting]
                if admitted > 0 && p.count > budget { break }
                slots.append(Slot(index: waiting, cache: KVCache(config: config, capacity: p.count + maxNewTokens), next: p))
                budget -= p.count
                admitted += 1
                waiting += 1
            }
            let logits = try forwardCached(slots.map { CachedSequence(tokens: $0.next, cache: $0.cache) })
            var still: [Slot] = []
            still.reserveCapacity(slots.count)
            for (k, var slot) in slots.enumerated() {
                let t = argmax(logits[k])
                outputs[slot.index].append(t)
                let out = outputs[slot.index]
                if stopTokens.contains(t) || out.count >= maxNewTokens || (shouldStop?(slot.index, out) ?? false) {
                    onFinish?(slot.index, out)
                } else {
                    slot.next = [t]
                    still.append(slot)
                }
            }
            slots = still
        }
        return outputs
    }
}
