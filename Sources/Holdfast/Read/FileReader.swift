#if canImport(Glibc)
import Glibc
#endif
import HoldfastDevice
import HoldfastFormat
import HoldfastMemory

/// A piece of a file's contents, in order: bytes to use, or a range that reads as zeros.
public enum DataPiece {
    case data(offset: UInt64, bytes: UnsafeRawBufferPointer)
    case hole(offset: UInt64, length: UInt64)
}

extension Filesystem {
    /// The default size of the bounded read buffer (charged to the budget while a read runs).
    public static let readChunk = 1 << 20

    /// Streams bytes [from, min(to, size)) of a regular file or symlink in order, through one bounded buffer.
    /// Holes and unwritten extents come as `.hole`; nothing is ever read past i_size.
    public func streamData(_ inode: Inode, from: UInt64 = 0, to: UInt64 = .max, chunk: Int = Filesystem.readChunk,
                           _ body: (DataPiece) throws -> Void) throws(HoldfastError) {
        try guarded {
            try stream(inode, from: from, to: to, chunk: chunk) { piece in
                do { try body(piece) } catch let e as HoldfastError { throw e } catch { throw CallerError(error: error) }
            }
        }
    }

    func stream(_ given: Inode, from: UInt64, to: UInt64, chunk: Int, _ body: (DataPiece) throws -> Void) throws {
        var inode = given
        var end = min(to, inode.size)
        guard from < end else { return }
        if inode.hasInlineData {
            // Past the inline bytes a file reads as zeros, as the kernel's inline read path fills them.
            let data = try inlineData(inode)
            let dataEnd = min(end, UInt64(data.count))
            if from < dataEnd {
                try data[Int(from)..<Int(dataEnd)].withUnsafeBytes { try body(.data(offset: from, bytes: $0)) }
            }
            let holeStart = max(from, dataEnd)
            if holeStart < end { try body(.hole(offset: holeStart, length: end - holeStart)) }
            return
        }
        let bs = UInt64(blockSize)
        let maxLogical = (UInt64(1) << 32) * bs
        guard inode.size <= maxLogical || !inode.usesExtents else {
            throw CorruptionError(.inode, inode: inode.number, .outOfRange(field: "i_size", value: inode.size, limit: maxLogical))
        }
        // At most an eighth of the budget, so small budgets still read, in smaller pieces.
        let chunkBlocks = max(1, min(chunk, budget.limit / 8) / Int(bs))
        let bufferBytes = chunkBlocks * Int(bs)
        try budget.chargeOrThrow(bufferBytes, at: .readBuffer)
        defer { budget.uncharge(bufferBytes, for: .readBuffer) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferBytes, alignment: 4096)
        defer { buffer.deallocate() }
        // Pinned (after the buffer's charge, which may need to reclaim them): a page the flusher
        // writes, or a delayed page it maps, meanwhile is still there for the overlay, never read
        // as the stale block or the hole it replaced.
        pageCache?.beginRead(given.number)
        defer { pageCache?.endRead(given.number) }

        var position = from
        var restarts = 0
        var backoff = Backoff.racingReadRestarts
        while position < end {
            // A truncate or punch may free a block between the mapping and the read, and another
            // file may have it by then: a chunk counts only if the file's mapping did not move
            // since the epoch, taken before the inode is read afresh; else the walk starts over
            // from where it got to.
            let epoch = pageCache?.epoch(given.number)
            if pageCache != nil {
                inode = try currentInode(given)
                end = min(end, inode.size)
                guard position < end else { break }
            }
            let cached = pageCache?.hasPages(inode.number) ?? false
            var moved = false
            let unmoved = { [pageCache, number = inode.number] () -> Bool in
                guard let epoch, let pageCache, pageCache.epoch(number) != epoch else { return true }
                moved = true
                return false
            }
            do {
                try streamRuns(inode, from: &position, end: end, buffer: buffer, chunkBlocks: chunkBlocks, cached: cached, verify: unmoved, body)
            } catch let e as CorruptionError {
                // A tree block freed and reused while the walk read it reads as garbage: start over.
                guard !unmoved() else { throw e }
            }
            guard moved else { break }
            restarts += 1
            pageCache?.countRestart(fellBack: false)
            backoff.pause()
            if restarts >= 16, let writer {
                // Changes keep racing this read: one chunk under the write lock, where none runs.
                var piece: (bytes: Int, offset: UInt64)?
                try writer.withLock { _ in
                    try MemoryScope.noFS {
                        inode = try currentInode(given)
                        end = min(end, inode.size)
                        piece = try readChunk(inode, at: position, end: end, buffer: buffer, chunkBlocks: chunkBlocks)
                    }
                }
                if let piece {
                    let skip = Int(piece.offset % UInt64(blockSize))
                    try body(.data(offset: piece.offset, bytes: UnsafeRawBufferPointer(rebasing: buffer[skip..<(skip + piece.bytes)])))
                    position += UInt64(piece.bytes)
                }
                pageCache?.countRestart(fellBack: true)
                restarts = 0
            }
        }
    }

