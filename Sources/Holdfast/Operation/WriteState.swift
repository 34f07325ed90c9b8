#if canImport(Glibc)
import Glibc
#endif
import HoldfastCache
import HoldfastDevice
import HoldfastFormat
import HoldfastJournal
import HoldfastMemory

/// What the write path keeps between operations, guarded by the filesystem's write lock.
final class WriteState {
    let transaction: Transaction
    /// The superblock as it will be written at the next commit (free counts are filled in then).
    var superblock: SuperblockRecord
    var random: SplitMix64
    /// Free blocks and inodes, reservations and windows: the allocator's, and only that.
    let space = FreeSpace()
    var closed = false
    /// The first commit error nobody has been told of yet (reported by sync and close).
    var pendingError: HoldfastError?
    /// A commit without a flush happened since the last flush (fsync still owes one).
    var unflushed = false
    /// The page cache's written-pages count at the last flush: data written since is not durable.
    var writtenAtFlush = 0
    /// Inodes on the orphan list (unlinked while open, or in a truncate of several steps).
    var orphans: Set<UInt32> = []
    /// The orphan file, on journaled images with orphan_file (loaded at the writable open).
    var orphanFile: OrphanFile?
    /// Files whose pages the running transaction wrote, zeroed or gave blocks (data=ordered: their
    /// data goes to the device before the commit; a commit for one file's fsync writes only these).
    var orderedData: Set<UInt32> = []

    init(transaction: Transaction, superblock: Superblock) {
        self.transaction = transaction
        self.superblock = SuperblockRecord(superblock)
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        random = SplitMix64(seed: UInt64(now.tv_nsec) ^ UInt64(now.tv_sec) << 20 ^ UInt64(getpid()))
    }
}

extension Filesystem {
    /// Why an image that reads fine cannot be written by this engine.
    static func writeRefusals(_ sb: Superblock) -> [String] {
        var why: [String] = []
        let notMaintained: [(Bool, String)] = [
            (sb.featureIncompat.contains(.mmp), "mmp"),
            (sb.featureIncompat.contains(.metaBG), "meta_bg"),
            (sb.featureROCompat.contains(.bigalloc), "bigalloc"),
            (sb.featureROCompat.contains(.quota), "quota"),
            (sb.featureROCompat.contains(.verity), "verity"),
            (sb.featureROCompat.contains(.sharedBlocks), "shared_blocks"),
            (sb.featureROCompat.contains(.readonly), "read-only"),
        ]
        for (present, name) in notMaintained where present { why.append("feature \(name) is read but not maintained") }
        if sb.featureROCompat.contains(.orphanPresent) && !(sb.featureCompat.contains(.orphanFile) && sb.featureCompat.contains(.hasJournal)) {
            why.append("orphan_present is set without a journaled orphan file to find the orphans in (run e2fsck)")
        }
        if sb.state.contains(.errorsDetected) { why.append("the image has errors recorded (run e2fsck)") }
        if sb.blockSize > 65536 { why.append("block size \(sb.blockSize) is larger than 64 KiB") }
        return why
    }

    /// Marks the image in use before the first change. With a journal, as the kernel's mount:
    /// the journal superblock gets the features this writer uses and the superblock its
    /// needs_recovery flag, both flushed before the first commit (without the flag the kernel
    /// would ignore the log). Without one, as an unjournalled mount: s_state loses VALID_FS, so a
    /// crash before `close` leaves the image marked for e2fsck.
    func startWriting() throws {
        var freeBlocks: UInt64 = 0, freeInodes: UInt64 = 0
        for g in 0..<UInt32(superblock.groupCount) {
            let gd = try descriptor(g)
            freeBlocks += UInt64(gd.freeBlocksCount)
            freeInodes += UInt64(gd.freeInodesCount)
        }
        try writer!.withLock { state in
            state.space.freeBlocks = freeBlocks
            state.space.freeInodes = freeInodes
            if let journal = state.transaction.journal {
                state.superblock.featureIncompat.insert(.recover)
                try journal.start()
                try writeSuperblockHome(sealedSuperblock(state))
                try device.flush()
            } else {
                state.superblock.state.remove(.cleanlyUnmounted)
                try commitLocked(state, force: true)
            }
        }
        _ = try cleanUpOrphans()
    }

    /// The superblock as the next commit leaves it: free counts and write time filled in, sealed.
    func sealedSuperblock(_ state: WriteState) -> [UInt8] {
        state.superblock.freeBlocksCount = state.space.freeBlocks
        state.superblock.freeInodesCount = UInt32(state.space.freeInodes)
        state.superblock.setWriteTime(Operation.now().seconds)
        state.superblock.seal()
        return state.superblock.raw
    }

