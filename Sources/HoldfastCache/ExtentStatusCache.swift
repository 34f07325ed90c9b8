import HoldfastMemory

extension AllocationSite {
    public static let extentStatusEntry = AllocationSite("extent-status.entry", .mayFail, .extentStatus,
        "extent-status entries, taken before the cache's lock; without them the mapping is just not cached")
    public static let extentStatusLocked = AllocationSite("extent-status.locked", .noWait, .extentStatus,
        "an entry a change finds it needs under the cache's lock after all: never a wait there")
    public static let extentStatusSites: [AllocationSite] = [.extentStatusEntry, .extentStatusLocked]
}

/// What is known of a file's logical blocks (ext4's extent-status tree): written, unwritten and
/// delayed extents and holes, per inode, so reads map blocks without walking the extent tree.
///
/// Memory (DESIGN.md rule 2, the `noWait` pattern): entries are charged to the budget before the
/// lock is taken (`Credits`). A change that finds under the lock that it needs more (a delayed
/// range splitting a hole) tries a `noWait` charge; failing that it lets the lock go, charges
/// with `mayFail`, takes the lock again and checks that the inode's entries are still the ones it
/// looked at (starting over if not). It never waits under the lock. Without memory at all the
/// inode's entries go: this is a cache, the extent tree and the page cache stay the truth.
///
/// The filesystem drops an inode's entries whenever its extent tree changes (`invalidate`). Reads
/// walk the tree between `beginWalk` and `insertWalk`: an invalidation in between makes the insert
/// a no-op, so no entry outlives the tree it came from. The shrinker frees the entries of clean
/// inodes only: never of one with delayed extents (the record of data waiting for blocks), nor
/// of one a read is walking.
public final class ExtentStatusCache: Sendable {
    public enum Status: UInt8, Sendable { case written, unwritten, delayed, hole }

    public struct Extent: Sendable, Equatable {
        public var logical: UInt64
        public var length: UInt64
        /// The first device block (written and unwritten extents; 0 otherwise).
        public var physical: UInt64
        public var status: Status
        public var end: UInt64 { logical + length }

        public init(logical: UInt64, length: UInt64, physical: UInt64 = 0, status: Status) {
            self.logical = logical
            self.length = length
            self.physical = physical
            self.status = status
        }
    }

    /// Budget charged per entry: the entry and its share of the array and the index.
    public static let entryBytes = 64

    /// Entries charged before the lock, spent by a change and the rest given back by `release`.
    public struct Credits {
        var entries: Int
    }

    final class InodeEntries {
        /// Sorted by `logical`, never overlapping; blocks between entries are unknown.
        var extents: [Extent] = []
        /// Bumped by every invalidation: a walk begun before it inserts nothing.
        var version: UInt64 = 0
        var walkers = 0
        var delayed = 0
        var lastUse: UInt64 = 0
    }

    /// What the cache's lock guards. Its helpers take it `inout`: they run with the lock held.
    struct State {
        var inodes: [UInt32: InodeEntries] = [:]
        /// Entries held, all charged at `.extentStatusEntry`.
        var entries = 0
        var clock: UInt64 = 0
        var counters = ExtentStatusStatistics()

        mutating func touch(_ file: InodeEntries) {
            clock += 1
            file.lastUse = clock
        }

        /// An inode with no entries and no walk goes from the index.
        mutating func forgetIfEmpty(_ inode: UInt32, _ file: InodeEntries) {
            if file.extents.isEmpty && file.walkers == 0 && inodes[inode] === file { inodes[inode] = nil }
        }

        /// The entries of a clean inode go; returns how many (their charge is the caller's to give back).
        mutating func free(_ inode: UInt32, _ file: InodeEntries) -> Int {
            let n = file.extents.count
            file.version += 1
            entries -= n
            inodes[inode] = nil
            counters.reclaimedEntries += n
            return n
        }
    }

    public let budget: MemoryBudget
    private let state = Monitor(State())
    private let shrinkerToken = Locked<ShrinkerToken?>(nil)

