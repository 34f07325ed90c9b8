import HoldfastFormat

/// Block allocation: goal-directed first fit over the group bitmaps, runs kept contiguous.
/// Free counts in the descriptors change with every bit; the superblock's are summed at commit.
extension Allocator {
    /// Blocks in group `g` (the last group may be short).
    func blocksInGroup(_ g: UInt32) -> Int {
        let first = geometry.groupFirstBlock(UInt64(g))
        return Int(min(UInt64(sb.blocksPerGroup), sb.blocksCount - first))
    }

    func group(ofBlock b: UInt64) -> UInt32 {
        UInt32((b - UInt64(sb.firstDataBlock)) / UInt64(sb.blocksPerGroup))
    }

    /// The group's block bitmap; a BLOCK_UNINIT group's is built from its layout first.
    func blockBitmap(_ gd: inout GroupDescriptorRecord) throws -> [UInt8] {
        if gd.flags & GroupDescriptor.blockUninit == 0 { return try handle.read(gd.blockBitmap) }
        var bitmap = [UInt8](repeating: 0, count: blockSize)
        let g = gd.group
        let first = geometry.groupFirstBlock(UInt64(g))
        let count = UInt64(blocksInGroup(g))
        func mark(_ block: UInt64) { if block >= first && block < first + count { Bitmap.set(&bitmap, Int(block - first)) } }
        if geometry.groupHasSuperblock(UInt64(g)) {
            let overhead = 1 + geometry.descriptorBlockCount + UInt64(sb.reservedGDTBlocks)
            for b in first..<(first + overhead) { mark(b) }
        }
        // With flex_bg another group's bitmaps and table may live here.
        for h in 0..<UInt32(sb.groupCount) {
            let other = h == g ? gd : try descriptor(h)
            mark(other.blockBitmap)
            mark(other.inodeBitmap)
            let tableBlocks = (UInt64(sb.inodesPerGroup) * UInt64(sb.inodeSize) + UInt64(blockSize) - 1) / UInt64(blockSize)
            for b in other.inodeTable..<(other.inodeTable + tableBlocks) { mark(b) }
        }
        Bitmap.setRange(&bitmap, from: Int(count), to: blockSize * 8)
        gd.flags &= ~GroupDescriptor.blockUninit
        try handle.create(gd.blockBitmap, bitmap)
        return bitmap
    }

    /// Allocates up to `count` contiguous blocks, starting as near `goal` as possible.
    /// Returns the first block and how many were taken (at least one); throws noSpace when none are free.
    func allocateBlocks(goal: UInt64, count: Int) throws -> (start: UInt64, count: Int) {
        let (start, run, _) = try allocateBlocks(goal: goal, count: count, take: count)
        return (start, run)
    }

    /// Finds up to `count` contiguous free blocks near `goal` and takes the first `take` of them
    /// (at least one); the rest stay free on disk but are marked in the group's buddy, for a
    /// preallocation window. Returns the run's start, the blocks taken and the run's length.
    ///
    /// The goal block itself is tried first (a file grows in place) when the free run there is as
    /// long as the request's largest power of two; else, for a request of two or more blocks, the
    /// buddies find an aligned free chunk of that size, so big writes are not scattered over small
    /// holes; then first fit from the goal.
    /// Blocks that preallocation windows hold are never handed out. When every free block is held by
    /// windows, the windows are given up and the search runs again.
    func allocateBlocks(goal: UInt64, count: Int, take: Int) throws -> (start: UInt64, taken: Int, run: Int) {
        precondition(count >= 1 && take >= 1 && take <= count)
        // Blocks promised to delayed pages are no one else's (their own allocation spends them).
        if !changes.mappingDelayed {
            let free = Int64(space.freeBlocks) + changes.blocks
            let reserved = Int64(space.reservedBlocks) + changes.reserved
            if reserved > 0 && free - reserved - Self.delayedMargin(reserved) < Int64(take) {
                throw HoldfastError.noSpace("the free blocks are reserved for file data not yet written")
            }
        }
        do {
            return try searchAndTake(goal: goal, count: count, take: take)
        } catch HoldfastError.noSpace(let why) {
            guard !space.preallocations.isEmpty else { throw HoldfastError.noSpace(why) }
            discardAllPreallocations()
            return try searchAndTake(goal: goal, count: count, take: take)
        }
    }

