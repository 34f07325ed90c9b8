#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A pthread mutex with one condition variable: the primitive under `Monitor<State>` (and under
/// the budget's wait queue).
/// pthread, not `Synchronization.Mutex`, so ThreadSanitizer sees it (see `Locked`). The
/// condition runs on CLOCK_MONOTONIC where it can.
public final class ConditionLock: @unchecked Sendable {
    // The pthread objects must not move: they live in their own allocations.
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
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

    @inlinable
    public func withLock<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// With the lock held: sleeps until `broadcast` or `timeoutNanoseconds` pass (false on timeout).
    /// Callers loop on their own condition, as with every condition variable.
    @discardableResult
    public func wait(timeoutNanoseconds: Int) -> Bool {
        wait(until: Self.deadline(afterNanoseconds: timeoutNanoseconds))
    }

    /// With the lock held: sleeps until `broadcast` or `deadline` (from `deadline(afterNanoseconds:)`)
    /// passes (false then).
    @discardableResult
    public func wait(until deadline: timespec) -> Bool {
        var deadline = deadline
        return pthread_cond_timedwait(condition, mutex, &deadline) != ETIMEDOUT
    }

    /// The deadline `wait(until:)` takes for `nanoseconds` from now, on the clock the condition uses.
    public static func deadline(afterNanoseconds nanoseconds: Int) -> timespec {
        #if canImport(Glibc)
        var deadline = MonotonicClock.now()
        #else
        var deadline = timespec()  // Darwin's condition variables wait against the real-time clock
        clock_gettime(CLOCK_REALTIME, &deadline)
        #endif
        let total = deadline.tv_nsec + nanoseconds
        deadline.tv_sec += total / 1_000_000_000
        deadline.tv_nsec = total % 1_000_000_000
        return deadline
    }

    /// With the lock held: sleeps until `broadcast` (callers loop on their own condition).
    public func wait() { pthread_cond_wait(condition, mutex) }

    /// Wakes every waiter; call with the lock held or not.
    public func broadcast() { pthread_cond_broadcast(condition) }
}

/// The monotonic clock, for ages, intervals and deadlines.
public enum MonotonicClock {
    public static func now() -> timespec {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return t
    }

    /// Monotonic nanoseconds, for ages and intervals.
    public static var nanoseconds: UInt64 {
        let t = now()
        return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
    }

    public static func nanosecondsSince(_ start: timespec) -> Int {
        let t = now()
        return (t.tv_sec - start.tv_sec) * 1_000_000_000 + (t.tv_nsec - start.tv_nsec)
    }
}
