#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HoldfastDevice
import HoldfastMemory

/// Everything the page cache knows, behind its one `Monitor`: the pages of each file, the dirty
/// and writeback counts, the clean queue for reclaim, write errors and the flusher's flags.
/// Helpers here run with the lock held (they take the state `inout`).
struct PageCacheState {
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

    /// One file's pages and bookkeeping. A class, so a helper can change a file and the counts
    /// beside it in one pass; it is reached only through the state, under the lock (a read's
    /// epoch keeps one only to compare its identity).
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

        /// Is a page of [range] being written to the device or filled from it?
        func inFlight(_ range: Range<UInt64>) -> Bool {
            if UInt64(range.count) <= UInt64(pages.count) {
                return range.contains { pages[$0].map { $0.writeback || $0.reading } == true }
            }
            return pages.contains { range.contains($0.key) && ($0.value.writeback || $0.value.reading) }
        }

        /// Is a page of [range] being written to the device?
        func underWriteback(_ range: Range<UInt64>) -> Bool {
            writeback > 0 && pages.contains { range.contains($0.key) && $0.value.writeback }
        }
    }

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
    var flusher = FlusherState()
    /// Files that went from clean to dirty, and when the last one did: the flusher's sleep
    /// ends for a file due before its deadline.
    var dirtiedFiles: UInt64 = 0
    var lastDirtiedAt: UInt64 = 0
    /// Held pages let go (`publish`, `discard`): a flusher that found due pages held waits for one.
    var releases: UInt64 = 0

    struct FlusherState {
        var running = false
        var stopping = false
        /// A writer asked for a pass now (the background limit, the throttle).
        var kick = false
        var thread: pthread_t?
    }

    /// The state of `inode`, made if it has none.
    mutating func file(_ inode: UInt32) -> FileState {
        if let file = files[inode] { return file }
        let file = FileState()
        files[inode] = file
        return file
    }

    /// Page `i` of `file` is dirty (from `now` if it is the file's first).
    mutating func setDirty(_ inode: UInt32, _ file: FileState, _ i: UInt64, now: UInt64) {
        guard !file.pages[i]!.dirty else { return }
        file.pages[i]!.dirty = true
        file.pages[i]!.dirtiedAt = now
        file.dirtyIndices.insert(i)
        dirtyPages += 1
        if file.dirtySince == 0 {
            file.dirtySince = now
            dirtyInodes[inode] = now
            dirtiedFiles &+= 1
            lastDirtiedAt = now
        }
    }

    /// Page `i` is no longer dirty (taken for writeback, or dropped).
    mutating func clearDirty(_ inode: UInt32, _ file: FileState, _ i: UInt64) {
        guard file.pages[i]?.dirty == true else { return }
        file.pages[i]!.dirty = false
        file.dirtyIndices.remove(i)
        dirtyPages -= 1
        if file.dirtyIndices.isEmpty {
            file.dirtySince = 0
            dirtyInodes[inode] = nil
        }
    }

    /// State kept for a file with neither pages nor an error to report goes.
    mutating func forgetIfEmpty(_ inode: UInt32, _ file: FileState) {
        if file.pages.isEmpty && file.errors == 0 && file.readers == 0 && file.cachedReaders == 0 && file.remapping == 0 { files[inode] = nil }
    }

    /// A failed write of `inode` (or of its delayed blocks' mapping), counted for errseq: every
    /// description hears of it, and the flusher leaves the file alone a while.
    mutating func recordError(_ inode: UInt32, _ error: DeviceError, now: UInt64) {
        counters.writeErrors += 1
        allErrors += 1
        lastError = error
        guard let file = files[inode] else { return }
        file.errors += 1
        file.lastError = error
        file.errorSeen = false
        file.retryAfter = now + PageCache.retryAfterErrorNanoseconds
    }

    /// Dirty and in-flight pages have reached the writers' limit.
    func overDirtyLimit(_ limit: Int) -> Bool { dirtyPages + writebackPages >= limit }
}
