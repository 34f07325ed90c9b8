#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Where allocations sleep until memory comes back: a monitor with a generation count, so a
/// wake-up between "it did not fit" and "sleep" is never lost.
///
/// A freeing thread checks `hasWaiters` (one atomic load) and only then takes the lock.
/// The waiter list names each sleeping site, for the stall detector.
final class WaitQueue: @unchecked Sendable {
    private let monitor = ConditionLock()
    private let waiterCount = Atomic<Int>(0)
    // Guarded by `monitor`.
    private var generation = 0
    private var waiters: [Int: (site: AllocationSite, count: Int)] = [:]

    /// A ticket taken before the last attempt to allocate; `sleep` returns at once if anything
    /// was freed after it was taken.
    struct Ticket {
        let generation: Int
        let site: AllocationSite
    }

    /// Registers `site` as waiting. Must be followed by `sleep` or `cancel`.
    func enter(_ site: AllocationSite) -> Ticket {
        monitor.withLock {
            waiterCount.add(1, ordering: .sequentiallyConsistent)
            waiters[site.id, default: (site, 0)].count += 1
            return Ticket(generation: generation, site: site)
        }
    }

    /// Sleeps until something is freed after the ticket was taken, or `timeout` nanoseconds pass.
    /// Returns false on timeout. Leaves the waiter list either way.
    func sleep(_ ticket: Ticket, timeoutNanoseconds: Int) -> Bool {
        monitor.withLock {
            defer { leave(ticket.site) }
            let start = MonotonicClock.now()
            while generation == ticket.generation {
                let left = timeoutNanoseconds - MonotonicClock.nanosecondsSince(start)
                if left <= 0 || !monitor.wait(timeoutNanoseconds: left) { return generation != ticket.generation }
            }
            return true
        }
    }

    func cancel(_ ticket: Ticket) {
        monitor.withLock { leave(ticket.site) }
    }

    private func leave(_ site: AllocationSite) {
        waiterCount.add(-1, ordering: .sequentiallyConsistent)
        if let entry = waiters[site.id] {
            waiters[site.id] = entry.count > 1 ? (site, entry.count - 1) : nil
        }
    }

    /// True if anyone is registered; sequentially consistent with `enter`, so a freeing thread that
    /// sees false knows every later waiter will see its freed memory on its final attempt.
    var hasWaiters: Bool { waiterCount.load(ordering: .sequentiallyConsistent) > 0 }

    /// Wakes every sleeper: memory was freed or writeback finished.
    func wakeAll() {
        monitor.withLock {
            generation &+= 1
            monitor.broadcast()
        }
    }

    /// The sites now waiting, with how many threads wait at each.
    func snapshot() -> [(site: AllocationSite, count: Int)] {
        monitor.withLock { waiters.values.sorted { $0.site.id < $1.site.id } }
    }

    static func now() -> timespec { MonotonicClock.now() }

    static func nanosecondsSince(_ start: timespec) -> Int { MonotonicClock.nanosecondsSince(start) }
}