    public init(budget: MemoryBudget) {
        self.budget = budget
        let token = budget.register(Shrinker(
            name: "extent status", cost: 2,
            count: { [weak self] in self?.reclaimableBytes ?? 0 },
            scan: { [weak self] request in self?.reclaim(bytes: request.bytes) ?? 0 }))
        shrinkerToken.withLock { $0 = token }
    }

    deinit {
        if let token = shrinkerToken.withLock({ $0 }) { budget.unregister(token) }
        let entries = state.withLock { $0.entries }
        if entries > 0 { budget.uncharge(entries * Self.entryBytes, for: .extentStatusEntry) }
    }

    // MARK: Credits

    /// Charges up to `count` entries (`mayFail`, so before any lock): as many as memory gives.
    public func reserve(_ count: Int) -> Credits {
        var got = 0
        while got < count, budget.charge(Self.entryBytes, at: .extentStatusEntry) { got += 1 }
        return Credits(entries: got)
    }

    /// Gives back what a change did not spend.
    public func release(_ credits: Credits) {
        if credits.entries > 0 { budget.uncharge(credits.entries * Self.entryBytes, for: .extentStatusEntry) }
    }

    // MARK: Lookups

    /// The extents covering logical blocks [from, to) in order, or nil when part is unknown.
    public func lookup(_ inode: UInt32, from: UInt64, to: UInt64) -> [Extent]? {
        state.withLock { s in
            guard let file = s.inodes[inode] else { s.counters.misses += 1; return nil }
            var out: [Extent] = []
            var at = from
            var i = Self.firstEnding(after: from, in: file.extents)
            while at < to {
                guard i < file.extents.count, file.extents[i].logical <= at else { s.counters.misses += 1; return nil }
                out.append(file.extents[i])
                at = file.extents[i].end
                i += 1
            }
            s.touch(file)
            s.counters.hits += 1
            return out
        }
    }

