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
public final class PageCache: @unchecked Sendable {
    public let budget: MemoryBudget
    public let device: any BlockDevice
    public let blockSize: Int
    /// Writers wait for writeback when dirty and writeback pages pass this many.
    public let dirtyLimit: Int
    /// The flusher starts on its own when dirty pages pass this many (or pages grow old).
    public let backgroundLimit: Int
    /// Dirty data older than this is written back even without pressure.
    public let expireNanoseconds: UInt64

    struct CachedPage {
        let page: Page
        /// The device block; nil while the page's block is still to be allocated (delayed).
        var physical: UInt64?
        var uptodate = false
        var dirty = false
        var writeback = false
        var held = false
        /// A read is filling it from the device (see `PageCacheReads.swift`): nobody else touches
        /// its bytes until the read completes it.
        var reading = false
        /// Listed in the clean queue (at most once).
        var queued = false
        /// When the page last became dirty (fsync waits only for what was dirty when it began).
        var dirtiedAt: UInt64 = 0
    }

    final class FileState {
        var pages: [UInt64: CachedPage] = [:]
        /// The dirty pages' indices, so writeback never walks clean ones.
        var dirtyIndices: Set<UInt64> = []
        var dirty: Int { dirtyIndices.count }
        var writeback = 0
        /// Pages without a block yet.
        var delayed = 0
        /// When the oldest dirty page of the file was dirtied (monotonic ns), 0 when clean.
        var dirtySince: UInt64 = 0
        /// Write errors so far (errseq), the last one, and whether anyone was told of it.
        var errors: UInt64 = 0
        var lastError: DeviceError?
        var errorSeen = true
        /// The error cursor of callers without a file description (`Filesystem.fsync(inode)`).
        var anonymousSeen: UInt64 = 0
        /// The flusher leaves a file whose write just failed alone until then.
        var retryAfter: UInt64 = 0
        /// Reads in progress: while any runs, reclaim leaves the file's pages alone, so a read that
        /// saw the device (or a hole) before a page was written still finds the page.
        var readers = 0
        /// Reads through the cache in progress: they keep this state (and `changes`) alive but
        /// pin nothing, so a read never keeps reclaim from its own file's clean pages.
        var cachedReaders = 0
        /// Drops of the file's pages and blocks given to its delayed pages: after either, a
        /// mapping read before may be wrong (a freed block, or a hole whose page was written and
        /// may be reclaimed), so a read that began before starts over (`finishRead`).
        var changes: UInt64 = 0
        /// Operations changing the file's mapping right now (see `beginRemap`).
        var remapping = 0
        /// Sequential-read detection and the last readahead window (see `readPlan`).
        var nextRead: UInt64 = 0
        var windowStart: UInt64 = 0
        var windowSize: UInt64 = 0
    }

    // Everything below is guarded by `monitor`.
    let monitor = ConditionLock()
    var files: [UInt32: FileState] = [:]
    /// Files with dirty pages, and since when: what the flusher and `writeBack(nil)` look at.
    var dirtyInodes: [UInt32: UInt64] = [:]
    var dirtyPages = 0
    var writebackPages = 0
    var cachedPages = 0
    var delayedPages = 0
    weak var delayedMapper: (any DelayedBlockMapper)?
    /// Clean pages in the order they became clean, for the shrinker (entries may be stale).
    var cleanQueue: [(inode: UInt32, index: UInt64)] = []
    var cleanQueueHead = 0
    var counters = PageCacheStatistics()
    /// Errors of any file, for `sync` (a cursor of the whole filesystem).
    var allErrors: UInt64 = 0
    var allErrorsSeen: UInt64 = 0
    var lastError: DeviceError?
    // The flusher thread's state.
    var flusherRunning = false
    var flusherStopping = false
    var flusherKick = false
    var flusherThread: pthread_t?

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
        for (_, file) in files {
            for (_, p) in file.pages { budget.freePage(p.page, for: .pageCachePage) }
        }
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

