/// The ext4 superblock: 1024 bytes at byte offset 1024 of the image (super.rst).
public struct Superblock: Sendable {
    public static let byteOffset = 1024
    public static let size = 1024
    public static let magic: UInt16 = 0xEF53

    public let raw: [UInt8]

    public let inodesCount: UInt32          // s_inodes_count
    public let blocksCount: UInt64          // s_blocks_count_lo | _hi
    public let reservedBlocksCount: UInt64  // s_r_blocks_count_lo | _hi
    public let freeBlocksCount: UInt64      // s_free_blocks_count_lo | _hi
    public let freeInodesCount: UInt32      // s_free_inodes_count
    public let firstDataBlock: UInt32       // s_first_data_block
    public let logBlockSize: UInt32         // s_log_block_size
    public let logClusterSize: UInt32       // s_log_cluster_size
    public let blocksPerGroup: UInt32       // s_blocks_per_group
    public let clustersPerGroup: UInt32     // s_clusters_per_group
    public let inodesPerGroup: UInt32       // s_inodes_per_group
    public let mountTime: UInt64            // s_mtime | s_mtime_hi << 32
    public let writeTime: UInt64            // s_wtime | s_wtime_hi << 32
    public let mountCount: UInt16           // s_mnt_count
    public let maxMountCount: Int16         // s_max_mnt_count
    public let state: SuperblockState       // s_state
    public let errors: UInt16               // s_errors
    public let minorRevision: UInt16        // s_minor_rev_level
    public let lastCheck: UInt64            // s_lastcheck | _hi
    public let checkInterval: UInt32        // s_checkinterval
    public let creatorOS: UInt32            // s_creator_os
    public let revision: UInt32             // s_rev_level
    public let firstInode: UInt32           // s_first_ino
    public let inodeSize: UInt16            // s_inode_size
    public let featureCompat: CompatFeatures
    public let featureIncompat: IncompatFeatures
    public let featureROCompat: ROCompatFeatures
    public let uuid: [UInt8]                // s_uuid
    public let volumeName: String           // s_volume_name
    public let lastMounted: String          // s_last_mounted
    public let reservedGDTBlocks: UInt16    // s_reserved_gdt_blocks
    public let journalUUID: [UInt8]         // s_journal_uuid
    public let journalInode: UInt32         // s_journal_inum
    public let journalDevice: UInt32        // s_journal_dev
    public let lastOrphan: UInt32           // s_last_orphan
    public let hashSeed: [UInt32]           // s_hash_seed[4]
    public let defaultHashVersion: UInt8    // s_def_hash_version
    public let descriptorSize: UInt16       // s_desc_size (0 means 32)
    public let defaultMountOptions: UInt32  // s_default_mount_opts
    public let firstMetaBG: UInt32          // s_first_meta_bg
    public let mkfsTime: UInt64             // s_mkfs_time | _hi
    public let minExtraIsize: UInt16        // s_min_extra_isize
    public let wantExtraIsize: UInt16       // s_want_extra_isize
    public let flags: UInt32                // s_flags
    public let logGroupsPerFlex: UInt8      // s_log_groups_per_flex
    public let checksumType: UInt8          // s_checksum_type
    public let kbytesWritten: UInt64        // s_kbytes_written
    public let errorCount: UInt32           // s_error_count
    public let overheadClusters: UInt32     // s_overhead_clusters (0: not recorded)
    public let backupGroups: [UInt32]       // s_backup_bgs[2] (sparse_super2)
    public let checksumSeedField: UInt32    // s_checksum_seed
    public let orphanFileInode: UInt32      // s_orphan_file_inum
    public let checksum: UInt32             // s_checksum

    /// s_flags bits: how directory hashes treat bytes >= 0x80.
    public static let flagSignedHash: UInt32 = 0x1
    public static let flagUnsignedHash: UInt32 = 0x2

