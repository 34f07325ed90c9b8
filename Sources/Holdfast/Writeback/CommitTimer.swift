#if canImport(Glibc)
import Glibc
#endif
import HoldfastMemory

/// The journal's periodic commit, as the kernel's `commit=5`: a thread that commits the running
/// transaction once its first change is five seconds old, so a crash loses at most about that
/// much of what nobody synced. It sleeps until the write path arms it (a transaction's first
/// change) and then until the deadline; a commit made meanwhile by anyone else leaves it nothing
/// to do. It holds the filesystem weakly: a filesystem dropped without `close` still goes.
final class CommitTimer: Sendable {
    static let intervalNanoseconds: UInt64 = 5_000_000_000

    private struct State {
        /// When the running transaction is due (monotonic ns); nil while none is running.
        var due: UInt64?
        var stopping = false
        var running = false
        var thread: pthread_t?
        var commits = 0
    }

    private struct Target: Sendable { weak var fs: Filesystem? }

    private let state = Monitor(State())
    private let target = Locked(Target())

    init() {}

    /// Periodic commits the timer made.
    var commits: Int { state.withLock { $0.commits } }

    /// Is a commit due (a transaction running that nobody committed yet)?
    var isArmed: Bool { state.withLock { $0.due != nil } }

    /// A transaction began at `start`: commit it `intervalNanoseconds` later unless someone does first.
    func arm(startedAt start: UInt64) {
        state.withLock { s in if s.due == nil { s.due = start + Self.intervalNanoseconds } }
    }

    /// The transaction was committed: nothing is due.
    func disarm() { state.withLock { $0.due = nil } }

    func start(_ fs: Filesystem) {
        target.withLock { $0.fs = fs }
        let started = state.withLock { s in
            guard !s.running else { return false }
            s.running = true
            s.stopping = false
            return true
        }
        guard started else { return }
        let box = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { raw in
            Unmanaged<CommitTimer>.fromOpaque(raw!).takeRetainedValue().main()
            return nil
        }, box)
        if created != 0 {
            Unmanaged<CommitTimer>.fromOpaque(box).release()
            state.withLock { $0.running = false }
            return
        }
        state.withLock { $0.thread = thread }
    }

    /// Stops the thread and waits for it (at close, before the last commit).
    func stop() {
        let thread: pthread_t? = state.withLock { s in
            guard s.running else { return nil }
            s.stopping = true
            return s.thread
        }
        guard let thread else { return }
        // From the timer's own thread (the filesystem went with its last reference there) it
        // cannot join itself: it ends on its own, detached.
        if pthread_equal(thread, pthread_self()) == 0 { pthread_join(thread, nil) } else { pthread_detach(thread) }
        state.withLock { s in
            s.running = false
            s.thread = nil
        }
    }

    private func main() {
        while true {
            // Asleep until a transaction is running (or the end).
            let due: UInt64? = state.wait(until: { $0.stopping || $0.due != nil }) { s in s.stopping ? nil : s.due }
            guard let due else { return }
            let now = MonotonicClock.nanoseconds
            if now < due {
                // Until the deadline, or the end, or a commit that took the deadline away.
                let stop = state.wait(until: { $0.stopping || $0.due != due }, timeoutNanoseconds: Int(due - now)) { s, _ in s.stopping }
                if stop { return }
                if state.withLock({ $0.due != due }) { continue }
            }
            state.withLock { s in
                s.due = nil
                s.commits += 1
            }
            guard let fs = target.withLock({ $0.fs }) else { return }
            fs.commitDue()
        }
    }
}

extension Filesystem {
    /// Is the timer's commit due? (For tests: a failed commit must not leave it due at once.)
    package var commitIsDue: Bool { commitTimer.isArmed }

    /// The timer's commit: the running transaction and the data it needs, if it is still there.
    package func commitDue() {
        guard let writer else { return }
        // The data first, outside the lock, unless no commit can follow it.
        let healthy = writer.withLock { state in !state.closed && state.transaction.journal?.abortReason == nil }
        if healthy && writeFailures.readOnlyReason == nil { writeOrderedDataOutsideLock() }
        writer.withLock { state in
            guard !state.closed, state.transaction.dirtyBlocks > 0 else { return }
            // A failure is kept for the next sync, fsync or close to report. The mapping above
            // armed the timer again, with a deadline already past: a commit that failed waits
            // for the next change, not for the timer to fire at once, again and again.
            do { try commitLocked(state, data: .ordered(file: nil)) } catch { commitTimer.disarm() }
        }
    }
}
