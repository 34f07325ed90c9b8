import HoldfastFormat

/// Changing ext2/ext3 block maps (blockmap.rst): i_block[0..11] point at data blocks 0 to 11,
/// i_block[12] at a single indirect block, [13] at a double and [14] at a triple indirect block.
/// Indirect blocks are arrays of blockSize/4 le32 block numbers; 0 is a hole. Indirect blocks are
/// counted in i_blocks like data blocks, and have no checksum.
extension Operation {
    /// Block numbers per indirect block.
    private var pointersPerBlock: UInt64 { UInt64(blockSize / 4) }

    /// Logical blocks a subtree at `level` covers (0: a data block, 1: single indirect, ...).
    private func span(_ level: Int) -> UInt64 {
        (0..<level).reduce(UInt64(1)) { acc, _ in acc * pointersPerBlock }
    }

    /// The first logical block past what a block map can reach.
    var blockMapReach: UInt64 { 12 + span(1) + span(2) + span(3) }

    /// Maps data blocks [physical, physical+count) at logical blocks [logical, logical+count),
    /// allocating indirect blocks near the data. The range must be a hole. Data blocks are not
    /// counted in i_blocks here (the caller allocated them); indirect blocks are.
    func mapBlocks(logical: UInt64, physical: UInt64, count: Int, into rec: inout InodeRecord) throws {
        noteRemap(rec.number)
        guard count > 0 else { return }
        let n = UInt64(count)
        guard logical + n <= blockMapReach else {
            throw HoldfastError.invalidArgument("inode \(rec.number): logical block \(logical + n - 1) is past what a block map reaches (\(blockMapReach) blocks)")
        }
        guard physical + n <= 1 << 32 else {
            throw HoldfastError.unsupported("inode \(rec.number): block \(physical + n - 1) for a block-mapped file (block maps hold 32-bit block numbers)")
        }
        var area = rec.blockArea
        var l = logical, p = physical, left = n
        while left > 0 && l < 12 {
            area.setBlockPointer(Int(l), UInt32(p))
            l += 1; p += 1; left -= 1
        }
        var base: UInt64 = 12
        for level in 1...3 where left > 0 {
            let end = base + span(level)
            if l < end {
                let take = min(left, end - l)
                let slot = BlockMap.indirectSlot(level: level)
                var pointer = area.blockPointer(slot)
                try mapInto(&pointer, level: level, first: l - base, count: take, physical: p, rec: &rec)
                area.setBlockPointer(slot, pointer)
                l += take; p += take; left -= take
            }
            base = end
        }
        rec.blockArea = area
    }

    /// Maps `count` blocks from `first` (relative to the subtree) into the indirect block `pointer`
    /// at `level`, allocating it when it is 0.
    private func mapInto(_ pointer: inout UInt32, level: Int, first: UInt64, count: UInt64, physical: UInt64, rec: inout InodeRecord) throws {
        let fresh = pointer == 0
        var node: [UInt8]
        if fresh {
            // Near the data it maps, as the kernel's ext2/ext3 goal does.
            let (block, _) = try allocateBlocks(goal: physical, count: 1)
            guard block < 1 << 32 else {
                throw HoldfastError.unsupported("inode \(rec.number): indirect block \(block) (block maps hold 32-bit block numbers)")
            }
            rec.sectors += sectors(1)
            pointer = UInt32(block)
            node = [UInt8](repeating: 0, count: blockSize)
        } else {
            node = try indirectBlock(UInt64(pointer), rec: rec)
        }
        let childSpan = span(level - 1)
        var l = first, p = physical, left = count
        while left > 0 {
            let i = Int(l / childSpan)
            if level == 1 {
                node.setBlockPointer(i, UInt32(p))
                l += 1; p += 1; left -= 1
            } else {
                let take = min(left, UInt64(i + 1) * childSpan - l)
                var child = node.blockPointer(i)
                try mapInto(&child, level: level - 1, first: l - UInt64(i) * childSpan, count: take, physical: p, rec: &rec)
                node.setBlockPointer(i, child)
                l += take; p += take; left -= take
            }
        }
        if fresh { try handle.create(UInt64(pointer), node) } else { try handle.write(UInt64(pointer), node) }
    }

    /// An existing indirect block, its number checked first.
    private func indirectBlock(_ block: UInt64, rec: InodeRecord) throws -> [UInt8] {
        guard block >= UInt64(sb.firstDataBlock), block < sb.blocksCount else {
            throw CorruptionError(.blockMap, inode: rec.number, block: block, .outOfRange(field: "indirect block", value: block, limit: sb.blocksCount))
        }
        return try handle.read(block)
    }