    /// Decodes and validates the 1024 superblock bytes. `imageBytes` bounds the block count when known.
    public init(_ raw: [UInt8], imageBytes: UInt64? = nil) throws(CorruptionError) {
        guard raw.count >= Self.size else {
            throw CorruptionError(.superblock, .truncated(needed: UInt64(Self.byteOffset + Self.size), available: UInt64(Self.byteOffset + raw.count)))
        }
        let bytes = Array(raw.prefix(Self.size))
        self.raw = bytes
        let r = SuperblockRecord(raw: bytes)
        guard r.magic == Self.magic else {
            throw CorruptionError(.superblock, .badMagic(found: UInt64(r.magic), expected: UInt64(Self.magic)))
        }
        inodesCount = r.inodesCount
        featureCompat = r.featureCompat
        featureIncompat = r.featureIncompat
        featureROCompat = r.featureROCompat
        blocksCount = r.blocksCount
        reservedBlocksCount = r.reservedBlocksCount
        freeBlocksCount = r.freeBlocksCount
        freeInodesCount = r.freeInodesCount
        firstDataBlock = r.firstDataBlock
        logBlockSize = r.logBlockSize
        logClusterSize = r.logClusterSize
        blocksPerGroup = r.blocksPerGroup
        clustersPerGroup = r.clustersPerGroup
        inodesPerGroup = r.inodesPerGroup
        mountTime = r.mountTime
        writeTime = r.writeTime
        mountCount = r.mountCount
        maxMountCount = r.maxMountCount
        state = r.state
        errors = r.errors
        minorRevision = r.minorRevision
        lastCheck = r.lastCheck
        checkInterval = r.checkInterval
        creatorOS = r.creatorOS
        revision = r.revision
        // Revision 0 has fixed values where revision 1 has these fields.
        firstInode = revision == 0 ? 11 : r.firstInode
        inodeSize = revision == 0 ? 128 : r.inodeSize
        uuid = r.uuid
        volumeName = r.volumeName
        lastMounted = r.lastMounted
        reservedGDTBlocks = r.reservedGDTBlocks
        journalUUID = r.journalUUID
        journalInode = r.journalInode
        journalDevice = r.journalDevice
        lastOrphan = r.lastOrphan
        hashSeed = r.hashSeed
        defaultHashVersion = r.defaultHashVersion
        descriptorSize = r.descriptorSize
        defaultMountOptions = r.defaultMountOptions
        firstMetaBG = r.firstMetaBG
        mkfsTime = r.mkfsTime
        minExtraIsize = r.minExtraIsize
        wantExtraIsize = r.wantExtraIsize
        flags = r.flags
        logGroupsPerFlex = r.logGroupsPerFlex
        checksumType = r.checksumType
        kbytesWritten = r.kbytesWritten
        errorCount = r.errorCount
        overheadClusters = r.overheadClusters
        backupGroups = r.backupGroups
        checksumSeedField = r.checksumSeedField
        orphanFileInode = r.orphanFileInode
        checksum = r.checksum

        try validate(imageBytes: imageBytes)
    }

