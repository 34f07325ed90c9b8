#if canImport(Glibc)
import Glibc
#endif
import HoldfastDevice
import HoldfastFormat
import HoldfastMemory

/// Where written bytes come from: memory, or a range of a host file that the device can copy
/// without a user-space buffer (import and mkfs --from).
enum DataSource {
    case memory(UnsafeRawBufferPointer)
    case file(fd: Int32, offset: UInt64, count: Int)

    var count: Int {
        switch self {
        case .memory(let b): b.count
        case .file(_, _, let n): n
        }
    }

    /// The part of the source for file bytes [from, to) when the source starts at file byte `base`.
    func slice(_ from: Int, _ to: Int) -> DataSource {
        switch self {
        case .memory(let b): .memory(UnsafeRawBufferPointer(rebasing: b[from..<to]))
        case .file(let fd, let offset, _): .file(fd: fd, offset: offset + UInt64(from), count: to - from)
        }
    }

    /// Copies the source into `pieces`, back to back (their lengths sum to the source's): one
    /// preadv per call from a host file, straight into page-cache pages.
    func read(into pieces: [UnsafeMutableRawBufferPointer]) throws {
        switch self {
        case .memory(let b):
            var at = 0
            for piece in pieces {
                piece.copyMemory(from: UnsafeRawBufferPointer(rebasing: b[at..<(at + piece.count)]))
                at += piece.count
            }
        case .file(let fd, let offset, _):
            do { try Syscall.readFully(fd, scattering: pieces, at: offset) } catch { throw Self.sourceError(error) }
        }
    }

    /// Copies the source into `buffer` (the same length).
    func read(into buffer: UnsafeMutableRawBufferPointer) throws {
        switch self {
        case .memory(let b):
            buffer.copyMemory(from: b)
        case .file(let fd, let offset, let count):
            do { try Syscall.readFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]), at: offset) } catch {
                throw Self.sourceError(error)
            }
        }
    }

    /// A host file that could not be read, or that ended before the bytes it was to give.
    private static func sourceError(_ error: Syscall.TransferError) -> HoldfastError {
        switch error {
        case .failed(let e, _): .hostFile(path: "source file", operation: "read", errno: e)
        case .endOfFile: .hostFile(path: "source file", operation: "read (file shrank)", errno: EIO)
        }
    }
}

/// File contents: writes at an offset (allocating what is not mapped) and truncation. Data goes into
/// the page cache; the commit writes it to the device before the metadata that points at it.
extension Operation {
    /// Blocks assembled per device write.
    var writeChunkBlocks: Int { max(1, min(256, fs.budget.limit / 8 / blockSize)) }

    /// Where a new block for `rec` at logical `logical` should go: after the block mapped before it,
    /// else the start of the inode's group.
    func dataGoal(_ rec: InodeRecord, logical: UInt64) throws -> UInt64 {
        var goal: UInt64?
        if logical > 0 {
            try fs.forEachRun(try decoded(rec)) { run in
                guard run.logical < logical else { return false }
                if let p = run.physical { goal = p + min(run.length, logical - run.logical) }
                return true
            }
        }
        if let goal { return goal }
        return fs.geometry.groupFirstBlock(UInt64(group(ofInode: rec.number)))
    }

    /// The mapped runs that meet [first, end), in order.
    func mappedRuns(_ rec: InodeRecord, from first: UInt64, to end: UInt64) throws -> [BlockRun] {
        var runs: [BlockRun] = []
        try fs.forEachRun(try decoded(rec), from: first) { run in
            guard run.logical < end else { return false }
            runs.append(run)
            return true
        }
        return runs
    }

    /// Writes `data` at byte `offset` of the file, mapping holes with new blocks.
    func writeData(_ rec: inout InodeRecord, offset: UInt64, data: UnsafeRawBufferPointer) throws {
        try writeData(&rec, offset: offset, source: .memory(data))
    }

