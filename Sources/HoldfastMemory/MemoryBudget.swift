#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// The memory an open filesystem may use, fixed at creation (DESIGN.md, "The memory discipline").
///
/// Block-sized buffers and pages come from a `PageArena` reserved up front; every other cached
/// object is charged here in bytes. Each allocation names its `AllocationSite`, whose policy
/// decides what happens when the budget is spent:
/// - `mayFail`: reclaim (shrinkers), retry; wait only while writeback that will free memory is in
///   flight; then fail.
/// - `noWait`: one attempt on the atomic fast path; never reclaims, never sleeps (a page also
///   takes the arena's free-list lock, a leaf lock held for a few instructions).
/// - `noFail`: reclaim, then sleep on a condition variable until memory is freed or writeback
///   finishes, and retry, forever. Long waits are reported (rate-limited), and a stall where every
///   waiter is `noFail` and nothing is reclaimable is reported loudly, naming the sites.
public final class MemoryBudget: Sendable {
    public let limit: Int
    public let arena: PageArena
    public let configuration: Configuration

    public struct Configuration: Sendable {
        /// A `noFail` wait longer than this is reported as `MemoryEvent.longWait`.
        public var longWaitNanoseconds = 5_000_000_000
        /// How often a sleeping allocation wakes to re-check (and to look for a stall).
        public var tickNanoseconds = 100_000_000
        /// At most one report of each kind per this interval; the rest are only counted.
        public var reportIntervalNanoseconds = 10_000_000_000
        /// Where warnings go. The library prints nothing: the default drops them (they are still
        /// counted); the filesystem sends them to its `Logger`.
        public var events: @Sendable (MemoryEvent) -> Void = { _ in }

        public init() {}
    }

    private let usedBytes = Atomic<Int>(0)
    private let peakBytes = Atomic<Int>(0)
    private let writebackInFlight = Atomic<Int>(0)
    private let categories = AtomicCounters(count: MemoryCategory.allCases.count * 2)
    private let sites = AtomicCounters(count: AllocationSite.capacity * SiteCounter.count)
    private let events = AtomicCounters(count: EventCounter.count)
    private let injector: FaultInjector?
    private let shrinkers = Locked<[(token: Int, shrinker: Shrinker)]>([])
    private let nextShrinkerToken = Atomic<Int>(0)
    /// Where every waiting allocation sleeps, reserves' included, so any free wakes them all
    /// and the stall detector sees them all.
    let waitQueue = WaitQueue()
    private let lastReport = Locked<[String: timespec]>([:])

    enum SiteCounter: Int, CaseIterable { case hits, failed, retries, waits, injected; static let count = allCases.count }
    enum EventCounter: Int, CaseIterable { case reclaimPasses, reclaimedBytes, longWaits, stalls, reserveWaits; static let count = allCases.count }

    /// A budget of `limit` bytes whose arena hands out pages of `pageSize` bytes. Throws when the
    /// arena's address space cannot be reserved.
    public static func create(limit: Int, pageSize: Int = 4096, faultPlan: FaultPlan? = nil,
                              configuration: Configuration = Configuration()) throws(ArenaReservationError) -> MemoryBudget {
        precondition(limit >= pageSize, "a budget smaller than one page")
        let arena = try PageArena(pageSize: pageSize, capacity: limit / pageSize)
        return MemoryBudget(limit: limit, arena: arena, faultPlan: faultPlan, configuration: configuration)
    }

    /// `create`, for budgets small enough that failing to reserve them is a programming error (tests, tools).
    public convenience init(limit: Int, pageSize: Int = 4096, faultPlan: FaultPlan? = nil, configuration: Configuration = Configuration()) {
        precondition(limit >= pageSize, "a budget smaller than one page")
        let arena: PageArena
        do { arena = try PageArena(pageSize: pageSize, capacity: limit / pageSize) } catch { fatalError("\(error)") }
        self.init(limit: limit, arena: arena, faultPlan: faultPlan, configuration: configuration)
    }

