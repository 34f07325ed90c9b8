/// lseek(2)'s SEEK_DATA and SEEK_HOLE, as the kernel's ext4 answers them.
extension Filesystem {
    public enum SeekTarget: Sendable {
        /// SEEK_DATA: the first byte at or after the offset that holds data.
        case data
        /// SEEK_HOLE: the first byte at or after the offset in a hole (the end of the file counts as one).
        case hole
    }

    /// Where SEEK_DATA or SEEK_HOLE from `offset` lands in `inode`; nil (ENXIO) when `offset` is
    /// at or past the end, or SEEK_DATA finds only holes after it.
    ///
    /// Data is what a read would get from the file rather than from nothing: written extents,
    /// pages that wait for a block (delayed allocation), and cached pages over unwritten extents
    /// (written but not yet converted). Unwritten extents without pages, and unmapped blocks, are
    /// holes. Granularity is the block, as ext4's.
    public func seek(_ inode: UInt32, from offset: UInt64, to target: SeekTarget) throws(HoldfastError) -> UInt64? {
        try guarded {
            let node = try self.inode(inode)
            guard offset < node.size else { return nil }
            if node.hasInlineData { return target == .data ? offset : node.size }
            let blockSize = UInt64(self.blockSize)
            let endBlock = (node.size + blockSize - 1) / blockSize
            let data = try dataBlocks(node, from: offset / blockSize, below: endBlock)
            // The first block at or after the offset's block that is (data) or is not (hole) data.
            var block = offset / blockSize
            for range in data {
                if range.upperBound <= block { continue }
                if target == .data { return max(offset, range.lowerBound * blockSize) }
                if range.lowerBound > block { break }
                block = range.upperBound
            }
            if target == .data { return nil }
            return min(max(offset, block * blockSize), node.size)
        }
    }

    /// The data blocks of `node` in [start, end), as sorted, merged ranges.
    private func dataBlocks(_ node: Inode, from start: UInt64, below end: UInt64) throws -> [Range<UInt64>] {
        var blocks: [Range<UInt64>] = []
        try forEachRun(node, from: start) { run in
            guard run.logical < end else { return false }
            guard run.physical != nil else { return true }
            let range = max(run.logical, start)..<min(run.logical + run.length, end)
            if !run.unwritten {
                blocks.append(range)
            } else if let cache = pageCache {
                for b in range where cache.hasPage(node.number, b) { blocks.append(b..<(b + 1)) }
            }
            return true
        }
        for b in pageCache?.delayedIndices(node.number) ?? [] where b >= start && b < end { blocks.append(b..<(b + 1)) }
        blocks.sort { $0.lowerBound < $1.lowerBound }
        var merged: [Range<UInt64>] = []
        for r in blocks {
            if let last = merged.last, r.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        return merged
    }
}