    /// With `delay`, holes of an extent-mapped regular file get delayed pages (space reserved, the
    /// blocks allocated at writeback in one run per stretch); without, blocks now.
    func writeData(_ rec: inout InodeRecord, offset: UInt64, source data: DataSource, delay: Bool = false) throws {
        guard data.count > 0 else { return }
        let bs = UInt64(blockSize)
        let limit = UInt64(UInt32.max) * bs
        guard UInt64(data.count) <= limit, offset <= limit - UInt64(data.count) else {
            throw HoldfastError.fileTooLarge(.inode(rec.number))
        }
        let end = offset + UInt64(data.count)
        try checkFileSize(rec, end)
        if try writeInline(&rec, offset: offset, source: data) { return }
        let delayed = delay && delaysAllocation(rec)
        if end > rec.size { try zeroPastEnd(rec) }
        let firstBlock = offset / bs, endBlock = (end + bs - 1) / bs
        let runs = try mappedRuns(rec, from: firstBlock, to: endBlock)
        var logical = firstBlock
        var r = 0
        var goal: UInt64?
        while logical < endBlock {
            while r < runs.count, runs[r].logical + runs[r].length <= logical { r += 1 }
            let physical: UInt64
            var length: UInt64
            var fresh = false
            if r < runs.count, runs[r].logical <= logical {
                physical = runs[r].physical! + (logical - runs[r].logical)
                length = min(runs[r].logical + runs[r].length, endBlock) - logical
                if runs[r].unwritten {
                    // Preallocated blocks read as zeros: written, they become initialized extents
                    // (partial blocks are zero-filled, never read).
                    if try !markWritten(logical, logical + length, of: &rec) {
                        try unmapRange(logical, logical + length, of: &rec, free: false)
                        try insertExtent(Extent(logical: UInt32(logical), length: UInt16(length), physical: physical, unwritten: false), into: &rec)
                    }
                    fresh = true
                }
            } else if delayed {
                let holeEnd = r < runs.count ? min(runs[r].logical, endBlock) : endBlock
                try writeBlocks(rec.number, logical: logical, physical: nil, count: holeEnd - logical, fresh: true, offset: offset, data: data)
                logical = holeEnd
                continue
            } else {
                let holeEnd = r < runs.count ? min(runs[r].logical, endBlock) : endBlock
                let want = min(holeEnd - logical, UInt64(ExtentNodeEncoding.maxLength(unwritten: false)))
                let g = try goal ?? dataGoal(rec, logical: logical)
                let appending = r >= runs.count && logical >= rec.size / bs
                let (start, got) = try allocateData(rec, logical: logical, want: Int(want), goal: g, appending: appending)
                try mapNewRun(logical: logical, physical: start, count: got, into: &rec)
                physical = start
                length = UInt64(got)
                fresh = true
            }
            goal = physical + length
            try writeBlocks(rec.number, logical: logical, physical: physical, count: length, fresh: fresh, offset: offset, data: data)
            logical += length
        }
        if end > rec.size { rec.size = end }
    }