    /// Writes the superblock's 1024 bytes home, keeping a cached copy of its block current.
    func writeSuperblockHome(_ raw: [UInt8]) throws {
        try raw.withUnsafeBytes { try device.write($0, at: UInt64(Superblock.byteOffset)) }
        cache.patchIfCached(UInt64(Superblock.byteOffset / blockSize), at: Superblock.byteOffset % blockSize, raw)
    }

    /// Runs one operation: a handle of `credits` blocks under the write lock. A thrown error rolls
    /// every block back; success leaves the changes in the running transaction, which is committed
    /// before the operation when the operation could take it past the journal's bound, and after
    /// it when it holds a quarter of the memory budget or reaches the bound. An operation that
    /// finds no space while blocks freed since the last commit wait for it runs again after a
    /// commit. `pages` were taken for the operation's file data before the lock, and `ready` filled
    /// there with whole blocks of a write, by block (what it does not use goes back).
    func mutate<R>(credits: Int, pages: [Page] = [], ready: [UInt64: Page] = [:], _ body: (inout Operation) throws -> R) throws -> R {
        let giveBack = {
            for p in pages { self.budget.freePage(p, for: .pageCachePage) }
            for p in ready.values { self.budget.freePage(p, for: .pageCachePage) }
        }
        guard let writer else {
            giveBack()
            throw HoldfastError.readOnly(readOnlyReasons.isEmpty ? ["opened read-only"] : readOnlyReasons)
        }
        let asked = WriteLockCounters.now()
        return try writer.withLock { state throws -> R in
            let got = WriteLockCounters.now()
            defer { writeLockCounters.operation(asked: asked, got: got, released: WriteLockCounters.now()) }
            guard !state.closed else {
                giveBack()
                throw HoldfastError.invalidArgument("the filesystem is closed")
            }
            if let why = state.transaction.journal?.abortReason {
                giveBack()
                throw HoldfastError.readOnly(["the journal was aborted after a failed write (\(why)); the next open recovers what it committed"])
            }
            if let why = writeFailures.readOnlyReason {
                giveBack()
                throw HoldfastError.readOnly([why])
            }
            let transaction = state.transaction
            if transaction.dirtyBlocks > 0 && transaction.dirtyBlocks + credits > transaction.bound {
                // The journal bounds a transaction: this operation goes into the next one. A
                // failed commit is kept for sync, fsync or close, as below.
                try? commitLocked(state, data: .ordered(file: nil))
            }
            let result: R
            do {
                result = try runOperation(state, credits: credits, pages: pages, ready: ready, body)
            } catch HoldfastError.noSpace(let why) where state.space.freedUncommittedBlocks > 0 {
                // Blocks freed since the last commit are not handed out before it: commit, as the
                // kernel does, and try once more (the pages taken before the lock went back).
                do { try commitLocked(state) } catch { throw HoldfastError.noSpace(why) }
                result = try runOperation(state, credits: credits, pages: [], body)
            }
            if transaction.dirtyBlocks > 0 { commitTimer.arm(startedAt: transaction.startedAt) }
            if transaction.dirtyBytes >= budget.limit / 4 || transaction.dirtyBlocks >= transaction.bound {
                // The operation is done and stays (its changes wait in the transaction); a commit
                // that fails here is kept for the next sync, fsync or close to report, not blamed
                // on this call, which would then seem to have changed nothing.
                try? commitLocked(state, flush: false, data: .ordered(file: nil))
            }
            return result
        }
    }

    /// One handle under the write lock (held by the caller): the body's changes stay if it
    /// succeeds, and are rolled back, page cache included, if it throws.
    /// It runs in a `noFS` scope: reclaim started under the write lock drops only memory that
    /// needs no filesystem work to give back.
    func runOperation<R>(_ state: WriteState, credits: Int, pages: [Page], ready: [UInt64: Page] = [:],
                         _ body: (inout Operation) throws -> R) throws -> R {
        try MemoryScope.noFS { () throws -> R in try runOperationLocked(state, credits: credits, pages: pages, ready: ready, body) }
    }

