import Foundation
import LLMCore
import Tokenize

// MARK: - Requests and events

/// Why a completion ended (OpenAI's `finish_reason`): an end-of-sequence token or a stop string
/// (`stop`), or `max_tokens` / the context / a bounded shutdown (`length`).
public enum FinishReason: String, Sendable {
    case stop, length
}

/// One completion to run: prompt ids, how many tokens at most, how to sample, the stop strings
/// and the adapter its rows apply (nil: the base model).
public struct GenerationRequest: @unchecked Sendable {
    public var id: String
    public var prompt: [Int]
    public var maxTokens: Int
    public var sampling: SamplingOptions
    public var stop: [String]
    /// An adapter set of the base model (`AdapterSet`), or nil for the base alone.
    public var adapter: AdapterProvider?
    /// Generate through end-of-sequence tokens (exactly `maxTokens`, as llama.cpp's and vLLM's
    /// `ignore_eos`: load benchmarks compare equal work).
    public var ignoreEOS = false

    public init(id: String, prompt: [Int], maxTokens: Int, sampling: SamplingOptions = SamplingOptions(),
                stop: [String] = [], adapter: AdapterProvider? = nil) {
        self.id = id; self.prompt = prompt; self.maxTokens = maxTokens; self.sampling = sampling
        self.stop = stop; self.adapter = adapter
    }
}

/// The end of a completion.
public struct Completion: Sendable, Equatable {
    public var finishReason: FinishReason
    public var promptTokens: Int
    /// Every generated id, the end-of-sequence token included when it ended the completion.
    public var ids: [Int]
    public var completionTokens: Int { ids.count }
}

/// What a running completion reports, in order: text pieces (whole characters), then `done`
/// or `failed` once.
public enum GenerationEvent: Sendable, Equatable {
    case text(String)
    case done(Completion)
    case failed(String)

    public var isTerminal: Bool { if case .text = self { return false }; return true }
}

/// Why a request was not queued.
public enum EngineError: Error, Equatable, CustomStringConvertible {
    /// `maxQueue` requests are already waiting.
    case queueFull(Int)
    /// The engine is draining for shutdown.
    case shuttingDown
    /// The prompt leaves no room in the context (or is empty).
    case promptTooLong(tokens: Int, context: Int)
    case emptyPrompt

    public var description: String {
        switch self {
        case let .queueFull(n): return "the server is busy: \(n) requests are already waiting; retry later"
        case .shuttingDown: return "the server is shutting down"
        case let .promptTooLong(tokens, context):
            return "the prompt has \(tokens) tokens; the model's context is \(context) positions, so at most \(context - 1) prompt tokens leave room for one new token"
        case .emptyPrompt: return "the prompt is empty: generation needs at least one token"
        }
    }
}

/// A queued or running completion's handle: `cancel()` frees its row at the next step.
public final class GenerationHandle: @unchecked Sendable {
    private let lock = NSLock()
    private var _cancelled = false
    private var _generated = 0
    public func cancel() { lock.lock(); _cancelled = true; lock.unlock() }
    var isCancelled: Bool { lock.lock(); defer { lock.unlock() }; return _cancelled }
    /// Tokens generated so far (what a cancelled completion got to).
    public var generated: Int {
        get { lock.lock(); defer { lock.unlock() }; return _generated }
        set { lock.lock(); _generated = newValue; lock.unlock() }
    }
}

// MARK: - The engine

/// One base model on ONE scheduler thread, serving many completions by continuous batching
/// (as `generateGreedy`, with sampling, adapters and streaming per row): requests wait in a
/// bounded queue; between decode steps finished rows leave and waiting ones join, and every
/// step is ONE `forwardCached` over all rows in flight (new prompts' prefill and one token of
/// each decoding row share every base GEMM; each row's adapter applies to its own rows). Each
/// row samples with its own options and seed, so its tokens do not depend on the rest of the
/// batch (up to floating-point rounding of the shared GEMMs).
///
/// Events are delivered on the scheduler thread; `stream` wraps them in an `AsyncStream`.
public final class Engine: @unchecked Sendable {
    public let model: TransformerModel
    public let tokenizer: (any Tokenizer)?
    public let maxBatch: Int
    public let maxQueue: Int
    /// The positions a row may use (prompt + generated): the model's `max_position_embeddings`.
    public let context: Int
    /// Tokens that end a completion (the config's and the tokenizer's EOS ids).
    public let stopTokens: Set<Int>
    /// Prompt tokens run in one step at most: longer prompts (or several new ones) are fed in
    /// chunks over several steps while the other rows keep decoding, which bounds a step's time
    /// and its attention scratch (heads × rows × context).
    public let prefillTokenBudget: Int

