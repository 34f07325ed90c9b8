#if canImport(Glibc)
import Glibc
#endif
import HoldfastMemory
import Testing

@Suite("Monitor and Backoff", .timeLimit(.minutes(10)))  // a deadlock guard; long tests can hold the 2-core pool
struct MonitorAndBackoffTests {
    @Test("a waiter sleeps until another thread's withLock makes its condition true, and sees that state")
    func waitUntilWakesOnChange() {
        let monitor = Monitor(0)
        let seen = Monitor(-1)
        let waiter = TestThread {
            monitor.wait(until: { $0 >= 3 }, then: { value in seen.withLock { $0 = value } })
        }
        for _ in 0..<3 {
            usleep(2_000)
            monitor.withLock { $0 += 1 }
        }
        waiter.join()
        #expect(seen.withLock { $0 } == 3)
        #expect(monitor.withLock { $0 } == 3)
    }

    @Test("changes that leave a sleeper's condition false wake nobody; the one that makes it true wakes it once")
    func exactWakeups() {
        let monitor = Monitor((counter: 0, open: false))
        let asleep = Monitor(false)
        let waiter = TestThread {
            asleep.withLock { $0 = true }
            monitor.wait(until: { $0.open })
        }
        #expect(eventually { asleep.withLock { $0 } })
        usleep(10_000)  // well inside wait(until:) by now; if not, its first check sees the state
        for _ in 0..<1_000 { monitor.withLock { $0.counter += 1 } }
        #expect(monitor.wakeups == 0, "no change made the condition true")
        monitor.withLock { $0.open = true }
        waiter.join()
        #expect(monitor.wakeups <= 1)
        #expect(monitor.withLock { $0.counter } == 1_000)
    }

    @Test("a timed wait gives up at its timeout, and says whether the condition held")
    func timedWait() {
        let monitor = Monitor(0)
        let start = MonotonicClock.now()
        let timedOut = monitor.wait(until: { $0 > 0 }, timeoutNanoseconds: 20_000_000) { _, satisfied in satisfied }
        #expect(!timedOut)
        #expect(MonotonicClock.nanosecondsSince(start) >= 20_000_000, "it slept the whole timeout")
        let waiter = TestThread {
            let held = monitor.wait(until: { $0 > 0 }, timeoutNanoseconds: 60_000_000_000) { value, satisfied in
                value += 10
                return satisfied
            }
            #expect(held)
        }
        usleep(5_000)
        monitor.withLock { $0 = 1 }
        waiter.join()
        #expect(monitor.withLock { $0 } == 11, "the body ran under the lock once the condition held")
    }

    @Test("withLock serializes: eight threads' increments are all counted")
    func withLockSerializes() {
        let monitor = Monitor(0)
        let threads = (0..<8).map { _ in TestThread { for _ in 0..<10_000 { monitor.withLock { $0 += 1 } } } }
        threads.forEach { $0.join() }
        #expect(monitor.withLock { $0 } == 80_000)
    }

    @Test("a backoff's immediate tries cost nothing, then each pause doubles up to the maximum, and reset starts over")
    func backoffSchedule() {
        var b = Backoff(immediate: 2, initialNanoseconds: 1_000, maximumNanoseconds: 5_000)
        #expect((0..<6).map { _ in b.next() } == [0, 0, 1_000, 2_000, 4_000, 5_000])
        #expect(b.attempts == 6)
        b.reset()
        #expect(b.next() == 0)
        var read = Backoff.racingRead
        #expect((0..<5).map { _ in read.next() } == [0, 0, 0, 0, 50_000])
        var restarts = Backoff.racingReadRestarts
        #expect((1...4).map { _ in restarts.next() } == [0, 0, 0, 50_000], "the fourth restart waits")
    }
}
