/// One block group descriptor, 32 or 64+ bytes (group_descr.rst).
public struct GroupDescriptor: Sendable {
    public let blockBitmap: UInt64          // bg_block_bitmap_lo | _hi
    public let inodeBitmap: UInt64          // bg_inode_bitmap_lo | _hi
    public let inodeTable: UInt64           // bg_inode_table_lo | _hi
    public let freeBlocksCount: UInt32      // bg_free_blocks_count_lo | _hi
    public let freeInodesCount: UInt32      // bg_free_inodes_count_lo | _hi
    public let usedDirsCount: UInt32        // bg_used_dirs_count_lo | _hi
    public let flags: UInt16                // bg_flags
    public let blockBitmapChecksum: UInt32  // bg_block_bitmap_csum_lo | _hi
    public let inodeBitmapChecksum: UInt32  // bg_inode_bitmap_csum_lo | _hi
    public let inodeTableUnused: UInt32     // bg_itable_unused_lo | _hi
    public let checksum: UInt16             // bg_checksum

    public static let inodeUninit: UInt16 = 0x1
    public static let blockUninit: UInt16 = 0x2
    public static let inodeTableZeroed: UInt16 = 0x4

    /// Offset of bg_checksum, which the checksum skips.
    static let checksumOffset = 0x1E
    /// Descriptors at least this large carry the high halves of the bitmap checksums.
    static let bitmapChecksumHiEnd = 0x3C

    /// Decodes descriptor `group` from `bytes` (exactly one descriptor) and verifies its checksum.
    public init(_ bytes: [UInt8], group: UInt32, superblock sb: Superblock) throws(CorruptionError) {
        let size = bytes.count
        let wide = size >= 64
        func hi32(_ off: Int) -> UInt64 { wide ? UInt64(bytes.le32(off)) << 32 : 0 }
        func hi16(_ off: Int) -> UInt32 { wide ? UInt32(bytes.le16(off)) << 16 : 0 }
        blockBitmap = UInt64(bytes.le32(0x0)) | hi32(0x20)
        inodeBitmap = UInt64(bytes.le32(0x4)) | hi32(0x24)
        inodeTable = UInt64(bytes.le32(0x8)) | hi32(0x28)
        freeBlocksCount = UInt32(bytes.le16(0xC)) | hi16(0x2C)
        freeInodesCount = UInt32(bytes.le16(0xE)) | hi16(0x2E)
        usedDirsCount = UInt32(bytes.le16(0x10)) | hi16(0x30)
        flags = bytes.le16(0x12)
        let bbHi = size >= Self.bitmapChecksumHiEnd ? UInt32(bytes.le16(0x38)) << 16 : 0
        let ibHi = size >= Self.bitmapChecksumHiEnd ? UInt32(bytes.le16(0x3A)) << 16 : 0
        blockBitmapChecksum = UInt32(bytes.le16(0x18)) | bbHi
        inodeBitmapChecksum = UInt32(bytes.le16(0x1A)) | ibHi
        inodeTableUnused = UInt32(bytes.le16(0x1C)) | hi16(0x32)
        checksum = bytes.le16(Self.checksumOffset)

        if let computed = Self.computeChecksum(bytes, group: group, superblock: sb), computed != checksum {
            throw CorruptionError(.groupDescriptor, block: nil, .badChecksum(stored: UInt32(checksum), computed: UInt32(computed)))
                .inGroup(group)
        }
        let limit = sb.blocksCount
        for (field, value) in [("bg_block_bitmap", blockBitmap), ("bg_inode_bitmap", inodeBitmap), ("bg_inode_table", inodeTable)] {
            if value >= limit || value < UInt64(sb.firstDataBlock) {
                throw CorruptionError(.groupDescriptor, .outOfRange(field: field, value: value, limit: limit)).inGroup(group)
            }
        }
    }

