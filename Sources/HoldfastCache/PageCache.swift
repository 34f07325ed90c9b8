#if canImport(Glibc)
import Glibc
#endif
import HoldfastDevice
import HoldfastMemory

extension AllocationSite {
    public static let pageCachePage = AllocationSite("pagecache.page", .mayFail, .page,
        "a page of file data, taken before a write takes the write lock (after the dirty throttle)")
    public static let pageCacheLocked = AllocationSite("pagecache.page-locked", .noWait, .page,
        "a page a write finds it needs under the write lock after all: no reclaim, no waiting there")
    public static let writebackVector = AllocationSite("writeback.vector", .mayFail, .writeback,
        "the page list of one writeback run; without it the flusher backs off, then writes page by page")
    public static let writebackReserve = AllocationSite("writeback.reserve", .mayFail, .writeback,
        "the writeback reserve: one run's page list, kept from the start for when the budget has none")
    public static let pageCacheSites: [AllocationSite] = [.pageCachePage, .pageCacheLocked, .writebackVector, .writebackReserve,
                                                           .pageCacheRead, .readahead]
}

/// What the page cache asks of the filesystem above it, as ext4's address-space operations do:
/// blocks for delayed pages before they are written. The cache holds its mapper weakly.
package protocol DelayedBlockMapper: AnyObject, Sendable {
    /// Gives the delayed pages of `inode` their blocks, taking the filesystem's write lock.
    /// False leaves them delayed and dirty for a later pass (short of memory, a failure the
    /// filesystem recorded as the file's write error, or the filesystem closing).
    func mapDelayedBlocks(of inode: UInt32) -> Bool
}

/// File data by inode and logical block, in arena pages charged at `.pageCachePage`.
///
/// A page is dirty from the write that changed it until a writeback of it completed; only then is
/// it clean, and only clean pages are ever reclaimed (DESIGN.md rule 5). A page in writeback is
/// written from the arena as it is: a writer waits for the write to finish before changing it.
/// A write holds its pages (`held`) while it fills them and until its operation ends; the flusher
/// skips held pages, and an operation that fails takes the pages it added away again.
///
/// Delayed allocation: a write into a hole makes pages without a device block (`physical` nil),
/// with space reserved by the filesystem; `mapDelayed` (the filesystem's, under its write lock)
/// gives them blocks in large runs before they are written: in the flusher, at commit, at fsync.
/// Pages with blocks are written as they are. The transaction's commit writes every dirty page
/// before the metadata that points at it.
public final class PageCache: Sendable {
    public let budget: MemoryBudget
    public let device: any BlockDevice
    public let blockSize: Int
    /// Writers wait for writeback when dirty and writeback pages pass this many.
    public let dirtyLimit: Int
    /// The flusher starts on its own when dirty pages pass this many (or pages grow old).
    public let backgroundLimit: Int
    /// Dirty data older than this is written back even without pressure.
    public let expireNanoseconds: UInt64
    /// How long the flusher leaves a file alone after its write (or mapping) failed.
    static let retryAfterErrorNanoseconds: UInt64 = 200_000_000

    /// The pages and all their bookkeeping: the only way in.
    let state = Monitor(PageCacheState())
    /// One run's page list set aside while the filesystem is writable (rule 3): writeback that
    /// finds the budget full and may not back off still writes a run in one call.
    let writebackPool = Locked<MemoryPool<Int>?>(nil)
    /// Called (from the thread that wrote) for each failed writeback, for the errors policy.
    let onWriteError: @Sendable (DeviceError) -> Void
    private let shrinkerToken = Locked<ShrinkerToken?>(nil)

    public init(device: any BlockDevice, budget: MemoryBudget, expireNanoseconds: UInt64 = 5_000_000_000,
                onWriteError: @escaping @Sendable (DeviceError) -> Void = { _ in }) {
        self.device = device
        self.budget = budget
        self.blockSize = budget.pageSize
        let pages = budget.limit / budget.pageSize
        dirtyLimit = max(16, pages / 2)
        backgroundLimit = max(8, pages / 4)
        self.expireNanoseconds = expireNanoseconds
        self.onWriteError = onWriteError
        let token = budget.register(Shrinker(
            name: "page cache",
            count: { [weak self] in self?.cleanBytes ?? 0 },
            scan: { [weak self] request in self?.dropClean(bytes: request.bytes) ?? 0 }))
        shrinkerToken.withLock { $0 = token }
    }

