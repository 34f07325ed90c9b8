/// State and the lock that guards it, in one value (swift-nio's `NIOLockedValueBox`, with a
/// condition): the only way to the state is `withLock`, and a thread can sleep until the state
/// satisfies a condition (`wait(until:)`). A helper that needs the lock held takes the state as
/// `inout`, the Swift form of the kernel's `__es_*` convention ("call with i_es_lock held").
///
/// Wakeups are exact: a sleeper's condition is kept with the monitor while it sleeps, and the
/// thread whose `withLock` made one true wakes the sleepers, so a change that satisfies nobody
/// (a counter, a lookup) costs no wakeup at all. Nothing polls: a sleeper wakes when its
/// condition holds, or at the deadline it asked for. Conditions run on whichever thread changed
/// the state, under the lock, so they must be cheap and read only the state and what they
/// captured.
///
/// `Sendable` whatever its `State`, as the standard library's `Mutex` is: every access to
/// `state` is under `lock`, so the types built on it need no `@unchecked` of their own. The
/// contract the compiler cannot check: what `withLock` returns must not be used to reach into
/// the state outside the lock (the caches return entries only to compare their identity later,
/// under the lock again).
public final class Monitor<State>: @unchecked Sendable {
    @usableFromInline let lock = ConditionLock()
    // The lock makes every access exclusive; the dynamic exclusivity check would only cost time.
    @usableFromInline @exclusivity(unchecked) var state: State
    /// The conditions of the threads asleep in `wait`, checked after every `withLock`.
    @usableFromInline @exclusivity(unchecked) var sleepers: [Sleeper] = []
    @exclusivity(unchecked) private var nextSleeper = 0
    @usableFromInline @exclusivity(unchecked) var broadcasts = 0

    @usableFromInline struct Sleeper {
        let id: Int
        @usableFromInline let condition: (borrowing State) -> Bool
    }

    public init(_ state: State) { self.state = state }

    /// Runs `body` with the state under the lock, then wakes the sleepers if the state now
    /// satisfies one of them. Inlinable, so it is specialized for each state type where it is used.
    @inlinable
    public func withLock<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        try lock.withLock { () throws(E) -> R in
            defer { if !sleepers.isEmpty { wakeSatisfied() } }
            return try body(&state)
        }
    }

    /// Sleeps until `condition` holds, then runs `body` with the state under the lock.
    @inlinable
    public func wait<R>(until condition: (borrowing State) -> Bool, then body: (inout State) -> R) -> R {
        wait(until: condition, timeoutNanoseconds: nil) { state, _ in body(&state) }
    }

    /// Sleeps until `condition` holds.
    @inlinable
    public func wait(until condition: (borrowing State) -> Bool) { wait(until: condition, then: { _ in }) }

    /// Sleeps until `condition` holds or `timeoutNanoseconds` pass (nil: no limit), then runs
    /// `body` with the state under the lock and whether the condition held.
    @inlinable
    public func wait<R>(until condition: (borrowing State) -> Bool, timeoutNanoseconds: Int?,
                        then body: (inout State, _ satisfied: Bool) -> R) -> R {
        lock.withLock {
            var satisfied = condition(state)
            if !satisfied { satisfied = sleep(until: condition, timeoutNanoseconds: timeoutNanoseconds) }
            defer { if !sleepers.isEmpty { wakeSatisfied() } }
            return body(&state, satisfied)
        }
    }

    /// With the lock held and `condition` false: sleeps until it holds (true) or the timeout
    /// passes (false).
    @usableFromInline func sleep(until condition: (borrowing State) -> Bool, timeoutNanoseconds: Int?) -> Bool {
        var satisfied = false
        let deadline = timeoutNanoseconds.map { ConditionLock.deadline(afterNanoseconds: max(0, $0)) }
        // The condition is kept only while this thread sleeps in here: it never escapes the call.
        withoutActuallyEscaping(condition) { kept in
            let id = nextSleeper
            nextSleeper &+= 1
            sleepers.append(Sleeper(id: id, condition: kept))
            defer { sleepers.removeAll { $0.id == id } }
            while !satisfied {
                if let deadline {
                    let woken = lock.wait(until: deadline)
                    satisfied = condition(state)
                    if !woken { break }
                } else {
                    lock.wait()
                    satisfied = condition(state)
                }
            }
        }
        return satisfied
    }

    /// Times a change woke the sleepers (each time, one's condition had come true): for tests
    /// that check nothing wakes for a change that satisfies nobody.
    public var wakeups: Int { lock.withLock { broadcasts } }

    /// With the lock held. Inlinable like `withLock`: unspecialized, the scan of the sleepers
    /// looked up generic metadata on every call, a tenth of a small write's time in the write
    /// lock (randwrite profile).
    @inlinable func wakeSatisfied() {
        if sleepers.contains(where: { $0.condition(state) }) {
            broadcasts += 1
            lock.broadcast()
        }
    }
}
