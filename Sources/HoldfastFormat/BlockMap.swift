/// Block maps (ext2/ext3 files, blockmap.rst): i_block holds 15 block numbers (12 direct, then
/// the single, double and triple indirect blocks), and each indirect block is an array of
/// blockSize/4 more. All are le32; 0 is a hole. These accessors are the one place that says so.
extension Array where Element == UInt8 {
    /// Block number `index` of a block map array (i_block, or an indirect block).
    @inlinable public func blockPointer(_ index: Int) -> UInt32 { le32(index * 4) }

    /// Sets block number `index` of a block map array.
    @inlinable public mutating func setBlockPointer(_ index: Int, _ value: UInt32) { setLE32(index * 4, value) }
}

public enum BlockMap {
    /// Direct block numbers in i_block.
    public static let directCount = 12
    /// i_block's slot of the indirect block of `level` (1: single, 2: double, 3: triple).
    public static func indirectSlot(level: Int) -> Int { directCount - 1 + level }
}
