import HoldfastMemory

extension AllocationSite {
    public static let pageCacheRead = AllocationSite("pagecache.read", .mayFail, .page,
        "a page a read fills from the device; without one the read goes around the cache")
    public static let readahead = AllocationSite("pagecache.readahead", .mayFail, .page,
        "a page read ahead of a sequential reader; short of memory the read simply reads less")
}

/// Reads through the cache.
///
/// A read maps the blocks it wants (its own and a readahead window), then puts placeholder pages
/// (`reading`) in the cache for the mapped blocks it lacks and fills them from the device with the
/// lock let go. Writers wait for placeholders as they wait for writeback, so a page is never
/// changed under a read that fills it. A `drop` (truncate, punch, unlink) meanwhile takes them
/// away: the read then caches nothing and starts over, since the blocks it mapped may have gone to
/// another file by then. Holes and unwritten extents are not cached: they read as zeros.
extension PageCache {
    /// A page a read fills: logical block `index` from device block `physical`. Its bytes are
    /// reached through `withBytes(of:)` until `finishRead` or `abandonRead`.
    public struct ReadSlot {
        public let index: UInt64
        public let physical: UInt64
        let page: Page
    }

    /// The bytes of `slots`, in order, for the length of `body`: placeholders no one else
    /// touches until the read settles them. The buffers must not outlive `body`.
    public func withBytes<R, E: Error>(of slots: ArraySlice<ReadSlot>, _ body: ([UnsafeMutableRawBufferPointer]) throws(E) -> R) throws(E) -> R {
        try body(slots.map { budget.bytes($0.page) })
    }

    /// What a read of blocks [first, end) should bring in.
    public struct ReadPlan {
        /// Fill [first, fillEnd): the read's own blocks and the readahead window after them.
        public let fillEnd: UInt64
        /// Pages missing among the read's own blocks, and in the readahead part.
        public let missingDemand: Int
        public let missingAhead: Int
    }

    /// Plans a read of logical blocks [first, end) of a file of `limit` blocks. A read that starts
    /// where the last one ended (or in its last block) is sequential: its first gets a window of twice its size, and each
    /// read that reaches into the last window starts the next one, twice as large, up to
    /// `maxWindow` blocks (so readahead comes in a few large reads, not one per call). Any other
    /// read resets the window and reads just its own blocks.
    public func readPlan(_ inode: UInt32, first: UInt64, end: UInt64, limit: UInt64, maxWindow: UInt64) -> ReadPlan {
        state.withLock { s in
            let file = s.file(inode)
            var fillEnd = end
            // Sequential: starting where the last read ended, or in the block it ended in
            // (reads that are not block-aligned share their edge blocks).
            if first == file.nextRead || (file.nextRead > 0 && first == file.nextRead - 1) {
                if file.windowSize == 0 {
                    file.windowSize = min(max(4, 2 * (end - first)), maxWindow)
                    file.windowStart = end
                    fillEnd = end + file.windowSize
                } else if end > file.windowStart {
                    file.windowStart = max(file.windowStart + file.windowSize, end)
                    file.windowSize = min(2 * file.windowSize, maxWindow)
                    fillEnd = file.windowStart + file.windowSize
                }
            } else {
                file.windowSize = 0
            }
            file.nextRead = end
            fillEnd = max(end, min(fillEnd, limit))
            var demand = 0, ahead = 0
            for i in first..<fillEnd where file.pages[i] == nil {
                if i < end { demand += 1 } else { ahead += 1 }
            }
            s.forgetIfEmpty(inode, file)
            return ReadPlan(fillEnd: fillEnd, missingDemand: demand, missingAhead: ahead)
        }
    }

    /// What a read notes before it maps blocks: the drops so far and the file's completed writebacks.
    public struct ReadEpoch: Equatable {
        let file: PageCacheState.FileState?
        let changes: UInt64
        /// An operation was changing the mapping: no epoch taken or checked then is good.
        let busy: Bool

        public static func == (a: ReadEpoch, b: ReadEpoch) -> Bool {
            a.file === b.file && a.changes == b.changes && !a.busy && !b.busy
        }
    }

    /// With the state's lock held.
    func currentEpoch(_ s: PageCacheState, _ inode: UInt32) -> ReadEpoch {
        let file = s.files[inode]
        return ReadEpoch(file: file, changes: file?.changes ?? 0, busy: (file?.remapping ?? 0) > 0)
    }

    /// An operation (under the write lock) starts changing the mapping of `inode`: the tree is
    /// visible to reads as it changes, and may name blocks whose data is not written yet.
    public func beginRemap(_ inode: UInt32) {
        state.withLock { $0.file(inode).remapping += 1 }
    }

    /// The operation ended (published or rolled back): reads that overlapped it start over.
    public func endRemap(_ inode: UInt32) {
        state.withLock { s in
            guard let file = s.files[inode] else { return }
            file.remapping -= 1
            file.changes += 1
            s.forgetIfEmpty(inode, file)
        }
    }

