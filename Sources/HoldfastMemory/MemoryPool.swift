import Synchronization

/// A reserve with mempool semantics (DESIGN.md, rule 3): `minimum` elements are filled at
/// creation; an allocation tries the budget first (one lock-free attempt), then the reserve.
/// When the pool's site is `noFail` the caller waits for an element to come back and never
/// fails; otherwise an empty reserve returns nil. Freed elements refill the reserve first.
///
/// A fault plan that hits the pool's site sends the allocation onto the reserve path.
/// Callers must never hold two elements of one pool while waiting for a third.
public final class MemoryPool<Element: Sendable>: Sendable {
    public let name: String
    public let site: AllocationSite
    public let minimum: Int
    public let elementBytes: Int
    private let budget: MemoryBudget
    private let make: @Sendable () -> Element
    private let destroy: @Sendable (Element) -> Void
    private let reserve: Locked<[Element]>
    private let fromReserveCount = Atomic<Int>(0)
    private let waitCount = Atomic<Int>(0)

    /// Creates the pool and fills its reserve, charging `minimum * elementBytes` to the budget
    /// (reclaiming if needed); throws if the budget cannot hold the reserve.
    public init(name: String, site: AllocationSite, minimum: Int, elementBytes: Int, budget: MemoryBudget,
                make: @escaping @Sendable () -> Element, destroy: @escaping @Sendable (Element) -> Void = { _ in }) throws(OutOfMemoryError) {
        precondition(minimum >= 1 && elementBytes >= 0)
        self.name = name
        self.site = site
        self.minimum = minimum
        self.elementBytes = elementBytes
        self.budget = budget
        self.make = make
        self.destroy = destroy
        let total = minimum * elementBytes
        if !budget.chargeNow(total, site.category) {
            budget.reclaim(total)
            guard budget.chargeNow(total, site.category) else {
                throw OutOfMemoryError(site: site, bytes: total, limit: budget.limit)
            }
        }
        var elements: [Element] = []
        elements.reserveCapacity(minimum)
        for _ in 0..<minimum { elements.append(make()) }
        reserve = Locked(elements)
    }

    deinit {
        let left = reserve.withLock { r -> [Element] in
            defer { r.removeAll() }
            return r
        }
        for e in left { destroy(e) }
        budget.uncharge(left.count * elementBytes, for: site)
    }

    /// An element: from the budget if it has room (one attempt, no reclaim), else from the reserve.
    /// With the reserve empty, reclaim gets its chance; then a `noFail` pool waits for an element
    /// or for memory to come back, and never fails. Others return nil.
    public func allocate() -> Element? {
        let injected = budget.hit(site)  // an injected hit takes the reserve path and stays on it
        if !injected && budget.chargeNow(elementBytes, site.category) { return make() }
        var warned = false
        var timedOut = false
        while true {
            if let e = takeFromReserve() { return e }
            if !injected {
                budget.reclaim(elementBytes)
                if budget.chargeNow(elementBytes, site.category) { return make() }
            }
            guard site.policy == .noFail else {
                budget.count(site, .failed)
                return nil
            }
            // Waiters sleep on the budget's queue: any free (of an element or of budget) wakes them.
            let ticket = budget.waitQueue.enter(site)
            if let e = takeFromReserve() {
                budget.waitQueue.cancel(ticket)
                return e
            }
            if !injected && budget.chargeNow(elementBytes, site.category) {
                budget.waitQueue.cancel(ticket)
                return make()
            }
            if !warned {
                warned = true
                budget.countEvent(.reserveWaits)
                budget.report(.reserveExhausted(pool: name, minimum: minimum), key: "reserve:\(name)")
            }
            if timedOut { budget.detectStall() }
            waitCount.add(1, ordering: .relaxed)
            budget.count(site, .waits)
            timedOut = !budget.waitQueue.sleep(ticket, timeoutNanoseconds: budget.configuration.tickNanoseconds)
            budget.count(site, .retries)
        }
    }

    private func takeFromReserve() -> Element? {
        guard let e = reserve.withLock({ $0.popLast() }) else { return nil }
        fromReserveCount.add(1, ordering: .relaxed)
        return e
    }

    /// Returns an element: to the reserve while it is below its minimum, else to the budget.
    public func free(_ element: Element) {
        let kept = reserve.withLock { r -> Bool in
            guard r.count < minimum else { return false }
            r.append(element)
            return true
        }
        if !kept {
            destroy(element)
            budget.uncharge(elementBytes, for: site)  // wakes the waiters
        } else if budget.waitQueue.hasWaiters {
            budget.waitQueue.wakeAll()
        }
    }

    /// Elements now in the reserve.
    public var available: Int { reserve.withLock { $0.count } }
    /// Allocations the reserve served because the budget could not.
    public var servedFromReserve: Int { fromReserveCount.load(ordering: .relaxed) }
    /// Times a caller slept waiting for an element.
    public var waits: Int { waitCount.load(ordering: .relaxed) }
}

extension MemoryPool where Element == Page {
    /// A reserve of arena pages (writeback and journal commit buffers).
    public static func pages(name: String, site: AllocationSite, minimum: Int, budget: MemoryBudget) throws(OutOfMemoryError) -> MemoryPool<Page> {
        let arena = budget.arena
        return try MemoryPool(name: name, site: site, minimum: minimum, elementBytes: arena.pageSize, budget: budget,
                              make: {
                                  guard let page = arena.take() else { fatalError("page arena exhausted with the budget charged") }
                                  return page
                              },
                              destroy: { arena.give($0) })
    }
}
