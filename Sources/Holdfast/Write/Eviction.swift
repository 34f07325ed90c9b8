#if canImport(Glibc)
import Glibc
#endif
import HoldfastMemory

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
extension Filesystem {
    /// The reserve: one handle of orphan work (its 64 credits' undo copies), or a thirty-second of
    /// the budget when that is less.
    var evictionReserveBytes: Int { max(blockSize, min(64 * blockSize, budget.limit / 32)) }

    /// Takes the reserve if it is not held (at open, and after an eviction used it).
    func refillEvictionReserve() {
        guard let writer, !writer.withLock({ $0.closed }), evictionReserveHeld.withLock({ $0 }) == 0 else { return }
        // Charged with no lock held (it may reclaim); a second refill that raced this one gives its charge back.
        let bytes = evictionReserveBytes
        guard budget.charge(bytes, at: .evictionReserve) else { return }
        let kept = evictionReserveHeld.withLock { held -> Bool in
            guard held == 0 else { return false }
            held = bytes
            return true
        }
        if !kept { budget.uncharge(bytes, for: .evictionReserve) }
    }

    /// Gives the reserve back to the budget (for an eviction's work, or at close).
    func releaseEvictionReserve() {
        evictionReserveHeld.withLock { held in
            if held > 0 { budget.uncharge(held, for: .evictionReserve) }
            held = 0
        }
    }

    /// The last close of an unlinked file.
    func evict(_ inode: UInt32) throws {
        refillEvictionReserve()  // if a memory-short eviction before could not take it back
        var usedReserve = false
        defer { if usedReserve { refillEvictionReserve() } }
        for attempt in 0..<4 {
            do {
                try finishOrphan(inode)
                if usedReserve { evictionsFromReserve.add(1, ordering: .relaxed) }
                return
            } catch {
                guard case .outOfMemory = HoldfastError.wrap(error) else { throw error }
                if !usedReserve {
                    // The memory set aside for this moment: now the budget has room for the work.
                    usedReserve = true
                    releaseEvictionReserve()
                    continue
                }
                usleep(UInt32(1000 << attempt))
            }
        }
        deferredEvictions.add(1, ordering: .relaxed)
    }
}