    deinit {
        if let token = shrinkerToken.withLock({ $0 }) { budget.unregister(token) }
        let pages = state.withLock { s in s.files.values.flatMap { $0.pages.values.map(\.page) } }
        budget.freePages(pages, for: .pageCachePage)
    }

    /// Sets the writeback reserve aside (a writable open); false if the budget cannot hold it.
    @discardableResult
    public func setUpWritebackReserve() -> Bool {
        // The page list is a Swift array; the pool holds its charge, so the budget stays true.
        let pool = try? MemoryPool(name: "writeback", site: .writebackReserve, minimum: 1,
                                   elementBytes: maxRunPages * PageCache.vectorBytesPerPage, budget: budget, make: { 0 })
        writebackPool.withLock { $0 = pool }
        return pool != nil
    }

    /// Gives the reserve back (close, after the last writeback).
    public func releaseWritebackReserve() { writebackPool.withLock { $0 = nil } }

    // MARK: Writing into pages

    /// How many of logical blocks [first, first+count) of `inode` have no page yet, nor one in `ready`.
    public func missing(_ inode: UInt32, first: UInt64, count: UInt64, except ready: [UInt64: Page] = [:]) -> Int {
        state.withLock { s in
            guard let file = s.files[inode], !file.pages.isEmpty else {
                return ready.isEmpty ? Int(count) : (first..<(first + count)).reduce(0) { $0 + (ready[$1] == nil ? 1 : 0) }
            }
            var n = 0
            for i in first..<(first + count) where file.pages[i] == nil && ready[i] == nil { n += 1 }
            return n
        }
    }

    /// The blocks of [first, first+count) of `inode` that have no page now.
    public func absent(_ inode: UInt32, first: UInt64, count: UInt64) -> [UInt64] {
        state.withLock { s in
            guard let file = s.files[inode], !file.pages.isEmpty else { return Array(first..<(first + count)) }
            return (first..<(first + count)).filter { file.pages[$0] == nil }
        }
    }

    /// A page the caller fills: `isNew` pages hold nothing yet. Its bytes are reached through
    /// `withBytes(of:)` while it is held.
    public struct HeldPage {
        public let index: UInt64
        public let isNew: Bool
        let page: Page
        /// A new page the writer filled before it was held (`hold`'s `ready`): it holds the block.
        public let prefilled: Bool
    }

    /// The bytes of `pages`, in order, for the length of `body`. The pages are held (by `hold`),
    /// so nobody else touches them meanwhile; the buffers must not outlive `body`.
    public func withBytes<R, E: Error>(of pages: [HeldPage], _ body: ([UnsafeMutableRawBufferPointer]) throws(E) -> R) throws(E) -> R {
        try body(pages.map { budget.bytes($0.page) })
    }

