import Synchronization

/// Where allocations sleep until memory comes back: a generation count behind a `Monitor`, so a
/// wake-up between "it did not fit" and "sleep" is never lost.
///
/// A freeing thread checks `hasWaiters` (one atomic load) and only then takes the lock.
/// The waiter list names each sleeping site, for the stall detector.
final class WaitQueue: Sendable {
    private struct State {
        var generation = 0
        var waiters: [Int: (site: AllocationSite, count: Int)] = [:]

        mutating func leave(_ site: AllocationSite) {
            if let entry = waiters[site.id] {
                waiters[site.id] = entry.count > 1 ? (site, entry.count - 1) : nil
            }
        }
    }
    private let state = Monitor(State())
    private let waiterCount = Atomic<Int>(0)

    /// A ticket taken before the last attempt to allocate; `sleep` returns at once if anything
    /// was freed after it was taken.
    struct Ticket {
        let generation: Int
        let site: AllocationSite
    }

    /// Registers `site` as waiting. Must be followed by `sleep` or `cancel`.
    func enter(_ site: AllocationSite) -> Ticket {
        state.withLock { s in
            waiterCount.add(1, ordering: .sequentiallyConsistent)
            s.waiters[site.id, default: (site, 0)].count += 1
            return Ticket(generation: s.generation, site: site)
        }
    }

    /// Sleeps until something is freed after the ticket was taken, or `timeout` nanoseconds pass.
    /// Returns false on timeout. Leaves the waiter list either way.
    func sleep(_ ticket: Ticket, timeoutNanoseconds: Int) -> Bool {
        state.wait(until: { $0.generation != ticket.generation }, timeoutNanoseconds: timeoutNanoseconds) { s, woken in
            waiterCount.add(-1, ordering: .sequentiallyConsistent)
            s.leave(ticket.site)
            return woken
        }
    }

    func cancel(_ ticket: Ticket) {
        state.withLock { s in
            waiterCount.add(-1, ordering: .sequentiallyConsistent)
            s.leave(ticket.site)
        }
    }

    /// True if anyone is registered; sequentially consistent with `enter`, so a freeing thread that
    /// sees false knows every later waiter will see its freed memory on its final attempt.
    var hasWaiters: Bool { waiterCount.load(ordering: .sequentiallyConsistent) > 0 }

    /// Wakes every sleeper: memory was freed or writeback finished.
    func wakeAll() {
        state.withLock { $0.generation &+= 1 }
    }

    /// The sites now waiting, with how many threads wait at each.
    func snapshot() -> [(site: AllocationSite, count: Int)] {
        state.withLock { s in s.waiters.values.sorted { $0.site.id < $1.site.id } }
    }
}