    /// How many of logical blocks [first, first+count) of `inode` have no page yet.
    public func missing(_ inode: UInt32, first: UInt64, count: UInt64) -> Int {
        monitor.withLock {
            guard let file = files[inode] else { return Int(count) }
            if file.pages.isEmpty { return Int(count) }
            var n = 0
            for i in first..<(first + count) where file.pages[i] == nil { n += 1 }
            return n
        }
    }

    /// A page the caller fills: `isNew` pages hold nothing yet.
    public struct HeldPage {
        public let index: UInt64
        public let bytes: UnsafeMutableRawBufferPointer
        public let isNew: Bool
    }

    /// Holds the pages of logical blocks [first, first+count), block `first` at device block
    /// `physical`: existing pages once their writeback finished, new ones from `spare` (topped up
    /// at `.pageCacheLocked` if short). Fill them, then `publish` or `discard`. Throws only for want
    /// of a page, holding nothing then.
    public func hold(_ inode: UInt32, first: UInt64, count: UInt64, physical: UInt64?, spare: inout [Page]) throws(OutOfMemoryError) -> [HeldPage] {
        while true {
            let short = missing(inode, first: first, count: count) - spare.count
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
            // Pages may have gone between the count and the lock (reclaim): count again then.
            if let held = monitor.withLock({ () -> [HeldPage]? in
                let file = files[inode] ?? FileState()
                files[inode] = file
                // Never change a page while its write is in flight: the device would get half of it.
                // Waiting lets go of the monitor, and pages may go meanwhile: count again after.
                if (first..<(first + count)).contains(where: { file.pages[$0].map { $0.writeback || $0.reading } == true }) {
                    monitor.wait(timeoutNanoseconds: 10_000_000)
                    return nil
                }
                var absent = 0
                for i in first..<(first + count) where file.pages[i] == nil { absent += 1 }
                guard absent <= spare.count else { return nil }
                var out: [HeldPage] = []
                out.reserveCapacity(Int(count))
                for i in first..<(first + count) {
                    if file.pages[i] != nil {
                        file.pages[i]!.held = true
                        out.append(HeldPage(index: i, bytes: budget.bytes(file.pages[i]!.page), isNew: false))
                    } else {
                        let page = spare.removeLast()
                        file.pages[i] = CachedPage(page: page, physical: physical.map { $0 + (i - first) }, held: true)
                        cachedPages += 1
                        if physical == nil { file.delayed += 1; delayedPages += 1 }
                        out.append(HeldPage(index: i, bytes: budget.bytes(page), isNew: true))
                    }
                }
                return out
            }) {
                return held
            }
        }
    }

    /// The pages `hold` gave out now hold what they should.
    public func filled(_ inode: UInt32, _ pages: [HeldPage]) {
        monitor.withLock {
            guard let file = files[inode] else { return }
            for p in pages { file.pages[p.index]?.uptodate = true }
        }
    }

    /// The operation that held these pages succeeded: they are dirty now, for the flusher.
    public func publish(_ inode: UInt32, _ indices: [UInt64]) {
        monitor.withLock {
            guard let file = files[inode] else { return }
            let now = MonotonicClock.nanoseconds
            for i in indices where file.pages[i] != nil {
                file.pages[i]!.held = false
                file.pages[i]!.uptodate = true
                setDirty(inode, file, i, now: now)
            }
            if dirtyPages >= backgroundLimit { flusherKick = true; monitor.broadcast() }
        }
    }

