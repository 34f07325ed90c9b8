import HoldfastFormat
import HoldfastMemory

extension AllocationSite {
    public static let inodeCacheEntry = AllocationSite("inode-cache.entry", .mayFail, .inode,
        "an in-memory inode, charged before the cache's lock; a lookup without it reads the table, an open fails")
    public static let inodeCacheSites: [AllocationSite] = [.inodeCacheEntry]
}

/// The in-memory inodes (the kernel's inode cache): decoded inodes as their tables hold them,
/// and the open file descriptions that keep one in memory.
///
/// Memory: each entry is charged to the budget before the lock is taken. A lookup that cannot
/// have one reads the table again next time; an open that cannot have one fails (ENOMEM).
///
/// Coherence: the write path calls `invalidate` after every change to an inode's slot (and
/// again when the operation ends, for a rollback). A lookup that misses reads the table between
/// `beginLoad` and `finishLoad`; an invalidation in between makes the insert a no-op, so no entry
/// is older than the slot it came from.
///
/// Reclaim (DESIGN.md rule 4) frees the least recently used inodes, and with each its clean pages
/// and extent-status entries (as the kernel's inode shrinker does). It never frees an inode that
/// is open, that holds a block preallocation, or whose pages are dirty, under writeback, waiting
/// for blocks or being read. Pages are indexed by inode number, so even a reclaim racing a
/// write could drop only clean pages: dirty data never depends on this cache.
public final class InodeCache: Sendable {
    final class Entry {
        var inode: Inode?
        /// Bumped by every invalidation: a load begun before it inserts nothing.
        var version: UInt64 = 0
        var loaders = 0
        /// Open file descriptions.
        var opens = 0
        var lastUse: UInt64 = 0
    }

    /// A lookup's claim on an entry while it reads the table.
    public struct LoadToken: Sendable {
        let version: UInt64
    }

    /// What the cache's lock guards. Its helpers take it `inout`: they run with the lock held.
    struct State {
        var entries: [UInt32: Entry] = [:]
        /// Inodes holding a block preallocation (the allocator says so under the write lock).
        var preallocated: Set<UInt32> = []
        var clock: UInt64 = 0
        var counters = InodeCacheStatistics()

        /// Marks `entry` used now.
        mutating func touch(_ entry: Entry) {
            clock += 1
            entry.lastUse = clock
        }

        /// An entry with no inode and nobody using it goes; true if it went (its charge is then
        /// the caller's to give back).
        mutating func forgetIfUnused(_ number: UInt32, _ entry: Entry) -> Bool {
            guard entry.inode == nil, entry.loaders == 0, entry.opens == 0, entries[number] === entry else { return false }
            entries[number] = nil
            return true
        }

        /// May reclaim look at this entry at all?
        func isCandidate(_ number: UInt32, _ entry: Entry) -> Bool {
            entry.opens == 0 && entry.loaders == 0 && !preallocated.contains(number)
        }
    }

    public let budget: MemoryBudget
    /// Budget charged per entry: the decoded inode, its copy of the slot, and the index entry.
    public let entryBytes: Int
    let pages: PageCache?
    let extents: ExtentStatusCache
    private let state = Monitor(State())
    private let shrinkerToken = Locked<ShrinkerToken?>(nil)

    public init(budget: MemoryBudget, inodeSize: Int, pages: PageCache?, extents: ExtentStatusCache) {
        self.budget = budget
        self.entryBytes = MemoryLayout<Inode>.stride + inodeSize + 96
        self.pages = pages
        self.extents = extents
        let token = budget.register(Shrinker(
            name: "inode cache", cost: 2,
            count: { [weak self] in self?.reclaimableBytes ?? 0 },
            scan: { [weak self] request in self?.reclaim(bytes: request.bytes) ?? 0 }))
        shrinkerToken.withLock { $0 = token }
    }

    deinit {
        if let token = shrinkerToken.withLock({ $0 }) { budget.unregister(token) }
        let count = state.withLock { $0.entries.count }
        if count > 0 { budget.uncharge(count * entryBytes, for: .inodeCacheEntry) }
    }