    /// Holds the pages of logical blocks [first, first+count), block `first` at device block
    /// `physical`: existing pages once their writeback finished, new ones from `ready` where it
    /// has the block's (taken out of it; they hold their blocks already), else from `spare` (topped
    /// up at `.pageCacheLocked` if short). Fill the others, then `publish` or `discard`. Throws only
    /// for want of a page, holding nothing then.
    public func hold(_ inode: UInt32, first: UInt64, count: UInt64, physical: UInt64?, spare: inout [Page],
                     ready: inout [UInt64: Page]) throws(OutOfMemoryError) -> [HeldPage] {
        let range = first..<(first + count)
        while true {
            var short = missing(inode, first: first, count: count, except: ready) - spare.count
            if short > 0 && !ready.isEmpty {
                // A filled page whose block another write or a read cached meanwhile is a blank
                // one now (whoever takes it writes or zeroes all of it): it must not sit idle
                // while this takes more at a site that cannot wait.
                let cached = state.withLock { s -> [UInt64] in
                    guard let file = s.files[inode] else { return [] }
                    return ready.keys.filter { file.pages[$0] != nil }
                }
                for i in cached { spare.append(ready.removeValue(forKey: i)!) }
                short = missing(inode, first: first, count: count, except: ready) - spare.count
            }
            for _ in 0..<max(0, short) {
                var page = budget.allocatePage(at: .pageCacheLocked)
                if page == nil {
                    // noWait reclaims nothing; our own clean pages can go without any lock but ours.
                    _ = dropClean(bytes: max(1, short) * blockSize)
                    page = budget.allocatePage(at: .pageCacheLocked)
                }
                guard let page else { throw OutOfMemoryError(site: .pageCacheLocked, bytes: blockSize, limit: budget.limit) }
                spare.append(page)
            }
            // Never change a page while its write (or a read's fill) is in flight: the device
            // would get half of it. Pages may go while this waits (reclaim): count again then.
            let available = spare.count
            let held = state.wait(until: { s in !(s.files[inode]?.inFlight(range) ?? false) }) { s -> [HeldPage]? in
                let file = s.file(inode)
                var absent = 0
                for i in range where file.pages[i] == nil && ready[i] == nil { absent += 1 }
                guard absent <= available else { return nil }
                var out: [HeldPage] = []
                out.reserveCapacity(Int(count))
                for i in range {
                    if file.pages[i] != nil {
                        file.pages[i]!.held = true
                        out.append(HeldPage(index: i, isNew: false, page: file.pages[i]!.page, prefilled: false))
                    } else {
                        let filled = ready.removeValue(forKey: i)
                        let page = filled ?? spare.removeLast()
                        file.pages[i] = .init(page: page, physical: physical.map { $0 + (i - first) }, held: true)
                        s.cachedPages += 1
                        if physical == nil { file.delayed += 1; s.delayedPages += 1 }
                        if filled != nil { s.counters.prefilledPages += 1 }
                        out.append(HeldPage(index: i, isNew: true, page: page, prefilled: filled != nil))
                    }
                }
                return out
            }
            if let held { return held }
        }
    }

    /// The pages `hold` gave out now hold what they should.
    public func filled(_ inode: UInt32, _ pages: [HeldPage]) {
        state.withLock { s in
            guard let file = s.files[inode] else { return }
            for p in pages { file.pages[p.index]?.uptodate = true }
        }
    }

    /// The operation that held these pages succeeded: they are dirty now, for the flusher.
    public func publish(_ inode: UInt32, _ indices: [UInt64]) {
        state.withLock { s in
            guard let file = s.files[inode] else { return }
            let now = MonotonicClock.nanoseconds
            for i in indices where file.pages[i] != nil {
                file.pages[i]!.held = false
                file.pages[i]!.uptodate = true
                s.setDirty(inode, file, i, now: now)
            }
            s.releases &+= 1
            if s.dirtyPages >= backgroundLimit { s.flusher.kick = true }
        }
    }

    /// The operation failed: pages it added go (their blocks were never mapped); pages it changed
    /// keep what was written into them, dirty (the blocks stay mapped; a short write).
    public func discard(_ inode: UInt32, _ held: [(index: UInt64, isNew: Bool)]) {
        let freed = state.withLock { s -> [Page] in
            guard let file = s.files[inode] else { return [] }
            var freed: [Page] = []
            var changed: [UInt64] = []
            for h in held {
                guard let p = file.pages[h.index] else { continue }
                if h.isNew && !p.dirty {
                    file.pages[h.index] = nil
                    s.cachedPages -= 1
                    if p.physical == nil { file.delayed -= 1; s.delayedPages -= 1 }
                    freed.append(p.page)
                } else {
                    changed.append(h.index)
                }
            }
            if !changed.isEmpty {
                s.releases &+= 1
                let now = MonotonicClock.nanoseconds
                for i in changed {
                    file.pages[i]!.held = false
                    if file.pages[i]!.uptodate { s.setDirty(inode, file, i, now: now) }
                }
            }
            s.forgetIfEmpty(inode, file)
            return freed
        }
        budget.freePages(freed, for: .pageCachePage)
    }

