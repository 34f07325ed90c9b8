import HoldfastFormat
import HoldfastMemory

/// File contents by inode number: writes, truncate, fallocate. Each call is one operation (a
/// large write one per step): it completes, or fails with a typed error and changes nothing.
extension Filesystem {
    /// Writes `data` at byte `offset` of a regular file, in steps of bounded size. Each step is an
    /// operation: a failure in the first changes nothing, a later one throws `partialWrite` with
    /// the bytes the earlier steps wrote (write(2)'s short count).
    /// `dropSetID`: the caller lacks CAP_FSETID, so the write also drops setuid, and setgid where
    /// group-execute is set (PrivilegeRules.swift).
    public func write(_ inode: UInt32, at offset: UInt64, _ data: UnsafeRawBufferPointer, dropSetID: Bool = false) throws(HoldfastError) {
        try write(inode, at: offset, source: .memory(data), dropSetID: dropSetID)
    }

    /// Writes `count` bytes of the host file `fd`, from its byte `source`, at byte `offset` of a regular file.
    /// `keepTimes` leaves mtime, ctime and file capabilities alone (an import sets the source's
    /// times and xattrs itself);
    /// `delayAllocation: false` allocates the blocks now rather than at writeback (an import
    /// writes each file whole in one call, so it needs no second handle per file).
    public func write(_ inode: UInt32, at offset: UInt64, fromFile fd: Int32, source: UInt64, count: Int,
                      keepTimes: Bool = false, delayAllocation: Bool = true) throws(HoldfastError) {
        try write(inode, at: offset, source: .file(fd: fd, offset: source, count: count), keepTimes: keepTimes, delay: delayAllocation)
    }

    /// `keepTimes` leaves mtime, ctime and file capabilities alone (an import restores them);
    /// otherwise the write drops the capabilities, as the kernel's does (PrivilegeRules.swift).
    /// `delay`: holes get delayed pages, their blocks allocated at writeback (import writes each
    /// file whole in one call, so it allocates at once: no second handle per file).
    func write(_ inode: UInt32, at offset: UInt64, source data: DataSource, keepTimes: Bool = false, delay: Bool = true,
               dropSetID: Bool = false) throws(HoldfastError) {
        // A write that starts below the largest file size and runs past it writes what fits and
        // says so (write(2)'s short count, as generic_write_checks clips it); one that starts at or
        // past it is EFBIG, from the write itself.
        let reach = UInt64(UInt32.max) * UInt64(blockSize)
        if offset < reach, UInt64(data.count) > reach - offset {
            let fits = Int(reach - offset)
            try write(inode, at: offset, source: data.slice(0, fits), keepTimes: keepTimes, delay: delay, dropSetID: dropSetID)
            throw .partialWrite(written: fits, requested: data.count, cause: .fileTooLarge(.inode(inode)))
        }
        try guarded {
            let step = max(blockSize, min(8 << 20, budget.limit / 8))
            var done = 0
            repeat {
                let n = min(step, data.count - done)
                let part = data.slice(done, done + n)
                // Bitmaps and descriptors, plus a block map's indirect blocks (one per blockSize/4 blocks).
                let credits = 16 + 2 * (n / blockSize / (blockSize * 8) + 1) + n / blockSize / (blockSize / 4) + 3
                do {
                    prefetchForWrite(inode, at: offset + UInt64(done), count: n)
                    let (pages, ready) = try pagesForWrite(inode, at: offset + UInt64(done), source: part)
                    try mutate(credits: credits, pages: pages, ready: ready) { ctx in
                        var rec = try ctx.inode(inode)
                        guard FileType(mode: rec.mode) == .regular else {
                            throw FileType(mode: rec.mode) == .directory ? HoldfastError.isADirectory(.inode(inode)) : HoldfastError.invalidArgument("inode \(inode) is not a regular file")
                        }
                        if done == 0 && !keepTimes { try ctx.dropFileCapabilities(&rec) }
                        if done == 0 && dropSetID { ctx.dropSetIDBits(&rec) }
                        try ctx.writeData(&rec, offset: offset + UInt64(done), source: part, delay: delay)
                        if !keepTimes {
                            let now = Operation.now()
                            rec.modificationTime = now
                            rec.changeTime = now
                        }
                        try ctx.store(rec)
                    }
                } catch {
                    // Each step is an operation of its own: those before this one stay, and say so.
                    guard done > 0 else { throw error }
                    throw HoldfastError.partialWrite(written: done, requested: data.count, cause: HoldfastError.wrap(error))
                }
                done += n
            } while done < data.count
        }
    }