    /// Fills blocks [logical, logical+count) at `physical` with the part of `data` that falls in
    /// them, in page-cache pages that the operation holds until it ends (the flusher writes them
    /// later). Partial blocks keep their old bytes (or zeros when freshly allocated).
    private func writeBlocks(_ inode: UInt32, logical: UInt64, physical: UInt64?, count: UInt64, fresh: Bool, offset: UInt64, data: DataSource) throws {
        guard let cache = fs.pageCache else { throw HoldfastError.readOnly(["no page cache"]) }
        let bs = UInt64(blockSize)
        let chunk = UInt64(writeChunkBlocks)
        var done: UInt64 = 0
        while done < count {
            let n = min(chunk, count - done)
            let blockStart = (logical + done) * bs
            let from = max(blockStart, offset), to = min(blockStart + n * bs, offset + UInt64(data.count))
            let pages = try cache.hold(inode, first: logical + done, count: n, physical: physical.map { $0 + done },
                                       spare: &pending.spare, ready: &pending.ready)
            pending.heldPages[inode, default: []].append(contentsOf: pages.map { ($0.index, $0.isNew) })
            if physical == nil {
                // New delayed pages reserve their blocks now: no space is an error of this write,
                // never of a writeback that cannot report it.
                try reserveDelayed(pages.reduce(0) { $0 + ($1.isNew ? 1 : 0) })
                pending.delayedRuns.append((inode, logical + done, n))
            }
            // The part of each page the source covers; new pages get their other bytes first.
            // Prefilled pages hold their whole blocks already: the source is read around them.
            try cache.withBytes(of: pages) { buffers throws in
                var pieces: [UnsafeMutableRawBufferPointer] = []
                pieces.reserveCapacity(pages.count)
                var piecesFrom = from
                for (k, (page, bytes)) in zip(pages, buffers).enumerated() {
                    let start = blockStart + UInt64(k) * bs
                    if page.prefilled {
                        if !pieces.isEmpty { try data.slice(Int(piecesFrom - offset), Int(start - offset)).read(into: pieces) }
                        pieces.removeAll(keepingCapacity: true)
                        piecesFrom = start + bs
                        continue
                    }
                    let head = Int(max(from, start) - start), tail = Int(min(to, start + bs) - start)
                    // On a block mapped just now, a clean page a read left holds the block's old bytes,
                    // not the file's: its uncovered part is zeros too. (Delayed pages, physical nil,
                    // that exist hold this file's data.)
                    if (page.isNew || (fresh && physical != nil)) && (head > 0 || tail < blockSize) {
                        if fresh {
                            bytes.initializeMemory(as: UInt8.self, repeating: 0)
                        } else if let physical {
                            try fs.device.read(into: bytes, at: (physical + done + UInt64(k)) * bs)
                        }
                    }
                    pieces.append(UnsafeMutableRawBufferPointer(rebasing: bytes[head..<tail]))
                }
                if !pieces.isEmpty { try data.slice(Int(piecesFrom - offset), Int(to - offset)).read(into: pieces) }
            }
            cache.filled(inode, pages)
            done += n
        }
    }

    /// Refuses sizes the inode's mapping or the image cannot hold (where the kernel says EFBIG).
    func checkFileSize(_ rec: InodeRecord, _ size: UInt64) throws {
        let bs = UInt64(blockSize)
        // An inline file is extent-mapped once it leaves the inode, on an image with extents.
        let extents = rec.flags & Inode.flagExtents != 0 || (isInline(rec) && sb.featureIncompat.contains(.extents))
        if !extents && size > blockMapReach * bs {
            throw HoldfastError.fileTooLarge(.inode(rec.number))  // past the block map's reach
        }
        // Without large_file, i_size_high is not a size (old ext2): files stay under 2 GiB.
        if size > UInt64(Int32.max) && !sb.featureROCompat.contains(.largeFile) {
            throw HoldfastError.invalidArgument("inode \(rec.number): files of 2 GiB or more need the large_file feature")
        }
    }

    /// Sets the file size, freeing blocks past a smaller size and zeroing the rest of its last block.
    func truncateData(_ rec: inout InodeRecord, to size: UInt64) throws {
        let bs = UInt64(blockSize)
        if size > rec.size { try checkFileSize(rec, size) }
        if try truncateInline(&rec, to: size) { return }
        // The same size too: blocks preallocated past the end go, as ext4_setattr truncates
        // "even if i_size didn't change" (a larger size keeps them).
        if size <= rec.size {
            try unmapFrom((size + bs - 1) / bs, of: &rec)
        }
        try truncateTail(&rec, to: size)
    }