    /// Between `beginRead(pinning: false)` and `endRead(pinning: false)`.
    public func epoch(_ inode: UInt32) -> ReadEpoch {
        state.withLock { s in currentEpoch(s, inode) }
    }

    /// Placeholders for the blocks of `runs` (logical, length, device block) that have no page, in
    /// order, from `spare` while it lasts. The caller fills them and calls `finishRead`.
    public func beginFill(_ inode: UInt32, runs: [(logical: UInt64, length: UInt64, physical: UInt64)],
                          spare: inout [Page]) -> [ReadSlot] {
        state.withLock { s in
            guard !spare.isEmpty else { return [] }
            let file = s.file(inode)
            var slots: [ReadSlot] = []
            for run in runs {
                for k in 0..<run.length where file.pages[run.logical + k] == nil {
                    guard let page = spare.popLast() else { return slots }
                    let index = run.logical + k
                    file.pages[index] = .init(page: page, physical: run.physical + k, reading: true)
                    s.cachedPages += 1
                    slots.append(ReadSlot(index: index, physical: run.physical + k, page: page))
                }
            }
            return slots
        }
    }

    /// Completes the read's placeholders and copies what the cache holds of bytes
    /// [offset, offset + out.count) of the file into `out` (block `index` at its byte offset).
    /// After a drop of the file's pages, or blocks given to its delayed pages, since `epoch` the placeholders go, nothing is copied and the result is nil: the
    /// read starts over. Otherwise the result says which blocks of the range were copied; the
    /// others are holes, or blocks the read could not cache.
    public func finishRead(_ inode: UInt32, _ slots: [ReadSlot], epoch: ReadEpoch,
                           offset: UInt64, into out: UnsafeMutableRawBufferPointer) -> [Bool]? {
        var freed: [Page] = []
        defer { for p in freed { budget.freePage(p, for: .pageCacheRead) } }
        return state.withLock { s -> [Bool]? in
            // A drop, or blocks given to delayed pages, since the mapping was read: start over.
            let keep = epoch == currentEpoch(s, inode)
            settle(&s, inode, slots, keep: keep, freed: &freed)
            guard keep else { return nil }
            let bs = UInt64(blockSize)
            let first = offset / bs, end = (offset + UInt64(out.count) + bs - 1) / bs
            var copied = [Bool](repeating: false, count: Int(end - first))
            guard let file = s.files[inode], !file.pages.isEmpty else { return copied }
            var hits = 0
            for i in first..<end {
                guard let p = file.pages[i], p.uptodate, !p.reading else { continue }
                let from = max(offset, i * bs), to = min(offset + UInt64(out.count), (i + 1) * bs)
                let source = UnsafeRawBufferPointer(budget.bytes(p.page))
                UnsafeMutableRawBufferPointer(rebasing: out[Int(from - offset)..<Int(to - offset)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: source[Int(from - i * bs)..<Int(to - i * bs)]))
                copied[Int(i - first)] = true
                hits += 1
            }
            let demandFilled = slots.filter { $0.index < end }.count
            s.counters.readHits += hits - demandFilled
            s.counters.readMisses += demandFilled
            s.counters.readaheadPages += slots.count - demandFilled
            return copied
        }
    }

    /// The device failed the read: its placeholders go.
    public func abandonRead(_ inode: UInt32, _ slots: [ReadSlot]) {
        var freed: [Page] = []
        state.withLock { s in settle(&s, inode, slots, keep: false, freed: &freed) }
        for p in freed { budget.freePage(p, for: .pageCacheRead) }
    }

    /// With the state's lock held: placeholders become clean pages (`keep`) or go; pages a drop
    /// already took out of the map are only freed. Writers waiting for them wake as the lock goes.
    private func settle(_ s: inout PageCacheState, _ inode: UInt32, _ slots: [ReadSlot], keep: Bool, freed: inout [Page]) {
        let file = s.files[inode]
        for slot in slots {
            guard let file, let p = file.pages[slot.index], p.page == slot.page else {
                freed.append(slot.page)
                continue
            }
            if keep {
                file.pages[slot.index]!.reading = false
                file.pages[slot.index]!.uptodate = true
                file.pages[slot.index]!.queued = true
                s.cleanQueue.append((inode, slot.index))
            } else {
                file.pages[slot.index] = nil
                s.cachedPages -= 1
                freed.append(slot.page)
            }
        }
        if let file { s.forgetIfEmpty(inode, file) }
    }

    /// Counts a read that started over, or gave up on the cache (`fellBack`).
    public func countRestart(fellBack: Bool) {
        state.withLock { s in if fellBack { s.counters.readFallbacks += 1 } else { s.counters.readRestarts += 1 } }
    }

    /// Counts a read that went around the cache for want of pages (`blocks` blocks), and a
    /// readahead cut short for want of memory.
    public func countShortRead(uncachedBlocks: Int, readaheadCut: Bool) {
        state.withLock { s in
            s.counters.uncachedBlocks += uncachedBlocks
            if readaheadCut { s.counters.readaheadCut += 1 }
        }
    }
}