    /// Reads before the write lock what a write of `count` bytes at `offset` would otherwise read
    /// under it: the inode, and as clean pages (their mapping with them) the blocks the write
    /// covers only in part and the old last block, whose tail a write past the end zeroes. The
    /// write lock is then held for work in memory, and a write waiting for the disk holds up no
    /// change to other files. Best effort: what is gone again by the time the lock is taken is
    /// read under it, as before. A write of whole blocks inside the file reads nothing here.
    func prefetchForWrite(_ number: UInt32, at offset: UInt64, count: Int) {
        guard writer != nil, let pageCache, count > 0,
              let node = try? inode(number), node.fileType == .regular, !node.hasInlineData else { return }
        let bs = UInt64(blockSize)
        let end = offset + UInt64(count)
        guard end > offset, end / bs < UInt64(UInt32.max) else { return }
        let candidates = [offset % bs != 0 ? offset / bs : nil,
                          end % bs != 0 ? end / bs : nil,
                          node.size % bs != 0 && end > node.size ? node.size / bs : nil]
        var block: [UInt8] = []
        for case let b? in candidates where b * bs < node.size && !pageCache.hasPage(number, b) {
            // The block's bytes up to the end of the file (a read never passes i_size); its page
            // holds the whole block.
            if block.isEmpty { block = [UInt8](repeating: 0, count: blockSize) }
            let part = Int(min(bs, node.size - b * bs))
            _ = try? block.withUnsafeMutableBytes { try readCached(node, offset: b * bs, into: UnsafeMutableRawBufferPointer(rebasing: $0[..<part])) }
        }
    }

    /// The pages a write of `data` at `offset` will add to the cache, taken before the write lock;
    /// first the writer waits while dirty data is over its limit (the throttle). The blocks the
    /// write covers whole and the cache lacks are filled here (`ready`, by block): the copy, and
    /// a fresh page's first touch, then hold up no change to other files. Under the lock
    /// `PageCache.hold` puts them in place where their blocks are still absent; the rest go back.
    func pagesForWrite(_ inode: UInt32, at offset: UInt64, source data: DataSource) throws -> (blank: [Page], ready: [UInt64: Page]) {
        // A write past the largest file size is refused by the write itself, with its error.
        let count = data.count
        guard writer != nil, let pageCache, count > 0, offset < UInt64(UInt32.max) * UInt64(blockSize),
              UInt64(count) <= UInt64(UInt32.max) * UInt64(blockSize) - offset else { return ([], [:]) }
        let bs = UInt64(blockSize)
        let first = offset / bs, end = (offset + UInt64(count) + bs - 1) / bs
        try pageCache.throttle()
        let absent = pageCache.absent(inode, first: first, count: end - first)
        var pages: [Page] = []
        pages.reserveCapacity(absent.count)
        var wroteBack = false
        while pages.count < absent.count {
            if let p = budget.allocatePage(at: .pageCachePage) { pages.append(p); continue }
            // Memory is full of dirty pages the flusher has not reached: write them back here
            // once (they become reclaimable), then try again before reporting ENOMEM.
            if !wroteBack && pageCache.statistics.dirtyPages > 0 {
                wroteBack = true
                pageCache.flushAll()
                continue
            }
            for p in pages { budget.freePage(p, for: .pageCachePage) }
            throw OutOfMemoryError(site: .pageCachePage, bytes: budget.pageSize, limit: budget.limit)
        }
        // Whole blocks only (a partial one keeps bytes the lock's holder reads or zeroes), and not
        // for an inline file, whose conversion writes its old bytes first.
        let whole = absent.filter { $0 * bs >= offset && ($0 + 1) * bs <= offset + UInt64(count) }
        guard !whole.isEmpty, let node = try? self.inode(inode), !node.hasInlineData else { return (pages, [:]) }
        var ready: [UInt64: Page] = [:]
        ready.reserveCapacity(whole.count)
        var k = 0
        do {
            // One read of the source per run of neighbouring blocks.
            while k < whole.count {
                var e = k + 1
                while e < whole.count && whole[e] == whole[e - 1] + 1 { e += 1 }
                let run = whole[k..<e].map { b -> (UInt64, Page) in (b, pages.removeLast()) }
                for (b, page) in run { ready[b] = page }
                let from = Int(whole[k] * bs - offset)
                try data.slice(from, from + (e - k) * blockSize).read(into: run.map { UnsafeMutableRawBufferPointer(rebasing: budget.bytes($0.1)[..<blockSize]) })
                k = e
            }
        } catch {
            for p in pages { budget.freePage(p, for: .pageCachePage) }
            for p in ready.values { budget.freePage(p, for: .pageCachePage) }
            throw error
        }
        return (pages, ready)
    }

