#if canImport(Glibc)
import Glibc
#endif
import HoldfastFormat
import HoldfastMemory

extension AllocationSite {
    static let writeBuffer = AllocationSite("write.buffer", .mayFail, .page, "the bounded buffer a file write assembles blocks in")
}

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

    /// Copies the source into `buffer` (the same length).
    func read(into buffer: UnsafeMutableRawBufferPointer) throws {
        switch self {
        case .memory(let b):
            buffer.copyMemory(from: b)
        case .file(let fd, let offset, let count):
            var done = 0
            while done < count {
                let n = pread(fd, buffer.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw HoldfastError.hostFile(path: "source file", operation: "read", errno: errno)
                }
                if n == 0 { throw HoldfastError.hostFile(path: "source file", operation: "read (file shrank)", errno: EIO) }
                done += n
            }
        }
    }
}

/// File contents: writes at an offset (allocating what is not mapped) and truncation. Data goes to
/// the device before the handle ends, so metadata never points at blocks whose data is not there.
extension WriteContext {
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

    func writeData(_ rec: inout InodeRecord, offset: UInt64, source data: DataSource) throws {
        guard rec.flags & Inode.flagExtents != 0 else {
            throw HoldfastError.unsupported("writing to block-mapped file \(rec.number)")
        }
        guard data.count > 0 else { return }
        let bs = UInt64(blockSize)
        let end = offset + UInt64(data.count)
        guard end <= UInt64(UInt32.max) * bs else { throw HoldfastError.invalidArgument("write past the largest file size") }
        let firstBlock = offset / bs, endBlock = (end + bs - 1) / bs
        let runs = try mappedRuns(rec, from: firstBlock, to: endBlock)
        if runs.contains(where: { $0.unwritten }) {
            throw HoldfastError.unsupported("writing into preallocated (unwritten) extents of inode \(rec.number)")
        }
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
            } else {
                let holeEnd = r < runs.count ? min(runs[r].logical, endBlock) : endBlock
                let want = min(holeEnd - logical, UInt64(ExtentNodeEncoding.maxLength(unwritten: false)))
                let g = try goal ?? dataGoal(rec, logical: logical)
                let (start, got) = try allocateBlocks(goal: g, count: Int(want))
                try insertExtent(Extent(logical: UInt32(logical), length: UInt16(got), physical: start, unwritten: false), into: &rec)
                rec.sectors += sectors(got)
                physical = start
                length = UInt64(got)
                fresh = true
            }
            goal = physical + length
            try writeBlocks(logical: logical, physical: physical, count: length, fresh: fresh, offset: offset, data: data)
            logical += length
        }
        if end > rec.size { rec.size = end }
    }

    /// Fills blocks [logical, logical+count) at `physical` with the part of `data` that falls in them.
    /// Partial blocks keep their old bytes (or zeros when freshly allocated).
    private func writeBlocks(logical: UInt64, physical: UInt64, count: UInt64, fresh: Bool, offset: UInt64, data: DataSource) throws {
        let bs = UInt64(blockSize)
        let chunk = UInt64(writeChunkBlocks)
        var done: UInt64 = 0
        while done < count {
            let n = min(chunk, count - done)
            let blockStart = (logical + done) * bs
            let blockEnd = blockStart + n * bs
            let from = max(blockStart, offset), to = min(blockEnd, offset + UInt64(data.count))
            let source = data.slice(Int(from - offset), Int(to - offset))
            let at = (physical + done) * bs
            if from == blockStart && to == blockEnd {
                switch source {
                case .memory(let bytes): try fs.device.write(bytes, at: at)
                case .file(let fd, let start, let n): try fs.device.write(fromFile: fd, at: start, count: n, to: at)
                }
            } else {
                let bytes = Int(n * bs)
                try fs.budget.chargeOrThrow(bytes, at: .writeBuffer)
                defer { fs.budget.uncharge(bytes, for: .writeBuffer) }
                var buffer = [UInt8](repeating: 0, count: bytes)
                try buffer.withUnsafeMutableBytes { b in
                    if !fresh {
                        if from > blockStart { try fs.device.read(into: UnsafeMutableRawBufferPointer(rebasing: b[0..<blockSize]), at: at) }
                        if to < blockEnd {
                            let last = bytes - blockSize
                            try fs.device.read(into: UnsafeMutableRawBufferPointer(rebasing: b[last...]), at: at + UInt64(last))
                        }
                    }
                    try source.read(into: UnsafeMutableRawBufferPointer(rebasing: b[Int(from - blockStart)..<Int(to - blockStart)]))
                    try fs.device.write(UnsafeRawBufferPointer(b), at: at)
                }
            }
            done += n
        }
    }

    /// Sets the file size, freeing blocks past a smaller size and zeroing the rest of its last block.
    func truncateData(_ rec: inout InodeRecord, to size: UInt64) throws {
        let bs = UInt64(blockSize)
        if size < rec.size {
            guard rec.flags & Inode.flagExtents != 0 else {
                throw HoldfastError.unsupported("truncating block-mapped file \(rec.number)")
            }
            let keep = (size + bs - 1) / bs
            try removeExtents(from: UInt32(min(keep, UInt64(UInt32.max))), of: &rec)
            if size % bs != 0 {
                let runs = try mappedRuns(rec, from: size / bs, to: size / bs + 1)
                if let run = runs.first, run.logical <= size / bs, run.hasData {
                    let physical = run.physical! + (size / bs - run.logical)
                    let cut = Int(size % bs)
                    let zeros = [UInt8](repeating: 0, count: blockSize - cut)
                    try zeros.withUnsafeBytes { try fs.device.write($0, at: physical * bs + UInt64(cut)) }
                }
            }
        }
        rec.size = size
    }
}
