import Foundation

// MARK: - Options and results

/// When a prompt's beam search stops, as Hugging Face `generate(early_stopping=...)`.
public enum BeamEarlyStopping: String, Sendable, CaseIterable {
    /// HF `early_stopping=False`, its default: once `numBeams` hypotheses are finished, stop when
    /// the best running beam, scored at the current length, cannot beat the worst finished one.
    /// (A heuristic: with `lengthPenalty > 0` a longer continuation could still score higher.)
    case heuristic
    /// HF `early_stopping=True`: stop as soon as `numBeams` hypotheses are finished.
    case whenFull
    /// HF `early_stopping="never"`: the canonical bound; with `lengthPenalty > 0` the best running
    /// beam is scored at the maximum length.
    case never
}

/// Beam search settings (HF `GenerationConfig` names in parentheses).
public struct BeamSearchOptions: Sendable, Equatable {
    /// Beams kept per prompt (`num_beams`), ≥ 1. One beam reproduces greedy decoding.
    public var numBeams: Int
    /// Maximum generated tokens per prompt (`max_new_tokens`), ≥ 1.
    public var maxNewTokens: Int
    /// Finished hypotheses are ranked by `sumLogProb / generatedLength ^ lengthPenalty`
    /// (`length_penalty`, default 1.0).
    public var lengthPenalty: Double
    /// The stopping rule (`early_stopping`, default `.heuristic` = HF's `False`).
    public var earlyStopping: BeamEarlyStopping

    public init(numBeams: Int, maxNewTokens: Int, lengthPenalty: Double = 1.0, earlyStopping: BeamEarlyStopping = .heuristic) {
        self.numBeams = numBeams
        self.maxNewTokens = maxNewTokens
        self.lengthPenalty = lengthPenalty
        self.earlyStopping = earlyStopping
    }
}

/// Why a hypothesis ended.
public enum FinishReason: String, Sendable, Equatable {
    /// Its last token is one of the stop tokens (EOS).
    case stopToken
    /// The caller's `shouldStop` check (e.g. a stop string in the decoded text) fired.
    case stopCondition
    /// It reached `maxNewTokens`.
    case length
}

/// The best finished hypothesis of one prompt.
public struct BeamHypothesis: Sendable, Equatable {
    /// The generated ids only (not the prompt), including the stop token that ended it, as HF's
    /// returned sequences include their EOS.
    public var tokens: [Int]
    /// Σ log p(token | prefix) over `tokens` (natural log; computed in Double from f32 logits).
    public var sumLogProb: Double
    /// `sumLogProb / tokens.count ^ lengthPenalty`: what the hypotheses are ranked by.
    public var score: Double
    public var finishReason: FinishReason
}

// MARK: - Beam search