    private func validate(imageBytes: UInt64?) throws(CorruptionError) {
        func bad(_ what: String) -> CorruptionError { CorruptionError(.superblock, .impossible(what)) }
        if hasMetadataChecksums {
            guard checksumType == 1 else { throw bad("unknown checksum type \(checksumType)") }
            let computed = CRC32C.update(~0, raw[0..<0x3FC])
            guard computed == checksum else {
                throw CorruptionError(.superblock, .badChecksum(stored: checksum, computed: computed))
            }
        }
        guard logBlockSize <= 6 else {
            throw CorruptionError(.superblock, .outOfRange(field: "s_log_block_size", value: UInt64(logBlockSize), limit: 6))
        }
        let bs = UInt32(blockSize)
        guard blocksPerGroup >= 8, blocksPerGroup <= 8 * bs * UInt32(1 << min(logClusterSize, 16)) else {
            throw CorruptionError(.superblock, .outOfRange(field: "s_blocks_per_group", value: UInt64(blocksPerGroup), limit: UInt64(8 * bs)))
        }
        guard inodesPerGroup >= 1, inodesPerGroup <= 8 * bs else {
            throw CorruptionError(.superblock, .outOfRange(field: "s_inodes_per_group", value: UInt64(inodesPerGroup), limit: UInt64(8 * bs)))
        }
        guard inodeSize >= 128, inodeSize.nonzeroBitCount == 1, UInt32(inodeSize) <= bs else {
            throw bad("inode size \(inodeSize) is not a power of two between 128 and the block size")
        }
        guard firstDataBlock == (bs == 1024 ? 1 : 0) || (firstDataBlock == 0) else {
            throw CorruptionError(.superblock, .outOfRange(field: "s_first_data_block", value: UInt64(firstDataBlock), limit: 1))
        }
        guard blocksCount > UInt64(firstDataBlock) else { throw bad("block count \(blocksCount) is too small") }
        if featureIncompat.contains(.bit64) {
            let ds = descriptorSize
            guard ds >= 64, ds <= 1024, ds.nonzeroBitCount == 1 else {
                throw CorruptionError(.superblock, .outOfRange(field: "s_desc_size", value: UInt64(ds), limit: 1024))
            }
        }
        let groups = groupCount
        guard UInt64(inodesPerGroup) * groups == UInt64(inodesCount) else {
            throw bad("inode count \(inodesCount) is not \(groups) groups of \(inodesPerGroup)")
        }
        guard firstInode >= 11, firstInode < inodesCount else {
            throw CorruptionError(.superblock, .outOfRange(field: "s_first_ino", value: UInt64(firstInode), limit: UInt64(inodesCount)))
        }
        if let imageBytes, blocksCount > imageBytes / UInt64(blockSize) + 1 {
            throw CorruptionError(.image, .truncated(needed: blocksCount * UInt64(blockSize), available: imageBytes))
        }
    }

    public var blockSize: Int { 1024 << Int(logBlockSize) }
    public var clusterSize: Int { 1024 << Int(logClusterSize) }
    public var groupCount: UInt64 {
        (blocksCount - UInt64(firstDataBlock) + UInt64(blocksPerGroup) - 1) / UInt64(blocksPerGroup)
    }
    public var groupDescriptorSize: Int {
        featureIncompat.contains(.bit64) ? Int(descriptorSize) : 32
    }
    public var hasMetadataChecksums: Bool { featureROCompat.contains(.metadataCsum) }
    public var hasGDTChecksums: Bool { featureROCompat.contains(.gdtCsum) }
    public var needsRecovery: Bool { featureIncompat.contains(.recover) }

    /// The seed every metadata checksum starts from: s_checksum_seed, or crc32c(~0, uuid).
    public var checksumSeed: UInt32 {
        featureIncompat.contains(.csumSeed) ? checksumSeedField : CRC32C.update(~0, uuid)
    }

    /// The directory hash in use when a dx_root names a legacy/half_md4/tea hash (signedness from s_flags).
    public var hashIsUnsigned: Bool { flags & Self.flagUnsignedHash != 0 }

    public var featureNameList: [String] {
        featureNames(featureCompat, CompatFeatures.names, prefix: "C")
            + featureNames(featureIncompat, IncompatFeatures.names, prefix: "I")
            + featureNames(featureROCompat, ROCompatFeatures.names, prefix: "R")
    }

    public var uuidString: String { formatUUID(uuid) }
}

public func formatUUID(_ bytes: [UInt8]) -> String {
    let hex = bytes.map { b -> String in
        let s = String(b, radix: 16)
        return s.count == 1 ? "0" + s : s
    }
    guard hex.count == 16 else { return hex.joined() }
    return hex[0..<4].joined() + "-" + hex[4..<6].joined() + "-" + hex[6..<8].joined() + "-" + hex[8..<10].joined() + "-" + hex[10..<16].joined()
}

/// s_state: how the filesystem was left (EXT4_VALID_FS, EXT4_ERROR_FS, EXT4_ORPHAN_FS).
public struct SuperblockState: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Unmounted cleanly (EXT4_VALID_FS); cleared while a writer has the image open.
    public static let cleanlyUnmounted = SuperblockState(rawValue: 0x1)
    /// Errors were detected (EXT4_ERROR_FS); e2fsck clears it.
    public static let errorsDetected = SuperblockState(rawValue: 0x2)
    /// Orphans are being recovered (EXT4_ORPHAN_FS).
    public static let recoveringOrphans = SuperblockState(rawValue: 0x4)
}
