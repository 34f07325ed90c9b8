#if canImport(Glibc)
import Glibc
#endif
import HoldfastMemory
import Synchronization
import Testing

@Suite("Memory budget policies")
struct PolicyTests {
    static func quiet(_ tick: Int = 5_000_000) -> MemoryBudget.Configuration {
        var c = MemoryBudget.Configuration()
        c.tickNanoseconds = tick
        c.events = { _ in }
        return c
    }

    @Test func accountingByCategoryWithHighWaterMarks() {
        let b = MemoryBudget(limit: 64 << 10, configuration: Self.quiet())
        #expect(b.charge(1000, at: .testMayFail))
        #expect(b.charge(500, at: .testOtherNoFail))
        let page = b.allocatePage(at: .testPagePool)!
        #expect(b.used == 1500 + 4096)
        #expect(b.used(.test) == 1000 && b.used(.inode) == 500 && b.used(.writeback) == 4096)
        b.uncharge(1000, for: .testMayFail)
        b.freePage(page, for: .testPagePool)
        b.uncharge(500, for: .testOtherNoFail)
        #expect(b.used == 0)
        #expect(b.peak == 5596)
        #expect(b.peak(.test) == 1000 && b.peak(.writeback) == 4096)
        #expect(b.statistics(.testMayFail).hits == 1)
        #expect(b.statistics(.testMayFail).line == "site test.may-fail policy=mayFail category=test hits=1 failed=0 retries=0 waits=0")
    }