    /// Writes `data` at byte `offset` of a regular file.
    public func write(_ inode: UInt32, at offset: UInt64, _ data: [UInt8]) throws(HoldfastError) {
        var failure: HoldfastError?
        data.withUnsafeBytes { buffer in
            do throws(HoldfastError) { try write(inode, at: offset, buffer) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Sets a regular file's size: blocks past a smaller size are freed, a larger size leaves a hole.
    /// `keepTimes` leaves mtime, ctime and file capabilities alone (an import); otherwise the
    /// capabilities go, as the kernel's truncate drops them. `dropSetID` as for `write`.
    /// `permissions`, when given, replace the mode's permission bits in the same operation (the
    /// mount's set-id clearing, which knows the caller's groups and so may clear more than
    /// `dropSetID`): a crash never leaves the size changed and the bits not.
    public func truncate(_ inode: UInt32, to size: UInt64, keepTimes: Bool = false, dropSetID: Bool = false,
                         permissions: UInt16? = nil) throws(HoldfastError) {
        try guarded {
            // A cut of many blocks runs in steps, with the file on the orphan list meanwhile: if it
            // stops part-way, the next open (Holdfast's or the kernel's) frees the rest.
            let stepped = try mutate(credits: 64) { ctx -> Bool in
                var rec = try ctx.inode(inode)
                let bs = UInt64(blockSize)
                guard FileType(mode: rec.mode) == .regular, size <= rec.size,
                      try ctx.mappedEnd(rec) > (size + bs - 1) / bs + truncateStepBlocks else { return false }
                if !keepTimes { try ctx.dropFileCapabilities(&rec) }
                if dropSetID { ctx.dropSetIDBits(&rec) }
                if let permissions { rec.mode = rec.mode & ~0o7777 | permissions & 0o7777 }
                try ctx.truncateTail(&rec, to: size)
                if !ctx.isOrphan(inode) { try ctx.addOrphan(&rec) }
                if !keepTimes {
                    let now = Operation.now()
                    rec.modificationTime = now
                    rec.changeTime = now
                }
                try ctx.store(rec)
                return true
            }
            if stepped {
                try cutToSize(inode)
                let stillOpenUnlinked = try readInode(inode).linksCount == 0
                if !stillOpenUnlinked {
                    try mutate(credits: directoryCredits) { ctx in
                        var rec = try ctx.inode(inode)
                        guard ctx.isOrphan(inode) else { return }
                        try ctx.removeOrphan(&rec)
                        try ctx.store(rec)
                    }
                }
                return
            }
            try mutate(credits: 64) { ctx in
                var rec = try ctx.inode(inode)
                guard FileType(mode: rec.mode) == .regular else {
                    throw HoldfastError.invalidArgument("inode \(inode) is not a regular file")
                }
                guard size <= UInt64(UInt32.max) * UInt64(blockSize) else { throw HoldfastError.fileTooLarge(.inode(inode)) }
                if !keepTimes { try ctx.dropFileCapabilities(&rec) }
                if dropSetID { ctx.dropSetIDBits(&rec) }
                if let permissions { rec.mode = rec.mode & ~0o7777 | permissions & 0o7777 }
                try ctx.truncateData(&rec, to: size)
                if !keepTimes {
                    let now = Operation.now()
                    rec.modificationTime = now
                    rec.changeTime = now
                }
                try ctx.store(rec)
            }
        }
    }

    /// fallocate(2): preallocate, punch a hole or zero a range of a regular file. Drops the file's
    /// capabilities, as the kernel's does. (The mount's kernel sends the set-id clearing of a
    /// fallocate as a setattr of its own.)
    public func fallocate(_ inode: UInt32, offset: UInt64, length: UInt64, mode: FallocateMode) throws(HoldfastError) {
        try guarded {
            try mutate(credits: 64) { ctx in
                var rec = try ctx.inode(inode)
                guard FileType(mode: rec.mode) == .regular else { throw HoldfastError.invalidArgument("inode \(inode) is not a regular file") }
                try ctx.dropFileCapabilities(&rec)
                try ctx.fallocate(&rec, offset: offset, length: length, mode: mode)
                // Every mode changes both times, as the kernel's ext4 does (KEEP_SIZE too).
                let now = Operation.now()
                rec.modificationTime = now
                rec.changeTime = now
                try ctx.store(rec)
            }
        }
    }
}
