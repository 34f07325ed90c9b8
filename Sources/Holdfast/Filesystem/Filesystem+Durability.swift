#if canImport(Glibc)
import Glibc
#endif
import HoldfastCache
import HoldfastDevice
import HoldfastFormat
import HoldfastJournal
import HoldfastMemory

/// Durability: sync, fsync and fdatasync, and close. Nothing is reported durable that is not,
/// and a write error reaches every caller that asks (errseq).
extension Filesystem {
    /// Commits every change so far and makes it durable (sync(2) of the whole image). Reports a
    /// commit error, or a write of file data that failed since the last sync, once.
    public func sync() throws(HoldfastError) {
        let start = MonotonicClock.nanoseconds
        mapDelayedOutsideLock(nil)
        pageCache?.writeBack(nil)
        try commitAll()
        guard let pageCache else { return }
        if let e = pageCache.checkAnyError() { throw HoldfastError.io(e) }
        // Nothing is reported durable that is not: pages dirty before this call and still dirty
        // (no memory to map them). Pages other threads dirtied meanwhile are theirs to sync.
        let dirty = pageCache.dirtySince(before: start)
        if !dirty.isEmpty { throw HoldfastError.dataNotWritten(inodes: dirty, cause: nil) }
    }

    /// Gives delayed pages their blocks before a commit, taking the write lock per file and
    /// backing off between tries, so a short while without memory is waited out, not reported.
    private func mapDelayedOutsideLock(_ inode: UInt32?) {
        guard let pageCache else { return }
        var backoff = Backoff.shortOfMemory
        for attempt in 0..<6 {
            let waiting = inode.map { n in pageCache.delayedInodes.filter { $0 == n } } ?? pageCache.delayedInodes
            if waiting.isEmpty { return }
            if attempt > 0 { backoff.pause() }
            for n in waiting { _ = mapDelayedBlocks(of: n) }
        }
    }

    /// Before a commit takes the write lock: the files the running transaction wrote get their
    /// delayed blocks and their data is written, each file's mapping in a handle of its own. The
    /// commit under the lock then maps and writes only what changed meanwhile, so other files'
    /// writers wait for the commit's log writes, not for a file's worth of data (an fsync of one
    /// file beside a large write to another, the timer's commit during one).
    func writeOrderedDataOutsideLock() {
        guard let writer, let pageCache else { return }
        let files = writer.withLock { state in state.closed ? [] : state.orderedData.sorted() }
        guard !files.isEmpty else { return }
        let delayed = Set(pageCache.delayedInodes)
        for n in files {
            if delayed.contains(n) { _ = mapDelayedBlocks(of: n) }
            pageCache.writeBack(n)
        }
    }

    /// Commits and flushes, reporting a commit error nobody was told of. With `file` (fsync),
    /// only the data the transaction needs and that file's go first.
    private func commitAll(file: UInt32? = nil) throws(HoldfastError) {
        guard let writer else { return }
        try guarded {
            try writer.withLock { state in
                try commitLocked(state, data: file.map { .ordered(file: $0) } ?? .all)
                if let e = state.pendingError { state.pendingError = nil; throw e }
            }
        }
    }

    /// fsync(2) of one file, for a caller without a file description (`OpenFile.sync` keeps its
    /// own error cursor): writes the file's data, commits the running transaction (writing first
    /// only the data it needs, as data=ordered) and flushes, then reports a write error of the
    /// file nobody asking this way heard of yet.
    public func fsync(_ inode: UInt32) throws(HoldfastError) {
        var cursor: UInt64? = nil
        try fsync(inode, cursor: &cursor)
    }

    /// fdatasync(2): the file's data and what is needed to read it back. There is one running
    /// transaction, so fdatasync commits it as fsync does, with the same error reporting.
    public func fdatasync(_ inode: UInt32) throws(HoldfastError) { try fsync(inode) }

    /// `cursor` nil: the file's anonymous cursor.
    func fsync(_ inode: UInt32, cursor: inout UInt64?) throws(HoldfastError) {
        _ = try self.inode(inode)
        let start = MonotonicClock.nanoseconds
        mapDelayedOutsideLock(inode)
        pageCache?.writeBack(inode)
        writeOrderedDataOutsideLock()
        try commitAll(file: inode)
        guard let pageCache else { return }
        let failure: DeviceError?
        if var c = cursor {
            failure = pageCache.checkError(inode, cursor: &c)
            cursor = c
        } else {
            failure = pageCache.checkError(inode)
        }
        if let failure { throw HoldfastError.io(failure) }
        // Nothing is reported durable that is not: pages still dirty (no memory to map them).
        if !pageCache.dirtySince(before: start, inode: inode).isEmpty { throw HoldfastError.dataNotWritten(inodes: [inode], cause: nil) }
    }