    /// Sets i_size; a smaller size zeroes the rest of its last block once the operation cannot
    /// fail any more (blocks past it are the caller's to free), a larger one first zeroes what lies
    /// past the old size in the old last block.
    func truncateTail(_ rec: inout InodeRecord, to size: UInt64) throws {
        discardPreallocation(rec.number)
        if size < rec.size {
            let bs = UInt64(blockSize)
            pending.droppedRanges.append((rec.number, (size + bs - 1) / bs, .max - 1))
            try zeroBlockTail(rec, from: size, deferred: true)
        } else if size > rec.size {
            try zeroPastEnd(rec)
        }
        rec.size = size
    }

    /// Zeroes bytes [from, end of its block) if that block holds written data. Deferred, the write
    /// happens as the operation succeeds: the bytes are inside the file until then.
    func zeroBlockTail(_ rec: InodeRecord, from: UInt64, deferred: Bool) throws {
        let bs = UInt64(blockSize)
        guard from % bs != 0 else { return }
        try zeroInBlock(rec, from: from, to: (from / bs + 1) * bs, deferred: deferred)
    }

    /// Bytes past i_size in the last block may hold what a failed write left there: a file that
    /// grows must show zeros there (the kernel zeroes the tail of the EOF page the same way).
    /// Safe to do at once: nothing past i_size is visible.
    func zeroPastEnd(_ rec: InodeRecord) throws {
        try zeroBlockTail(rec, from: rec.size, deferred: false)
    }

    /// Zeroes bytes [from, to) of one block of the file, if it holds data: in its cached page
    /// (held for the operation; a delayed page has no other copy), else on the image when the block
    /// is mapped to written data.
    private func zeroInBlock(_ rec: InodeRecord, from: UInt64, to: UInt64, deferred: Bool) throws {
        let bs = UInt64(blockSize)
        let block = from / bs
        guard from < to else { return }
        let run = try mappedRuns(rec, from: block, to: block + 1).first.flatMap { $0.logical <= block && $0.hasData ? $0 : nil }
        let cached = fs.pageCache?.hasPage(rec.number, block) ?? false
        guard run != nil || cached else { return }
        let zeroing = (inode: rec.number, index: block, from: Int(from % bs), to: Int(from % bs) + Int(to - from),
                       device: run.map { ($0.physical! + (block - $0.logical)) * bs + from % bs } ?? UInt64.max)
        if deferred {
            pending.zeroing.append(zeroing)
        } else {
            try zero(zeroing)
        }
    }

    private func zero(_ z: (inode: UInt32, index: UInt64, from: Int, to: Int, device: UInt64)) throws {
        if let cache = fs.pageCache, cache.zero(z.inode, index: z.index, from: z.from, to: z.to) {
            pending.heldPages[z.inode, default: []].append((z.index, false))
            return
        }
        guard z.device != .max else { return }  // the delayed page went meanwhile
        let zeros = [UInt8](repeating: 0, count: z.to - z.from)
        try zeros.withUnsafeBytes { try fs.device.write($0, at: z.device) }
    }

    /// The zeroing an operation deferred to its end; a failure here still rolls it back.
    func finishDeferredWrites() throws {
        for z in pending.zeroing { try zero(z) }
    }
}

/// What fallocate does with a range (fallocate(2) modes).
public enum FallocateMode: Sendable, Equatable {
    /// Allocate the range as unwritten extents (reads as zeros); a larger end grows the file.
    case allocate
    /// FALLOC_FL_KEEP_SIZE: allocate, the size stays.
    case keepSize
    /// FALLOC_FL_PUNCH_HOLE: free whole blocks in the range, zero the partial ones; the size stays.
    case punchHole
    /// FALLOC_FL_ZERO_RANGE: the range reads as zeros afterwards, its blocks allocated unwritten.
    case zeroRange(keepSize: Bool)
}