    /// bg_checksum as the kernel computes it, or nil when the image has no descriptor checksums.
    public static func computeChecksum(_ bytes: [UInt8], group: UInt32, superblock sb: Superblock) -> UInt16? {
        let off = checksumOffset
        if sb.hasMetadataChecksums {
            var c = CRC32C.update(sb.checksumSeed, littleEndian: group)
            c = CRC32C.update(c, bytes[0..<off])
            c = CRC32C.update(c, littleEndian: UInt16(0))
            if off + 2 < bytes.count { c = CRC32C.update(c, bytes[(off + 2)...]) }
            return UInt16(truncatingIfNeeded: c)
        }
        guard sb.hasGDTChecksums else { return nil }
        var c = CRC16.update(0xFFFF, sb.uuid)
        c = CRC16.update(c, group.littleEndianBytes)
        c = CRC16.update(c, bytes[0..<off])
        if sb.featureIncompat.contains(.bit64), off + 2 < bytes.count { c = CRC16.update(c, bytes[(off + 2)...]) }
        return c
    }

    /// Verifies a block bitmap read from disk (metadata_csum images only).
    public func verifyBlockBitmap(_ bitmap: [UInt8], group: UInt32, superblock sb: Superblock) throws(CorruptionError) {
        guard sb.hasMetadataChecksums, flags & Self.blockUninit == 0 else { return }
        let length = Int(sb.clustersPerGroup / 8)
        let computed = CRC32C.update(sb.checksumSeed, bitmap[0..<min(length, bitmap.count)])
        let mask: UInt32 = sb.groupDescriptorSize >= Self.bitmapChecksumHiEnd ? 0xFFFF_FFFF : 0xFFFF
        if computed & mask != blockBitmapChecksum & mask {
            throw CorruptionError(.blockBitmap, block: blockBitmap, .badChecksum(stored: blockBitmapChecksum, computed: computed & mask))
        }
    }

    /// Verifies an inode bitmap read from disk (metadata_csum images only).
    public func verifyInodeBitmap(_ bitmap: [UInt8], group: UInt32, superblock sb: Superblock) throws(CorruptionError) {
        guard sb.hasMetadataChecksums, flags & Self.inodeUninit == 0 else { return }
        let length = Int(sb.inodesPerGroup / 8)
        let computed = CRC32C.update(sb.checksumSeed, bitmap[0..<min(length, bitmap.count)])
        let mask: UInt32 = sb.groupDescriptorSize >= Self.bitmapChecksumHiEnd ? 0xFFFF_FFFF : 0xFFFF
        if computed & mask != inodeBitmapChecksum & mask {
            throw CorruptionError(.inodeBitmap, block: inodeBitmap, .badChecksum(stored: inodeBitmapChecksum, computed: computed & mask))
        }
    }
}

extension CorruptionError {
    /// Descriptor errors name their group in the message through the kind.
    func inGroup(_ group: UInt32) -> CorruptionError {
        switch kind {
        case .badChecksum(let s, let c):
            return CorruptionError(structure, inode: inode, block: block, .impossible("group \(group): checksum mismatch (stored 0x\(String(s, radix: 16)), computed 0x\(String(c, radix: 16)))"))
        case .outOfRange(let f, let v, let l):
            return CorruptionError(structure, inode: inode, block: block, .outOfRange(field: "group \(group) \(f)", value: v, limit: l))
        default:
            return self
        }
    }
}

/// Where things live: group geometry shared by the read and (later) write paths.
public struct Geometry: Sendable {
    public let superblock: Superblock

    public init(_ sb: Superblock) { superblock = sb }

    public var descriptorsPerBlock: Int { superblock.blockSize / superblock.groupDescriptorSize }

    /// Does group `g` hold a superblock backup (and so a GDT copy)?
    public func groupHasSuperblock(_ g: UInt64) -> Bool {
        if g == 0 { return true }
        let sb = superblock
        if sb.featureCompat.contains(.sparseSuper2) {
            return sb.backupGroups.contains { UInt64($0) == g }
        }
        if !sb.featureROCompat.contains(.sparseSuper) { return true }
        if g == 1 { return true }
        for base: UInt64 in [3, 5, 7] {
            var p = base
            while p < g { p *= base }
            if p == g { return true }
        }
        return false
    }

    public func groupFirstBlock(_ g: UInt64) -> UInt64 {
        UInt64(superblock.firstDataBlock) + g * UInt64(superblock.blocksPerGroup)
    }

