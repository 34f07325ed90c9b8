#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one schedule for every retry that waits out something passing: memory that writeback or
/// another holder will free, a change racing a read. The first `immediate` tries go at once;
/// after that each pause is twice the last, from `initial` up to `maximum`.
///
/// Each retry loop states its schedule as a named value below, so the pauses of the engine can
/// be read and tuned in one place.
public struct Backoff: Sendable {
    public let immediate: Int
    public let initialNanoseconds: UInt64
    public let maximumNanoseconds: UInt64
    /// Pauses taken since the last `reset` (immediate tries included).
    public private(set) var attempts = 0

    public init(immediate: Int = 0, initialNanoseconds: UInt64, maximumNanoseconds: UInt64) {
        precondition(initialNanoseconds > 0 && maximumNanoseconds >= initialNanoseconds, "a backoff grows from a positive pause")
        self.immediate = immediate
        self.initialNanoseconds = initialNanoseconds
        self.maximumNanoseconds = maximumNanoseconds
    }

    /// The pause before the next try (0 while immediate tries remain), counted as taken.
    public mutating func next() -> UInt64 {
        defer { attempts += 1 }
        guard attempts >= immediate else { return 0 }
        let doublings = min(attempts - immediate, 32)
        return min(maximumNanoseconds, initialNanoseconds << UInt64(doublings))
    }

    /// Sleeps for `next()`.
    public mutating func pause() {
        let ns = next()
        guard ns > 0 else { return }
        var request = timespec(tv_sec: Int(ns / 1_000_000_000), tv_nsec: Int(ns % 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }

    /// Back to the first try (after progress).
    public mutating func reset() { attempts = 0 }

    // The engine's schedules.

    /// A read racing changes to its file's mapping, paused before each attempt: four quick
    /// attempts, then 50 µs up to 3.2 ms.
    public static var racingRead: Backoff { Backoff(immediate: 4, initialNanoseconds: 50_000, maximumNanoseconds: 3_200_000) }
    /// The same schedule paused after each restart (the first attempt takes no pause): the
    /// fourth restart waits 50 µs.
    public static var racingReadRestarts: Backoff { Backoff(immediate: 3, initialNanoseconds: 50_000, maximumNanoseconds: 3_200_000) }
    /// Work short of memory that writeback or another holder will free (delayed allocation before
    /// a commit, the last close's orphan work, the writes of a close): 2 ms, doubling up to 50 ms.
    public static var shortOfMemory: Backoff { Backoff(initialNanoseconds: 2_000_000, maximumNanoseconds: 50_000_000) }
    /// The flusher when a pass could not map or write for want of memory: 2 ms up to 16 ms.
    public static var flusher: Backoff { Backoff(initialNanoseconds: 2_000_000, maximumNanoseconds: 16_000_000) }
}