    private init(limit: Int, arena: PageArena, faultPlan: FaultPlan?, configuration: Configuration) {
        self.limit = limit
        self.arena = arena
        self.configuration = configuration
        injector = faultPlan.map(FaultInjector.init)
    }

    public var pageSize: Int { arena.pageSize }

    // MARK: Charging bytes

    /// Charges `bytes` for an object allocated at `site`, following the site's policy.
    /// Returns false only for `mayFail` and `noWait` sites; a `noFail` site always gets its memory.
    @inline(__always)
    public func charge(_ bytes: Int, at site: AllocationSite) -> Bool {
        attempt(bytes, at: site) == .charged
    }

    /// Charges at a `noFail` site: returns only once the memory is charged, however long that takes.
    /// Never call it holding a lock that reclaim or writeback needs.
    @inline(__always)
    public func mustCharge(_ bytes: Int, at site: AllocationSite) {
        precondition(site.policy == .noFail, "mustCharge at \(site.name), which is \(site.policy)")
        precondition(bytes <= limit, "mustCharge of \(bytes) bytes at \(site.name) can never fit a \(limit)-byte budget")
        _ = attempt(bytes, at: site)
    }

    /// `charge`, with the failure as a typed error naming the site.
    @inline(__always)
    public func chargeOrThrow(_ bytes: Int, at site: AllocationSite) throws(OutOfMemoryError) {
        switch attempt(bytes, at: site) {
        case .charged: return
        case .exhausted: throw OutOfMemoryError(site: site, bytes: bytes, limit: limit)
        case .injected: throw OutOfMemoryError(site: site, bytes: bytes, limit: limit, injected: true)
        }
    }

    /// Gives back bytes charged at `site`, and wakes anyone waiting for memory.
    @inline(__always)
    public func uncharge(_ bytes: Int, for site: AllocationSite) {
        let left = usedBytes.subtract(bytes, ordering: .sequentiallyConsistent).newValue
        precondition(left >= 0, "budget uncharged more than was charged (site \(site.name))")
        categories.add(site.category.rawValue * 2, -bytes)
        if waitQueue.hasWaiters { waitQueue.wakeAll() }
    }

    enum Outcome { case charged, exhausted, injected }

    @inline(__always)
    func attempt(_ bytes: Int, at site: AllocationSite) -> Outcome {
        precondition(bytes >= 0)
        var forced = false
        if hit(site) {
            guard site.policy == .noFail else { return .injected }
            forced = true  // noFail is never failed: it is sent down its slow path instead
        }
        if !forced && tryCharge(bytes, site.category) { return .charged }
        return slowPath(bytes, site, forced: forced)
    }

    /// Counts a hit at `site`; true if the fault plan fails it.
    @inline(__always)
    func hit(_ site: AllocationSite) -> Bool {
        count(site, .hits)
        guard let injector, injector.shouldFail(site) else { return false }
        count(site, .injected)
        count(site, .failed)
        return true
    }

    /// Counts a hit at an I/O site (one that allocates nothing); true if the fault plan fails it,
    /// and the caller then reports EIO.
    public func failsIO(at site: AllocationSite) -> Bool { hit(site) }

    /// One lock-free attempt with no counting, for reserves.
    func chargeNow(_ bytes: Int, _ category: MemoryCategory) -> Bool { tryCharge(bytes, category) }

    @inline(__always)
    private func tryCharge(_ bytes: Int, _ category: MemoryCategory) -> Bool {
        var current = usedBytes.load(ordering: .sequentiallyConsistent)
        while true {
            let next = current + bytes
            if next > limit { return false }
            let (done, seen) = usedBytes.compareExchange(expected: current, desired: next, ordering: .sequentiallyConsistent)
            if done {
                if next > peakBytes.load(ordering: .relaxed) { raisePeak(next) }
                let live = categories.addReturning(category.rawValue * 2, bytes)
                categories.raise(category.rawValue * 2 + 1, to: live)
                return true
            }
            current = seen
        }
    }

