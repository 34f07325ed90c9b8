import HoldfastFormat
import HoldfastMemory

/// Attribute changes for `setAttributes` (chmod, chown, utimens); nil leaves a field alone.
public struct AttributeChanges: Sendable {
    public var permissions: UInt16?
    public var uid: UInt32?
    public var gid: UInt32?
    public var accessTime: Timestamp?
    public var modificationTime: Timestamp?

    public init(permissions: UInt16? = nil, uid: UInt32? = nil, gid: UInt32? = nil,
                accessTime: Timestamp? = nil, modificationTime: Timestamp? = nil) {
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.accessTime = accessTime
        self.modificationTime = modificationTime
    }
}

/// Credits for directory operations: inode and bitmap blocks, descriptors, the directory's leaf,
/// index path and split blocks, and extent tree blocks on the way.
let directoryCredits = 32

/// Changing the image, by inode number. Every call is one operation: it completes, or it fails with
/// a typed error and leaves the image as it was. Changes reach the disk at `sync` or `close`, or
/// earlier when the running transaction grows past a quarter of the memory budget.
extension Filesystem {
    /// Creates a file, directory, symlink, device node, FIFO or socket named `name` in `parent`.
    @discardableResult
    public func create(_ name: [UInt8], in parent: UInt32, kind: NodeKind, owner: Ownership,
                       times: (access: Timestamp, modification: Timestamp)? = nil) throws(HoldfastError) -> UInt32 {
        try guarded {
            // A slow symlink's target is file data: its page is taken before the lock.
            var pages: [Page] = []
            if case .symlink(let target) = kind, target.count >= 60, pageCache != nil {
                pages.append(try budget.allocatePageOrThrow(at: .pageCachePage))
            }
            return try mutate(credits: directoryCredits, pages: pages) { ctx in
                try ctx.createNode(in: parent, name: name, kind: kind, owner: owner, display: String(decoding: name, as: UTF8.self), times: times)
            }
        }
    }

    /// Adds the hard link `name` in `parent` to the non-directory `inode`.
    public func link(_ inode: UInt32, in parent: UInt32, name: [UInt8]) throws(HoldfastError) {
        try guarded {
            try mutate(credits: directoryCredits) { ctx in
                try ctx.link(inode, in: parent, name: name, display: String(decoding: name, as: UTF8.self))
            }
        }
    }

    /// Removes a non-directory's name (unlink(2)); the last link frees the inode.
    public func unlink(_ name: [UInt8], in parent: UInt32) throws(HoldfastError) {
        try guarded {
            try mutate(credits: directoryCredits) { ctx in
                try ctx.remove(name, from: parent, directory: false, display: String(decoding: name, as: UTF8.self))
            }
        }
    }

    /// Removes an empty directory (rmdir(2)).
    public func removeDirectory(_ name: [UInt8], in parent: UInt32) throws(HoldfastError) {
        try guarded {
            try mutate(credits: directoryCredits) { ctx in
                try ctx.remove(name, from: parent, directory: true, display: String(decoding: name, as: UTF8.self))
            }
        }
    }

    /// Moves `oldName` in `oldParent` to `newName` in `newParent` (renameat2 semantics by `mode`).
    public func rename(_ oldName: [UInt8], in oldParent: UInt32, to newName: [UInt8], in newParent: UInt32, mode: RenameMode = .replace) throws(HoldfastError) {
        try guarded {
            try mutate(credits: directoryCredits * 2) { ctx in
                try ctx.rename(from: oldParent, oldName, to: newParent, newName, mode: mode, display: String(decoding: newName, as: UTF8.self))
            }
        }
    }

    /// Writes `data` at byte `offset` of a regular file, in steps of bounded size. Each step is an
    /// operation: a failure in the first changes nothing, a later one throws `partialWrite` with
    /// the bytes the earlier steps wrote (write(2)'s short count).
    public func write(_ inode: UInt32, at offset: UInt64, _ data: UnsafeRawBufferPointer) throws(HoldfastError) {
        try write(inode, at: offset, source: .memory(data))
    }

    /// Writes `count` bytes of the host file `fd`, from its byte `source`, at byte `offset` of a regular file.
    public func write(_ inode: UInt32, at offset: UInt64, fromFile fd: Int32, source: UInt64, count: Int) throws(HoldfastError) {
        try write(inode, at: offset, source: .file(fd: fd, offset: source, count: count))
    }

