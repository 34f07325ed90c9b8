/// A block of the orphan file (orphan.rst, feature orphan_file): le32 inode numbers, 0 for a free
/// slot, then an 8-byte tail: ob_magic and ob_checksum. The checksum (metadata_csum only) is
/// crc32c, seeded as the orphan file inode's own blocks are (its number, then its generation),
/// over the block's physical number as le64 and then the slots; checked against mkfs and the
/// kernel's blocks.
public enum OrphanBlock {
    public static let magic: UInt32 = 0x0B10_CA04
    static let tailSize = 8

    /// How many inode slots a block holds.
    public static func slotCount(blockSize: Int) -> Int { (blockSize - tailSize) / 4 }

    /// The inode number in `slot` (0: free).
    public static func entry(_ block: [UInt8], _ slot: Int) -> UInt32 { block.le32(4 * slot) }

    public static func setEntry(_ block: inout [UInt8], _ slot: Int, _ inode: UInt32) { block.setLE32(4 * slot, inode) }

    /// The used slots, in order: (slot, inode number).
    public static func usedSlots(_ block: [UInt8]) -> [(slot: Int, inode: UInt32)] {
        (0..<slotCount(blockSize: block.count)).compactMap { s in
            let n = entry(block, s)
            return n == 0 ? nil : (s, n)
        }
    }

    /// Checks the tail: the magic, and the checksum when `seed` is given.
    public static func verify(_ block: [UInt8], seed: UInt32?, physical: UInt64, inode: UInt32) throws(CorruptionError) {
        guard block.count >= 64 else {
            throw CorruptionError(.orphanFile, inode: inode, block: physical, .truncated(needed: 64, available: UInt64(block.count)))
        }
        let found = block.le32(block.count - tailSize)
        guard found == magic else {
            throw CorruptionError(.orphanFile, inode: inode, block: physical, .badMagic(found: UInt64(found), expected: UInt64(magic)))
        }
        guard let seed else { return }
        let stored = block.le32(block.count - 4)
        let computed = checksum(block, seed: seed, physical: physical)
        guard stored == computed else {
            throw CorruptionError(.orphanFile, inode: inode, block: physical, .badChecksum(stored: stored, computed: computed))
        }
    }

    /// Writes the tail: the magic, and the checksum when `seed` is given.
    public static func seal(_ block: inout [UInt8], seed: UInt32?, physical: UInt64) {
        block.setLE32(block.count - tailSize, magic)
        if let seed { block.setLE32(block.count - 4, checksum(block, seed: seed, physical: physical)) }
    }

    static func checksum(_ block: [UInt8], seed: UInt32, physical: UInt64) -> UInt32 {
        CRC32C.update(CRC32C.update(seed, littleEndian: physical), block[0..<(block.count - tailSize)])
    }
}