    private final class Job {
        let request: GenerationRequest
        let handle: GenerationHandle
        let onEvent: (GenerationEvent) -> Void
        init(_ r: GenerationRequest, _ h: GenerationHandle, _ e: @escaping (GenerationEvent) -> Void) {
            request = r; handle = h; onEvent = e
        }
    }

    private final class Row {
        let job: Job
        let cache: KVCache
        let limit: Int
        /// Prompt tokens already run (the row samples once all are).
        var consumed = 0
        var next: [Int] = []
        var rng: SplitMix64
        var ids: [Int] = []
        var text: TextStream
        init(job: Job, cache: KVCache, limit: Int, text: TextStream) {
            self.job = job; self.cache = cache; self.limit = limit; self.text = text
            rng = SplitMix64(seed: job.request.sampling.seed)
        }
    }

    private let cond = NSCondition()
    // Guarded by `cond`.
    private var queue: [Job] = []
    private var running = 0
    private var draining = false
    private var drainDeadline: Date?
    private var stopped = false
    private var thread: Thread?
    private var threadExited = false
    // Scheduler thread only.
    private var rows: [Row] = []

    public init(model: TransformerModel, tokenizer: (any Tokenizer)?, maxBatch: Int = 16, maxQueue: Int = 64,
                prefillTokenBudget: Int = 512) {
        self.model = model
        self.tokenizer = tokenizer
        self.maxBatch = max(1, maxBatch)
        self.maxQueue = max(0, maxQueue)
        self.prefillTokenBudget = max(1, prefillTokenBudget)
        context = model.config.maxPositionEmbeddings
        stopTokens = Set(model.config.eosTokenIds + (tokenizer?.eosTokenIds ?? []))
    }

    /// Starts the scheduler thread (once).
    public func start() {
        cond.lock(); defer { cond.unlock() }
        guard thread == nil else { return }
        let t = Thread { [self] in loop() }
        t.name = "finetune-serve-scheduler"
        t.stackSize = 8 << 20
        thread = t
        t.start()
    }

    /// Requests waiting and rows decoding.
    public var load: (queued: Int, running: Int) {
        cond.lock(); defer { cond.unlock() }
        return (queue.count, running)
    }

    /// Queues a completion; `onEvent` is called on the scheduler thread with its text pieces
    /// and then exactly one `done` or `failed`.
    /// - Throws: `EngineError` when the queue is full, the engine drains, or the prompt does not fit.
    @discardableResult
    public func submit(_ request: GenerationRequest, onEvent: @escaping (GenerationEvent) -> Void) throws -> GenerationHandle {
        guard !request.prompt.isEmpty else { throw EngineError.emptyPrompt }
        guard request.prompt.count < context else { throw EngineError.promptTooLong(tokens: request.prompt.count, context: context) }
        let handle = GenerationHandle()
        cond.lock(); defer { cond.unlock() }
        guard !draining else { throw EngineError.shuttingDown }
        guard queue.count < maxQueue else { throw EngineError.queueFull(maxQueue) }
        queue.append(Job(request, handle, onEvent))
        cond.signal()
        return handle
    }

    /// `submit` as an `AsyncStream`; the handle (or ending the iteration) cancels the row.
    public func stream(_ request: GenerationRequest) throws -> (AsyncStream<GenerationEvent>, GenerationHandle) {
        let (stream, continuation) = AsyncStream<GenerationEvent>.makeStream()
        let handle = try submit(request) { event in
            continuation.yield(event)
            if event.isTerminal { continuation.finish() }
        }
        continuation.onTermination = { _ in handle.cancel() }
        return (stream, handle)
    }

    /// Stops taking requests and lets queued and running ones finish; after `timeout` seconds
    /// the rest end with `length`. Returns when nothing is left and the thread has exited.
    public func drain(timeout: TimeInterval) {
        cond.lock(); defer { cond.unlock() }
        draining = true
        stopped = true
        drainDeadline = Date().addingTimeInterval(timeout)
        cond.broadcast()
        while thread != nil && !threadExited { cond.wait() }
    }

    // MARK: Scheduler