    /// The index of the first extent that ends after `block`.
    static func firstEnding(after block: UInt64, in extents: [Extent]) -> Int {
        var lo = 0, hi = extents.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if extents[mid].end <= block { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    // MARK: Walks

    /// A read is about to walk the extent tree of `inode`; the token goes to `insertWalk` or `endWalk`.
    public func beginWalk(_ inode: UInt32) -> UInt64 {
        state.withLock { s in
            let file = s.inodes[inode] ?? InodeEntries()
            s.inodes[inode] = file
            file.walkers += 1
            return file.version
        }
    }

    /// What the walk found: `found` covers a stretch of blocks completely (holes included). Fills
    /// in what is not known yet; known entries stay (they are as new as the tree). Does nothing
    /// if the tree changed since `beginWalk`. Ends the walk.
    public func insertWalk(_ inode: UInt32, token: UInt64, _ found: [Extent]) {
        guard !found.isEmpty else { return endWalk(inode) }
        var credits = reserve(found.count + 1)
        defer { release(credits) }
        change(inode, credits: &credits, expected: token) { extents in
            Self.fillGaps(extents, with: found)
        }
        endWalk(inode)
    }

    /// The walk ended without an insert.
    public func endWalk(_ inode: UInt32) {
        state.withLock { s in
            guard let file = s.inodes[inode] else { return }
            file.walkers -= 1
            s.forgetIfEmpty(inode, file)
        }
    }

    /// `extents` with the blocks they leave unknown filled from `found` (both sorted).
    static func fillGaps(_ extents: [Extent], with found: [Extent]) -> [Extent] {
        var out: [Extent] = []
        out.reserveCapacity(extents.count + found.count)
        var i = 0  // the next known entry not yet in `out`
        for piece in found {
            var at = piece.logical
            while at < piece.end {
                while i < extents.count, extents[i].end <= at { out.append(extents[i]); i += 1 }
                if i < extents.count, extents[i].logical <= at {
                    // Known already: step over it.
                    at = min(piece.end, extents[i].end)
                    if extents[i].end <= at { out.append(extents[i]); i += 1 }
                    continue
                }
                let stop = i < extents.count ? min(piece.end, extents[i].logical) : piece.end
                var part = piece.advanced(by: at - piece.logical)
                part.length = stop - at
                out.append(part)
                at = stop
            }
        }
        out.append(contentsOf: extents[i...])
        return out
    }

    // MARK: Delayed extents

    /// Blocks [first, first+count) hold data waiting for blocks (delayed allocation): holes and
    /// unknown blocks there become one delayed extent, merged with delayed neighbours.
    public func markDelayed(_ inode: UInt32, first: UInt64, count: UInt64) {
        guard count > 0 else { return }
        // The common case, a hole split in three, needs two more entries.
        var credits = reserve(2)
        defer { release(credits) }
        let ok = change(inode, credits: &credits, expected: nil) { extents in
            Self.overlay(extents, Extent(logical: first, length: count, status: .delayed))
        }
        if !ok { invalidate(inode) }
    }

    /// `extents` with `new` laid over them (what it covers is replaced), merged with equal neighbours.
    static func overlay(_ extents: [Extent], _ new: Extent) -> [Extent] {
        var out: [Extent] = []
        out.reserveCapacity(extents.count + 2)
        for e in extents {
            if e.end <= new.logical || e.logical >= new.end { out.append(e); continue }
            if e.logical < new.logical { out.append(Extent(logical: e.logical, length: new.logical - e.logical, physical: e.physical, status: e.status)) }
            if e.end > new.end { out.append(e.advanced(by: new.end - e.logical)) }
        }
        let at = out.firstIndex { $0.logical >= new.end } ?? out.count
        out.insert(new, at: at)
        // Merge the new extent with neighbours of its status that touch it.
        var k = at
        if k > 0, out[k - 1].status == new.status, out[k - 1].end == new.logical, new.status == .delayed || new.status == .hole {
            out[k - 1].length += out[k].length
            out.remove(at: k)
            k -= 1
        }
        if k + 1 < out.count, out[k + 1].status == out[k].status, out[k].end == out[k + 1].logical, new.status == .delayed || new.status == .hole {
            out[k].length += out[k + 1].length
            out.remove(at: k + 1)
        }
        return out
    }

    // MARK: Changes

    /// Replaces the entries of `inode` by `transform` of them, spending credits for what it adds.
    /// Short of credits under the lock: a `noWait` charge, else the lock goes for a `mayFail`
    /// charge and the change starts over if the entries changed meanwhile. `expected`: the walk
    /// token the entries must still have. False when memory ran out (nothing changed).
    @discardableResult
    func change(_ inode: UInt32, credits: inout Credits, expected: UInt64?, _ transform: ([Extent]) -> [Extent]) -> Bool {
        for _ in 0..<8 {
            // Each pass looks at the entries as they are now: after a relock that is the revalidation.
            let short: Int = state.withLock { s in
                let found = s.inodes[inode]
                if let expected {
                    // A walk's result only for the tree it walked.
                    guard let found, found.version == expected else { return 0 }
                }
                let file = found ?? InodeEntries()
                let updated = transform(file.extents)
                let needed = updated.count - file.extents.count
                // Under the lock: only what comes without reclaim or waiting.
                while needed > credits.entries, budget.charge(Self.entryBytes, at: .extentStatusLocked) {
                    credits.entries += 1
                }
                if needed > credits.entries {
                    s.counters.relocks += 1
                    return needed - credits.entries
                }
                credits.entries -= needed
                s.entries += needed
                s.inodes[inode] = file
                file.extents = updated
                file.delayed = updated.reduce(0) { $0 + ($1.status == .delayed ? 1 : 0) }
                s.touch(file)
                s.forgetIfEmpty(inode, file)
                return 0
            }
            if short == 0 { return true }
            // The lock is let go for a charge that may reclaim; then the entries are looked at again.
            guard budget.charge(short * Self.entryBytes, at: .extentStatusEntry) else { break }
            credits.entries += short
        }
        state.withLock { $0.counters.dropped += 1 }
        return false
    }

    /// The extent tree of `inode` changed: what was known of it goes (delayed extents too: the
    /// page cache knows them).
    public func invalidate(_ inode: UInt32) {
        state.withLock { s in
            guard let file = s.inodes[inode] else { return }
            file.version += 1
            let n = file.extents.count
            file.extents.removeAll()
            file.delayed = 0
            s.entries -= n
            if n > 0 { budget.uncharge(n * Self.entryBytes, for: .extentStatusEntry) }
            s.forgetIfEmpty(inode, file)
        }
    }

    // MARK: Reclaim

    var reclaimableBytes: Int {
        state.withLock { s in s.inodes.values.reduce(0) { $0 + ($1.delayed == 0 && $1.walkers == 0 ? $1.extents.count : 0) } * Self.entryBytes }
    }

    /// Frees the entries of clean inodes, least recently used first.
    func reclaim(bytes: Int) -> Int {
        state.withLock { s in
            let victims = s.inodes.filter { $0.value.delayed == 0 && $0.value.walkers == 0 }.sorted { $0.value.lastUse < $1.value.lastUse }
            var freed = 0
            for (inode, file) in victims where freed < bytes { freed += freeCharged(&s, inode, file) }
            return freed
        }
    }

    /// With the lock held: the entries of a clean inode go, their charge with them; returns the bytes freed.
    private func freeCharged(_ s: inout State, _ inode: UInt32, _ file: InodeEntries) -> Int {
        let n = s.free(inode, file)
        if n > 0 { budget.uncharge(n * Self.entryBytes, for: .extentStatusEntry) }
        return n * Self.entryBytes
    }

    /// Frees the entries of `inode` (its inode was reclaimed) unless it has delayed extents or a
    /// walk in progress; returns the bytes freed.
    func reclaim(inode: UInt32) -> Int {
        state.withLock { s in
            guard let file = s.inodes[inode], file.delayed == 0, file.walkers == 0 else { return 0 }
            return freeCharged(&s, inode, file)
        }
    }

    /// Every entry goes (close).
    public func dropAll() {
        state.withLock { s in
            if s.entries > 0 { budget.uncharge(s.entries * Self.entryBytes, for: .extentStatusEntry) }
            s.entries = 0
            for file in s.inodes.values { file.version += 1 }
            s.inodes = s.inodes.filter { $0.value.walkers > 0 }
            for file in s.inodes.values { file.extents.removeAll(); file.delayed = 0 }
        }
    }

    /// The entries known for `inode` (tests and `stat`).
    public func extents(_ inode: UInt32) -> [Extent] { state.withLock { $0.inodes[inode]?.extents ?? [] } }

    public var statistics: ExtentStatusStatistics {
        state.withLock { s in
            var c = s.counters
            c.entries = s.entries
            c.inodes = s.inodes.count
            return c
        }
    }
}

extension ExtentStatusCache.Extent {
    /// The part from `n` blocks in.
    func advanced(by n: UInt64) -> Self {
        Self(logical: logical + n, length: length - n,
             physical: status == .written || status == .unwritten ? physical + n : 0, status: status)
    }
}

/// What `--stats` shows of the extent-status cache.
public struct ExtentStatusStatistics: Sendable {
    public var entries = 0
    public var inodes = 0
    public var hits = 0
    public var misses = 0
    /// Changes that let the lock go to allocate (the `noWait` top-up was not enough).
    public var relocks = 0
    /// Changes given up for want of memory (the inode's entries dropped instead).
    public var dropped = 0
    public var reclaimedEntries = 0

    public var line: String {
        "extent-status entries=\(entries) inodes=\(inodes) hits=\(hits) misses=\(misses) relocks=\(relocks) dropped=\(dropped) reclaimed=\(reclaimedEntries)"
    }
}