    // MARK: Lookups

    /// The cached inode `number`, or nil (then read it between `beginLoad` and `finishLoad`).
    public func lookup(_ number: UInt32) -> Inode? {
        state.withLock { s in
            guard let entry = s.entries[number], let inode = entry.inode else { s.counters.misses += 1; return nil }
            s.touch(entry)
            s.counters.hits += 1
            return inode
        }
    }

    /// A lookup missed and is about to read the table; nil when no entry can be had (the inode is
    /// then just not cached).
    public func beginLoad(_ number: UInt32) -> LoadToken? {
        let token = claim(number) { entry -> LoadToken in
            entry.loaders += 1
            return LoadToken(version: entry.version)
        }
        if token == nil { state.withLock { $0.counters.uncached += 1 } }
        return token
    }

    /// What the table held: kept unless the slot changed since `beginLoad`. Ends the load.
    public func finishLoad(_ number: UInt32, _ token: LoadToken, _ inode: Inode) {
        forgetting { s in
            guard let entry = s.entries[number] else { return 0 }
            entry.loaders -= 1
            if entry.version == token.version {
                entry.inode = inode
                s.touch(entry)
            }
            return s.forgetIfUnused(number, entry) ? 1 : 0
        }
    }

    /// The load failed (a read error, corruption): nothing is kept.
    public func abandonLoad(_ number: UInt32, _ token: LoadToken) {
        forgetting { s in
            guard let entry = s.entries[number] else { return 0 }
            entry.loaders -= 1
            return s.forgetIfUnused(number, entry) ? 1 : 0
        }
    }

    /// The slot of `number` changed (or a change to it was rolled back): the cached copy goes.
    public func invalidate(_ number: UInt32) {
        forgetting { s in
            guard let entry = s.entries[number] else { return 0 }
            entry.version += 1
            if entry.inode != nil { s.counters.invalidations += 1 }
            entry.inode = nil
            return s.forgetIfUnused(number, entry) ? 1 : 0
        }
    }

    // MARK: Open file descriptions

    /// A description opens `number`: its entry stays until the last one closes.
    public func open(_ number: UInt32) throws(OutOfMemoryError) {
        guard claim(number, { $0.opens += 1 }) != nil else {
            throw OutOfMemoryError(site: .inodeCacheEntry, bytes: entryBytes, limit: budget.limit)
        }
    }

    /// A description closes; returns how many stay open.
    @discardableResult
    public func close(_ number: UInt32) -> Int {
        var stillOpen = 0
        forgetting { s in
            guard let entry = s.entries[number], entry.opens > 0 else { return 0 }
            entry.opens -= 1
            stillOpen = entry.opens
            return s.forgetIfUnused(number, entry) ? 1 : 0
        }
        return stillOpen
    }

    public func isOpen(_ number: UInt32) -> Bool { state.withLock { ($0.entries[number]?.opens ?? 0) > 0 } }

    /// Every description counts as closed (the filesystem closes).
    public func closeAll() {
        forgetting { s in
            var gone = 0
            for (number, entry) in s.entries where entry.opens > 0 {
                entry.opens = 0
                if s.forgetIfUnused(number, entry) { gone += 1 }
            }
            return gone
        }
    }

    /// The allocator gave `number` a preallocation window, or took it back: reclaim keeps the
    /// inode while it has one.
    public func setPreallocated(_ number: UInt32, _ holds: Bool) {
        state.withLock { s in
            if holds { s.preallocated.insert(number) } else { s.preallocated.remove(number) }
        }
    }

    // MARK: Entries

