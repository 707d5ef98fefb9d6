import Foundation

// MARK: - Hashing

/// A fast non-cryptographic hash of a byte string (multiply-xorshift over 8-byte words).
/// Used only for in-memory tables; never persisted.
@inline(__always) func hashBytes(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
    var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: n)
    var i = 0
    let raw = UnsafeRawPointer(p)
    while i + 8 <= n {
        let v = raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)
        h = (h ^ v) &* 0xFF51_AFD7_ED55_8CCD
        h ^= h >> 32
        i += 8
    }
    var tail: UInt64 = 0
    var shift: UInt64 = 0
    while i < n {
        tail |= UInt64(p[i]) << shift
        shift += 8
        i += 1
    }
    h = (h ^ tail) &* 0xC4CE_B9FE_1A85_EC53
    h ^= h >> 29
    return h
}

// MARK: - Byte string table

/// Byte strings stored back to back (no per-entry allocation), each mapped to an integer value,
/// with an open-addressing hash index for lookups by content.
///
/// Entries keep their insertion order; `value(at:)` gives the integer stored with each entry
/// (a token id). Inserting a string that is already present updates its value, like inserting
/// into a dictionary.
struct ByteStringTable {
    private(set) var bytes: [UInt8] = []
    private(set) var offsets: [Int32] = [0]
    private(set) var values: [Int32] = []
    private var slots: [Int32] = []   // entry index + 1, 0 = empty
    private var mask: Int = -1

    init(expectedCount: Int = 0) {
        reserve(expectedCount)
    }

    var count: Int { values.count }

    mutating func reserve(_ n: Int) {
        offsets.reserveCapacity(n + 1)
        values.reserveCapacity(n)
        var capacity = 16
        while capacity < n * 2 { capacity <<= 1 }
        if capacity > slots.count { rehash(capacity) }
    }

    private mutating func rehash(_ capacity: Int) {
        slots = [Int32](repeating: 0, count: capacity)
        mask = capacity - 1
        let n = values.count
        bytes.withUnsafeBufferPointer { b in
            offsets.withUnsafeBufferPointer { o in
                slots.withUnsafeMutableBufferPointer { s in
                    for e in 0..<n {
                        let start = Int(o[e])
                        let len = Int(o[e + 1]) - start
                        var i = Int(truncatingIfNeeded: hashBytes(b.baseAddress! + start, len)) & mask
                        while s[i] != 0 { i = (i + 1) & mask }
                        s[i] = Int32(e + 1)
                    }
                }
            }
        }
    }