    /// `keepTimes` leaves mtime and ctime alone (import sets the source's times at creation).
    /// `delay`: holes get delayed pages, their blocks allocated at writeback (import writes each
    /// file whole in one call, so it allocates at once: no second handle per file).
    func write(_ inode: UInt32, at offset: UInt64, source data: DataSource, keepTimes: Bool = false, delay: Bool = true) throws(HoldfastError) {
        try guarded {
            let step = max(blockSize, min(8 << 20, budget.limit / 8))
            var done = 0
            repeat {
                let n = min(step, data.count - done)
                let part = data.slice(done, done + n)
                // Bitmaps and descriptors, plus a block map's indirect blocks (one per blockSize/4 blocks).
                let credits = 16 + 2 * (n / blockSize / (blockSize * 8) + 1) + n / blockSize / (blockSize / 4) + 3
                do {
                    let pages = try pagesForWrite(inode, at: offset + UInt64(done), count: n)
                    try mutate(credits: credits, pages: pages) { ctx in
                        var rec = try ctx.inode(inode)
                        guard FileType(mode: rec.mode) == .regular else {
                            throw FileType(mode: rec.mode) == .directory ? HoldfastError.isADirectory("inode \(inode)") : HoldfastError.invalidArgument("inode \(inode) is not a regular file")
                        }
                        try ctx.writeData(&rec, offset: offset + UInt64(done), source: part, delay: delay)
                        if !keepTimes {
                            let now = WriteContext.now()
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

    /// The pages a write of `count` bytes at `offset` will add to the cache, taken before the
    /// write lock; first the writer waits while dirty data is over its limit (the throttle).
    func pagesForWrite(_ inode: UInt32, at offset: UInt64, count: Int) throws -> [Page] {
        // A write past the largest file size is refused by the write itself, with its error.
        guard writer != nil, let pageCache, count > 0, offset < UInt64(UInt32.max) * UInt64(blockSize),
              UInt64(count) <= UInt64(UInt32.max) * UInt64(blockSize) - offset else { return [] }
        let bs = UInt64(blockSize)
        let first = offset / bs, end = (offset + UInt64(count) + bs - 1) / bs
        try pageCache.throttle()
        var pages: [Page] = []
        let needed = pageCache.missing(inode, first: first, count: end - first)
        pages.reserveCapacity(needed)
        var wroteBack = false
        while pages.count < needed {
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
        return pages
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
    public func truncate(_ inode: UInt32, to size: UInt64) throws(HoldfastError) {
        try truncate(inode, to: size, keepTimes: false)
    }

    func truncate(_ inode: UInt32, to size: UInt64, keepTimes: Bool) throws(HoldfastError) {
        try guarded {
            // A cut of many blocks runs in steps, with the file on the orphan list meanwhile: if it
            // stops part-way, the next open (Holdfast's or the kernel's) frees the rest.
            let stepped = try mutate(credits: 64) { ctx -> Bool in
                var rec = try ctx.inode(inode)
                let bs = UInt64(blockSize)
                guard FileType(mode: rec.mode) == .regular, size < rec.size,
                      try ctx.mappedEnd(rec) > (size + bs - 1) / bs + truncateStepBlocks else { return false }
                try ctx.truncateTail(&rec, to: size)
                if !ctx.isOrphan(inode) { ctx.addOrphan(&rec) }
                if !keepTimes {
                    let now = WriteContext.now()
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
                guard size <= UInt64(UInt32.max) * UInt64(blockSize) else { throw HoldfastError.invalidArgument("size \(size) is past the largest file size") }
                try ctx.truncateData(&rec, to: size)
                if !keepTimes {
                    let now = WriteContext.now()
                    rec.modificationTime = now
                    rec.changeTime = now
                }
                try ctx.store(rec)
            }
        }
    }

    /// fallocate(2): preallocate, punch a hole or zero a range of a regular file.
    public func fallocate(_ inode: UInt32, offset: UInt64, length: UInt64, mode: FallocateMode) throws(HoldfastError) {
        try guarded {
            try mutate(credits: 64) { ctx in
                var rec = try ctx.inode(inode)
                guard FileType(mode: rec.mode) == .regular else { throw HoldfastError.invalidArgument("inode \(inode) is not a regular file") }
                try ctx.fallocate(&rec, offset: offset, length: length, mode: mode)
                let now = WriteContext.now()
                if mode != .keepSize { rec.modificationTime = now }
                rec.changeTime = now
                try ctx.store(rec)
            }
        }
    }

    /// chmod, chown and utimens in one: the change time is always set to now.
    public func setAttributes(_ inode: UInt32, _ changes: AttributeChanges) throws(HoldfastError) {
        try guarded {
            try mutate(credits: 4) { ctx in
                var rec = try ctx.inode(inode)
                if let p = changes.permissions { rec.mode = rec.mode & 0xF000 | p & 0o7777 }
                if let u = changes.uid { rec.uid = u }
                if let g = changes.gid { rec.gid = g }
                if let a = changes.accessTime { rec.accessTime = a }
                if let m = changes.modificationTime { rec.modificationTime = m }
                rec.changeTime = WriteContext.now()
                try ctx.store(rec)
            }
        }
    }
}

/// The same operations by path inside the image (`/dir/name`).
extension Filesystem {
    /// The directory that holds the last component of `path`, and that component.
    public func parentAndName(_ path: String) throws(HoldfastError) -> (parent: UInt32, name: [UInt8]) {
        let parts = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map(Array.init)
        guard let name = parts.last else { throw HoldfastError.invalidArgument("\(path): the root has no parent") }
        let parentPath = "/" + parts.dropLast().map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
        let parent = try resolve(parentPath, followFinal: true)
        guard parent.fileType == .directory else { throw HoldfastError.notADirectory(parentPath) }
        if name.count > 255 { throw HoldfastError.nameTooLong(path) }
        return (parent.number, name)
    }

    @discardableResult
    public func create(path: String, kind: NodeKind, owner: Ownership) throws(HoldfastError) -> UInt32 {
        let (parent, name) = try parentAndName(path)
        do { return try create(name, in: parent, kind: kind, owner: owner) } catch { throw error.naming(path) }
    }

    /// mkdir -p: creates every missing directory along `path`; existing directories are fine.
    @discardableResult
    public func makeDirectories(path: String, owner: Ownership) throws(HoldfastError) -> UInt32 {
        var current = Filesystem.rootInode
        var shown = ""
        for part in path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map(Array.init) {
            shown += "/" + String(decoding: part, as: UTF8.self)
            let dir = try inode(current)
            if let existing = try lookup(part, in: dir) {
                let node = try inode(existing)
                guard node.fileType == .directory else { throw HoldfastError.notADirectory(shown) }
                current = existing
            } else {
                do { current = try create(part, in: current, kind: .directory, owner: owner) } catch { throw error.naming(shown) }
            }
        }
        return current
    }

    public func unlink(path: String) throws(HoldfastError) {
        let (parent, name) = try parentAndName(path)
        do { try unlink(name, in: parent) } catch { throw error.naming(path) }
    }

    public func removeDirectory(path: String) throws(HoldfastError) {
        let (parent, name) = try parentAndName(path)
        do { try removeDirectory(name, in: parent) } catch { throw error.naming(path) }
    }

    public func rename(path: String, to newPath: String, mode: RenameMode = .replace) throws(HoldfastError) {
        let (a, an) = try parentAndName(path)
        let (b, bn) = try parentAndName(newPath)
        do { try rename(an, in: a, to: bn, in: b, mode: mode) } catch { throw error.naming(newPath) }
    }

    public func link(existing: String, newPath: String) throws(HoldfastError) {
        let target = try resolve(existing)
        let (parent, name) = try parentAndName(newPath)
        do { try link(target.number, in: parent, name: name) } catch { throw error.naming(newPath) }
    }
}

extension HoldfastError {
    /// Puts the user's path in place of the bare name an inode-level call reported.
    func naming(_ path: String) -> HoldfastError {
        switch self {
        case .exists: .exists(path)
        case .notEmpty: .notEmpty(path)
        case .nameTooLong: .nameTooLong(path)
        case .notFound: .notFound(path)
        case .notADirectory: .notADirectory(path)
        case .isADirectory: .isADirectory(path)
        case .tooManyLinks: .tooManyLinks(path)
        case .wouldLoop: .wouldLoop(path)
        default: self
        }
    }
}
