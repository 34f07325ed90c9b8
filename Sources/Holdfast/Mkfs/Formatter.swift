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
        var record = superblockRecord()
        var sealed = record
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
            record.journalBlocks = (0..<15).map { area.blockPointer($0) }
                + [UInt32(truncatingIfNeeded: journal.size >> 32), UInt32(truncatingIfNeeded: journal.size)]
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
        record.freeBlocksCount = UInt64(freeBlocks.reduce(0, +))
        record.freeInodesCount = UInt32(freeInodes.reduce(0, +))
        record.seal()
        sb = try Superblock(record.raw)

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
            var copy = record
            copy.blockGroupNumber = UInt16(truncatingIfNeeded: g)
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
    private func superblockRecord() -> SuperblockRecord {
        var r = SuperblockRecord.empty()
        r.featureCompat = CompatFeatures(rawValue: Formatter.compat)
        r.featureIncompat = IncompatFeatures(rawValue: Formatter.incompat)  // first: 64bit decides the high halves
        r.featureROCompat = ROCompatFeatures(rawValue: Formatter.roCompat)
        r.inodesCount = UInt32(UInt64(layout.inodesPerGroup) * UInt64(layout.groups))
        r.blocksCount = layout.blocksCount
        r.reservedBlocksCount = layout.blocksCount / 20                  // 5% for root, as mke2fs
        r.firstDataBlock = UInt32(layout.firstDataBlock)
        let log = UInt32(layout.blockSize.trailingZeroBitCount - 10)
        r.logBlockSize = log
        r.logClusterSize = log
        r.blocksPerGroup = UInt32(layout.blocksPerGroup)
        r.clustersPerGroup = UInt32(layout.blocksPerGroup)
        r.inodesPerGroup = layout.inodesPerGroup
        r.writeTime = UInt64(now.encodedBase)
        r.maxMountCount = -1                                             // no limit
        r.magic = Superblock.magic
        r.state = .cleanlyUnmounted
        r.errors = 1                                                     // continue
        r.lastCheck = UInt64(now.encodedBase)
        r.revision = 1                                                   // dynamic
        r.firstInode = FormatLayout.firstInode
        r.inodeSize = UInt16(FormatLayout.inodeSize)
        r.uuid = uuid
        r.volumeName = options.label
        if layout.journalBlocks > 0 {
            r.journalInode = FormatLayout.journalInode
            r.journalBackupType = 1                                      // EXT3_JNL_BACKUP_BLOCKS
        } else {
            r.featureCompat.remove(.hasJournal)
        }
        r.hashSeed = hashSeed.littleEndianWords
        r.defaultHashVersion = DirectoryHash.Version.halfMD4.rawValue
        r.descriptorSize = UInt16(FormatLayout.descriptorSize)
        r.defaultMountOptions = 0x000C                                   // user_xattr, acl
        r.mkfsTime = UInt64(now.encodedBase)
        r.minExtraIsize = 32
        r.wantExtraIsize = 32
        r.flags = Superblock.flagSignedHash                              // x86's signed char
        r.logGroupsPerFlex = UInt8(FormatLayout.groupsPerFlex.trailingZeroBitCount)
        r.checksumType = 1                                               // crc32c
        return r
    }

    /// A jbd2 v2 superblock for an empty internal journal (journal.rst), with crc32c checksums.
    private func journalSuperblock() -> [UInt8] {
        var j = Jbd2.SuperblockRecord.empty(blockSize: layout.blockSize)
        j.magic = Jbd2.magic
        j.blockType = Jbd2.BlockType.superblockV2.rawValue
        j.blockSize = UInt32(layout.blockSize)
        j.maxLength = UInt32(layout.journalBlocks)
        j.first = 1
        j.sequence = 1
        j.featureIncompat = Jbd2.incompat64Bit | Jbd2.incompatCsumV3
        j.uuid = uuid
        j.usersCount = 1
        j.checksumType = 4                                  // crc32c
        j.seal()
        return j.raw
    }
}
