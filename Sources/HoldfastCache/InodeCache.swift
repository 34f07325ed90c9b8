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
public final class InodeCache: @unchecked Sendable {
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

    public let budget: MemoryBudget
    /// Budget charged per entry: the decoded inode, its copy of the slot, and the index entry.
    public let entryBytes: Int
    let pages: PageCache?
    let extents: ExtentStatusCache
    let lock = Monitor()
    var entries: [UInt32: Entry] = [:]
    /// Inodes holding a block preallocation (the allocator says so under the write lock).
    var preallocated: Set<UInt32> = []
    var clock: UInt64 = 0
    var counters = InodeCacheStatistics()
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
        if !entries.isEmpty { budget.uncharge(entries.count * entryBytes, for: .inodeCacheEntry) }
    }

    // MARK: Lookups

    /// The cached inode `number`, or nil (then read it between `beginLoad` and `finishLoad`).
    public func lookup(_ number: UInt32) -> Inode? {
        lock.withLock {
            guard let entry = entries[number], let inode = entry.inode else { counters.misses += 1; return nil }
            clock += 1
            entry.lastUse = clock
            counters.hits += 1
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
        if token == nil { lock.withLock { counters.uncached += 1 } }
        return token
    }

    /// What the table held: kept unless the slot changed since `beginLoad`. Ends the load.
    public func finishLoad(_ number: UInt32, _ token: LoadToken, _ inode: Inode) {
        lock.withLock {
            guard let entry = entries[number] else { return }
            entry.loaders -= 1
            if entry.version == token.version {
                entry.inode = inode
                clock += 1
                entry.lastUse = clock
            }
            forgetIfUnused(number, entry)
        }
    }

    /// The load failed (a read error, corruption): nothing is kept.
    public func abandonLoad(_ number: UInt32, _ token: LoadToken) {
        lock.withLock {
            guard let entry = entries[number] else { return }
            entry.loaders -= 1
            forgetIfUnused(number, entry)
        }
    }

    /// The slot of `number` changed (or a change to it was rolled back): the cached copy goes.
    public func invalidate(_ number: UInt32) {
        lock.withLock {
            guard let entry = entries[number] else { return }
            entry.version += 1
            if entry.inode != nil { counters.invalidations += 1 }
            entry.inode = nil
            forgetIfUnused(number, entry)
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
        lock.withLock {
            guard let entry = entries[number], entry.opens > 0 else { return 0 }
            entry.opens -= 1
            forgetIfUnused(number, entry)
            return entry.opens
        }
    }

    public func isOpen(_ number: UInt32) -> Bool { lock.withLock { (entries[number]?.opens ?? 0) > 0 } }

    /// Every description counts as closed (the filesystem closes).
    public func closeAll() {
        lock.withLock {
            for (number, entry) in entries where entry.opens > 0 {
                entry.opens = 0
                forgetIfUnused(number, entry)
            }
        }
    }

    /// The allocator gave `number` a preallocation window, or took it back: reclaim keeps the
    /// inode while it has one.
    public func setPreallocated(_ number: UInt32, _ holds: Bool) {
        lock.withLock {
            if holds { preallocated.insert(number) } else { preallocated.remove(number) }
        }
    }

    // MARK: Entries

    /// Runs `use` under the lock on the entry of `number`, made (and charged, before the lock) if
    /// there is none; nil without memory for it.
    private func claim<R>(_ number: UInt32, _ use: (Entry) -> R) -> R? {
        if let done = lock.withLock({ entries[number].map(use) }) { return done }
        guard budget.charge(entryBytes, at: .inodeCacheEntry) else { return nil }
        let (done, raced) = lock.withLock { () -> (R, Bool) in
            if let existing = entries[number] { return (use(existing), true) }
            let entry = Entry()
            entries[number] = entry
            return (use(entry), false)
        }
        // Another thread made the entry meanwhile: its charge stands, this one goes back.
        if raced { budget.uncharge(entryBytes, for: .inodeCacheEntry) }
        return done
    }

    /// Under the lock: an entry with no inode and nobody using it goes.
    func forgetIfUnused(_ number: UInt32, _ entry: Entry) {
        guard entry.inode == nil, entry.loaders == 0, entry.opens == 0, entries[number] === entry else { return }
        entries[number] = nil
        budget.uncharge(entryBytes, for: .inodeCacheEntry)
    }

    // MARK: Reclaim

    /// Under the lock: may reclaim look at this entry at all?
    private func isCandidate(_ number: UInt32, _ entry: Entry) -> Bool {
        entry.opens == 0 && entry.loaders == 0 && !preallocated.contains(number)
    }

    var reclaimableBytes: Int {
        lock.withLock { entries.reduce(0) { $0 + (isCandidate($1.key, $1.value) ? 1 : 0) } } * entryBytes
    }

    /// Frees unused inodes, least recently used first, with their clean pages and extent-status
    /// entries; skips those the page cache still needs. (The shrinker's scan; public for tests.)
    public func reclaim(bytes: Int) -> Int {
        let victims = lock.withLock {
            entries.filter { isCandidate($0.key, $0.value) }.sorted { $0.value.lastUse < $1.value.lastUse }
        }
        var freed = 0
        for (number, entry) in victims where freed < bytes {
            // Asked with no lock of ours held: the page cache takes its own.
            if pages?.isBusy(number) == true {
                lock.withLock { counters.skippedBusy += 1 }
                continue
            }
            let taken = lock.withLock { () -> Bool in
                guard entries[number] === entry, isCandidate(number, entry) else { return false }
                entry.version += 1
                entries[number] = nil
                counters.reclaimed += 1
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
        lock.withLock {
            for (number, entry) in entries {
                entry.version += 1
                entry.inode = nil
                forgetIfUnused(number, entry)
            }
        }
    }

    /// Does inode `number` hold a preallocation, as the allocator last said (tests)?
    public func isPreallocated(_ number: UInt32) -> Bool { lock.withLock { preallocated.contains(number) } }

    /// Is inode `number` cached (tests)?
    public func isCached(_ number: UInt32) -> Bool { lock.withLock { entries[number]?.inode != nil } }

    public var statistics: InodeCacheStatistics {
        lock.withLock {
            var s = counters
            s.entries = entries.count
            s.open = entries.values.reduce(0) { $0 + ($1.opens > 0 ? 1 : 0) }
            return s
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
