/// The superblock's bytes with a named accessor for every field at the kernel's offset
/// (Documentation/filesystems/ext4/super.rst): the one offset table of the superblock. The
/// decoder (`Superblock`) reads through it; the write path and mkfs write through it.
public struct SuperblockRecord: Sendable {
    public var raw: [UInt8]

    public init(_ sb: Superblock) { raw = sb.raw }
    public init(raw: [UInt8]) { precondition(raw.count == Superblock.size); self.raw = raw }

    /// All zeros: mkfs fills in every field it sets.
    public static func empty() -> SuperblockRecord { SuperblockRecord(raw: [UInt8](repeating: 0, count: Superblock.size)) }

    /// The high halves of the block counts exist only with the 64bit feature.
    private var is64: Bool { featureIncompat.contains(.bit64) }

    /// s_inodes_count
    public var inodesCount: UInt32 {
        get { raw.le32(0x0) }
        set { raw.setLE32(0x0, newValue) }
    }
    /// s_blocks_count_lo | _hi (64bit)
    public var blocksCount: UInt64 {
        get { UInt64(raw.le32(0x4)) | (is64 ? UInt64(raw.le32(0x150)) << 32 : 0) }
        set {
            precondition(is64 || newValue >> 32 == 0, "a block count past 32 bits needs the 64bit feature set first")
            raw.setLE32(0x4, UInt32(truncatingIfNeeded: newValue))
            if is64 { raw.setLE32(0x150, UInt32(truncatingIfNeeded: newValue >> 32)) }
        }
    }
    /// s_r_blocks_count_lo | _hi (64bit)
    public var reservedBlocksCount: UInt64 {
        get { UInt64(raw.le32(0x8)) | (is64 ? UInt64(raw.le32(0x154)) << 32 : 0) }
        set {
            precondition(is64 || newValue >> 32 == 0, "a block count past 32 bits needs the 64bit feature set first")
            raw.setLE32(0x8, UInt32(truncatingIfNeeded: newValue))
            if is64 { raw.setLE32(0x154, UInt32(truncatingIfNeeded: newValue >> 32)) }
        }
    }
    /// s_free_blocks_count_lo | _hi (64bit)
    public var freeBlocksCount: UInt64 {
        get { UInt64(raw.le32(0xC)) | (is64 ? UInt64(raw.le32(0x158)) << 32 : 0) }
        set {
            precondition(is64 || newValue >> 32 == 0, "a block count past 32 bits needs the 64bit feature set first")
            raw.setLE32(0xC, UInt32(truncatingIfNeeded: newValue))
            if is64 { raw.setLE32(0x158, UInt32(truncatingIfNeeded: newValue >> 32)) }
        }
    }
    /// s_free_inodes_count
    public var freeInodesCount: UInt32 {
        get { raw.le32(0x10) }
        set { raw.setLE32(0x10, newValue) }
    }
    /// s_first_data_block
    public var firstDataBlock: UInt32 {
        get { raw.le32(0x14) }
        set { raw.setLE32(0x14, newValue) }
    }
    /// s_log_block_size
    public var logBlockSize: UInt32 {
        get { raw.le32(0x18) }
        set { raw.setLE32(0x18, newValue) }
    }
    /// s_log_cluster_size
    public var logClusterSize: UInt32 {
        get { raw.le32(0x1C) }
        set { raw.setLE32(0x1C, newValue) }
    }
    /// s_blocks_per_group
    public var blocksPerGroup: UInt32 {
        get { raw.le32(0x20) }
        set { raw.setLE32(0x20, newValue) }
    }
    /// s_clusters_per_group
    public var clustersPerGroup: UInt32 {
        get { raw.le32(0x24) }
        set { raw.setLE32(0x24, newValue) }
    }
    /// s_inodes_per_group
    public var inodesPerGroup: UInt32 {
        get { raw.le32(0x28) }
        set { raw.setLE32(0x28, newValue) }
    }
    /// s_mtime | s_mtime_hi << 32
    public var mountTime: UInt64 {
        get { UInt64(raw.le32(0x2C)) | UInt64(raw.u8(0x275)) << 32 }
        set {
            raw.setLE32(0x2C, UInt32(truncatingIfNeeded: newValue))
            raw.setU8(0x275, UInt8(truncatingIfNeeded: newValue >> 32))
        }
    }
    /// s_wtime | s_wtime_hi << 32
    public var writeTime: UInt64 {
        get { UInt64(raw.le32(0x30)) | UInt64(raw.u8(0x274)) << 32 }
        set {
            raw.setLE32(0x30, UInt32(truncatingIfNeeded: newValue))
            raw.setU8(0x274, UInt8(truncatingIfNeeded: newValue >> 32))
        }
    }
    /// s_mnt_count
    public var mountCount: UInt16 {
        get { raw.le16(0x34) }
        set { raw.setLE16(0x34, newValue) }
    }
    /// s_max_mnt_count (-1: no limit)
    public var maxMountCount: Int16 {
        get { Int16(bitPattern: raw.le16(0x36)) }
        set { raw.setLE16(0x36, UInt16(bitPattern: newValue)) }
    }
    /// s_magic
    public var magic: UInt16 {
        get { raw.le16(0x38) }
        set { raw.setLE16(0x38, newValue) }
    }
    /// s_state
    public var state: SuperblockState {
        get { SuperblockState(rawValue: raw.le16(0x3A)) }
        set { raw.setLE16(0x3A, newValue.rawValue) }
    }
    /// s_errors: 1 continue, 2 remount read-only, 3 panic
    public var errors: UInt16 {
        get { raw.le16(0x3C) }
        set { raw.setLE16(0x3C, newValue) }
    }
    /// s_minor_rev_level
    public var minorRevision: UInt16 {
        get { raw.le16(0x3E) }
        set { raw.setLE16(0x3E, newValue) }
    }
    /// s_lastcheck | _hi
    public var lastCheck: UInt64 {
        get { UInt64(raw.le32(0x40)) | UInt64(raw.u8(0x277)) << 32 }
        set {
            raw.setLE32(0x40, UInt32(truncatingIfNeeded: newValue))
            raw.setU8(0x277, UInt8(truncatingIfNeeded: newValue >> 32))
        }
    }
    /// s_checkinterval
    public var checkInterval: UInt32 {
        get { raw.le32(0x44) }
        set { raw.setLE32(0x44, newValue) }
    }
    /// s_creator_os
    public var creatorOS: UInt32 {
        get { raw.le32(0x48) }
        set { raw.setLE32(0x48, newValue) }
    }
    /// s_rev_level: 1 dynamic
    public var revision: UInt32 {
        get { raw.le32(0x4C) }
        set { raw.setLE32(0x4C, newValue) }
    }
    /// s_first_ino (revision 1)
    public var firstInode: UInt32 {
        get { raw.le32(0x54) }
        set { raw.setLE32(0x54, newValue) }
    }
    /// s_inode_size (revision 1)
    public var inodeSize: UInt16 {
        get { raw.le16(0x58) }
        set { raw.setLE16(0x58, newValue) }
    }
    /// s_block_group_nr: which group this copy is in (backups)
    public var blockGroupNumber: UInt16 {
        get { raw.le16(0x5A) }
        set { raw.setLE16(0x5A, newValue) }
    }
    /// s_feature_compat
    public var featureCompat: CompatFeatures {
        get { CompatFeatures(rawValue: raw.le32(0x5C)) }
        set { raw.setLE32(0x5C, newValue.rawValue) }
    }
    /// s_feature_incompat
    public var featureIncompat: IncompatFeatures {
        get { IncompatFeatures(rawValue: raw.le32(0x60)) }
        set { raw.setLE32(0x60, newValue.rawValue) }
    }
    /// s_feature_ro_compat
    public var featureROCompat: ROCompatFeatures {
        get { ROCompatFeatures(rawValue: raw.le32(0x64)) }
        set { raw.setLE32(0x64, newValue.rawValue) }
    }
    /// s_uuid
    public var uuid: [UInt8] {
        get { raw.bytes(0x68, 16) }
        set { raw.setBytes(0x68, newValue.prefix(16)) }
    }
    /// s_volume_name
    public var volumeName: String {
        get { raw.cString(0x78, 16) }
        set { raw.setCString(0x78, 16, newValue) }
    }
    /// s_last_mounted
    public var lastMounted: String {
        get { raw.cString(0x88, 64) }
        set { raw.setCString(0x88, 64, newValue) }
    }
    /// s_reserved_gdt_blocks
    public var reservedGDTBlocks: UInt16 {
        get { raw.le16(0xCE) }
        set { raw.setLE16(0xCE, newValue) }
    }
    /// s_journal_uuid
    public var journalUUID: [UInt8] {
        get { raw.bytes(0xD0, 16) }
        set { raw.setBytes(0xD0, newValue.prefix(16)) }
    }
    /// s_journal_inum
    public var journalInode: UInt32 {
        get { raw.le32(0xE0) }
        set { raw.setLE32(0xE0, newValue) }
    }
    /// s_journal_dev
    public var journalDevice: UInt32 {
        get { raw.le32(0xE4) }
        set { raw.setLE32(0xE4, newValue) }
    }
    /// s_last_orphan
    public var lastOrphan: UInt32 {
        get { raw.le32(0xE8) }
        set { raw.setLE32(0xE8, newValue) }
    }
    /// s_hash_seed[4]
    public var hashSeed: [UInt32] {
        get { (0..<4).map { raw.le32(0xEC + 4 * $0) } }
        set { for (i, v) in newValue.prefix(4).enumerated() { raw.setLE32(0xEC + 4 * i, v) } }
    }
    /// s_def_hash_version
    public var defaultHashVersion: UInt8 {
        get { raw.u8(0xFC) }
        set { raw.setU8(0xFC, newValue) }
    }
    /// s_jnl_backup_type: 1 = s_jnl_blocks holds the journal inode's i_block and size
    public var journalBackupType: UInt8 {
        get { raw.u8(0xFD) }
        set { raw.setU8(0xFD, newValue) }
    }
    /// s_desc_size (0 means 32)
    public var descriptorSize: UInt16 {
        get { raw.le16(0xFE) }
        set { raw.setLE16(0xFE, newValue) }
    }
    /// s_default_mount_opts
    public var defaultMountOptions: UInt32 {
        get { raw.le32(0x100) }
        set { raw.setLE32(0x100, newValue) }
    }
    /// s_first_meta_bg
    public var firstMetaBG: UInt32 {
        get { raw.le32(0x104) }
        set { raw.setLE32(0x104, newValue) }
    }
    /// s_mkfs_time | _hi
    public var mkfsTime: UInt64 {
        get { UInt64(raw.le32(0x108)) | UInt64(raw.u8(0x276)) << 32 }
        set {
            raw.setLE32(0x108, UInt32(truncatingIfNeeded: newValue))
            raw.setU8(0x276, UInt8(truncatingIfNeeded: newValue >> 32))
        }
    }
    /// s_jnl_blocks[17]: i_block of the journal inode, then i_size_high, i_size
    public var journalBlocks: [UInt32] {
        get { (0..<17).map { raw.le32(0x10C + 4 * $0) } }
        set { for (i, v) in newValue.prefix(17).enumerated() { raw.setLE32(0x10C + 4 * i, v) } }
    }
    /// s_min_extra_isize
    public var minExtraIsize: UInt16 {
        get { raw.le16(0x15C) }
        set { raw.setLE16(0x15C, newValue) }
    }
    /// s_want_extra_isize
    public var wantExtraIsize: UInt16 {
        get { raw.le16(0x15E) }
        set { raw.setLE16(0x15E, newValue) }
    }
    /// s_flags
    public var flags: UInt32 {
        get { raw.le32(0x160) }
        set { raw.setLE32(0x160, newValue) }
    }
    /// s_log_groups_per_flex
    public var logGroupsPerFlex: UInt8 {
        get { raw.u8(0x174) }
        set { raw.setU8(0x174, newValue) }
    }
    /// s_checksum_type: 1 crc32c
    public var checksumType: UInt8 {
        get { raw.u8(0x175) }
        set { raw.setU8(0x175, newValue) }
    }
    /// s_kbytes_written
    public var kbytesWritten: UInt64 {
        get { raw.le64(0x178) }
        set { raw.setLE64(0x178, newValue) }
    }
    /// s_error_count
    public var errorCount: UInt32 {
        get { raw.le32(0x194) }
        set { raw.setLE32(0x194, newValue) }
    }
    /// s_overhead_clusters: the clusters the filesystem's own structures take (0: not recorded)
    public var overheadClusters: UInt32 {
        get { raw.le32(0x248) }
        set { raw.setLE32(0x248, newValue) }
    }
    /// s_backup_bgs[2] (sparse_super2)
    public var backupGroups: [UInt32] {
        get { [raw.le32(0x24C), raw.le32(0x250)] }
        set { for (i, v) in newValue.prefix(2).enumerated() { raw.setLE32(0x24C + 4 * i, v) } }
    }
    /// s_checksum_seed
    public var checksumSeedField: UInt32 {
        get { raw.le32(0x270) }
        set { raw.setLE32(0x270, newValue) }
    }
    /// s_orphan_file_inum
    public var orphanFileInode: UInt32 {
        get { raw.le32(0x280) }
        set { raw.setLE32(0x280, newValue) }
    }
    /// s_checksum
    public var checksum: UInt32 {
        get { raw.le32(0x3FC) }
        set { raw.setLE32(0x3FC, newValue) }
    }

    /// Sets s_wtime and s_wtime_hi.
    public mutating func setWriteTime(_ seconds: Int64) { writeTime = UInt64(bitPattern: seconds) & 0xFF_FFFF_FFFF }

    /// Writes s_checksum on metadata_csum images: crc32c of the bytes before it.
    public mutating func seal() {
        if featureROCompat.contains(.metadataCsum) {
            checksum = CRC32C.update(~0, raw[0..<0x3FC])
        }
    }
}