    private func searchAndTake(goal: UInt64, count: Int, take: Int) throws -> (start: UInt64, taken: Int, run: Int) {
        let groups = UInt32(sb.groupCount)
        let clampedGoal = goal >= UInt64(sb.firstDataBlock) && goal < sb.blocksCount ? goal : UInt64(sb.firstDataBlock)
        let goalGroup = group(ofBlock: clampedGoal)
        let goalOffset = Int(clampedGoal - geometry.groupFirstBlock(UInt64(goalGroup)))
        let order = count >= 2 ? min(GroupBuddy.maxOrder, Int.bitWidth - 1 - count.leadingZeroBitCount) : 0
        // Pass 0: an aligned chunk big enough, through the buddies; pass 1: first fit.
        for pass in (order >= 1 ? 0 : 1)...1 {
            for step in 0...groups {
                let g = (goalGroup + step) % groups
                var gd = try descriptor(g)
                guard gd.freeBlocksCount > 0 else { continue }
                let limit = blocksInGroup(g)
                let from = step == 0 ? goalOffset : 0
                var found: (start: Int, run: Int)?
                var bitmapRead: [UInt8]?
                let viaBuddy = try buddies?.with(g, bitmap: {
                    let b = try blockBitmap(&gd)
                    bitmapRead = b
                    return b
                }, blocks: limit, reserved: { reservedRanges(in: g) }) { buddy -> Bool in
                    let maximum = min(count, Int(gd.freeBlocksCount))
                    let atGoal = step == 0 && buddy.isFree(from) ? Bitmap.clearRun(buddy.used, from: from, maximum: maximum, limit: limit) : 0
                    if atGoal > 0 && (pass == 1 || atGoal >= 1 << order) {
                        // Growing in place, when the goal has as much room as a chunk would give.
                        found = (from, atGoal)
                    } else if pass == 0 {
                        if let c = buddy.findChunk(order: order, from: from) {
                            found = (c, Bitmap.clearRun(buddy.used, from: c, maximum: maximum, limit: limit))
                        }
                    } else if let f = Bitmap.firstClear(buddy.used, from: from, limit: limit) ?? Bitmap.firstClear(buddy.used, from: 0, limit: from) {
                        found = (f, Bitmap.clearRun(buddy.used, from: f, maximum: maximum, limit: limit))
                    }
                    return true
                }
                if viaBuddy == nil {
                    // No buddy (no memory for one): windows hold blocks only in groups whose buddy is
                    // pinned, so none holds any here and the bitmap is the truth.
                    guard pass == 1 else { continue }
                    var bitmap = try bitmapRead ?? blockBitmap(&gd)
                    for r in freedRanges(in: g) { for i in r.start..<(r.start + r.count) { Bitmap.set(&bitmap, i) } }
                    if let f = Bitmap.firstClear(bitmap, from: from, limit: limit) ?? Bitmap.firstClear(bitmap, from: 0, limit: from) {
                        found = (f, Bitmap.clearRun(bitmap, from: f, maximum: min(count, Int(gd.freeBlocksCount)), limit: limit))
                    }
                }
                guard let (start, run) = found, run > 0 else { continue }
                let taken = min(take, run)
                try markTaken(group: g, &gd, start, taken)
                if run > taken { buddies?.update(g) { $0.mark(start + taken, run - taken, taken: true) } }
                return (geometry.groupFirstBlock(UInt64(g)) + UInt64(start), taken, run)
            }
        }
        throw HoldfastError.noSpace("no free blocks")
    }

    /// Sets blocks [start, start+n) of group `g` in its bitmap (and buddy), with the free counts.
    private func markTaken(group g: UInt32, _ gd: inout GroupDescriptorRecord, _ start: Int, _ n: Int) throws {
        var bitmap = try blockBitmap(&gd)
        for i in start..<(start + n) {
            guard !Bitmap.isSet(bitmap, i) else {
                throw CorruptionError(.blockBitmap, block: geometry.groupFirstBlock(UInt64(g)) + UInt64(i), .impossible("block allocated twice"))
            }
            Bitmap.set(&bitmap, i)
        }
        gd.freeBlocksCount -= UInt32(n)
        changes.blocks -= Int64(n)
        gd.setBlockBitmapChecksum(bitmap[...], sb)
        changes.bitmapGroups.insert(g)
        try handle.write(gd.blockBitmap, bitmap)
        try store(gd)
        buddies?.update(g) { $0.mark(start, n, taken: true) }
    }

    /// Takes `n` blocks at `physical` that a preallocation window held (free on disk, marked in the buddy).
    func takeReserved(_ physical: UInt64, _ n: Int) throws {
        let g = group(ofBlock: physical)
        var gd = try descriptor(g)
        try markTaken(group: g, &gd, Int(physical - geometry.groupFirstBlock(UInt64(g))), n)
    }

    /// Gives blocks [start, start+count) back; a run may cross groups.
    func freeBlocks(_ start: UInt64, _ count: Int) throws {
        var block = start
        var left = count
        while left > 0 {
            guard block >= UInt64(sb.firstDataBlock), block < sb.blocksCount else {
                throw CorruptionError(.blockBitmap, block: block, .outOfRange(field: "freed block", value: block, limit: sb.blocksCount))
            }
            let g = group(ofBlock: block)
            let first = geometry.groupFirstBlock(UInt64(g))
            let offset = Int(block - first)
            let n = min(left, blocksInGroup(g) - offset)
            var gd = try descriptor(g)
            var bitmap = try blockBitmap(&gd)
            for i in offset..<(offset + n) {
                guard Bitmap.isSet(bitmap, i) else {
                    throw CorruptionError(.blockBitmap, block: first + UInt64(i), .impossible("block \(first + UInt64(i)) freed twice"))
                }
                Bitmap.clear(&bitmap, i)
            }
            gd.freeBlocksCount += UInt32(n)
            changes.blocks += Int64(n)
            gd.setBlockBitmapChecksum(bitmap[...], sb)
            changes.bitmapGroups.insert(g)
            try handle.write(gd.blockBitmap, bitmap)
            try store(gd)
            // The buddy keeps them taken until the commit: see `FreeSpace.freedUncommitted`.
            changes.freed.append((g, offset, n))
            block += UInt64(n)
            left -= n
        }
    }
}