    /// The operation failed: pages it added go (their blocks were never mapped); pages it changed
    /// keep what was written into them, dirty (the blocks stay mapped; a short write).
    public func discard(_ inode: UInt32, _ held: [(index: UInt64, isNew: Bool)]) {
        var freed: [Page] = []
        monitor.withLock {
            guard let file = files[inode] else { return }
            var changed: [UInt64] = []
            for h in held {
                guard let p = file.pages[h.index] else { continue }
                if h.isNew && !p.dirty {
                    file.pages[h.index] = nil
                    cachedPages -= 1
                    if p.physical == nil { file.delayed -= 1; delayedPages -= 1 }
                    freed.append(p.page)
                } else {
                    changed.append(h.index)
                }
            }
            if !changed.isEmpty {
                let now = MonotonicClock.nanoseconds
                for i in changed {
                    file.pages[i]!.held = false
                    if file.pages[i]!.uptodate { setDirty(inode, file, i, now: now) }
                }
            }
            forgetIfEmpty(inode, file)
        }
        for p in freed { budget.freePage(p, for: .pageCachePage) }
    }

    /// Drops the pages of logical blocks [first, end) of `inode`, dirty or not: their blocks were
    /// freed (truncate, punch, unlink). Waits for writes of them in flight, so a freed block is
    /// never written after its next owner. With `first` 0 and `end` max the file's error record
    /// goes too (the inode is gone).
    /// Returns how many of the dropped pages were delayed (their reserved blocks go back).
    @discardableResult
    public func drop(_ inode: UInt32, from first: UInt64, to end: UInt64) -> Int {
        var freed: [Page] = []
        var delayed = 0
        monitor.withLock {
            guard let file = files[inode] else { return }
            while file.pages.contains(where: { $0.key >= first && $0.key < end && $0.value.writeback }) {
                monitor.wait(timeoutNanoseconds: 10_000_000)
            }
            file.changes += 1
            for (i, p) in file.pages where i >= first && i < end {
                if p.physical == nil { delayed += 1; file.delayed -= 1; delayedPages -= 1 }
                clearDirty(inode, file, i)
                file.pages[i] = nil
                cachedPages -= 1
                // A page being read into stays its reader's, who frees it on finding it gone.
                if !p.reading { freed.append(p.page) }
            }
            if first == 0 && end == .max {
                // The inode is gone; a read still running keeps the state (and sees `changes`).
                if file.readers == 0 && file.cachedReaders == 0 { files[inode] = nil } else { file.errors = 0 }
                dirtyInodes[inode] = nil
            } else {
                forgetIfEmpty(inode, file)
            }
            monitor.broadcast()
        }
        for p in freed { budget.freePage(p, for: .pageCachePage) }
        return delayed
    }

    // MARK: Delayed allocation

    /// The filesystem's allocator for delayed pages: maps the delayed pages of an inode (taking
    /// its write lock) and says whether it could; false leaves them delayed for a later pass.
    package func setDelayedMapper(_ mapper: any DelayedBlockMapper) {
        monitor.withLock { delayedMapper = mapper }
    }

    /// The logical blocks of `inode` whose pages wait for a block, in order.
    public func delayedIndices(_ inode: UInt32) -> [UInt64] {
        monitor.withLock {
            guard let file = files[inode] else { return [] }
            return file.pages.filter { $0.value.physical == nil }.map(\.key).sorted()
        }
    }

    /// Inodes with delayed pages (commit and close map them all).
    public var delayedInodes: [UInt32] {
        monitor.withLock { files.filter { $0.value.delayed > 0 }.map(\.key).sorted() }
    }

    /// Logical blocks [first, first+count) of `inode` now live at device blocks from `physical`.
    public func assign(_ inode: UInt32, first: UInt64, count: UInt64, physical: UInt64) {
        monitor.withLock {
            guard let file = files[inode] else { return }
            file.changes += 1
            for k in 0..<count where file.pages[first + k]?.physical == nil && file.pages[first + k] != nil {
                file.pages[first + k]!.physical = physical + k
                file.delayed -= 1
                delayedPages -= 1
            }
        }
    }