    /// Where group `g`'s descriptor lies: its GDT block and the byte offset in it.
    public func descriptorLocation(_ g: UInt32) -> (block: UInt64, offset: Int) {
        let perBlock = descriptorsPerBlock
        return (descriptorBlock(UInt64(g) / UInt64(perBlock)), Int(g) % perBlock * superblock.groupDescriptorSize)
    }

    /// Inode `number`'s group, and its index in that group's table and bitmap.
    /// The number must be in 1...s_inodes_count.
    public func inodeSlot(_ number: UInt32) -> (group: UInt32, index: Int) {
        ((number - 1) / superblock.inodesPerGroup, Int((number - 1) % superblock.inodesPerGroup))
    }

    /// Where inode `number` lies, given its group's inode table: the table block and the byte
    /// offset in it.
    public func inodeLocation(_ number: UInt32, inodeTable: UInt64) -> (block: UInt64, offset: Int) {
        let byteOffset = inodeSlot(number).index * Int(superblock.inodeSize)
        return (inodeTable + UInt64(byteOffset / superblock.blockSize), byteOffset % superblock.blockSize)
    }

    /// The block holding descriptor-block `n` of the primary GDT (meta_bg aware).
    public func descriptorBlock(_ n: UInt64) -> UInt64 {
        let sb = superblock
        let first = UInt64(sb.firstDataBlock)
        if !sb.featureIncompat.contains(.metaBG) || n < UInt64(sb.firstMetaBG) {
            return first + 1 + n
        }
        let group = n * UInt64(descriptorsPerBlock)
        var hasSuper: UInt64 = groupHasSuperblock(group) ? 1 : 0
        if sb.blockSize == 1024 && n == 0 && sb.firstDataBlock == 0 { hasSuper += 1 }
        return groupFirstBlock(group) + hasSuper
    }

    public var descriptorBlockCount: UInt64 {
        (superblock.groupCount + UInt64(descriptorsPerBlock) - 1) / UInt64(descriptorsPerBlock)
    }

    /// Blocks per allocation cluster: 1 without bigalloc.
    public var blocksPerCluster: UInt64 {
        superblock.featureROCompat.contains(.bigalloc) ? UInt64(max(1, superblock.clusterSize / superblock.blockSize)) : 1
    }

    /// The blocks the filesystem's own structures take, which statfs leaves out of the size as the
    /// kernel's ext4 does. As the kernel, s_overhead_clusters is taken only with bigalloc and only
    /// when it fits the filesystem; otherwise the structures are counted: the blocks before the
    /// first data block, each group's two bitmaps and inode table, the superblock backups with
    /// their descriptor blocks and the reserved ones (meta_bg: a meta group's descriptor block in
    /// its first, second and last group), and `journalBlocks` (an internal journal's length).
    /// Counted, a bigalloc image's overhead is close to the kernel's, not exact (the kernel counts
    /// the clusters these blocks touch).
    public func overheadBlocks(journalBlocks: UInt64) -> UInt64 {
        let sb = superblock
        let recorded = UInt64(sb.overheadClusters) * blocksPerCluster
        if blocksPerCluster > 1, recorded > 0, recorded < sb.blocksCount { return recorded }
        let bs = UInt64(sb.blockSize)
        let tableBlocks = (UInt64(sb.inodesPerGroup) * UInt64(sb.inodeSize) + bs - 1) / bs
        let perBlock = UInt64(descriptorsPerBlock)
        let metaBG = sb.featureIncompat.contains(.metaBG)
        // Descriptor blocks kept the classic way, after each superblock copy.
        let classic = metaBG ? min(UInt64(sb.firstMetaBG), descriptorBlockCount) : descriptorBlockCount
        var total = UInt64(sb.firstDataBlock)
        for g in 0..<sb.groupCount {
            total += 2 + tableBlocks
            let backup: UInt64 = groupHasSuperblock(g) ? 1 : 0
            total += backup * (1 + UInt64(sb.reservedGDTBlocks))
            if !metaBG || g < UInt64(sb.firstMetaBG) * perBlock {
                total += backup * classic
            } else {
                let k = g % perBlock
                total += k == 0 || k == 1 || k == perBlock - 1 ? 1 : 0
            }
        }
        return total + journalBlocks
    }
}
