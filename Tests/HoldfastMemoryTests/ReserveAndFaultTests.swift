import HoldfastMemory
import Synchronization
import Testing

@Suite("Reserves and fault plans")
struct ReserveAndFaultTests {
    @Test func reserveAllocationsNeverFailWithEightThreadsOnAFullBudget() throws {
        let b = MemoryBudget(limit: 64 << 10, configuration: PolicyTests.quiet(1_000_000))
        let pool = try MemoryPool<Page>.pages(name: "test writeback", site: .testPagePool, minimum: 4, budget: b)
        #expect(b.used == 4 * 4096)
        // Fill the rest of the budget: from here on every element comes from the reserve.
        let rest = b.limit - b.used
        #expect(b.charge(rest, at: .testFiller))
        let failures = Counter(), served = Counter()
        let threads = (0..<8).map { t in
            TestThread {
                for i in 0..<2_000 {
                    guard let page = pool.allocate() else { failures.increment(); continue }
                    // The holder owns the page: write, check, give back.
                    let bytes = b.bytes(page)
                    bytes.storeBytes(of: UInt64(t * 1_000_000 + i), toByteOffset: 0, as: UInt64.self)
                    if bytes.load(fromByteOffset: 0, as: UInt64.self) != UInt64(t * 1_000_000 + i) { failures.increment() }
                    served.increment()
                    pool.free(page)
                }
            }
        }
        threads.forEach { $0.join() }
        #expect(failures.count == 0)
        #expect(served.count == 16_000)
        #expect(pool.servedFromReserve == 16_000)
        #expect(pool.available == 4)
        b.uncharge(rest, for: .testFiller)
    }

    @Test func reserveRefillsFirstAndTheBudgetIsTriedFirst() throws {
        let b = MemoryBudget(limit: 16 * 4096, configuration: PolicyTests.quiet())
        let pool = try MemoryPool<Page>.pages(name: "refill", site: .testPagePool, minimum: 2, budget: b)
        // With room in the budget, allocations leave the reserve alone.
        let a = pool.allocate()!, c = pool.allocate()!, d = pool.allocate()!
        #expect(pool.servedFromReserve == 0 && pool.available == 2)
        #expect(b.used == 5 * 4096)
        pool.free(a); pool.free(c); pool.free(d)
        #expect(pool.available == 2)   // already full: the extra elements went back to the budget
        #expect(b.used == 2 * 4096)
    }

    @Test func aReserveThatMayNotWaitReturnsNilWhenEmpty() throws {
        let b = MemoryBudget(limit: 8 * 4096, configuration: PolicyTests.quiet())
        let pool = try MemoryPool<Int>(name: "handles", site: .testObjectPool, minimum: 2, elementBytes: 256, budget: b, make: { 7 })
        #expect(b.charge(b.limit - b.used, at: .testFiller))
        let x = pool.allocate(), y = pool.allocate()
        #expect(x == 7 && y == 7)
        #expect(pool.allocate() == nil)
        #expect(b.statistics(.testObjectPool).failed == 1)
        pool.free(x!); pool.free(y!)
        #expect(pool.allocate() != nil)
    }

