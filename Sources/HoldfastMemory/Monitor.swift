/// State and the lock that guards it, in one value (swift-nio's `NIOLockedValueBox`, with a
/// condition): the only way to the state is `withLock`, and a thread can sleep until the state
/// satisfies a condition (`wait(until:)`), woken by the `withLock` that made it so. A helper that
/// needs the lock held takes the state as `inout`, the Swift form of the kernel's `__es_*`
/// convention ("call with i_es_lock held").
///
/// `Sendable` whatever its `State`, as the standard library's `Mutex` is: every access to
/// `state` is under `lock`, so the types built on it need no `@unchecked` of their own. The
/// contract the compiler cannot check: what `withLock` returns must not be used to reach into
/// the state outside the lock (the caches return entries only to compare their identity later,
/// under the lock again).
public final class Monitor<State>: @unchecked Sendable {
    private let lock = ConditionLock()
    private var state: State
    /// Threads inside `wait(until:)`: a `withLock` wakes them only when there are some.
    private var waiters = 0

    public init(_ state: State) { self.state = state }

    /// Runs `body` with the state under the lock, then wakes the waiters (the state may now
    /// satisfy their condition).
    @inline(__always)
    public func withLock<R, E: Error>(_ body: (inout State) throws(E) -> R) throws(E) -> R {
        try lock.withLock { () throws(E) -> R in
            defer { if waiters > 0 { lock.broadcast() } }
            return try body(&state)
        }
    }

    /// Sleeps until `condition` holds, then runs `body` with the state under the lock.
    public func wait<R>(until condition: (State) -> Bool, then body: (inout State) -> R) -> R {
        lock.withLock {
            waiters += 1
            while !condition(state) { lock.wait() }
            waiters -= 1
            defer { if waiters > 0 { lock.broadcast() } }
            return body(&state)
        }
    }

    /// Sleeps until `condition` holds.
    public func wait(until condition: (State) -> Bool) { wait(until: condition, then: { _ in }) }
}