    /// Zeroes bytes [from, to) of the page of logical block `index`, if it is cached, and holds it
    /// for the operation (publish makes it dirty). False when there is no page: the device has the data.
    public func zero(_ inode: UInt32, index: UInt64, from: Int, to: Int) -> Bool {
        monitor.withLock {
            while true {
                guard let file = files[inode], let page = file.pages[index] else { return false }
                if page.writeback || page.reading { monitor.wait(timeoutNanoseconds: 10_000_000); continue }  // then look again
                break
            }
            let file = files[inode]!
            file.pages[index]!.held = true
            let bytes = budget.bytes(file.pages[index]!.page)
            UnsafeMutableRawBufferPointer(rebasing: bytes[from..<to]).initializeMemory(as: UInt8.self, repeating: 0)
            return true
        }
    }

    /// Under the lock: page `i` of `file` is dirty (from `now` if it is the file's first).
    func setDirty(_ inode: UInt32, _ file: FileState, _ i: UInt64, now: UInt64) {
        guard !file.pages[i]!.dirty else { return }
        file.pages[i]!.dirty = true
        file.pages[i]!.dirtiedAt = now
        file.dirtyIndices.insert(i)
        dirtyPages += 1
        if file.dirtySince == 0 {
            file.dirtySince = now
            dirtyInodes[inode] = now
        }
    }

    /// Under the lock: page `i` is no longer dirty (taken for writeback, or dropped).
    func clearDirty(_ inode: UInt32, _ file: FileState, _ i: UInt64) {
        guard file.pages[i]?.dirty == true else { return }
        file.pages[i]!.dirty = false
        file.dirtyIndices.remove(i)
        dirtyPages -= 1
        if file.dirtyIndices.isEmpty {
            file.dirtySince = 0
            dirtyInodes[inode] = nil
        }
    }

    /// Files (or just `inode`) with a page dirty since before `time` (monotonic ns) that is still
    /// dirty: what an fsync that began then must not call written.
    public func dirtySince(before time: UInt64, inode: UInt32? = nil) -> [UInt32] {
        monitor.withLock {
            let candidates = inode.map { [$0] } ?? Array(dirtyInodes.keys)
            return candidates.filter { n in
                guard let file = files[n] else { return false }
                return file.dirtyIndices.contains { file.pages[$0]!.dirtiedAt <= time }
                    || file.pages.values.contains { $0.writeback && $0.dirtiedAt <= time }
            }.sorted()
        }
    }

    /// State kept for a file with neither pages nor an error to report goes.
    func forgetIfEmpty(_ inode: UInt32, _ file: FileState) {
        if file.pages.isEmpty && file.errors == 0 && file.readers == 0 && file.cachedReaders == 0 && file.remapping == 0 { files[inode] = nil }
    }

    // MARK: Reading

    /// Is logical block `index` of `inode` cached?
    public func hasPage(_ inode: UInt32, _ index: UInt64) -> Bool {
        monitor.withLock { files[inode]?.pages[index] != nil }
    }

    /// A read of `inode` starts. `pinning`: its pages stay until `endRead` (see `FileState.readers`);
    /// otherwise only the file's state stays (a read through the cache, see `FileState.cachedReaders`).
    public func beginRead(_ inode: UInt32, pinning: Bool = true) {
        monitor.withLock {
            let file = files[inode] ?? FileState()
            files[inode] = file
            if pinning { file.readers += 1 } else { file.cachedReaders += 1 }
        }
    }

    public func endRead(_ inode: UInt32, pinning: Bool = true) {
        monitor.withLock {
            guard let file = files[inode] else { return }
            if pinning { file.readers -= 1 } else { file.cachedReaders -= 1 }
            forgetIfEmpty(inode, file)
        }
    }

    /// Does `inode` have pages here (so a read must look at them)?
    public func hasPages(_ inode: UInt32) -> Bool {
        monitor.withLock { !(files[inode]?.pages.isEmpty ?? true) }
    }

