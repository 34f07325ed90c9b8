import HoldfastMemory
import Synchronization

extension AllocationSite {
    static let lruEntry = AllocationSite("lru.entry", .mayFail, .test, "an LRU index entry")
    static let lruPage = AllocationSite("lru.page", .mayFail, .page, "the page holding an LRU value")
    static let lruHistoryLocked = AllocationSite("lru.history-locked", .noWait, .test, "a history record, under the LRU lock")
    static let lruHistory = AllocationSite("lru.history", .mayFail, .test, "a history record, after dropping the lock")
    static let lruWritebackPool = AllocationSite("lru.writeback-pool", .noFail, .writeback, "a bounce page for LRU writeback")
    static let lruCommit = AllocationSite("lru.commit", .noFail, .journal, "a commit record for LRU writeback")

    static let lruSites: [AllocationSite] = [.lruEntry, .lruPage, .lruHistoryLocked, .lruHistory, .lruWritebackPool, .lruCommit]
}

/// A small write-back cache on the memory layer, for the torture driver: values live in arena
/// pages, dirty values are written to a backing store by `flush`, clean ones are reclaimable.
/// It follows the rules: allocations outside the lock, `noWait` under it with a drop-allocate-
/// retake-revalidate fallback, writeback from a reserve and `noFail` sites only.
final class PageLRU: @unchecked Sendable {
    enum PlantedBug { case none, leakOnPageFailure, corruptOnPageFailure }

    static let entryBytes = 64
    static let historyBytes = 16

    let budget: MemoryBudget
    let bug: PlantedBug
    private let pool: MemoryPool<Page>
    private var token: ShrinkerToken?

    private struct Entry {
        var page: Page
        var length: Int
        var dirty: Bool
        var stamp: Int
    }
    private struct State {
        var entries: [Int: Entry] = [:]
        var clock = 0
        var history = 0       // records charged
        var store: [Int: [UInt8]] = [:]  // the "disk"
    }
    private let state = Locked(State())

    init(budget: MemoryBudget, bug: PlantedBug = .none) throws(OutOfMemoryError) {
        self.budget = budget
        self.bug = bug
        pool = try MemoryPool<Page>.pages(name: "lru writeback", site: .lruWritebackPool, minimum: 1, budget: budget)
        token = budget.register(Shrinker(name: "lru", count: { [unowned self] in self.cleanBytes },
                                         scan: { [unowned self] r in self.dropClean(r.bytes) }))
    }

    /// Stores `value` under `key`; on failure the previous value stays as it was.
    func put(_ key: Int, _ value: [UInt8]) throws(OutOfMemoryError) {
        precondition(value.count <= budget.pageSize)
        let existing = state.withLock { $0.entries[key] }
        if bug == .corruptOnPageFailure, let e = existing {
            budget.bytes(e.page).initializeMemory(as: UInt8.self, repeating: 0)  // planted: cleared too early
        }
        if existing == nil { try budget.chargeOrThrow(Self.entryBytes, at: .lruEntry) }
        let page: Page
        do {
            page = try budget.allocatePageOrThrow(at: .lruPage)
        } catch {
            if existing == nil && bug != .leakOnPageFailure { budget.uncharge(Self.entryBytes, for: .lruEntry) }
            throw error
        }
        let bytes = budget.bytes(page)
        value.withUnsafeBytes { bytes.copyMemory(from: $0) }

        let old = state.withLock { s -> Page? in
            s.clock += 1
            let previous = s.entries[key]?.page
            s.entries[key] = Entry(page: page, length: value.count, dirty: true, stamp: s.clock)
            return previous
        }
        if let old { budget.freePage(old, for: .lruPage) }
        recordHistory()
    }

    /// A history record, allocated the way code under a lock must: noWait under the lock, and if
    /// that fails, drop the lock, allocate with a policy that may reclaim, retake and revalidate.
    private func recordHistory() {
        let done = state.withLock { s -> Bool in
            guard budget.charge(Self.historyBytes, at: .lruHistoryLocked) else { return false }
            s.history += 1
            return true
        }
        if done { return }
        guard budget.charge(Self.historyBytes, at: .lruHistory) else { return }  // history is best effort
        state.withLock { $0.history += 1 }
    }

    func get(_ key: Int) -> [UInt8]? {
        state.withLock { s -> [UInt8]? in
            if let e = s.entries[key] {
                s.clock += 1
                s.entries[key]!.stamp = s.clock
                return Array(UnsafeRawBufferPointer(rebasing: budget.bytes(e.page)[0..<e.length]))
            }
            return s.store[key]
        }
    }

    /// Writes every dirty value to the store through a reserve bounce page; cannot fail.
    func flush() {
        let dirty = state.withLock { s in s.entries.filter { $0.value.dirty }.map(\.key).sorted() }
        guard !dirty.isEmpty else { return }
        budget.mustCharge(32, at: .lruCommit)
        for key in dirty {
            let bounce = pool.allocate()!
            state.withLock { s in
                guard let e = s.entries[key], e.dirty else { return }
                let b = budget.bytes(bounce)
                b.copyMemory(from: UnsafeRawBufferPointer(budget.bytes(e.page)))
                s.store[key] = Array(UnsafeRawBufferPointer(rebasing: b[0..<e.length]))
                s.entries[key]!.dirty = false
            }
            pool.free(bounce)
        }
        budget.uncharge(32, for: .lruCommit)
    }

    private var cleanBytes: Int {
        state.withLock { s in s.entries.values.filter { !$0.dirty }.count * (budget.pageSize + Self.entryBytes) }
    }

    /// The shrinker: drops least recently used clean entries (their data is in the store).
    private func dropClean(_ bytes: Int) -> Int {
        let victims = state.withLock { s -> [Page] in
            var freed = 0
            var out: [Page] = []
            for (key, e) in s.entries.filter({ !$0.value.dirty }).sorted(by: { $0.value.stamp < $1.value.stamp }) {
                if freed >= bytes { break }
                s.entries[key] = nil
                out.append(e.page)
                freed += budget.pageSize + Self.entryBytes
            }
            return out
        }
        for p in victims {
            budget.freePage(p, for: .lruPage)
            budget.uncharge(Self.entryBytes, for: .lruEntry)
        }
        return victims.count * (budget.pageSize + Self.entryBytes)
    }

    /// Flushes, then gives every byte back.
    func close() {
        flush()
        if let token { budget.unregister(token) }
        token = nil
        let (pages, history) = state.withLock { s -> ([Page], Int) in
            defer { s.entries = [:]; s.history = 0 }
            return (s.entries.values.map(\.page), s.history)
        }
        for p in pages {
            budget.freePage(p, for: .lruPage)
            budget.uncharge(Self.entryBytes, for: .lruEntry)
        }
        budget.uncharge(history * Self.historyBytes, for: .lruHistory)
    }
}
