#if canImport(Glibc)
import Glibc
#endif
import HoldfastDevice
import HoldfastFormat
import HoldfastMemory

/// `holdfast mkfs`: a new ext4 image with mkfs.ext4's default features (64bit, extents, flex_bg,
/// metadata_csum, huge_file, dir_nlink, extra_isize, has_journal, dir_index, sparse_super,
/// large_file, filetype, ext_attr), a root directory and lost+found. resize_inode is left out:
/// Holdfast does not grow images, and the kernel and e2fsck accept images without it.
public enum Formatter {
    static let compat: UInt32 = CompatFeatures.hasJournal.rawValue | CompatFeatures.extAttr.rawValue | CompatFeatures.dirIndex.rawValue
    static let incompat: UInt32 = IncompatFeatures.filetype.rawValue | IncompatFeatures.extents.rawValue
        | IncompatFeatures.bit64.rawValue | IncompatFeatures.flexBG.rawValue
    static let roCompat: UInt32 = ROCompatFeatures.sparseSuper.rawValue | ROCompatFeatures.largeFile.rawValue
        | ROCompatFeatures.hugeFile.rawValue | ROCompatFeatures.dirNlink.rawValue
        | ROCompatFeatures.extraIsize.rawValue | ROCompatFeatures.metadataCsum.rawValue

    /// Creates (or replaces) the image file at `path` and writes an empty filesystem into it.
    /// Returns the superblock written.
    @discardableResult
    public static func format(path: String, options: FormatOptions) throws(HoldfastError) -> Superblock {
        try guarded {
            let layout = try FormatLayout(options)
            let fd = Glibc.open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
            guard fd >= 0 else { throw HoldfastError.hostFile(path: path, operation: "create", errno: errno) }
            // A fresh file reads as zeros: inode tables and the journal need no writes of their own.
            let bytes = layout.blocksCount * UInt64(layout.blockSize)
            let ok = ftruncate(fd, off_t(bytes)) == 0
            let e = errno
            Glibc.close(fd)
            guard ok else { throw HoldfastError.hostFile(path: path, operation: "size", errno: e) }
            let device = try ImageFile(path: path, writable: true)
            var writer = ImageWriter(layout: layout, device: device, options: options)
            let sb = try writer.write()
            try device.flush()
            return sb
        }
    }
}

/// Builds the metadata of a new image in memory and writes it block by block.
struct ImageWriter {
    let layout: FormatLayout
    let device: ImageFile
    let options: FormatOptions
    var blockBitmaps: [[UInt8]]
    var inodeBitmaps: [[UInt8]]
    var freeBlocks: [Int]
    var freeInodes: [Int]
    var usedDirs: [Int]
    var uuid: [UInt8]
    var hashSeed: [UInt8]
    let now: Timestamp

    init(layout: FormatLayout, device: ImageFile, options: FormatOptions) {
        self.layout = layout
        self.device = device
        self.options = options
        let bs = layout.blockSize
        blockBitmaps = (0..<layout.groups).map { g in
            var b = [UInt8](repeating: 0, count: bs)
            Bitmap.setRange(&b, from: layout.blocksInGroup(g), to: bs * 8)
            return b
        }
        inodeBitmaps = (0..<layout.groups).map { _ in
            var b = [UInt8](repeating: 0, count: bs)
            Bitmap.setRange(&b, from: Int(layout.inodesPerGroup), to: bs * 8)
            return b
        }
        freeBlocks = (0..<layout.groups).map { layout.blocksInGroup($0) }
        freeInodes = Array(repeating: Int(layout.inodesPerGroup), count: layout.groups)
        usedDirs = Array(repeating: 0, count: layout.groups)
        var random = SplitMix64(seed: UInt64(UInt(bitPattern: Int(getpid()))) ^ UInt64(Self.clock().nanoseconds) << 32 ^ UInt64(Self.clock().seconds))
        func uuid4() -> [UInt8] {
            var u = (0..<16).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            u[6] = u[6] & 0x0F | 0x40
            u[8] = u[8] & 0x3F | 0x80
            return u
        }
        uuid = uuid4()
        hashSeed = uuid4()
        now = Self.clock()
    }