    /// Runs `use` under the lock on the entry of `number`, made (and charged, before the lock) if
    /// there is none; nil without memory for it.
    private func claim<R>(_ number: UInt32, _ use: (Entry) -> R) -> R? {
        if let done = state.withLock({ $0.entries[number].map(use) }) { return done }
        guard budget.charge(entryBytes, at: .inodeCacheEntry) else { return nil }
        let (done, raced) = state.withLock { s -> (R, Bool) in
            if let existing = s.entries[number] { return (use(existing), true) }
            let entry = Entry()
            s.entries[number] = entry
            return (use(entry), false)
        }
        // Another thread made the entry meanwhile: its charge stands, this one goes back.
        if raced { budget.uncharge(entryBytes, for: .inodeCacheEntry) }
        return done
    }

    /// Runs `body` under the lock; the entries it reports gone give their charge back.
    private func forgetting(_ body: (inout State) -> Int) {
        let gone = state.withLock(body)
        if gone > 0 { budget.uncharge(gone * entryBytes, for: .inodeCacheEntry) }
    }

    // MARK: Reclaim

    var reclaimableBytes: Int {
        state.withLock { s in s.entries.reduce(0) { $0 + (s.isCandidate($1.key, $1.value) ? 1 : 0) } } * entryBytes
    }

    /// Frees unused inodes, least recently used first, with their clean pages and extent-status
    /// entries; skips those the page cache still needs. (The shrinker's scan; public for tests.)
    public func reclaim(bytes: Int) -> Int {
        let victims = state.withLock { s in
            s.entries.filter { s.isCandidate($0.key, $0.value) }.sorted { $0.value.lastUse < $1.value.lastUse }
        }
        var freed = 0
        for (number, entry) in victims where freed < bytes {
            // Asked with no lock of ours held: the page cache takes its own.
            if pages?.isBusy(number) == true {
                state.withLock { $0.counters.skippedBusy += 1 }
                continue
            }
            let taken = state.withLock { s -> Bool in
                guard s.entries[number] === entry, s.isCandidate(number, entry) else { return false }
                entry.version += 1
                s.entries[number] = nil
                s.counters.reclaimed += 1
                return true
            }
            guard taken else { continue }
            budget.uncharge(entryBytes, for: .inodeCacheEntry)
            freed += entryBytes
            freed += pages?.dropClean(of: number) ?? 0
            freed += extents.reclaim(inode: number)
        }
        return freed
    }

    /// Every unused entry goes (close, and read-only close).
    public func dropAll() {
        forgetting { s in
            for entry in s.entries.values {
                entry.version += 1
                entry.inode = nil
            }
            // One pass that keeps the few entries still in use (forgetIfUnused's test, the inode
            // being gone from all): removing 20,000 one by one from the dictionary being iterated
            // copied it first and cost a close as much as the listing it ended.
            let before = s.entries.count
            s.entries = s.entries.filter { $0.value.loaders > 0 || $0.value.opens > 0 }
            return before - s.entries.count
        }
    }

    /// Does inode `number` hold a preallocation, as the allocator last said (tests)?
    public func isPreallocated(_ number: UInt32) -> Bool { state.withLock { $0.preallocated.contains(number) } }

    /// Is inode `number` cached (tests)?
    public func isCached(_ number: UInt32) -> Bool { state.withLock { $0.entries[number]?.inode != nil } }

    public var statistics: InodeCacheStatistics {
        state.withLock { s in
            var c = s.counters
            c.entries = s.entries.count
            c.open = s.entries.values.reduce(0) { $0 + ($1.opens > 0 ? 1 : 0) }
            return c
        }
    }
}

/// What `--stats` shows of the inode cache.
public struct InodeCacheStatistics: Sendable {
    public var entries = 0
    /// Inodes kept by open file descriptions.
    public var open = 0
    public var hits = 0
    public var misses = 0
    /// Lookups that found no memory for an entry (they read the table each time).
    public var uncached = 0
    public var invalidations = 0
    public var reclaimed = 0
    /// Inodes reclaim passed over for their dirty, in-flight or delayed pages.
    public var skippedBusy = 0

    public var line: String {
        "inode-cache entries=\(entries) open=\(open) hits=\(hits) misses=\(misses) uncached=\(uncached) invalidations=\(invalidations) reclaimed=\(reclaimed) skipped-busy=\(skippedBusy)"
    }
}