    /// Commits, checkpoints the journal and clears needs_recovery (without a journal: marks the
    /// image cleanly unmounted), and closes it for writing. Dirty file data is written first (each
    /// write tried a few times); data that cannot be written makes close fail naming the files,
    /// and the image is then left marked for e2fsck, never reported clean.
    public func close() throws(HoldfastError) {
        guard let writer else {
            // Read-only: nothing to write; what the caches hold goes back now.
            cache.drain()
            pageCache?.dropAllClean()
            extentStatus.dropAll()
            inodeCache.dropAll()
            return
        }
        guard !writer.withLock({ $0.closed }) else { return }  // a failed close said so already
        try guarded {
            // Files still open go now, as at the last close; a truncate cut short is finished.
            let orphans = writer.withLock { state in
                inodeCache.closeAll()
                discardAllPreallocations(state)
                return state.closed ? [] : state.orphans.sorted()
            }
            // An orphan that cannot be finished now (read-only after a write error, no memory) stays
            // on the list for the next open; the data and the commit come first either way.
            var orphanError: (any Error)?
            if writeFailures.readOnlyReason == nil {
                for number in orphans {
                    do { try finishOrphan(number) } catch { orphanError = orphanError ?? error }
                }
            }
            // From here writeback and commits run on this thread only.
            commitTimer.stop()
            pageCache?.stopFlusher()
            var unwritten: [UInt32] = []
            if let pageCache {
                // Each try maps delayed pages and writes everything dirty (a commit does both).
                var backoff = Backoff.shortOfMemory
                for attempt in 0..<20 where !pageCache.dirtyFiles.isEmpty {
                    if attempt > 0 { backoff.pause() }
                    try writer.withLock { state in if !state.closed { try commitLocked(state, flush: false) } }
                }
                unwritten = pageCache.dirtyFiles
            }
            try writer.withLock { state in
                guard !state.closed else { return }
                try commitLocked(state)
                if let journal = state.transaction.journal {
                    // Everything home and the log emptied, then the superblock without
                    // needs_recovery, as the kernel's unmount leaves it. A failure before that
                    // leaves the log for the next open (or the kernel, or e2fsck) to recover.
                    try state.transaction.checkpoint(writeSuperblock: { try writeSuperblockHome($0) })
                    // Built on a copy: if the write fails, commits made after this failed close
                    // still carry needs_recovery.
                    var last = SuperblockRecord(raw: sealedSuperblock(state))
                    last.featureIncompat.remove(.recover)
                    // orphan_present goes with an empty orphan file, as at the kernel's unmount.
                    if let file = state.orphanFile, file.slots.isEmpty { last.featureROCompat.remove(.orphanPresent) }
                    if !unwritten.isEmpty { last.state.remove(.cleanlyUnmounted) }
                    last.seal()
                    try writeSuperblockHome(last.raw)
                    try device.flush()
                    state.superblock = last
                    journal.release()
                } else if unwritten.isEmpty {
                    state.superblock.state.insert(.cleanlyUnmounted)
                    try commitLocked(state, force: true)
                }
                state.closed = true
                // Everything is written: the buddies' and the cache's memory goes back now, not at
                // deinit (reads after close fill the cache again).
                buddies?.dropAll()
                cache.drain()
                pageCache?.dropAllClean()
                pageCache?.releaseWritebackReserve()  // no writeback after close
                releaseEvictionReserve()  // nor a last close
                extentStatus.dropAll()
                inodeCache.dropAll()
                if let e = state.pendingError { state.pendingError = nil; throw e }
            }
            if !unwritten.isEmpty {
                throw HoldfastError.dataNotWritten(inodes: unwritten, cause: pageCache?.checkAnyError() ?? writeFailures.firstError)
            }
            if let orphanError { throw orphanError }
        }
    }

    /// Last resort when a writable filesystem is dropped without `close`: commit, and say so if that fails.
    func finishWriting() {
        do { try close() } catch {
            logger.error("changes to \(device.path) could not be written at close: \(error)")
        }
    }

    /// Is this filesystem open for changes?
    public var isWritable: Bool { writer != nil }
}