    /// Drops the pages of logical blocks [first, end) of `inode`, dirty or not: their blocks were
    /// freed (truncate, punch, unlink). Waits for writes of them in flight, so a freed block is
    /// never written after its next owner. With `first` 0 and `end` max the file's error record
    /// goes too (the inode is gone).
    /// Returns how many of the dropped pages were delayed (their reserved blocks go back).
    @discardableResult
    public func drop(_ inode: UInt32, from first: UInt64, to end: UInt64) -> Int {
        let range = first..<end
        let (freed, delayed) = state.wait(until: { s in !(s.files[inode]?.underWriteback(range) ?? false) }) { s -> ([Page], Int) in
            guard let file = s.files[inode] else { return ([], 0) }
            var freed: [Page] = []
            var delayed = 0
            file.changes += 1
            for (i, p) in file.pages where range.contains(i) {
                if p.physical == nil { delayed += 1; file.delayed -= 1; s.delayedPages -= 1 }
                s.clearDirty(inode, file, i)
                file.pages[i] = nil
                s.cachedPages -= 1
                // A page being read into stays its reader's, who frees it on finding it gone.
                if !p.reading { freed.append(p.page) }
            }
            if first == 0 && end == .max {
                // The inode is gone; a read still running keeps the state (and sees `changes`).
                if file.readers == 0 && file.cachedReaders == 0 { s.files[inode] = nil } else { file.errors = 0 }
                s.dirtyInodes[inode] = nil
            } else {
                s.forgetIfEmpty(inode, file)
            }
            return (freed, delayed)
        }
        budget.freePages(freed, for: .pageCachePage)
        return delayed
    }

    // MARK: Delayed allocation

    /// The filesystem's allocator for delayed pages: maps the delayed pages of an inode (taking
    /// its write lock) and says whether it could; false leaves them delayed for a later pass.
    package func setDelayedMapper(_ mapper: any DelayedBlockMapper) {
        state.withLock { $0.delayedMapper = mapper }
    }

    /// The logical blocks of `inode` whose pages wait for a block, in order.
    public func delayedIndices(_ inode: UInt32) -> [UInt64] {
        state.withLock { s in
            guard let file = s.files[inode] else { return [] }
            return file.pages.filter { $0.value.physical == nil }.map(\.key).sorted()
        }
    }

    /// Inodes with delayed pages (commit and close map them all).
    public var delayedInodes: [UInt32] {
        state.withLock { s in s.files.filter { $0.value.delayed > 0 }.map(\.key).sorted() }
    }

    /// Logical blocks [first, first+count) of `inode` now live at device blocks from `physical`.
    public func assign(_ inode: UInt32, first: UInt64, count: UInt64, physical: UInt64) {
        state.withLock { s in
            guard let file = s.files[inode] else { return }
            file.changes += 1
            for k in 0..<count where file.pages[first + k]?.physical == nil && file.pages[first + k] != nil {
                file.pages[first + k]!.physical = physical + k
                file.delayed -= 1
                s.delayedPages -= 1
            }
        }
    }

    /// Zeroes bytes [from, to) of the page of logical block `index`, if it is cached, and holds it
    /// for the operation (publish makes it dirty). False when there is no page: the device has the data.
    public func zero(_ inode: UInt32, index: UInt64, from: Int, to: Int) -> Bool {
        let range = index..<(index + 1)
        return state.wait(until: { s in !(s.files[inode]?.inFlight(range) ?? false) }) { s in
            guard let file = s.files[inode], let page = file.pages[index] else { return false }
            file.pages[index]!.held = true
            let bytes = budget.bytes(page.page)
            UnsafeMutableRawBufferPointer(rebasing: bytes[from..<to]).initializeMemory(as: UInt8.self, repeating: 0)
            return true
        }
    }

