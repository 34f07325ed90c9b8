import Synchronization

/// A fixed-length array of atomic integers: per-site and per-category statistics
/// without a lock on the allocation fast path. The only raw-pointer code of the
/// statistics; `Atomic` is non-copyable, so it cannot live in a Swift array.
final class AtomicCounters: Sendable {
    let count: Int
    nonisolated(unsafe) private let storage: UnsafeMutablePointer<Atomic<Int>>

    init(count: Int) {
        self.count = count
        storage = .allocate(capacity: count)
        for i in 0..<count { (storage + i).initialize(to: Atomic(0)) }
    }

    deinit {
        storage.deinitialize(count: count)
        storage.deallocate()
    }

    @inline(__always)
    func add(_ index: Int, _ amount: Int) {
        precondition(index >= 0 && index < count)
        storage[index].add(amount, ordering: .relaxed)
    }

    /// Adds and returns the new value.
    @inline(__always)
    func addReturning(_ index: Int, _ amount: Int) -> Int {
        precondition(index >= 0 && index < count)
        return storage[index].add(amount, ordering: .relaxed).newValue
    }

    @inline(__always)
    func load(_ index: Int) -> Int {
        precondition(index >= 0 && index < count)
        return storage[index].load(ordering: .relaxed)
    }

    /// Raises the counter to `value` if it is below it (a high-water mark).
    @inline(__always)
    func raise(_ index: Int, to value: Int) {
        precondition(index >= 0 && index < count)
        var current = storage[index].load(ordering: .relaxed)
        while value > current {
            let (exchanged, original) = storage[index].compareExchange(expected: current, desired: value, ordering: .relaxed)
            if exchanged { return }
            current = original
        }
    }
}