extension Operation {
    func fallocate(_ rec: inout InodeRecord, offset: UInt64, length: UInt64, mode: FallocateMode) throws {
        // As ext4_fallocate: an inline file moves to a block first, whatever the mode.
        if isInline(rec) { try convertInlineFile(&rec) }
        guard rec.flags & Inode.flagExtents != 0 else { throw HoldfastError.unsupported("fallocate on block-mapped file \(rec.number)") }
        guard length > 0 else { throw HoldfastError.invalidArgument("fallocate of zero bytes") }
        discardPreallocation(rec.number)
        // Delayed pages get their blocks first, so the ranges below see every block there is.
        try mapDelayed(&rec)
        let bs = UInt64(blockSize)
        let limit = UInt64(UInt32.max) * bs
        guard length <= limit, offset <= limit - length else { throw HoldfastError.fileTooLarge(.inode(rec.number)) }
        let grows = offset + length > rec.size && (mode == .allocate || mode == .zeroRange(keepSize: false))
        if grows { try zeroPastEnd(rec) }
        switch mode {
        case .allocate, .keepSize:
            try preallocate(&rec, offset / bs, (offset + length + bs - 1) / bs)
            if mode == .allocate && offset + length > rec.size { rec.size = offset + length }
        case .punchHole:
            // ext4_punch_hole does nothing to a range that starts at or past i_size.
            guard offset < rec.size else { break }
            try punch(&rec, offset: offset, length: length)
        case .zeroRange(let keepSize):
            try punch(&rec, offset: offset, length: length)
            // Every block the range touches ends up allocated, partial edges that were holes too
            // (unwritten: they read as zeros), as the kernel's ext4_zero_range leaves them.
            try preallocate(&rec, offset / bs, (offset + length + bs - 1) / bs)
            if !keepSize && offset + length > rec.size { rec.size = offset + length }
        }
    }

    /// Maps every hole in logical blocks [first, end) with unwritten extents.
    private func preallocate(_ rec: inout InodeRecord, _ first: UInt64, _ end: UInt64) throws {
        let runs = try mappedRuns(rec, from: first, to: end)
        var logical = first
        var r = 0
        var goal: UInt64?
        while logical < end {
            while r < runs.count, runs[r].logical + runs[r].length <= logical { r += 1 }
            if r < runs.count, runs[r].logical <= logical {
                logical = runs[r].logical + runs[r].length
                goal = runs[r].physical! + runs[r].length
                continue
            }
            let holeEnd = r < runs.count ? min(runs[r].logical, end) : end
            let want = min(holeEnd - logical, UInt64(ExtentNodeEncoding.maxLength(unwritten: true)))
            let g = try goal ?? dataGoal(rec, logical: logical)
            let (start, got) = try allocateBlocks(goal: g, count: Int(want))
            try insertExtent(Extent(logical: UInt32(logical), length: UInt16(got), physical: start, unwritten: true), into: &rec)
            rec.sectors += sectors(got)
            logical += UInt64(got)
            goal = start + UInt64(got)
        }
    }

    /// Frees the whole blocks of [offset, offset+length) and zeroes the written parts of partial ones.
    /// As the kernel's ext4_punch_hole does, a range past i_size stops at the end of the page
    /// (4 KiB, or the block when larger) holding i_size: the blocks up to there go, preallocated
    /// blocks past it stay. The edge zeroing is deferred to the end of the operation, so a
    /// failure before then leaves the data as it was.
    private func punch(_ rec: inout InodeRecord, offset: UInt64, length: UInt64) throws {
        let bs = UInt64(blockSize)
        let page = max(4096, bs)
        let end = offset + length > rec.size ? (rec.size + page - 1) / page * page : offset + length
        guard offset < end else { return }
        let firstWhole = (offset + bs - 1) / bs, endWhole = end / bs
        if firstWhole < endWhole { try unmapRange(firstWhole, endWhole, of: &rec, free: true) }
        var edges: [(UInt64, UInt64)] = []
        if firstWhole > endWhole {
            edges.append((offset, end))  // inside one block
        } else {
            if offset % bs != 0 { edges.append((offset, firstWhole * bs)) }
            if end % bs != 0 { edges.append((endWhole * bs, end)) }
        }
        for (a, b) in edges { try zeroInBlock(rec, from: a, to: b, deferred: true) }
    }
}