    /// Files (or just `inode`) with a page dirty since before `time` (monotonic ns) that is still
    /// dirty: what an fsync that began then must not call written.
    public func dirtySince(before time: UInt64, inode: UInt32? = nil) -> [UInt32] {
        state.withLock { s in
            let candidates = inode.map { [$0] } ?? Array(s.dirtyInodes.keys)
            return candidates.filter { n in
                guard let file = s.files[n] else { return false }
                return file.dirtyIndices.contains { file.pages[$0]!.dirtiedAt <= time }
                    || file.pages.values.contains { $0.writeback && $0.dirtiedAt <= time }
            }.sorted()
        }
    }

    // MARK: Reading

    /// Is logical block `index` of `inode` cached?
    public func hasPage(_ inode: UInt32, _ index: UInt64) -> Bool {
        state.withLock { $0.files[inode]?.pages[index] != nil }
    }

    /// A read of `inode` starts. `pinning`: its pages stay until `endRead` (see `FileState.readers`);
    /// otherwise only the file's state stays (a read through the cache, see `FileState.cachedReaders`).
    public func beginRead(_ inode: UInt32, pinning: Bool = true) {
        state.withLock { s in
            let file = s.file(inode)
            if pinning { file.readers += 1 } else { file.cachedReaders += 1 }
        }
    }

    public func endRead(_ inode: UInt32, pinning: Bool = true) {
        state.withLock { s in
            guard let file = s.files[inode] else { return }
            if pinning { file.readers -= 1 } else { file.cachedReaders -= 1 }
            s.forgetIfEmpty(inode, file)
        }
    }

    /// Does `inode` have pages here (so a read must look at them)?
    public func hasPages(_ inode: UInt32) -> Bool {
        state.withLock { !($0.files[inode]?.pages.isEmpty ?? true) }
    }

    /// Copies the cached pages of logical blocks [first, first+count) over `buffer` (which holds
    /// those blocks as the device has them). Returns how many it copied.
    @discardableResult
    public func overlay(_ inode: UInt32, first: UInt64, count: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        state.withLock { s in
            guard let file = s.files[inode], !file.pages.isEmpty else { return 0 }
            var n = 0
            for k in 0..<count {
                guard let p = file.pages[first + UInt64(k)], p.uptodate else { continue }
                UnsafeMutableRawBufferPointer(rebasing: buffer[(k * blockSize)..<((k + 1) * blockSize)])
                    .copyMemory(from: UnsafeRawBufferPointer(budget.bytes(p.page)))
                n += 1
            }
            return n
        }
    }

    // MARK: Reclaim

    var cleanBytes: Int {
        state.withLock { s in (s.cachedPages - s.dirtyPages - s.writebackPages) * blockSize }
    }

    /// Frees clean pages, oldest clean first; dirty, held and in-flight pages are never touched.
    func dropClean(bytes: Int) -> Int {
        let want = (bytes + blockSize - 1) / blockSize
        let freed = state.withLock { s -> [Page] in
            var freed: [Page] = []
            var keep: [(inode: UInt32, index: UInt64)] = []
            defer { s.cleanQueue.append(contentsOf: keep) }
            while freed.count < want && s.cleanQueueHead < s.cleanQueue.count {
                let (inode, index) = s.cleanQueue[s.cleanQueueHead]
                s.cleanQueueHead += 1
                guard let file = s.files[inode], let p = file.pages[index] else { continue }
                // A stale entry (its page went and another took the index) may name a page a read
                // is filling: that one is listed when the read completes it.
                if p.reading || !p.queued { continue }
                if p.dirty || p.writeback {
                    file.pages[index]!.queued = false  // listed again when its write completes
                    continue
                }
                if p.held || file.readers > 0 {
                    keep.append((inode, index))  // clean, but not now: later
                    continue
                }
                file.pages[index] = nil
                s.cachedPages -= 1
                freed.append(p.page)
                s.forgetIfEmpty(inode, file)
            }
            if s.cleanQueueHead > 4096 && s.cleanQueueHead * 2 > s.cleanQueue.count {
                s.cleanQueue.removeFirst(s.cleanQueueHead)
                s.cleanQueueHead = 0
            }
            s.counters.reclaimedPages += freed.count
            return freed
        }
        budget.freePages(freed, for: .pageCachePage)
        return freed.count * blockSize
    }