    /// Streams [position, end) of `inode` by its runs, advancing `position` past what `body` got.
    /// Each piece, data or hole, is given to `body` only if `verify` then accepts the mapping it
    /// came from (a hole may be a run an operation is moving); a refusal stops the walk there.
    private func streamRuns(_ inode: Inode, from position: inout UInt64, end: UInt64, buffer: UnsafeMutableRawBufferPointer,
                            chunkBlocks: Int, cached: Bool, verify: () -> Bool,
                            _ body: (DataPiece) throws -> Void) throws {
        let bs = UInt64(blockSize)
        var at = position
        defer { position = at }
        var refused = false
        /// Gives `piece` to the caller if the mapping still holds; false (and the walk stops) if not.
        func deliver(_ piece: DataPiece, length: Int) throws -> Bool {
            guard verify() else { refused = true; return false }
            try body(piece)
            at += UInt64(length)
            return true
        }
        /// A hole on disk; with pages cached, delayed pages (data without a block yet) may be in it.
        func hole(_ stop: UInt64) throws -> Bool {
            guard cached, let pageCache else { return try deliver(.hole(offset: at, length: stop - at), length: Int(stop - at)) }
            while at < stop {
                let skip = Int(at % bs)
                let blocks = min(UInt64(chunkBlocks), (stop - at + UInt64(skip) + bs - 1) / bs)
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(blocks * bs)])
                part.initializeMemory(as: UInt8.self, repeating: 0)
                let usable = min(Int(blocks * bs) - skip, Int(stop - at))
                let piece: DataPiece = pageCache.overlay(inode.number, first: at / bs, count: Int(blocks), into: part) > 0
                    ? .data(offset: at, bytes: UnsafeRawBufferPointer(rebasing: part[skip..<(skip + usable)]))
                    : .hole(offset: at, length: UInt64(usable))
                guard try deliver(piece, length: usable) else { return false }
            }
            return true
        }
        try forEachRun(inode, from: at / bs) { run in
            let runStart = run.logical * bs
            let runEnd = min((run.logical + run.length) * bs, end)
            if runStart >= end { return false }
            if runStart > at, !(try hole(runStart)) { return false }
            guard runEnd > at else { return true }
            if !run.hasData { return try deliver(.hole(offset: at, length: runEnd - at), length: Int(runEnd - at)) && at < end }
            while at < runEnd {
                let skip = Int(at % bs)
                let blocks = min(UInt64(chunkBlocks), (runEnd - at + UInt64(skip) + bs - 1) / bs)
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(blocks * bs)])
                try cache.read(blocks: run.physical! + (at / bs - run.logical), into: part)
                // Data written and not yet on the image is in the page cache.
                if cached { pageCache?.overlay(inode.number, first: at / bs, count: Int(blocks), into: part) }
                let usable = min(Int(blocks * bs) - skip, Int(runEnd - at))
                guard try deliver(.data(offset: at, bytes: UnsafeRawBufferPointer(rebasing: part[skip..<(skip + usable)])), length: usable) else { return false }
            }
            return at < end
        }
        if !refused && at < end { _ = try hole(end) }
    }

    /// Reads the chunk of `inode` at byte `position` (below `end`) into `buffer`, pages cached
    /// over it, for a caller holding the write lock. Returns the bytes of it the file has there
    /// (the chunk starts `position % blockSize` into the buffer); nil past the last block.
    private func readChunk(_ inode: Inode, at position: UInt64, end: UInt64, buffer: UnsafeMutableRawBufferPointer,
                           chunkBlocks: Int) throws -> (bytes: Int, offset: UInt64)? {
        guard position < end else { return nil }
        let bs = UInt64(blockSize)
        let skip = Int(position % bs)
        let blocks = min(UInt64(chunkBlocks), (end - position + UInt64(skip) + bs - 1) / bs)
        let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<Int(blocks * bs)])
        part.initializeMemory(as: UInt8.self, repeating: 0)
        let first = position / bs
        for run in try mappedData(inode, from: first, to: first + blocks) {
            let from = max(run.logical, first), to = min(run.logical + run.length, first + blocks)
            guard from < to else { continue }
            let into = UnsafeMutableRawBufferPointer(rebasing: part[Int((from - first) * bs)..<Int((to - first) * bs)])
            try cache.read(blocks: run.physical + (from - run.logical), into: into)
        }
        pageCache?.overlay(inode.number, first: first, count: Int(blocks), into: part)
        return (min(Int(blocks * bs) - skip, Int(end - position)), position)
    }

    /// Copies a regular file's contents into the host file `fd` without a user-space buffer; holes stay
    /// holes (the caller sets the size). Returns the bytes copied.
    @discardableResult
    public func copyData(_ inode: Inode, to fd: Int32) throws(HoldfastError) -> UInt64 {
        try guarded {
            // Inline data, or data still in the page cache: through the read buffer.
            if inode.hasInlineData || (pageCache?.hasPages(inode.number) ?? false) {
                var written: UInt64 = 0
                try stream(inode, from: 0, to: .max, chunk: Self.readChunk) { piece in
                    guard case .data(let offset, let bytes) = piece else { return }
                    try writeAll(fd, bytes, at: offset)
                    written += UInt64(bytes.count)
                }
                return written
            }
            let bs = UInt64(blockSize)
            let end = inode.size
            var copied: UInt64 = 0
            // The file's mapping must not move while its blocks are copied (a block a truncate
            // freed may be another file's by the time it is read): if it did, the copy starts
            // over through the stream, which checks each chunk.
            pageCache?.beginRead(inode.number, pinning: false)
            defer { pageCache?.endRead(inode.number, pinning: false) }
            let epoch = pageCache?.epoch(inode.number)
            let moved = { [pageCache] in epoch != nil && pageCache?.epoch(inode.number) != epoch }
            do {
                // The tree as it is after the epoch.
                let current = pageCache != nil ? try currentInode(inode) : inode
                let end = min(end, current.size)  // a truncate since the caller's lookup: its blocks past the new end are gone
                try forEachRun(current) { run in
                    let runStart = run.logical * bs
                    guard runStart < end else { return false }
                    guard run.hasData else { return true }
                    let length = min((run.logical + run.length) * bs, end) - runStart
                    try cache.copy(blocks: run.physical!, skip: 0, length: Int(length), to: fd, at: runStart)
                    copied += length
                    return true
                }
            } catch let e as CorruptionError {
                guard moved() else { throw e }  // a tree block reused while it was walked
            }
            guard moved(), let pageCache else { return copied }
            pageCache.countRestart(fellBack: true)
            guard ftruncate(fd, 0) == 0 else { throw DeviceError(.write, path: "output", offset: 0, errno: errno) }
            copied = 0
            try stream(try currentInode(inode), from: 0, to: .max, chunk: Self.readChunk) { piece in
                guard case .data(let offset, let bytes) = piece else { return }
                try writeAll(fd, bytes, at: offset)
                copied += UInt64(bytes.count)
            }
            return copied
        }
    }

    /// Reads up to `count` bytes at `offset` into a new array (zeros for holes), through the page
    /// cache: sequential reads read ahead (see `CachedRead.swift`).
    public func read(_ inode: Inode, offset: UInt64, count: Int) throws(HoldfastError) -> [UInt8] {
        let end = min(inode.size, offset + UInt64(count))
        guard offset < end else { return [] }
        var out = [UInt8](repeating: 0, count: Int(end - offset))
        try guarded { try out.withUnsafeMutableBytes { try readCached(inode, offset: offset, into: $0) } }
        return out
    }

    /// pread(2) into the caller's buffer: up to `into.count` bytes at `offset` (fewer at the end of
    /// the file, zeros for holes), through the page cache; returns how many. `caching: false` is
    /// for a caller with a cache of its own (the FUSE mount: the kernel keeps what it reads):
    /// pages in the cache are copied as always, the rest is read from the device straight into
    /// `buffer` and not kept, and there is no readahead.
    public func read(_ inode: Inode, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer, caching: Bool = true) throws(HoldfastError) -> Int {
        let end = min(inode.size, offset + UInt64(buffer.count))
        guard offset < end else { return 0 }
        let count = Int(end - offset)
        try guarded { try readCached(inode, offset: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<count]), caching: caching) }
        return count
    }

    /// Inline data: the first 60 bytes in i_block, the rest in the system.data xattr.
    func inlineData(_ inode: Inode) throws -> [UInt8] {
        var data = inode.blockArea
        if let region = inode.inlineXattrRegion {
            for (entry, value) in try Xattr.inodeBody(region, inode: inode.number)
            where entry.nameIndex == Xattr.systemIndex && entry.name == Array("data".utf8) {
                data += value
            }
        }
        return data
    }

    /// The target of a symbolic link: inline, fast (in i_block) or in a data block.
    public func readLink(_ inode: Inode) throws(HoldfastError) -> [UInt8] {
        try guarded {
            guard inode.fileType == .symlink else {
                throw HoldfastError.invalidArgument("inode \(inode.number) is not a symbolic link")
            }
            guard inode.size > 0, inode.size < UInt64(max(blockSize, 4096)) else {
                throw CorruptionError(.symlink, inode: inode.number, .outOfRange(field: "i_size", value: inode.size, limit: UInt64(blockSize)))
            }
            if inode.hasInlineData { return Array(try inlineData(inode).prefix(Int(inode.size))) }
            let eaSectors: UInt64 = inode.fileACL != 0 ? UInt64(superblock.clusterSize / 512) : 0
            if inode.size < 60 && inode.sectors(superblock) <= eaSectors {
                return Array(inode.blockArea.prefix(Int(inode.size)))
            }
            return try read(inode, offset: 0, count: Int(inode.size))
        }
    }
}
