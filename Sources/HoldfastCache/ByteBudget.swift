import Synchronization

/// A fixed number of bytes that every cache charges before it holds memory.
/// The memory layer replaces this with the full budget (policies, reserves, reclaim); the
/// cache talks to it through `charge`/`uncharge` only, so that swap is one place.
public final class ByteBudget: Sendable {
    public let limit: Int
    private struct State {
        var used = 0
        var peak = 0
    }
    private let state = Mutex(State())

    public init(limit: Int) { self.limit = limit }

    /// Takes `bytes` from the budget if they fit; false leaves nothing charged.
    public func charge(_ bytes: Int) -> Bool {
        state.withLock { s in
            guard s.used + bytes <= limit else { return false }
            s.used += bytes
            s.peak = max(s.peak, s.used)
            return true
        }
    }

    public func uncharge(_ bytes: Int) {
        state.withLock { s in
            precondition(s.used >= bytes, "budget uncharged more than it was charged")
            s.used -= bytes
        }
    }

    public var used: Int { state.withLock { $0.used } }
    public var peak: Int { state.withLock { $0.peak } }
}

/// The budget ran out and nothing could be given back.
public struct OutOfMemoryError: Error, Sendable, CustomStringConvertible {
    public let what: String
    public let bytes: Int
    public let limit: Int

    public init(what: String, bytes: Int, limit: Int) {
        self.what = what
        self.bytes = bytes
        self.limit = limit
    }

    public var description: String {
        "out of memory: \(what) needs \(bytes) bytes and the \(limit / 1024 / 1024) MiB budget is spent (try a larger --memory)"
    }
}