    /// Gives every clean page back (after a close).
    public func dropAllClean() { _ = dropClean(bytes: .max / 2) }

    /// Does `inode` have pages that must stay: dirty, under writeback, waiting for blocks, held
    /// by an operation, or being read? (Inode reclaim passes over such an inode.)
    public func isBusy(_ inode: UInt32) -> Bool {
        state.withLock { s in
            guard let file = s.files[inode] else { return false }
            return file.dirty > 0 || file.writeback > 0 || file.delayed > 0 || file.readers > 0 || file.cachedReaders > 0
                || file.remapping > 0 || file.pages.values.contains { $0.held || $0.reading }
        }
    }

    /// Frees the clean pages of `inode` (its inode was reclaimed); returns the bytes freed. Pages
    /// that are dirty, in flight, held or being filled stay.
    func dropClean(of inode: UInt32) -> Int {
        let freed = state.withLock { s -> [Page] in
            guard let file = s.files[inode], file.readers == 0 else { return [] }
            var freed: [Page] = []
            for (index, p) in file.pages where !(p.dirty || p.writeback || p.held || p.reading) {
                file.pages[index] = nil
                freed.append(p.page)
            }
            s.cachedPages -= freed.count
            s.counters.reclaimedPages += freed.count
            s.forgetIfEmpty(inode, file)
            return freed
        }
        budget.freePages(freed, for: .pageCachePage)
        return freed.count * blockSize
    }

    // MARK: Statistics

    public var statistics: PageCacheStatistics {
        state.withLock { s in
            var statistics = s.counters
            statistics.dirtyPages = s.dirtyPages
            statistics.delayedPages = s.delayedPages
            statistics.writebackPages = s.writebackPages
            statistics.cleanPages = s.cachedPages - s.dirtyPages - s.writebackPages
            return statistics
        }
    }
}

/// What `--stats` shows of the page cache.
public struct PageCacheStatistics: Sendable {
    public var dirtyPages = 0
    /// Dirty pages whose blocks are not allocated yet (delayed allocation).
    public var delayedPages = 0
    public var writebackPages = 0
    public var cleanPages = 0
    public var pagesWritten = 0
    public var flusherPasses = 0
    /// Writeback runs put off for want of memory (retried later, never reported to anyone).
    public var writebackRetries = 0
    /// Runs written page by page because their page list could not be had.
    public var reserveRuns = 0
    /// Runs written in one call on the writeback reserve because the budget had no page list.
    public var poolRuns = 0
    public var throttledWriters = 0
    public var writeErrors = 0
    public var reclaimedPages = 0
    /// Reads: blocks served from pages already cached, blocks read in for a read, blocks read
    /// ahead, blocks read around the cache for want of pages, readaheads cut short by memory.
    public var readHits = 0
    public var readMisses = 0
    public var readaheadPages = 0
    public var uncachedBlocks = 0
    public var readaheadCut = 0
    /// Reads started over because the file changed under them, and reads that gave up on the
    /// cache after many such restarts and streamed instead.
    public var readRestarts = 0
    public var readFallbacks = 0
    /// Pages a writer filled before the write lock and `hold` put in place (whole new blocks).
    public var prefilledPages = 0

    public var line: String {
        "pagecache dirty=\(dirtyPages) delayed=\(delayedPages) writeback=\(writebackPages) clean=\(cleanPages) written=\(pagesWritten) "
            + "flusher-passes=\(flusherPasses) writeback-retries=\(writebackRetries) reserve-runs=\(reserveRuns) pool-runs=\(poolRuns) "
            + "throttled=\(throttledWriters) write-errors=\(writeErrors) reclaimed=\(reclaimedPages) "
            + "read-hits=\(readHits) read-misses=\(readMisses) readahead=\(readaheadPages) readahead-cut=\(readaheadCut) uncached=\(uncachedBlocks) "
            + "read-restarts=\(readRestarts) read-fallbacks=\(readFallbacks) prefilled=\(prefilledPages)"
    }
}
