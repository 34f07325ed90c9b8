#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// How changes meet at the write lock, for `--stats`: every operation takes it for its in-memory
/// part, and a commit runs under it. Waiting time is what writers of other files lose to it.
final class WriteLockCounters: Sendable {
    private let operations = Atomic<Int>(0)
    private let waited = Atomic<Int>(0)
    private let waitNanoseconds = Atomic<Int>(0)
    private let heldNanoseconds = Atomic<Int>(0)
    private let commits = Atomic<Int>(0)
    private let commitNanoseconds = Atomic<Int>(0)
    private let commitDataPages = Atomic<Int>(0)

    /// A wait shorter than this is the lock's own cost, not contention.
    private static let contended = 2_000

    static func now() -> Int {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return t.tv_sec * 1_000_000_000 + t.tv_nsec
    }

    /// An operation asked for the lock at `asked`, got it at `got` and let it go at `released`.
    func operation(asked: Int, got: Int, released: Int) {
        operations.add(1, ordering: .relaxed)
        if got - asked >= Self.contended {
            waited.add(1, ordering: .relaxed)
            waitNanoseconds.add(got - asked, ordering: .relaxed)
        }
        heldNanoseconds.add(released - got, ordering: .relaxed)
    }

    /// A commit held the lock `nanoseconds`, and wrote `dataPages` pages of file data in that time
    /// (data=ordered; most of it is written before the lock where the caller can).
    func commit(nanoseconds: Int, dataPages: Int) {
        commits.add(1, ordering: .relaxed)
        commitNanoseconds.add(nanoseconds, ordering: .relaxed)
        commitDataPages.add(dataPages, ordering: .relaxed)
    }

    var line: String {
        let ms = { (a: borrowing Atomic<Int>) in a.load(ordering: .relaxed) / 1_000_000 }
        return "write-lock operations=\(operations.load(ordering: .relaxed)) waited=\(waited.load(ordering: .relaxed)) "
            + "wait-ms=\(ms(waitNanoseconds)) held-ms=\(ms(heldNanoseconds)) "
            + "commits=\(commits.load(ordering: .relaxed)) commit-ms=\(ms(commitNanoseconds)) "
            + "commit-data-pages=\(commitDataPages.load(ordering: .relaxed))"
    }
}
