import Foundation

// MARK: - Deterministic random numbers

/// xoshiro256** 1.0 (Blackman & Vigna 2018), the engine's training PRNG: fast, 256-bit state,
/// and the same sequence on every platform and Swift version (unlike
/// `SystemRandomNumberGenerator` or `Array.shuffle()`'s unspecified algorithm).
///
/// The whole state is four `UInt64`s (`state`), so a checkpoint can store it and
/// `init(state:)` resumes the exact sequence.
public struct Xoshiro256StarStar: RandomNumberGenerator, Sendable, Equatable {
    public private(set) var state: [UInt64]

    /// Seeds the four state words with four SplitMix64 outputs from `seed`, as the xoshiro
    /// authors recommend.
    public init(seed: UInt64) {
        var sm = seed
        state = [Self.splitMix64(&sm), Self.splitMix64(&sm), Self.splitMix64(&sm), Self.splitMix64(&sm)]
    }

    /// One step of SplitMix64 (Steele, Lea & Flood 2014; constants as in Vigna's reference
    /// `splitmix64.c`): advances `state` and returns the next output. Used to expand a 64-bit
    /// seed into well-mixed state words. (A function rather than a type: LLMCore already has a
    /// public `SplitMix64` that the Training target imports.)
    public static func splitMix64(_ state: inout UInt64) -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Restores a state saved from `state`.
    /// - Throws: `badRNGState` unless it is four words, not all zero.
    public init(state: [UInt64]) throws {
        guard state.count == 4 else { throw DataError.badRNGState("xoshiro256** needs 4 UInt64 words, got \(state.count)") }
        guard state.contains(where: { $0 != 0 }) else { throw DataError.badRNGState("the all-zero state is invalid") }
        self.state = state
    }

    @inline(__always) static func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    public mutating func next() -> UInt64 {
        let result = Self.rotl(state[1] &* 5, 7) &* 9
        let t = state[1] << 17
        state[2] ^= state[0]
        state[3] ^= state[1]
        state[1] ^= state[2]
        state[0] ^= state[3]
        state[2] ^= t
        state[3] = Self.rotl(state[3], 45)
        return result
    }

    /// A uniform integer in `0..<bound` without modulo bias (Lemire 2019, "Fast random integer
    /// generation in an interval"), spelled out so the sequence never depends on the standard
    /// library's implementation.
    public mutating func nextInt(below bound: Int) -> Int {
        precondition(bound > 0, "bound must be positive")
        let s = UInt64(bound)
        var m = next().multipliedFullWidth(by: s)
        if m.low < s {
            let threshold = (0 &- s) % s
            while m.low < threshold { m = next().multipliedFullWidth(by: s) }
        }
        return Int(m.high)
    }

    /// A uniform double in [0, 1) from the top 53 bits.
    public mutating func nextDouble() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }
}

// MARK: - Shuffling

/// Fisher–Yates shuffle of `0..<count` with `rng` (Durstenfeld's in-place form, drawing
/// `nextInt(below: i + 1)` for i = count-1 down to 1). Deterministic for a given RNG state.
public func shuffledIndices(count: Int, rng: inout Xoshiro256StarStar) -> [Int] {
    var a = Array(0..<max(count, 0))
    var i = a.count - 1
    while i > 0 {
        let j = rng.nextInt(below: i + 1)
        a.swapAt(i, j)
        i -= 1
    }
    return a
}

/// The order of the examples in `epoch` (0-based) for a run seeded with `seed`. Each epoch has
/// its own generator seeded from `(seed, epoch)`, so a resumed run needs only the epoch number
/// and its position in it to continue with the same order.
public func epochOrder(count: Int, seed: UInt64, epoch: Int) -> [Int] {
    var mix = seed ^ (UInt64(truncatingIfNeeded: epoch) &* 0xD1B5_4A32_D192_ED03)
    var rng = Xoshiro256StarStar(seed: Xoshiro256StarStar.splitMix64(&mix))
    return shuffledIndices(count: count, rng: &rng)
}
