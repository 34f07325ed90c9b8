#if canImport(Glibc)
import Glibc
#endif
import HoldfastMemory
import Synchronization

extension AllocationSite {
    static let evictionReserve = AllocationSite("eviction.reserve", .mayFail, .inode,
        "memory set aside at a writable open for the orphan work of a last close; taken again after use")
}

/// Eviction (DESIGN.md rule 6): the last close of an unlinked file frees it, and that cannot fail
/// for want of memory. A writable open sets memory aside for it (a step's undo blocks and the
/// metadata blocks they copy); an eviction short of memory gives the reserve back to the budget
/// for its own work, then takes it again. Should even that not do, it tries again after a pause,
/// and at last leaves the inode on the orphan list, which the image's close or its next open
/// finishes: nothing leaks, and nothing is reported. Only a device error is.
///
/// The memory a writable open sets aside for the orphan work of last closes, and what became of
/// the evictions that needed it: a component of `Filesystem`.
final class EvictionReserve: Sendable {
    let budget: MemoryBudget
    /// One handle of orphan work (its 64 credits' undo copies), or a thirty-second of the budget
    /// when that is less.
    let bytes: Int
    /// Bytes now charged at `.evictionReserve` (0 or `bytes`).
    private let held = Locked<Int>(0)
    /// Last closes whose orphan work waited on the list for want of memory, and those the reserve
    /// carried through.
    let deferred = Atomic<Int>(0)
    let carried = Atomic<Int>(0)

    init(budget: MemoryBudget, blockSize: Int) {
        self.budget = budget
        bytes = max(blockSize, min(64 * blockSize, budget.limit / 32))
    }

    var isHeld: Bool { held.withLock { $0 } > 0 }

    /// Takes the reserve if it is not held. Charged with no lock held (it may reclaim); a second
    /// refill that raced this one gives its charge back.
    func refill() {
        guard !isHeld, budget.charge(bytes, at: .evictionReserve) else { return }
        let kept = held.withLock { h -> Bool in
            guard h == 0 else { return false }
            h = bytes
            return true
        }
        if !kept { budget.uncharge(bytes, for: .evictionReserve) }
    }

    /// Gives the reserve back to the budget (for an eviction's work, or at close).
    func release() {
        held.withLock { h in
            if h > 0 { budget.uncharge(h, for: .evictionReserve) }
            h = 0
        }
    }
}

extension Filesystem {
    /// Takes the reserve if it is not held (at open, and after an eviction used it), while the
    /// filesystem is open for changes.
    func refillEvictionReserve() {
        guard let writer, !writer.withLock({ $0.closed }) else { return }
        evictionReserve.refill()
    }

    func releaseEvictionReserve() { evictionReserve.release() }

    /// The last close of an unlinked file.
    func evict(_ inode: UInt32) throws {
        refillEvictionReserve()  // if a memory-short eviction before could not take it back
        var usedReserve = false
        defer { if usedReserve { refillEvictionReserve() } }
        var backoff = Backoff.shortOfMemory
        for _ in 0..<4 {
            do {
                try finishOrphan(inode)
                if usedReserve { evictionReserve.carried.add(1, ordering: .relaxed) }
                return
            } catch {
                guard case .outOfMemory = HoldfastError.wrap(error) else { throw error }
                if !usedReserve {
                    // The memory set aside for this moment: now the budget has room for the work.
                    usedReserve = true
                    releaseEvictionReserve()
                    continue
                }
                backoff.pause()
            }
        }
        evictionReserve.deferred.add(1, ordering: .relaxed)
    }
}