extension TransformerModel {
    /// Beam search over several prompts at once, with Hugging Face `generate(num_beams=N,
    /// do_sample=False)` semantics as implemented by transformers' vectorised `_beam_search`
    /// (v4.50 and later; read from `generation/utils.py`, facts only):
    ///
    /// - Each step, every running beam's next-token log-probabilities (`log_softmax` of the last
    ///   logits) are added to the beam's running sum, and the best `max(2, 1 + #stopTokens) ·
    ///   numBeams` (beam, token) candidates over all beams of the prompt are taken, best first
    ///   (`_get_top_k_continuations`). At the first step only one beam exists (HF gives the
    ///   other copies of the prompt a −1e9 score, so they are never chosen).
    /// - A candidate "hits a stopping criterion" when its token is a stop token, when
    ///   `shouldStop(prompt, generatedIds)` returns true (HF's `StopStringCriteria` plays this
    ///   role there), or when it reaches `maxNewTokens`. Among the first `numBeams` candidates,
    ///   those that hit one become finished hypotheses scored
    ///   `sum / generatedLength ^ lengthPenalty`, where the length counts every generated token
    ///   including the final one (`_update_finished_beams`); only the best `numBeams` finished
    ///   hypotheses are kept. Candidates ranked `numBeams` or lower never finish.
    /// - The next running beams are the best `numBeams` candidates that hit nothing
    ///   (`_get_running_beams_for_next_iteration`).
    /// - `.heuristic` early stopping (`_check_early_stop_heuristic`): once `numBeams` hypotheses
    ///   are finished, the prompt is done when the best running sum divided by
    ///   `generatedLength ^ lengthPenalty` is not above the worst finished score; after that no
    ///   hypothesis is added. A prompt is also done when no candidate is left running.
    /// - The result is the finished hypothesis with the highest score.
    ///
    /// Older transformers (≤ 4.35, `BeamSearchScorer`, what LLM-Adapters ran in 2023) divided
    /// by the length of prompt + generation without the EOS instead; with a long prompt that
    /// ranks almost by the plain sum. We follow the current definition.
    ///
    /// Ties between equal scores go to the lower (beam, token) index, so the result is
    /// deterministic, and one beam gives exactly greedy decoding (`argmax` takes the first
    /// maximum too). Every beam has its own KV cache; all running beams of all prompts share one
    /// `forwardCached` call per step, and a beam's cache is reused by its first child and copied
    /// (into a recycled cache when one is free) for the others.
    ///
    /// - Parameters:
    ///   - prompts: token ids of each prompt (non-empty).
    ///   - stopTokens: ids that end a hypothesis (EOS); the id is kept in its tokens.
    ///   - shouldStop: `(promptIndex, generatedIds) -> Bool`, checked on every candidate.
    /// - Returns: the best hypothesis of each prompt, in prompt order.
    public func beamSearch(prompts: [[Int]], options: BeamSearchOptions, stopTokens: Set<Int> = [],
                           shouldStop: ((Int, [Int]) -> Bool)? = nil) throws -> [BeamHypothesis] {
        guard options.numBeams >= 1 else { throw ModelError.invalidInput("beam search needs numBeams ≥ 1, got \(options.numBeams)") }
        guard options.maxNewTokens >= 1 else { throw ModelError.invalidInput("beam search needs maxNewTokens ≥ 1, got \(options.maxNewTokens)") }
        for (i, p) in prompts.enumerated() where p.isEmpty {
            throw ModelError.invalidInput("prompt \(i) is empty: generation needs at least one token (e.g. BOS)")
        }
        let states = prompts.enumerated().map { i, p in
            BeamPromptState(index: i, first: Beam(tokens: [], sum: 0, pending: p,
                                                  cache: KVCache(config: config, capacity: p.count + options.maxNewTokens)))
        }
        let keep = max(2, 1 + stopTokens.count) * options.numBeams
        while true {
            let active = states.filter { !$0.done }
            if active.isEmpty { break }
            let beams = active.flatMap(\.running)
            let logits = try forwardCached(beams.map { CachedSequence(tokens: $0.pending, cache: $0.cache) })
            var row = 0
            for state in active {
                let rows = Array(logits[row..<(row + state.running.count)])
                row += state.running.count
                state.advance(logits: rows, keep: keep, options: options, stopTokens: stopTokens, shouldStop: shouldStop)
            }
        }
        return states.map { $0.result() }
    }
}

// MARK: - Per-prompt state

/// One running beam: its generated ids, their summed log-probability, the ids to feed next and
/// its own KV cache (holding the prompt and every generated id except `pending`).
final class Beam {
    var tokens: [Int]
    var sum: Double
    var pending: [Int]
    var cache: KVCache
    init(tokens: [Int], sum: Double, pending: [Int], cache: KVCache) {
        self.tokens = tokens; self.sum = sum; self.pending = pending; self.cache = cache
    }
}

/// The beams and finished hypotheses of one prompt.
final class BeamPromptState {
    let index: Int
    var running: [Beam]
    /// Best first, at most `numBeams`.
    var finished: [BeamHypothesis] = []
    /// HF `is_early_stop_heuristic_unsatisfied`, inverted: once true, nothing more is added.
    var cannotImprove = false
    var done = false
    /// Caches of dropped beams, reused for copies.
    var spare: [KVCache] = []

    init(index: Int, first: Beam) {
        self.index = index
        running = [first]
    }

    struct Candidate {
        var beam: Int
        var token: Int
        var sum: Double
    }

    /// One step: picks candidates from the running beams' last logits, records finished
    /// hypotheses, forms the next running beams and decides whether the prompt is done.
    func advance(logits: [[Float]], keep: Int, options: BeamSearchOptions, stopTokens: Set<Int>,
                 shouldStop: ((Int, [Int]) -> Bool)?) {
        let nb = options.numBeams
        // Candidates: the global top `keep` of (beam sum + log p) can hold at most `keep` tokens
        // of any one beam, so each beam's own top `keep` suffices.
        var candidates: [Candidate] = []
        candidates.reserveCapacity(keep * running.count)
        for (b, beam) in running.enumerated() {
            let lse = logSumExp(logits[b])
            for (t, logit) in topK(logits[b], keep) {
                candidates.append(Candidate(beam: b, token: t, sum: beam.sum + (Double(logit) - lse)))
            }
        }
        // Best first; ties to the lower flattened index (beam · V + token), like a stable top-k.
        candidates.sort { $0.sum != $1.sum ? $0.sum > $1.sum : ($0.beam != $1.beam ? $0.beam < $1.beam : $0.token < $1.token) }
        if candidates.count > keep { candidates.removeLast(candidates.count - keep) }

        let generated = running[0].tokens.count + 1  // every running beam has the same length
        let norm = pow(Double(generated), options.lengthPenalty)
        let atMax = generated >= options.maxNewTokens
        let blocked = cannotImprove || (options.earlyStopping == .whenFull && finished.count == nb)
        var next: [Candidate] = []
        for (rank, c) in candidates.enumerated() {
            let reason: FinishReason?
            if stopTokens.contains(c.token) {
                reason = .stopToken
            } else if shouldStop?(index, running[c.beam].tokens + [c.token]) ?? false {
                reason = .stopCondition
            } else if atMax {
                reason = .length
            } else {
                reason = nil
            }
            if let reason {
                if rank < nb && !blocked {
                    add(BeamHypothesis(tokens: running[c.beam].tokens + [c.token], sumLogProb: c.sum,
                                       score: c.sum / norm, finishReason: reason), limit: nb)
                }
            } else if next.count < nb {
                next.append(c)
            }
        }

        // Early-stopping heuristic on the best running beam, scored at the new length.
        if !cannotImprove, finished.count == nb, let best = next.first {
            let length = options.earlyStopping == .never && options.lengthPenalty > 0 ? options.maxNewTokens : generated
            let bestPossible = best.sum / pow(Double(length), options.lengthPenalty)
            if !(bestPossible > finished[nb - 1].score) { cannotImprove = true }
        }
        let full = options.earlyStopping == .whenFull && finished.count == nb
        if next.isEmpty || cannotImprove || full || atMax {
            done = true
            running = []
            spare = []
            return
        }
        reseat(next)
    }