    private func raisePeak(_ value: Int) {
        var current = peakBytes.load(ordering: .relaxed)
        while value > current {
            let (done, seen) = peakBytes.compareExchange(expected: current, desired: value, ordering: .relaxed)
            if done { return }
            current = seen
        }
    }

    private func slowPath(_ bytes: Int, _ site: AllocationSite, forced: Bool) -> Outcome {
        switch site.policy {
        case .noWait:
            count(site, .failed)
            return .exhausted
        case .mayFail:
            return mayFailSlowPath(bytes, site) ? .charged : .exhausted
        case .noFail:
            noFailSlowPath(bytes, site, forced: forced)
            return .charged
        }
    }

    private func mayFailSlowPath(_ bytes: Int, _ site: AllocationSite) -> Bool {
        var rounds = 0
        while true {
            let freed = reclaim(max(bytes, reclaimBatch))
            if tryCharge(bytes, site.category) { return true }
            if freed > 0 && rounds < 8 {
                // Others may have taken what was freed; reclaim again while it makes progress.
                rounds += 1
                count(site, .retries)
                continue
            }
            // Reclaim made no progress: wait only while writeback in flight will give memory back.
            guard writebackInFlight.load(ordering: .sequentiallyConsistent) > 0 else { break }
            let ticket = waitQueue.enter(site)
            if tryCharge(bytes, site.category) { waitQueue.cancel(ticket); return true }
            guard writebackInFlight.load(ordering: .sequentiallyConsistent) > 0 else { waitQueue.cancel(ticket); break }
            count(site, .waits)
            _ = waitQueue.sleep(ticket, timeoutNanoseconds: configuration.tickNanoseconds)
            count(site, .retries)
            rounds = 0
        }
        count(site, .failed)
        return false
    }

    private func noFailSlowPath(_ bytes: Int, _ site: AllocationSite, forced: Bool) {
        let start = MonotonicClock.now()
        var skipAttempt = forced  // an injected hit reclaims and sleeps once before trying at all
        var timedOut = false
        while true {
            _ = reclaim(max(bytes, reclaimBatch))
            if !skipAttempt && tryCharge(bytes, site.category) { return }
            let ticket = waitQueue.enter(site)
            if !skipAttempt && tryCharge(bytes, site.category) { waitQueue.cancel(ticket); return }
            // Checked on every pass: a waiter woken again and again by frees it then loses is still waiting.
            let waited = MonotonicClock.nanosecondsSince(start)
            if !skipAttempt && waited >= configuration.longWaitNanoseconds {
                events.add(EventCounter.longWaits.rawValue, 1)
                report(.longWait(site: site.name, seconds: Double(waited) / 1e9, used: used, limit: limit), key: "wait:\(site.name)")
            }
            // Still registered as a waiter here, so the stall check sees this site too.
            if timedOut { detectStall() }
            count(site, .waits)
            let woken = waitQueue.sleep(ticket, timeoutNanoseconds: skipAttempt ? 1_000_000 : configuration.tickNanoseconds)
            count(site, .retries)
            timedOut = !woken && !skipAttempt
            skipAttempt = false
        }
    }

    // MARK: Pages

    /// A page from the arena, charged at `site`; nil only for `mayFail` and `noWait` sites.
    @inline(__always)
    public func allocatePage(at site: AllocationSite) -> Page? {
        guard charge(arena.pageSize, at: site) else { return nil }
        if let page = arena.take() { return page }
        // Cannot happen while every page is charged before it is taken; fail rather than overrun.
        uncharge(arena.pageSize, for: site)
        return nil
    }

    /// A page at a `noFail` site: waits as long as it takes.
    public func mustAllocatePage(at site: AllocationSite) -> Page {
        mustCharge(arena.pageSize, at: site)
        guard let page = arena.take() else { fatalError("page arena exhausted with the budget charged") }
        return page
    }