    static func clock() -> Timestamp {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return Timestamp(seconds: Int64(t.tv_sec), nanoseconds: UInt32(t.tv_nsec))
    }

    private func writeBlock(_ block: UInt64, _ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try device.write($0, at: block * UInt64(layout.blockSize)) }
    }

    private func group(of block: UInt64) -> Int { Int((block - layout.firstDataBlock) / layout.blocksPerGroup) }

    /// Marks `count` blocks from `start` in use.
    private mutating func use(_ start: UInt64, _ count: Int) {
        for b in start..<(start + UInt64(count)) {
            let g = group(of: b)
            Bitmap.set(&blockBitmaps[g], Int(b - layout.groupFirstBlock(g)))
            freeBlocks[g] -= 1
        }
    }

    /// The next `count` free blocks as one run, first fit from `goal`.
    private mutating func take(_ count: Int, from goal: UInt64) throws -> UInt64 {
        var start = goal
        while start + UInt64(count) <= layout.blocksCount {
            var run = 0
            while run < count {
                let b = start + UInt64(run)
                let g = group(of: b)
                if Bitmap.isSet(blockBitmaps[g], Int(b - layout.groupFirstBlock(g))) { break }
                run += 1
            }
            if run == count {
                use(start, count)
                return start
            }
            start += UInt64(run + 1)
        }
        throw HoldfastError.invalidArgument("the image is too small for its journal and root directory")
    }

    private mutating func useInode(_ n: UInt32, directory: Bool) {
        let g = Int((n - 1) / layout.inodesPerGroup)
        Bitmap.set(&inodeBitmaps[g], Int((n - 1) % layout.inodesPerGroup))
        freeInodes[g] -= 1
        if directory { usedDirs[g] += 1 }
    }

    mutating func write() throws -> Superblock {
        let bs = layout.blockSize
        layout.metadataBlocks { start, count in self.use(start, count) }
        for n in 1..<FormatLayout.firstInode { useInode(n, directory: false) }

        // The superblock first: every checksum below is seeded from its UUID.
        var sbRaw = superblockBytes()
        var sealed = SuperblockRecord(raw: sbRaw)
        sealed.seal()
        var sb = try Superblock(sealed.raw)

        // Journal: one contiguous run after group 0's flex metadata, its superblock in its first block.
        var journalExtents: [Extent] = []
        if layout.journalBlocks > 0 {
            let goal = layout.groupFirstBlock(layout.groups / 2)
            let start = try take(layout.journalBlocks, from: goal)
            var logical: UInt32 = 0
            while Int(logical) < layout.journalBlocks {
                let n = min(32768, layout.journalBlocks - Int(logical))
                journalExtents.append(Extent(logical: logical, length: UInt16(n), physical: start + UInt64(logical), unwritten: false))
                logical += UInt32(n)
            }
            try writeBlock(start, journalSuperblock())
        }

        // Root and lost+found directories.
        let rootBlock = try take(1, from: layout.firstDataBlock)
        let lostBlocks = max(1, 16384 / bs)
        let lostStart = try take(lostBlocks, from: rootBlock)
        useInode(FormatLayout.lostAndFoundInode, directory: true)
        usedDirs[0] += 1  // the root, whose inode is among the reserved ones

        var inodes: [InodeRecord] = []
        var root = newInode(FormatLayout.rootInode, mode: 0o40755, links: 3)
        var rootDir = DirectoryLeaf.initial(selfInode: 2, parent: 2, blockSize: bs, checksums: true)
        _ = DirectoryLeaf.insert(&rootDir, inode: 11, name: Array("lost+found".utf8), fileType: FileType.directory.rawValue, blockSize: bs, checksums: true)
        root.blockArea = ExtentNodeEncoding.leaf([Extent(logical: 0, length: 1, physical: rootBlock, unwritten: false)], byteCount: 60)
        root.size = UInt64(bs)
        root.sectors = UInt64(bs / 512)
        DirectoryLeaf.seal(&rootDir, seed: seed(root, sb))
        try writeBlock(rootBlock, rootDir)
        inodes.append(root)

        var lost = newInode(FormatLayout.lostAndFoundInode, mode: 0o40700, links: 2)
        lost.blockArea = ExtentNodeEncoding.leaf([Extent(logical: 0, length: UInt16(lostBlocks), physical: lostStart, unwritten: false)], byteCount: 60)
        lost.size = UInt64(lostBlocks * bs)
        lost.sectors = UInt64(lostBlocks * bs / 512)
        for i in 0..<lostBlocks {
            var b = i == 0 ? DirectoryLeaf.initial(selfInode: 11, parent: 2, blockSize: bs, checksums: true)
                           : DirectoryLeaf.empty(blockSize: bs, checksums: true)
            DirectoryLeaf.seal(&b, seed: seed(lost, sb))
            try writeBlock(lostStart + UInt64(i), b)
        }
        inodes.append(lost)

        if layout.journalBlocks > 0 {
            var journal = newInode(FormatLayout.journalInode, mode: 0o100600, links: 1)
            journal.size = UInt64(layout.journalBlocks) * UInt64(bs)
            journal.sectors = UInt64(layout.journalBlocks) * UInt64(bs / 512)
            if journalExtents.count <= 4 {
                journal.blockArea = ExtentNodeEncoding.leaf(journalExtents, byteCount: 60)
            } else {
                let leafBlock = try take(1, from: journalExtents[0].physical)
                var leaf = ExtentNodeEncoding.leaf(journalExtents, byteCount: bs)
                ExtentNodeEncoding.seal(&leaf, seed: seed(journal, sb))
                try writeBlock(leafBlock, leaf)
                journal.blockArea = ExtentNodeEncoding.index([ExtentIndex(logical: 0, child: leafBlock)], depth: 1, byteCount: 60)
                journal.sectors += UInt64(bs / 512)
            }
            // s_jnl_blocks: a copy of the journal's i_block, then its size.
            let area = journal.blockArea
            for i in 0..<15 { sbRaw.setLE32(0x10C + 4 * i, area.le32(4 * i)) }
            sbRaw.setLE32(0x10C + 4 * 15, UInt32(truncatingIfNeeded: journal.size >> 32))
            sbRaw.setLE32(0x10C + 4 * 16, UInt32(truncatingIfNeeded: journal.size))
            inodes.append(journal)
        }

        // Inode table of group 0: the reserved inodes are zero except those made above.
        let perBlock = bs / FormatLayout.inodeSize
        var tableBlocks: [Int: [UInt8]] = [:]
        for var rec in inodes {
            rec.seal(sb)
            let index = Int(rec.number - 1)
            let block = index / perBlock
            var bytes = tableBlocks[block] ?? [UInt8](repeating: 0, count: bs)
            bytes.setBytes((index % perBlock) * FormatLayout.inodeSize, rec.raw)
            tableBlocks[block] = bytes
        }
        for (block, bytes) in tableBlocks { try writeBlock(layout.inodeTable[0] + UInt64(block), bytes) }

        // Free counts are final now: seal the superblock, then descriptors and bitmaps.
        sbRaw.setLE32(0xC, UInt32(truncatingIfNeeded: UInt64(freeBlocks.reduce(0, +))))
        sbRaw.setLE32(0x158, UInt32(truncatingIfNeeded: UInt64(freeBlocks.reduce(0, +)) >> 32))
        sbRaw.setLE32(0x10, UInt32(freeInodes.reduce(0, +)))
        var record = SuperblockRecord(raw: sbRaw)
        record.seal()
        sbRaw = record.raw
        sb = try Superblock(sbRaw)

        var table = [UInt8](repeating: 0, count: layout.gdtBlocks * bs)
        for g in 0..<layout.groups {
            var gd = GroupDescriptorRecord([UInt8](repeating: 0, count: FormatLayout.descriptorSize), group: UInt32(g))
            gd.blockBitmap = layout.blockBitmap[g]
            gd.inodeBitmap = layout.inodeBitmap[g]
            gd.inodeTable = layout.inodeTable[g]
            gd.freeBlocksCount = UInt32(freeBlocks[g])
            gd.freeInodesCount = UInt32(freeInodes[g])
            gd.usedDirsCount = UInt32(usedDirs[g])
            let used = Int(layout.inodesPerGroup) - freeInodes[g]
            gd.inodeTableUnused = UInt32(Int(layout.inodesPerGroup) - used)
            gd.flags = GroupDescriptor.inodeTableZeroed | (used == 0 ? GroupDescriptor.inodeUninit : 0)
            gd.setBlockBitmapChecksum(blockBitmaps[g][...], sb)
            gd.setInodeBitmapChecksum(inodeBitmaps[g][...], sb)
            gd.seal(sb)
            table.setBytes(g * FormatLayout.descriptorSize, gd.raw)
            try writeBlock(layout.blockBitmap[g], blockBitmaps[g])
            if used > 0 { try writeBlock(layout.inodeBitmap[g], inodeBitmaps[g]) }
        }

        // The primary and every backup: superblock (with its group number) and descriptor table.
        for g in 0..<layout.groups where FormatLayout.hasSuperblock(g) {
            var copy = SuperblockRecord(raw: sbRaw)
            copy.raw.setLE16(0x5A, UInt16(truncatingIfNeeded: g))  // s_block_group_nr
            copy.seal()
            let first = layout.groupFirstBlock(g)
            if g == 0 {
                try copy.raw.withUnsafeBytes { try device.write($0, at: UInt64(Superblock.byteOffset)) }
            } else {
                var block = [UInt8](repeating: 0, count: bs)
                block.setBytes(0, copy.raw)
                try writeBlock(first, block)
            }
            let gdtStart = g == 0 ? UInt64(Superblock.byteOffset + Superblock.size + bs - 1) / UInt64(bs) : first + 1
            for i in 0..<layout.gdtBlocks {
                try writeBlock(gdtStart + UInt64(i), Array(table[(i * bs)..<((i + 1) * bs)]))
            }
        }
        return sb
    }

    private func seed(_ rec: InodeRecord, _ sb: Superblock) -> UInt32 {
        CRC32C.update(CRC32C.update(sb.checksumSeed, littleEndian: rec.number), littleEndian: rec.generation)
    }

    private func newInode(_ number: UInt32, mode: UInt16, links: UInt16) -> InodeRecord {
        var r = InodeRecord(number: number, inodeSize: FormatLayout.inodeSize, extraIsize: 32)
        r.mode = mode
        r.linksCount = links
        r.accessTime = now
        r.changeTime = now
        r.modificationTime = now
        r.creationTime = now
        r.flags = Inode.flagExtents
        return r
    }

    /// The primary superblock's fields (super.rst); free counts and s_jnl_blocks come later.
    private func superblockBytes() -> [UInt8] {
        var r = [UInt8](repeating: 0, count: Superblock.size)
        let inodes = UInt64(layout.inodesPerGroup) * UInt64(layout.groups)
        r.setLE32(0x0, UInt32(inodes))                                    // s_inodes_count
        r.setLE32(0x4, UInt32(truncatingIfNeeded: layout.blocksCount))   // s_blocks_count_lo
        r.setLE32(0x150, UInt32(truncatingIfNeeded: layout.blocksCount >> 32))
        let reserved = layout.blocksCount / 20                           // 5% for root, as mke2fs
        r.setLE32(0x8, UInt32(truncatingIfNeeded: reserved))             // s_r_blocks_count_lo
        r.setLE32(0x154, UInt32(truncatingIfNeeded: reserved >> 32))
        r.setLE32(0x14, UInt32(layout.firstDataBlock))                   // s_first_data_block
        let log = UInt32(layout.blockSize.trailingZeroBitCount - 10)
        r.setLE32(0x18, log)                                             // s_log_block_size
        r.setLE32(0x1C, log)                                             // s_log_cluster_size
        r.setLE32(0x20, UInt32(layout.blocksPerGroup))                   // s_blocks_per_group
        r.setLE32(0x24, UInt32(layout.blocksPerGroup))                   // s_clusters_per_group
        r.setLE32(0x28, layout.inodesPerGroup)                           // s_inodes_per_group
        r.setLE32(0x30, now.encodedBase)                                 // s_wtime
        r.setLE16(0x36, 0xFFFF)                                          // s_max_mnt_count: -1
        r.setLE16(0x38, Superblock.magic)
        r.setLE16(0x3A, SuperblockRecord.stateValid)                     // s_state
        r.setLE16(0x3C, 1)                                               // s_errors: continue
        r.setLE32(0x40, now.encodedBase)                                 // s_lastcheck
        r.setLE32(0x4C, 1)                                               // s_rev_level: dynamic
        r.setLE32(0x54, FormatLayout.firstInode)                         // s_first_ino
        r.setLE16(0x58, UInt16(FormatLayout.inodeSize))                  // s_inode_size
        r.setLE32(0x5C, Formatter.compat)
        r.setLE32(0x60, Formatter.incompat)
        r.setLE32(0x64, Formatter.roCompat)
        r.setBytes(0x68, uuid)                                           // s_uuid
        r.setCString(0x78, 16, options.label)                            // s_volume_name
        if layout.journalBlocks > 0 {
            r.setLE32(0xE0, FormatLayout.journalInode)                   // s_journal_inum
            r.setU8(0xFD, 1)                                             // s_jnl_backup_type: EXT3_JNL_BACKUP_BLOCKS
        }
        for i in 0..<4 { r.setLE32(0xEC + 4 * i, hashSeed.le32(4 * i)) } // s_hash_seed
        r.setU8(0xFC, DirectoryHash.Version.halfMD4.rawValue)            // s_def_hash_version
        r.setLE16(0xFE, UInt16(FormatLayout.descriptorSize))             // s_desc_size
        r.setLE32(0x100, 0x000C)                                         // s_default_mount_opts: user_xattr, acl
        r.setLE32(0x108, now.encodedBase)                                // s_mkfs_time
        r.setLE16(0x15C, 32)                                             // s_min_extra_isize
        r.setLE16(0x15E, 32)                                             // s_want_extra_isize
        r.setLE32(0x160, Superblock.flagSignedHash)                      // s_flags: x86's signed char
        r.setU8(0x174, UInt8(FormatLayout.groupsPerFlex.trailingZeroBitCount)) // s_log_groups_per_flex
        r.setU8(0x175, 1)                                                // s_checksum_type: crc32c
        if layout.journalBlocks == 0 { r.setLE32(0x5C, Formatter.compat & ~CompatFeatures.hasJournal.rawValue) }
        return r
    }

    /// A jbd2 v2 superblock for an empty internal journal (journal.rst), with crc32c checksums.
    private func journalSuperblock() -> [UInt8] {
        var j = [UInt8](repeating: 0, count: layout.blockSize)
        j.setBE32(0x0, Jbd2.magic)
        j.setBE32(0x4, Jbd2.BlockType.superblockV2.rawValue)
        j.setBE32(0xC, UInt32(layout.blockSize))       // s_blocksize
        j.setBE32(0x10, UInt32(layout.journalBlocks))  // s_maxlen
        j.setBE32(0x14, 1)                             // s_first
        j.setBE32(0x18, 1)                             // s_sequence
        j.setBE32(0x28, Jbd2.incompat64Bit | Jbd2.incompatCsumV3)
        j.setBytes(0x30, uuid)                         // s_uuid
        j.setBE32(0x40, 1)                             // s_nr_users
        j.setU8(0x50, 4)                               // s_checksum_type: crc32c
        var header = Array(j[0..<1024])
        header.setBE32(0xFC, 0)
        j.setBE32(0xFC, CRC32C.update(~0, header))
        return j
    }
}