    /// Keeps the best `limit` finished hypotheses; an equal score does not displace an earlier one.
    func add(_ h: BeamHypothesis, limit: Int) {
        let at = finished.firstIndex { h.score > $0.score } ?? finished.count
        guard at < limit else { return }
        finished.insert(h, at: at)
        if finished.count > limit { finished.removeLast() }
    }

    /// Forms the next running beams. A parent's cache goes to its first child; later children get
    /// a copy, written into a dropped beam's cache when one is free.
    func reseat(_ next: [Candidate]) {
        var childCount = [Int](repeating: 0, count: running.count)
        for c in next { childCount[c.beam] += 1 }
        for (b, n) in childCount.enumerated() where n == 0 { spare.append(running[b].cache) }
        // Copies first, while every parent cache still holds exactly its parent's state (nothing
        // is written to a cache before the next forward).
        var hasFirstChild = [Bool](repeating: false, count: running.count)
        var beams: [Beam] = []
        beams.reserveCapacity(next.count)
        for c in next {
            let parent = running[c.beam]
            let cache: KVCache
            if hasFirstChild[c.beam] {
                if let s = spare.popLast() { s.overwrite(with: parent.cache); cache = s } else { cache = parent.cache.copy() }
            } else {
                hasFirstChild[c.beam] = true
                cache = parent.cache
            }
            beams.append(Beam(tokens: parent.tokens + [c.token], sum: c.sum, pending: [c.token], cache: cache))
        }
        running = beams
    }

    func result() -> BeamHypothesis {
        if let best = finished.first { return best }
        // Unreachable with maxNewTokens ≥ 1 (the last step finishes the top candidates); kept so
        // a caller always gets an answer.
        let b = running.first!
        return BeamHypothesis(tokens: b.tokens, sumLogProb: b.sum, score: b.sum / Double(max(b.tokens.count, 1)),
                              finishReason: .length)
    }
}

// MARK: - Helpers

extension KVCache {
    /// Makes this cache an exact copy of `other` (same capacity and layout), without allocating.
    func overwrite(with other: KVCache) {
        precondition(capacity == other.capacity && k.count == other.k.count, "KV caches of different shapes")
        let used = other.length * (k[0].count / max(capacity, 1))
        for l in k.indices {
            k[l].pointer.update(from: other.k[l].pointer, count: used)
            v[l].pointer.update(from: other.v[l].pointer, count: used)
        }
        length = other.length
    }
}

/// `log Σ exp(x)` in Double (max-shifted).
func logSumExp(_ x: [Float]) -> Double {
    var mx = -Float.infinity
    for v in x where v > mx { mx = v }
    guard mx.isFinite else { return Double(mx) }
    var s = 0.0
    x.withUnsafeBufferPointer { p in
        for v in p { s += Double(expf(v - mx)) }
    }
    return Double(mx) + log(s)
}

/// The `k` largest values with their indices, best first; equal values keep index order.
func topK(_ x: [Float], _ k: Int) -> [(Int, Float)] {
    var out: [(Int, Float)] = []
    out.reserveCapacity(k + 1)
    for (i, v) in x.enumerated() {
        if out.count == k, let last = out.last, !(v > last.1) { continue }
        // After every element ≥ v, so earlier indices stay ahead on ties.
        var at = out.count
        while at > 0 && out[at - 1].1 < v { at -= 1 }
        out.insert((i, v), at: at)
        if out.count > k { out.removeLast() }
    }
    return out
}
