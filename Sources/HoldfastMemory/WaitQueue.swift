#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Where allocations sleep until memory comes back: a pthread mutex and condition variable
/// with a generation count, so a wake-up between "it did not fit" and "sleep" is never lost.
///
/// A freeing thread checks `hasWaiters` (one atomic load) and only then takes the lock.
/// The waiter list names each sleeping site, for the stall detector.
final class WaitQueue: @unchecked Sendable {
    // The pthread objects must not move: they live in their own allocations.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>
    private let waiterCount = Atomic<Int>(0)
    // Guarded by `mutex`.
    private var generation = 0
    private var waiters: [Int: (site: AllocationSite, count: Int)] = [:]

    init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        #if canImport(Glibc)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        #endif
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// A ticket taken before the last attempt to allocate; `sleep` returns at once if anything
    /// was freed after it was taken.
    struct Ticket {
        let generation: Int
        let site: AllocationSite
    }

    /// Registers `site` as waiting. Must be followed by `sleep` or `cancel`.
    func enter(_ site: AllocationSite) -> Ticket {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        waiterCount.add(1, ordering: .sequentiallyConsistent)
        waiters[site.id, default: (site, 0)].count += 1
        return Ticket(generation: generation, site: site)
    }

    /// Sleeps until something is freed after the ticket was taken, or `timeout` nanoseconds pass.
    /// Returns false on timeout. Leaves the waiter list either way.
    func sleep(_ ticket: Ticket, timeoutNanoseconds: Int) -> Bool {
        pthread_mutex_lock(mutex)
        defer {
            leave(ticket.site)
            pthread_mutex_unlock(mutex)
        }
        #if canImport(Glibc)
        var deadline = Self.now()  // the condition variable runs on CLOCK_MONOTONIC
        #else
        var deadline = timespec()  // Darwin's condition variables wait against the real-time clock
        clock_gettime(CLOCK_REALTIME, &deadline)
        #endif
        let total = deadline.tv_nsec + timeoutNanoseconds
        deadline.tv_sec += total / 1_000_000_000
        deadline.tv_nsec = total % 1_000_000_000
        while generation == ticket.generation {
            if pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT {
                return generation != ticket.generation
            }
        }
        return true
    }

    func cancel(_ ticket: Ticket) {
        pthread_mutex_lock(mutex)
        leave(ticket.site)
        pthread_mutex_unlock(mutex)
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
        pthread_mutex_lock(mutex)
        generation &+= 1
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    /// The sites now waiting, with how many threads wait at each.
    func snapshot() -> [(site: AllocationSite, count: Int)] {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return waiters.values.sorted { $0.site.id < $1.site.id }
    }

    static func now() -> timespec {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return t
    }

    static func nanosecondsSince(_ start: timespec) -> Int {
        let t = now()
        return (t.tv_sec - start.tv_sec) * 1_000_000_000 + (t.tv_nsec - start.tv_nsec)
    }
}