    private func runOperationLocked<R>(_ state: WriteState, credits: Int, pages: [Page], ready: [UInt64: Page],
                                       _ body: (inout Operation) throws -> R) throws -> R {
        let pending = PendingChanges()
        pending.spare = pages
        pending.ready = ready
        defer {
            for p in pending.spare { budget.freePage(p, for: .pageCachePage) }
            for p in pending.ready.values { budget.freePage(p, for: .pageCachePage) }
        }
        let handle = state.transaction.begin(credits: credits)
        var ctx = Operation(fs: self, handle: handle, state: state, pending: pending)
        let result: R
        do {
            result = try body(&ctx)
            try ctx.finishDeferredWrites()
        } catch {
            handle.abort()
            // The rollback rewrote these slots: copies cached since the changes go.
            for number in ctx.pending.storedInodes { inodeCache.invalidate(number) }
            buddies?.invalidate(ctx.allocation.bitmapGroups)
            ctx.pending.discardPages(pageCache, extentStatus)
            throw error
        }
        handle.stop()
        ctx.pending.apply(to: state)
        ctx.pending.publishPages(pageCache, extentStatus, ctx.allocation)
        ctx.allocation.apply(to: state.space)
        return result
    }

    /// Which file data a commit writes first.
    enum CommitData {
        /// Everything dirty, delayed pages mapped first (sync, close, a commit to free memory).
        case all
        /// What the transaction needs (data=ordered): the files it wrote, and `file` (an fsync's).
        case ordered(file: UInt32?)
    }

    /// Commits the running transaction, then writes the superblock (free counts, write time) straight
    /// to the device. Nothing here allocates from the budget: a commit cannot fail for want of memory.
    func commitLocked(_ state: WriteState, force: Bool = false, flush: Bool = true, data: CommitData = .all) throws {
        let started = WriteLockCounters.now()
        let writtenBefore = pageCache?.statistics.pagesWritten ?? 0
        defer {
            let written = (pageCache?.statistics.pagesWritten ?? 0) - writtenBefore
            writeLockCounters.commit(nanoseconds: WriteLockCounters.now() - started, dataPages: written)
        }
        // Ordered data: file data goes to the device before the metadata that points at it. A page
        // whose write fails stays dirty and its error is the file's (fsync reports it). Delayed
        // pages get their blocks first.
        switch data {
        case .all:
            mapAllDelayed(state)
            pageCache?.writeBack(nil)
        case .ordered(let file):
            var files = state.orderedData
            if let file { files.insert(file) }
            mapAllDelayed(state, only: files)
            for n in files.sorted() { pageCache?.writeBack(n) }
        }
        guard force || state.transaction.dirtyBlocks > 0 else {
            // Nothing to commit, but data (the flusher's, or an unflushed commit's) may be written
            // and not yet durable: a flush is still owed.
            let written = pageCache?.statistics.pagesWritten ?? 0
            if flush && (state.unflushed || written != state.writtenAtFlush) {
                do { try device.flush() } catch {
                    let e = HoldfastError.wrap(error)
                    if state.pendingError == nil { state.pendingError = e }
                    throw e
                }
                state.unflushed = false
                state.writtenAtFlush = written
            }
            return
        }
        try commitTransaction(state, flush: flush)
    }

    /// The commit proper, data already written: the transaction's blocks and the superblock. An
    /// error is kept for sync, fsync or close to report, and thrown.
    func commitTransaction(_ state: WriteState, flush: Bool) throws {
        let writtenBefore = pageCache?.statistics.pagesWritten ?? 0
        do {
            try state.transaction.commit(flush: flush, superblock: { sealedSuperblock(state) },
                                         writeSuperblock: { try writeSuperblockHome($0) })
            if flush || state.transaction.journal != nil {
                state.unflushed = false
                state.writtenAtFlush = writtenBefore
            } else {
                state.unflushed = true
            }
            releaseFreed(state)
            state.orderedData.removeAll()
            commitTimer.disarm()
        } catch {
            let e = HoldfastError.wrap(error)
            if state.pendingError == nil { state.pendingError = e }
            throw e
        }
    }

    /// The commit that freed them is done: blocks freed since the last commit may be handed out,
    /// once no spliced read that may still be moving their old bytes is under way (SplicedRead.swift).
    func releaseFreed(_ state: WriteState) {
        guard state.space.freedUncommittedBlocks > 0 else { return }
        splicedReads.releasing {
            for (g, ranges) in state.space.freedUncommitted {
                buddies?.update(g) { buddy in for r in ranges { buddy.mark(r.start, r.count, taken: false) } }
            }
            state.space.freedUncommitted.removeAll()
            state.space.freedUncommittedBlocks = 0
        }
    }
}