    /// `allocatePage`, with the failure as a typed error naming the site.
    public func allocatePageOrThrow(at site: AllocationSite) throws(OutOfMemoryError) -> Page {
        try chargeOrThrow(arena.pageSize, at: site)
        if let page = arena.take() { return page }
        uncharge(arena.pageSize, for: site)
        throw OutOfMemoryError(site: site, bytes: arena.pageSize, limit: limit)
    }

    /// Returns a page allocated at `site` to the arena and its bytes to the budget.
    @inline(__always)
    public func freePage(_ page: Page, for site: AllocationSite) {
        arena.give(page)
        uncharge(arena.pageSize, for: site)
    }

    /// Frees pages taken at one site, in one pass (`PageArena.give(_:)` for a batch).
    public func freePages(_ pages: [Page], for site: AllocationSite) {
        guard !pages.isEmpty else { return }
        arena.give(pages)
        uncharge(arena.pageSize * pages.count, for: site)
    }

    /// The bytes of a page this budget handed out.
    @inline(__always)
    public func bytes(_ page: Page) -> UnsafeMutableRawBufferPointer { arena.bytes(page) }

    // MARK: Writeback in flight

    /// Memory will come back without reclaim: `mayFail` callers wait for it instead of failing,
    /// and the stall detector stays quiet. Pair with `writebackFinished`.
    public func writebackStarted() { writebackInFlight.add(1, ordering: .sequentiallyConsistent) }

    public func writebackFinished() {
        let left = writebackInFlight.subtract(1, ordering: .sequentiallyConsistent).newValue
        precondition(left >= 0, "writebackFinished without writebackStarted")
        if waitQueue.hasWaiters { waitQueue.wakeAll() }
    }

    // MARK: Reclaim

    /// What one reclaim from an allocation's slow path asks for at least: a batch (32 pages, or a
    /// 64th of the budget), so a budget full of clean pages is not reclaimed one page per allocation.
    var reclaimBatch: Int { max(32 * pageSize, limit / 64) }

    /// Registers a cache's shrinker; keep the token to unregister it before the cache goes away.
    public func register(_ shrinker: Shrinker) -> ShrinkerToken {
        let token = nextShrinkerToken.add(1, ordering: .relaxed).newValue
        shrinkers.withLock { $0.append((token, shrinker)) }
        return ShrinkerToken(value: token)
    }

    public func unregister(_ token: ShrinkerToken) {
        shrinkers.withLock { $0.removeAll { $0.token == token.value } }
    }

    /// Asks the shrinkers for `bytes`: the cheapest first, each of equal cost in proportion to what
    /// it holds, dearer ones only for what is still missing. Inside a `noFS` scope shrinkers that
    /// need the filesystem are skipped. Returns the bytes freed.
    @discardableResult
    public func reclaim(_ bytes: Int) -> Int {
        guard !MemoryScope.isReclaiming else { return 0 }  // a shrinker's own allocation
        let noFS = MemoryScope.isNoFS
        let list = shrinkers.withLock { $0 }.map(\.shrinker).filter { !(noFS && $0.needsFilesystem) }
        var freed = 0
        var asked = false
        for cost in Set(list.map(\.cost)).sorted() where freed < bytes {
            let tier = list.filter { $0.cost == cost }
            let counts = tier.map { max(0, $0.count()) }
            let total = counts.reduce(0, +)
            guard total > 0 else { continue }
            asked = true
            let wanted = bytes - freed
            freed += MemoryScope.reclaiming { () -> Int in
                var got = 0
                for (shrinker, held) in zip(tier, counts) where held > 0 {
                    let proportional = Int((Double(wanted) * Double(held) / Double(total)).rounded(.up))
                    let share = min(held, max(pageSize, proportional))
                    got += shrinker.scan(ReclaimRequest(bytes: share, noFS: noFS))
                }
                return got
            }
        }
        guard asked else { return 0 }
        events.add(EventCounter.reclaimPasses.rawValue, 1)
        events.add(EventCounter.reclaimedBytes.rawValue, freed)
        return freed
    }