    @Test func aReserveTooBigForTheBudgetIsAnError() {
        let b = MemoryBudget(limit: 4 * 4096, configuration: PolicyTests.quiet())
        #expect(throws: OutOfMemoryError.self) {
            _ = try MemoryPool<Page>.pages(name: "huge", site: .testPagePool, minimum: 5, budget: b)
        }
        #expect(b.used == 0)
    }

    @Test func aFaultPlanSendsAReserveOntoItsReservePath() throws {
        let b = MemoryBudget(limit: 16 * 4096, faultPlan: FaultPlan(site: "test.page-pool", persistent: true),
                             configuration: PolicyTests.quiet())
        let pool = try MemoryPool<Page>.pages(name: "forced", site: .testPagePool, minimum: 2, budget: b)
        let p = pool.allocate()!
        #expect(pool.servedFromReserve == 1)
        pool.free(p)
        #expect(b.statistics(.testPagePool).injected == 1)
    }

    @Test func specsParse() throws {
        #expect(try FaultPlan(parsing: "nth=3") == FaultPlan(nth: 3))
        #expect(try FaultPlan(parsing: "site=buffer.block,persistent") == FaultPlan(site: "buffer.block", persistent: true))
        #expect(try FaultPlan(parsing: "category=extent-status, probability=0.25 ,seed=9")
                == FaultPlan(category: .extentStatus, probability: 0.25, seed: 9))
        for bad in ["", "nth=0", "nth=x", "category=nope", "probability=2", "frobnicate", "persistent=1", "seed=-1"] {
            #expect(throws: FaultPlan.ParseError.self, "\(bad)") { try FaultPlan(parsing: bad) }
        }
        let error = try? FaultPlan(parsing: "category=nope")
        #expect(error == nil)
    }

    @Test func nthFailsOnceOrFromThenOn() {
        func failures(_ plan: FaultPlan) -> [Int] {
            let b = MemoryBudget(limit: 1 << 20, faultPlan: plan, configuration: PolicyTests.quiet())
            var failed: [Int] = []
            for i in 1...6 {
                let site: AllocationSite = i % 2 == 0 ? .testNoWait : .testMayFail
                if b.charge(1, at: site) { b.uncharge(1, for: site) } else { failed.append(i) }
            }
            return failed
        }
        #expect(failures(FaultPlan(nth: 3)) == [3])
        #expect(failures(FaultPlan(nth: 3, persistent: true)) == [3, 4, 5, 6])
        #expect(failures(FaultPlan(site: "test.no-wait")) == [2])
        #expect(failures(FaultPlan(nth: 2, site: "test.no-wait")) == [4])
        #expect(failures(FaultPlan(site: "test.may-fail", persistent: true)) == [1, 3, 5])
        #expect(failures(FaultPlan(category: .inode, persistent: true)) == [])
        let a = failures(FaultPlan(probability: 0.5, seed: 42))
        #expect(a == failures(FaultPlan(probability: 0.5, seed: 42)))   // a seed repeats
        #expect(failures(FaultPlan(probability: 1, seed: 1)) == [1, 2, 3, 4, 5, 6])
        #expect(failures(FaultPlan(probability: 0, seed: 1)) == [])
    }

    @Test func anInjectedNoFailSiteTakesItsSlowPathAndStillSucceeds() {
        let b = MemoryBudget(limit: 1 << 20, faultPlan: FaultPlan(site: "test.no-fail", persistent: true),
                             configuration: PolicyTests.quiet())
        let reclaimed = Counter()
        let token = b.register(Shrinker(name: "watch", count: { 1 }, scan: { _ in reclaimed.increment(); return 0 }))
        defer { b.unregister(token) }
        for _ in 0..<3 { b.mustCharge(100, at: .testNoFail) }
        let s = b.statistics(.testNoFail)
        #expect(b.used == 300)
        #expect(s.hits == 3 && s.injected == 3 && s.waits >= 3 && s.retries >= 3)
        #expect(reclaimed.count >= 3)
        b.uncharge(300, for: .testNoFail)
    }

    @Test func aWaitingReserveWakesWhenTheBudgetFrees() throws {
        // A tick far longer than the watchdog: only a real wake-up gets the waiter through in time.
        let b = MemoryBudget(limit: 8 * 4096, configuration: PolicyTests.quiet(60_000_000_000))
        let pool = try MemoryPool<Page>.pages(name: "wake", site: .testPagePool, minimum: 1, budget: b)
        let filler = b.limit - b.used
        #expect(b.charge(filler, at: .testFiller))
        let held = pool.allocate()!  // the reserve's only element
        #expect(pool.servedFromReserve == 1)
        let got = Flag()
        let t = TestThread {
            let p = pool.allocate()!
            pool.free(p)
            got.set()
        }
        #expect(eventually { b.statistics(.testPagePool).waits >= 1 })
        b.uncharge(4096, for: .testFiller)  // budget memory, not a pool element
        #expect(eventually(seconds: 20) { got.isSet }, "the pool waiter slept through a budget free")
        t.join()
        pool.free(held)
        b.uncharge(filler - 4096, for: .testFiller)
        #expect(b.used == 4096)  // the refilled reserve
    }

    @Test func pagesStayIntactWhileOthersFreePastTheWarmLimit() {
        // 64 pages: freed pages beyond 16 warm ones go back to the kernel (madvise). A page handed
        // out twice, or zeroed while someone holds it, shows up as a wrong byte. (The window the
        // review found, madvise after relisting, is too narrow for this test to hit reliably.)
        let b = MemoryBudget(limit: 64 * 4096, configuration: PolicyTests.quiet())
        let corrupt = Counter()
        let threads = (0..<4).map { t in
            TestThread {
                var mine: [Page] = []
                for i in 0..<3_000 {
                    if let p = b.allocatePage(at: .testMayFail) {
                        b.bytes(p).initializeMemory(as: UInt8.self, repeating: UInt8(t + 1))
                        mine.append(p)
                    }
                    if mine.count >= 15 || i % 7 == 0 {
                        for p in mine {
                            if !b.bytes(p).allSatisfy({ $0 == UInt8(t + 1) }) { corrupt.increment() }
                            b.freePage(p, for: .testMayFail)
                        }
                        mine.removeAll()
                    }
                }
                for p in mine { b.freePage(p, for: .testMayFail) }
            }
        }
        threads.forEach { $0.join() }
        #expect(corrupt.count == 0)
        #expect(b.used == 0)
    }
}