    /// Copies the cached pages of logical blocks [first, first+count) over `buffer` (which holds
    /// those blocks as the device has them). Returns how many it copied.
    @discardableResult
    public func overlay(_ inode: UInt32, first: UInt64, count: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        monitor.withLock {
            guard let file = files[inode], !file.pages.isEmpty else { return 0 }
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
        monitor.withLock { (cachedPages - dirtyPages - writebackPages) * blockSize }
    }

    /// Frees clean pages, oldest clean first; dirty, held and in-flight pages are never touched.
    func dropClean(bytes: Int) -> Int {
        var freed: [Page] = []
        monitor.withLock {
            let want = (bytes + blockSize - 1) / blockSize
            var keep: [(inode: UInt32, index: UInt64)] = []
            defer { cleanQueue.append(contentsOf: keep) }
            while freed.count < want && cleanQueueHead < cleanQueue.count {
                let (inode, index) = cleanQueue[cleanQueueHead]
                cleanQueueHead += 1
                guard let file = files[inode], let p = file.pages[index] else { continue }
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
                cachedPages -= 1
                freed.append(p.page)
                forgetIfEmpty(inode, file)
            }
            if cleanQueueHead > 4096 && cleanQueueHead * 2 > cleanQueue.count {
                cleanQueue.removeFirst(cleanQueueHead)
                cleanQueueHead = 0
            }
            counters.reclaimedPages += freed.count
        }
        for p in freed { budget.freePage(p, for: .pageCachePage) }
        return freed.count * blockSize
    }

    /// Gives every clean page back (after a close).
    public func dropAllClean() { _ = dropClean(bytes: .max / 2) }

    /// Does `inode` have pages that must stay: dirty, under writeback, waiting for blocks, held
    /// by an operation, or being read? (Inode reclaim passes over such an inode.)
    public func isBusy(_ inode: UInt32) -> Bool {
        monitor.withLock {
            guard let file = files[inode] else { return false }
            return file.dirty > 0 || file.writeback > 0 || file.delayed > 0 || file.readers > 0 || file.cachedReaders > 0
                || file.remapping > 0 || file.pages.values.contains { $0.held || $0.reading }
        }
    }

    /// Frees the clean pages of `inode` (its inode was reclaimed); returns the bytes freed. Pages
    /// that are dirty, in flight, held or being filled stay.
    func dropClean(of inode: UInt32) -> Int {
        var freed: [Page] = []
        monitor.withLock {
            guard let file = files[inode], file.readers == 0 else { return }
            for (index, p) in file.pages where !(p.dirty || p.writeback || p.held || p.reading) {
                file.pages[index] = nil
                freed.append(p.page)
            }
            cachedPages -= freed.count
            counters.reclaimedPages += freed.count
            forgetIfEmpty(inode, file)
        }
        for p in freed { budget.freePage(p, for: .pageCachePage) }
        return freed.count * blockSize
    }

    // MARK: Statistics

    public var statistics: PageCacheStatistics {
        monitor.withLock {
            var s = counters
            s.dirtyPages = dirtyPages
            s.delayedPages = delayedPages
            s.writebackPages = writebackPages
            s.cleanPages = cachedPages - dirtyPages - writebackPages
            return s
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

    public var line: String {
        "pagecache dirty=\(dirtyPages) delayed=\(delayedPages) writeback=\(writebackPages) clean=\(cleanPages) written=\(pagesWritten) "
            + "flusher-passes=\(flusherPasses) writeback-retries=\(writebackRetries) reserve-runs=\(reserveRuns) pool-runs=\(poolRuns) "
            + "throttled=\(throttledWriters) write-errors=\(writeErrors) reclaimed=\(reclaimedPages) "
            + "read-hits=\(readHits) read-misses=\(readMisses) readahead=\(readaheadPages) readahead-cut=\(readaheadCut) uncached=\(uncachedBlocks) "
            + "read-restarts=\(readRestarts) read-fallbacks=\(readFallbacks)"
    }
}