    /// Bytes the shrinkers say they could free now (all of them, whatever the scope).
    public var reclaimable: Int {
        shrinkers.withLock { $0 }.reduce(0) { $0 + max(0, $1.shrinker.count()) }
    }

    func detectStall() {
        let waiting = waitQueue.snapshot()
        guard !waiting.isEmpty, waiting.allSatisfy({ $0.site.policy == .noFail }),
              writebackInFlight.load(ordering: .sequentiallyConsistent) == 0, reclaimable == 0 else { return }
        events.add(EventCounter.stalls.rawValue, 1)
        report(.stall(sites: waiting.map { "\($0.site.name)×\($0.count)" }, used: used, limit: limit), key: "stall")
    }

    func report(_ event: MemoryEvent, key: String) {
        let now = MonotonicClock.now()
        let emit = lastReport.withLock { last -> Bool in
            if let t = last[key] {
                let elapsed = (now.tv_sec - t.tv_sec) * 1_000_000_000 + (now.tv_nsec - t.tv_nsec)
                if elapsed < configuration.reportIntervalNanoseconds { return false }
            }
            last[key] = now
            return true
        }
        if emit { configuration.events(event) }
    }

    // MARK: Statistics

    @inline(__always)
    func count(_ site: AllocationSite, _ counter: SiteCounter, _ amount: Int = 1) {
        sites.add(site.id * SiteCounter.count + counter.rawValue, amount)
    }

    func countEvent(_ counter: EventCounter) { events.add(counter.rawValue, 1) }

    public var used: Int { usedBytes.load(ordering: .sequentiallyConsistent) }
    public var peak: Int { peakBytes.load(ordering: .relaxed) }
    public func used(_ category: MemoryCategory) -> Int { categories.load(category.rawValue * 2) }
    public func peak(_ category: MemoryCategory) -> Int { categories.load(category.rawValue * 2 + 1) }

    public func statistics(_ site: AllocationSite) -> SiteStatistics {
        let base = site.id * SiteCounter.count
        return SiteStatistics(site: site,
                              hits: sites.load(base + SiteCounter.hits.rawValue),
                              failed: sites.load(base + SiteCounter.failed.rawValue),
                              retries: sites.load(base + SiteCounter.retries.rawValue),
                              waits: sites.load(base + SiteCounter.waits.rawValue),
                              injected: sites.load(base + SiteCounter.injected.rawValue))
    }

    /// Every registered site that was hit, in registration order.
    public var hitSites: [SiteStatistics] {
        AllocationSite.registered.map(statistics).filter { $0.hits > 0 }
    }

    /// Faults the plan has fired so far (0 without a plan).
    public var faultsFired: Int { injector?.fired ?? 0 }
    /// Hits that matched the fault plan so far (fired or not): tests aim `nth` past a prefix with it.
    public var faultPlanHits: Int { injector?.hits ?? 0 }
    public var faultPlan: FaultPlan? { injector?.plan }

    public var reclaimPasses: Int { events.load(EventCounter.reclaimPasses.rawValue) }
    public var reclaimedBytes: Int { events.load(EventCounter.reclaimedBytes.rawValue) }
    public var longWaits: Int { events.load(EventCounter.longWaits.rawValue) }
    public var stalls: Int { events.load(EventCounter.stalls.rawValue) }
    public var reserveWaits: Int { events.load(EventCounter.reserveWaits.rawValue) }
}

public struct ShrinkerToken: Sendable, Hashable {
    let value: Int
}

/// One site's counters in one budget.
public struct SiteStatistics: Sendable {
    public let site: AllocationSite
    public let hits: Int
    /// Hits that returned nothing, plus `noFail` hits a fault plan sent down the slow path.
    public let failed: Int
    public let retries: Int
    public let waits: Int
    /// Hits failed by the fault plan.
    public let injected: Int

    /// `site NAME policy=P category=C hits=N failed=N retries=N waits=N`
    public var line: String {
        "site \(site.name) policy=\(site.policy) category=\(site.category) hits=\(hits) failed=\(failed) retries=\(retries) waits=\(waits)"
    }
}