    private func loop() {
        while true {
            cond.lock()
            while queue.isEmpty && rows.isEmpty && !stopped { cond.wait() }
            if stopped && queue.isEmpty && rows.isEmpty {
                threadExited = true
                cond.broadcast()
                cond.unlock()
                return
            }
            queue.removeAll { $0.handle.isCancelled }
            let overdue = drainDeadline.map { Date() >= $0 } ?? false
            var admitted: [Job] = []
            if overdue {
                admitted = queue
                queue.removeAll()
            } else {
                let n = min(queue.count, maxBatch - rows.count)
                admitted = Array(queue.prefix(n))
                queue.removeFirst(n)
            }
            running = rows.count + admitted.count
            cond.unlock()

            if overdue {
                // Bounded shutdown: whatever has not finished ends here.
                for job in admitted { job.onEvent(.done(Completion(finishReason: .length, promptTokens: job.request.prompt.count, ids: []))) }
                for row in rows { finish(row, .length) }
                rows.removeAll()
            } else {
                for job in admitted { rows.append(makeRow(job)) }
                rows.removeAll { $0.job.handle.isCancelled }
                if !rows.isEmpty { step() }
            }
            cond.lock()
            running = rows.count
            cond.broadcast()
            cond.unlock()
        }
    }

    private func makeRow(_ job: Job) -> Row {
        let r = job.request
        // The KV cache holds the prompt and at most `maxTokens` new tokens, within the context.
        let limit = max(0, min(r.maxTokens, context - r.prompt.count))
        let cache = KVCache(config: model.config, capacity: r.prompt.count + limit)
        return Row(job: job, cache: cache, limit: limit, text: TextStream(tokenizer: tokenizer, stop: r.stop))
    }

    /// One forward over every row (decoding rows: their last token; prefilling rows: the next
    /// chunk of their prompt, within `prefillTokenBudget`), then one sampled token per row whose
    /// prompt has all been run.
    private func step() {
        // A row with nothing to generate (max_tokens 0) ends before the forward.
        rows.removeAll { row in
            guard row.limit == 0 else { return false }
            finish(row, .length)
            return true
        }
        var budget = prefillTokenBudget
        var batch: [(row: Row, tokens: [Int])] = []
        for row in rows {
            let prompt = row.job.request.prompt
            if row.consumed < prompt.count {
                guard budget > 0 else { continue }
                let n = min(budget, prompt.count - row.consumed)
                batch.append((row, Array(prompt[row.consumed..<(row.consumed + n)])))
                budget -= n
            } else {
                batch.append((row, row.next))
            }
        }
        guard !batch.isEmpty else { return }
        let logits: [[Float]]
        do {
            logits = try model.forwardCached(batch.map { CachedSequence(tokens: $0.tokens, cache: $0.row.cache, adapters: $0.row.job.request.adapter) })
        } catch {
            let message = "\(error)"
            for row in rows { row.job.onEvent(.failed(message)) }
            rows.removeAll()
            return
        }
        var ended = Set<ObjectIdentifier>()
        for (k, (row, tokens)) in batch.enumerated() {
            let prompt = row.job.request.prompt
            if row.consumed < prompt.count {
                row.consumed += tokens.count
                if row.consumed < prompt.count { continue }
            }
            let t = sample(logits[k], options: row.job.request.sampling, rng: &row.rng)
            row.ids.append(t)
            row.job.handle.generated = row.ids.count
            var reason: FinishReason?
            if !row.job.request.ignoreEOS && stopTokens.contains(t) {
                reason = .stop
            } else {
                let (piece, hitStop) = row.text.push(t)
                if !piece.isEmpty { row.job.onEvent(.text(piece)) }
                if hitStop {
                    finish(row, .stop, flush: false)
                    ended.insert(ObjectIdentifier(row))
                    continue
                }
                if row.ids.count >= row.limit { reason = .length }
            }
            if let reason {
                finish(row, reason)
                ended.insert(ObjectIdentifier(row))
            } else {
                row.next = [t]
            }
        }
        rows.removeAll { ended.contains(ObjectIdentifier($0)) }
    }

    private func finish(_ row: Row, _ reason: FinishReason, flush: Bool = true) {
        if flush {
            let rest = row.text.finish()
            if !rest.isEmpty { row.job.onEvent(.text(rest)) }
        }
        row.job.onEvent(.done(Completion(finishReason: reason, promptTokens: row.job.request.prompt.count, ids: row.ids)))
    }
}