    /// The entry index of a byte string, or nil.
    @inline(__always) func entry(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int? {
        if mask < 0 { return nil }
        return bytes.withUnsafeBufferPointer { b -> Int? in
            offsets.withUnsafeBufferPointer { o -> Int? in
                slots.withUnsafeBufferPointer { s -> Int? in
                    var i = Int(truncatingIfNeeded: hashBytes(p, n)) & mask
                    while true {
                        let e = Int(s[i])
                        if e == 0 { return nil }
                        let start = Int(o[e - 1])
                        if Int(o[e]) - start == n && (n == 0 || memcmp(b.baseAddress! + start, p, n) == 0) { return e - 1 }
                        i = (i + 1) & mask
                    }
                }
            }
        }
    }

    /// The value stored with a byte string, or nil.
    @inline(__always) func value(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int32? {
        guard let e = entry(p, n) else { return nil }
        return values[e]
    }

    func value<C: Collection>(of bytes: C) -> Int32? where C.Element == UInt8 {
        let array = Array(bytes)
        return array.withUnsafeBufferPointer { b in
            value(b.baseAddress ?? ByteStringTable.emptyPointer, b.count)
        }
    }

    func value(of string: String) -> Int32? {
        var s = string
        return s.withUTF8 { value($0.baseAddress ?? ByteStringTable.emptyPointer, $0.count) }
    }

    /// Inserts (or updates) an entry; returns its index. One probe sequence finds either the
    /// existing entry or the free slot.
    @discardableResult
    mutating func insert(_ p: UnsafePointer<UInt8>, _ n: Int, value: Int32) -> Int {
        if (values.count + 1) * 2 > slots.count { rehash(max(16, slots.count * 2)) }
        let h = hashBytes(p, n)
        let m = mask
        let found: Int? = bytes.withUnsafeBufferPointer { b in
            offsets.withUnsafeBufferPointer { o in
                slots.withUnsafeMutableBufferPointer { s -> Int? in
                    var i = Int(truncatingIfNeeded: h) & m
                    while true {
                        let e = Int(s[i])
                        if e == 0 {
                            s[i] = Int32(values.count + 1)
                            return nil
                        }
                        let start = Int(o[e - 1])
                        if Int(o[e]) - start == n && (n == 0 || memcmp(b.baseAddress! + start, p, n) == 0) { return e - 1 }
                        i = (i + 1) & m
                    }
                }
            }
        }
        if let e = found {
            values[e] = value
            return e
        }
        bytes.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        offsets.append(Int32(bytes.count))
        values.append(value)
        return values.count - 1
    }

    @discardableResult
    mutating func insert(_ buffer: [UInt8], value: Int32) -> Int {
        buffer.withUnsafeBufferPointer { insert($0.baseAddress ?? ByteStringTable.emptyPointer, $0.count, value: value) }
    }

    /// The bytes of entry `e`.
    func entryBytes(_ e: Int) -> ArraySlice<UInt8> {
        bytes[Int(offsets[e])..<Int(offsets[e + 1])]
    }

    func entryString(_ e: Int) -> String {
        String(decoding: entryBytes(e), as: UTF8.self)
    }

    static let emptyPointer: UnsafePointer<UInt8> = {
        let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
        p.pointee = 0
        return UnsafePointer(p)
    }()
}

// MARK: - Byte strings indexed by id

/// Byte strings indexed densely by id (gaps allowed), for decoding ids back to bytes.
struct BytesById {
    private(set) var bytes: [UInt8] = []
    /// offsets[id]..<offsets[id+1]; an absent id has `present[id] == false`.
    private(set) var offsets: [Int32] = [0]
    private(set) var present: [Bool] = []

    var count: Int { present.count }

    init(count: Int, fill: (Int, inout [UInt8]) -> Bool) {
        offsets.reserveCapacity(count + 1)
        present.reserveCapacity(count)
        for id in 0..<count {
            let ok = fill(id, &bytes)
            present.append(ok)
            offsets.append(Int32(bytes.count))
        }
    }

    @inline(__always) func range(_ id: Int) -> Range<Int>? {
        guard id >= 0, id < present.count, present[id] else { return nil }
        return Int(offsets[id])..<Int(offsets[id + 1])
    }

    func appendBytes(of id: Int, to out: inout [UInt8]) {
        if let r = range(id) { out.append(contentsOf: bytes[r]) }
    }
}

// MARK: - Pair table

/// Maps a pair of token ids to (merge rank, merged id): the BPE merge table.
/// Open addressing over packed 64-bit keys; lookups do no allocation.
struct PairTable {
    private var keys: [UInt64]
    private var vals: [UInt64]
    private let mask: Int
    private let shift: UInt64
    private(set) var count = 0

    init(capacityFor n: Int) {
        var capacity = 16
        var bits: UInt64 = 4
        while capacity < n * 2 { capacity <<= 1; bits += 1 }
        keys = [UInt64](repeating: .max, count: capacity)
        vals = [UInt64](repeating: 0, count: capacity)
        mask = capacity - 1
        shift = 64 - bits
    }

    @inline(__always) private func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> shift)
    }

    /// Inserts or overwrites (a later duplicate merge wins, as in `tokenizers`' HashMap build).
    mutating func insert(_ a: Int32, _ b: Int32, rank: Int32, merged: Int32) {
        let key = UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
        let value = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: merged))
        precondition(count * 2 < keys.count, "PairTable sized too small")
        var i = slot(key)
        while true {
            if keys[i] == .max {
                keys[i] = key
                vals[i] = value
                count += 1
                return
            }
            if keys[i] == key {
                vals[i] = value
                return
            }
            i = (i + 1) & mask
        }
    }

    /// (rank << 32 | merged id) for a pair, or nil.
    @inline(__always) func lookup(_ a: Int32, _ b: Int32) -> UInt64? {
        let key = UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
        return keys.withUnsafeBufferPointer { k -> UInt64? in
            var i = slot(key)
            while true {
                let kk = k[i]
                if kk == key { return vals[i] }
                if kk == .max { return nil }
                i = (i + 1) & mask
            }
        }
    }
}
