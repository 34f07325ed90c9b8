import HoldfastFormat

/// Block allocation: goal-directed first fit over the group bitmaps, runs kept contiguous.
/// Free counts in the descriptors change with every bit; the superblock's are summed at commit.
extension WriteContext {
    /// Blocks in group `g` (the last group may be short).
    func blocksInGroup(_ g: UInt32) -> Int {
        let first = fs.geometry.groupFirstBlock(UInt64(g))
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
        let first = fs.geometry.groupFirstBlock(UInt64(g))
        let count = UInt64(blocksInGroup(g))
        func mark(_ block: UInt64) { if block >= first && block < first + count { Bitmap.set(&bitmap, Int(block - first)) } }
        if fs.geometry.groupHasSuperblock(UInt64(g)) {
            let overhead = 1 + fs.geometry.descriptorBlockCount + UInt64(sb.reservedGDTBlocks)
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
        precondition(count >= 1)
        let groups = UInt32(sb.groupCount)
        let clampedGoal = goal >= UInt64(sb.firstDataBlock) && goal < sb.blocksCount ? goal : UInt64(sb.firstDataBlock)
        let goalGroup = group(ofBlock: clampedGoal)
        for step in 0...groups {
            let g = (goalGroup + step) % groups
            var gd = try descriptor(g)
            guard gd.freeBlocksCount > 0 else { continue }
            var bitmap = try blockBitmap(&gd)
            let limit = blocksInGroup(g)
            let from = step == 0 ? Int(clampedGoal - fs.geometry.groupFirstBlock(UInt64(g))) : 0
            guard let start = Bitmap.firstClear(bitmap, from: from, limit: limit) ?? Bitmap.firstClear(bitmap, from: 0, limit: from) else {
                continue
            }
            let run = Bitmap.clearRun(bitmap, from: start, maximum: min(count, Int(gd.freeBlocksCount)), limit: limit)
            for i in start..<(start + run) { Bitmap.set(&bitmap, i) }
            gd.freeBlocksCount -= UInt32(run)
            counts.blocks -= Int64(run)
            gd.setBlockBitmapChecksum(bitmap[...], sb)
            try handle.write(gd.blockBitmap, bitmap)
            try store(gd)
            return (fs.geometry.groupFirstBlock(UInt64(g)) + UInt64(start), run)
        }
        throw HoldfastError.noSpace("no free blocks")
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
            let first = fs.geometry.groupFirstBlock(UInt64(g))
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
            counts.blocks += Int64(n)
            gd.setBlockBitmapChecksum(bitmap[...], sb)
            try handle.write(gd.blockBitmap, bitmap)
            try store(gd)
            block += UInt64(n)
            left -= n
        }
    }
}
