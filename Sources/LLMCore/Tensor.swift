import Foundation

// MARK: - Storage

/// Owner of a 64-byte aligned, uninitialised-or-zeroed block of `Float`s. Buffers are
/// allocated once and reused (activations, scratch); nothing on a hot path allocates.
public final class FloatBuffer: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    public init(count: Int, zeroed: Bool = true) {
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        if zeroed { pointer.initialize(repeating: 0, count: max(count, 1)) }
    }

    public convenience init(_ values: [Float]) {
        self.init(count: values.count, zeroed: false)
        values.withUnsafeBufferPointer { pointer.update(from: $0.baseAddress!, count: values.count) }
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }

    public func zero() { pointer.update(repeating: 0, count: count) }
    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }
}

// MARK: - Tensor

/// A dense row-major f32 tensor: a shape written once (e.g. `[B, T, C]`) over a shared storage
/// owner. Value semantics for the shape; the storage is shared (copy explicitly with `copy()`).
public struct Tensor: @unchecked Sendable {
    public var shape: [Int]
    public let storage: FloatBuffer

    public init(shape: [Int], zeroed: Bool = true) {
        self.shape = shape
        storage = FloatBuffer(count: shape.reduce(1, *), zeroed: zeroed)
    }

    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "Tensor: \(values.count) values for shape \(shape)")
        self.shape = shape
        storage = FloatBuffer(values)
    }

    public init(shape: [Int], storage: FloatBuffer) {
        precondition(shape.reduce(1, *) <= storage.count)
        self.shape = shape
        self.storage = storage
    }

    public var count: Int { shape.reduce(1, *) }
    public var pointer: UnsafeMutablePointer<Float> { storage.pointer }
    public var array: [Float] { Array(UnsafeBufferPointer(start: storage.pointer, count: count)) }

    public func copy() -> Tensor {
        let t = Tensor(shape: shape, zeroed: false)
        t.pointer.update(from: pointer, count: count)
        return t
    }

    public subscript(i: Int) -> Float {
        get { storage.pointer[i] }
        nonmutating set { storage.pointer[i] = newValue }
    }
}