    @Test func pagesAreDistinctAndKeepTheirBytes() {
        let b = MemoryBudget(limit: 16 * 4096, configuration: Self.quiet())
        var pages: [Page] = []
        while let p = b.allocatePage(at: .testMayFail) { pages.append(p) }
        #expect(pages.count == 16)
        #expect(Set(pages).count == 16)
        for (i, p) in pages.enumerated() { b.bytes(p).initializeMemory(as: UInt8.self, repeating: UInt8(i)) }
        for (i, p) in pages.enumerated() { #expect(b.bytes(p).allSatisfy { $0 == UInt8(i) }) }
        #expect(b.statistics(.testMayFail).failed == 1)
        for p in pages { b.freePage(p, for: .testMayFail) }
        b.arena.trim()
        #expect(b.used == 0)
        #expect(b.allocatePage(at: .testMayFail) != nil)  // reused after trim
    }

    @Test func mayFailFailsOnlyAfterReclaimHadItsChance() {
        let b = MemoryBudget(limit: 8192, configuration: Self.quiet())
        let held = Locked(4096)
        let token = b.register(Shrinker(name: "test", count: { held.withLock { $0 } }, scan: { request in
            let freed = held.withLock { h -> Int in defer { h = 0 }; return h }
            b.uncharge(freed, for: .testFiller)
            return freed
        }))
        defer { b.unregister(token) }
        #expect(b.charge(8192, at: .testFiller))
        // The shrinker holds 4096 of the 8192: a mayFail allocation of 4096 succeeds through reclaim.
        #expect(b.charge(4096, at: .testMayFail))
        #expect(held.withLock { $0 } == 0)
        #expect(b.reclaimPasses == 1)
        // Nothing left to reclaim: mayFail fails and nothing stays charged.
        #expect(!b.charge(1, at: .testMayFail))
        #expect(b.statistics(.testMayFail).failed == 1)
        #expect(b.used == 8192)
        b.uncharge(4096, for: .testMayFail)
        b.uncharge(4096, for: .testFiller)
    }

    @Test func noFailUnderAFullBudgetCompletesWhenAnotherThreadFrees() {
        let b = MemoryBudget(limit: 4096, configuration: Self.quiet(1_000_000_000))
        #expect(b.charge(4096, at: .testFiller))
        let done = Flag()
        let t = TestThread {
            b.mustCharge(1024, at: .testNoFail)
            done.set()
        }
        // Once the allocation sleeps on the condition variable it has not completed.
        #expect(eventually { b.statistics(.testNoFail).waits >= 1 })
        #expect(!done.isSet)
        b.uncharge(4096, for: .testFiller)
        t.join()
        #expect(done.isSet)
        #expect(b.used == 1024)
        b.uncharge(1024, for: .testNoFail)
    }

    @Test func noWaitNeverBlocksOrReclaims() {
        let b = MemoryBudget(limit: 4096, configuration: Self.quiet())
        let shrinkerCalls = Counter()
        // A shrinker that would block forever: if noWait ever reclaimed, the watchdog would fire.
        let gate = Flag()
        let token = b.register(Shrinker(name: "blocking", count: { 4096 }, scan: { _ in
            shrinkerCalls.increment()
            while !gate.isSet { usleep(1000) }
            return 0
        }))
        #expect(b.charge(4096, at: .testFiller))
        let finished = Flag()
        let failures = Counter()
        let t = TestThread {
            for _ in 0..<10_000 where !b.charge(64, at: .testNoWait) { failures.increment() }
            finished.set()
        }
        let completed = eventually(seconds: 60) { finished.isSet }
        gate.set()
        t.join()
        b.unregister(token)
        #expect(completed, "a noWait allocation blocked")
        #expect(failures.count == 10_000)
        #expect(shrinkerCalls.count == 0)
        #expect(b.statistics(.testNoWait).waits == 0 && b.statistics(.testNoWait).retries == 0)
        b.uncharge(4096, for: .testFiller)
    }

    @Test func nestedNoFSScopeKeepsFilesystemShrinkersFromRunning() {
        let b = MemoryBudget(limit: 8192, configuration: Self.quiet())
        let fsCalls = Counter(), cleanCalls = Counter()
        let fsHeld = Held(), cleanHeld = Held()
        let noFSSeen = Locked<[Bool]>([])
        func shrinker(_ name: String, needsFS: Bool, _ held: Held, _ calls: Counter) -> Shrinker {
            Shrinker(name: name, needsFilesystem: needsFS, count: { held.value.withLock { $0 } }, scan: { request in
                calls.increment()
                noFSSeen.withLock { $0.append(request.noFS) }
                let n = held.value.withLock { h -> Int in let n = min(h, request.bytes); h -= n; return n }
                b.uncharge(n, for: .testFiller)
                return n
            })
        }
        let t1 = b.register(shrinker("fs", needsFS: true, fsHeld, fsCalls))
        let t2 = b.register(shrinker("clean", needsFS: false, cleanHeld, cleanCalls))
        defer { b.unregister(t1); b.unregister(t2) }
        #expect(b.charge(8192, at: .testFiller))
        fsHeld.value.withLock { $0 = 4096 }
        cleanHeld.value.withLock { $0 = 4096 }

        MemoryScope.noFS {
            MemoryScope.noFS {
                #expect(MemoryScope.noFSDepth == 2)
                #expect(b.charge(4096, at: .testMayFail))  // only the clean shrinker can give it
                #expect(!b.charge(4096, at: .testMayFail)) // the filesystem shrinker's memory is off limits
            }
            #expect(MemoryScope.isNoFS)  // the outer scope still holds
            #expect(!b.charge(4096, at: .testMayFail))
        }
        #expect(!MemoryScope.isNoFS)
        #expect(fsCalls.count == 0)
        #expect(cleanCalls.count >= 1)
        #expect(noFSSeen.withLock { $0 }.allSatisfy { $0 })
        // Outside the scopes the filesystem shrinker runs.
        #expect(b.charge(4096, at: .testMayFail))
        #expect(fsCalls.count == 1)
        b.uncharge(8192, for: .testMayFail)
    }

    @Test func reclaimAsksEachShrinkerInProportion() {
        let b = MemoryBudget(limit: 1 << 20, configuration: Self.quiet())
        let asked = Locked<[String: Int]>([:])
        for (name, held) in [("big", 300_000), ("small", 100_000)] {
            _ = b.register(Shrinker(name: name, count: { held }, scan: { r in asked.withLock { $0[name] = r.bytes }; return 0 }))
        }
        b.reclaim(40_000)
        #expect(asked.withLock { $0 } == ["big": 30_000, "small": 10_000])
    }

    @Test func exhaustionFailsMayFailButNeverNoFail() {
        let b = MemoryBudget(limit: 4096, configuration: Self.quiet(2_000_000))
        #expect(b.charge(4096, at: .testFiller))
        b.writebackStarted()  // memory is expected back: mayFail waits for it
        let mayFailResult = Locked<Bool?>(nil)
        let waiter = TestThread { let r = b.charge(2048, at: .testMayFail); mayFailResult.withLock { $0 = r } }
        let noFailDone = Flag()
        let noFail = TestThread { b.mustCharge(2048, at: .testNoFail); noFailDone.set() }
        #expect(eventually { b.statistics(.testMayFail).waits >= 1 && b.statistics(.testNoFail).waits >= 1 })
        // Writeback finishes without freeing anything: reclaim has no progress to offer.
        b.writebackFinished()
        waiter.join()
        #expect(mayFailResult.withLock { $0 } == false)
        #expect(!noFailDone.isSet)
        #expect(b.statistics(.testNoFail).failed == 0)
        // The noFail caller is still waiting, and completes once memory is freed.
        b.uncharge(4096, for: .testFiller)
        noFail.join()
        #expect(noFailDone.isSet)
        b.uncharge(2048, for: .testNoFail)
        #expect(b.used == 0)
    }

    @Test func mayFailWaitsForWritebackThatFreesMemory() {
        let b = MemoryBudget(limit: 4096, configuration: Self.quiet(1_000_000_000))
        #expect(b.charge(4096, at: .testFiller))
        b.writebackStarted()
        let result = Locked<Bool?>(nil)
        let t = TestThread { let r = b.charge(1024, at: .testMayFail); result.withLock { $0 = r } }
        #expect(eventually { b.statistics(.testMayFail).waits >= 1 })
        b.uncharge(4096, for: .testFiller)
        b.writebackFinished()
        t.join()
        #expect(result.withLock { $0 } == true)
        b.uncharge(1024, for: .testMayFail)
    }

    @Test func stallDetectorNamesTheSitesOfADeadlockBuiltOnPurpose() {
        let events = Locked<[MemoryEvent]>([])
        var config = Self.quiet(2_000_000)
        config.reportIntervalNanoseconds = 1_000_000
        config.events = { e in events.withLock { $0.append(e) } }
        let b = MemoryBudget(limit: 8192, configuration: config)
        // Two holders each keep half the budget and then, without letting go, ask for more.
        #expect(b.charge(4096, at: .testFiller))
        #expect(b.charge(4096, at: .testFiller))
        let a = TestThread { b.mustCharge(4096, at: .testNoFail) }
        let c = TestThread { b.mustCharge(4096, at: .testOtherNoFail) }
        // The report names every waiting site once both are asleep.
        let named = eventually {
            events.withLock { $0 }.contains { e in
                let text = e.description
                return text.contains("STALL") && text.contains("test.no-fail") && text.contains("test.other-no-fail")
            }
        }
        #expect(named)
        #expect(b.stalls >= 1)
        // Breaking the deadlock lets both complete.
        b.uncharge(8192, for: .testFiller)
        a.join()
        c.join()
        #expect(b.used == 8192)
        b.uncharge(4096, for: .testNoFail)
        b.uncharge(4096, for: .testOtherNoFail)
    }

    @Test func longNoFailWaitsWarnWithoutGivingUp() {
        let events = Locked<[MemoryEvent]>([])
        var config = Self.quiet(2_000_000)
        config.longWaitNanoseconds = 20_000_000
        config.events = { e in events.withLock { $0.append(e) } }
        let b = MemoryBudget(limit: 4096, configuration: config)
        #expect(b.charge(4096, at: .testFiller))
        // Something reclaimable keeps the stall detector quiet; it just never frees anything.
        let token = b.register(Shrinker(name: "stubborn", count: { 1 }, scan: { _ in 0 }))
        let t = TestThread { b.mustCharge(1, at: .testNoFail) }
        #expect(eventually { b.longWaits >= 2 })
        #expect(events.withLock { $0.count } == 1)  // rate-limited: counted, reported once
        #expect(b.stalls == 0)
        b.uncharge(4096, for: .testFiller)
        t.join()
        b.unregister(token)
        b.uncharge(1, for: .testNoFail)
    }
}