    /// Unmaps every logical block at or after `from`, freeing data blocks and the indirect blocks
    /// left empty; partly emptied indirect blocks are rewritten. Returns the data blocks freed.
    @discardableResult
    func unmapBlocks(from: UInt64, of rec: inout InodeRecord) throws -> Int {
        noteRemap(rec.number)
        var area = rec.blockArea
        var pending = PendingFree()
        var freed = 0
        for i in 0..<12 where UInt64(i) >= from {
            let p = area.blockPointer(i)
            guard p != 0 else { continue }
            try pending.add(UInt64(p), ctx: self, rec: &rec, freed: &freed)
            area.setBlockPointer(i, 0)
        }
        var base: UInt64 = 12
        for level in 1...3 {
            let end = base + span(level)
            let slot = BlockMap.indirectSlot(level: level)
            let pointer = area.blockPointer(slot)
            if pointer != 0 && end > from {
                let start = from > base ? from - base : 0
                if try trim(UInt64(pointer), level: level, from: start, rec: &rec, pending: &pending, freed: &freed) {
                    try freeTreeBlock(UInt64(pointer), rec: &rec)
                    area.setBlockPointer(slot, 0)
                }
            }
            base = end
        }
        try pending.flush(ctx: self, rec: &rec, freed: &freed)
        rec.blockArea = area
        return freed
    }

    /// Removes what the indirect block `block` at `level` maps from `start` (relative to it) on.
    /// Returns true when nothing is left in it (the caller frees it); otherwise it is rewritten.
    private func trim(_ block: UInt64, level: Int, from start: UInt64, rec: inout InodeRecord,
                      pending: inout PendingFree, freed: inout Int) throws -> Bool {
        var node = try indirectBlock(block, rec: rec)
        let childSpan = span(level - 1)
        var changed = false
        for i in Int(start / childSpan)..<Int(pointersPerBlock) {
            let p = node.blockPointer(i)
            guard p != 0 else { continue }
            if level == 1 {
                try pending.add(UInt64(p), ctx: self, rec: &rec, freed: &freed)
            } else {
                let childStart = UInt64(i) * childSpan < start ? start - UInt64(i) * childSpan : 0
                guard try trim(UInt64(p), level: level - 1, from: childStart, rec: &rec, pending: &pending, freed: &freed) else { continue }
                try freeTreeBlock(UInt64(p), rec: &rec)
            }
            node.setBlockPointer(i, 0)
            changed = true
        }
        if (0..<Int(pointersPerBlock)).allSatisfy({ node.blockPointer($0) == 0 }) { return true }
        if changed { try handle.write(block, node) }
        return false
    }

    /// Data blocks to free, gathered into contiguous runs so the bitmaps change once per run.
    struct PendingFree {
        var start: UInt64 = 0
        var count = 0

        mutating func add(_ block: UInt64, ctx: Operation, rec: inout InodeRecord, freed: inout Int) throws {
            if count > 0 && start + UInt64(count) == block {
                count += 1
                return
            }
            try flush(ctx: ctx, rec: &rec, freed: &freed)
            start = block
            count = 1
        }

        mutating func flush(ctx: Operation, rec: inout InodeRecord, freed: inout Int) throws {
            guard count > 0 else { return }
            try ctx.freeData(start, count, rec: &rec, freed: &freed)
            count = 0
        }
    }
}

/// The two ways an inode maps its blocks, chosen by EXT4_EXTENTS_FL: every caller goes through these.
extension Operation {
    /// Does the inode keep a block map or extent tree in i_block? (Fast symlinks and device nodes
    /// keep other things there.)
    func hasMappedBlocks(_ rec: InodeRecord) -> Bool {
        if rec.flags & Inode.flagInlineData != 0 { return false }  // its data is in the inode
        if rec.flags & Inode.flagExtents != 0 { return true }
        switch FileType(mode: rec.mode) {
        case .regular, .directory: return true
        case .symlink:
            // A fast symlink: the target in i_block, no blocks but an xattr block (as the read side decides).
            let xattrSectors: UInt64 = rec.fileACL != 0 ? sectors(1) : 0
            return !(rec.size < 60 && rec.sectors <= xattrSectors)
        default: return false
        }
    }

    /// Maps freshly allocated blocks [physical, physical+count) at logical block `logical` (a hole)
    /// and counts them in i_blocks.
    func mapNewRun(logical: UInt64, physical: UInt64, count: Int, into rec: inout InodeRecord) throws {
        if rec.flags & Inode.flagExtents != 0 {
            try insertExtent(Extent(logical: UInt32(logical), length: UInt16(count), physical: physical, unwritten: false), into: &rec)
        } else {
            try mapBlocks(logical: logical, physical: physical, count: count, into: &rec)
        }
        rec.sectors += sectors(count)
    }

    /// Unmaps and frees everything at or after logical block `from` (truncate; 0 frees it all).
    @discardableResult
    func unmapFrom(_ from: UInt64, of rec: inout InodeRecord) throws -> Int {
        // Their pages go if this succeeds (all of them, error record too, when the file goes).
        pending.droppedRanges.append((rec.number, from, from == 0 && rec.linksCount == 0 ? .max : .max - 1))
        if rec.flags & Inode.flagExtents != 0 {
            return try removeExtents(from: UInt32(min(from, UInt64(UInt32.max))), of: &rec)
        }
        return try unmapBlocks(from: from, of: &rec)
    }
}
