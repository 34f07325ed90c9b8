/// The file type held in i_mode's top bits.
public enum FileType: UInt8, Sendable {
    case unknown = 0, regular = 1, directory = 2, characterDevice = 3, blockDevice = 4, fifo = 5, socket = 6, symlink = 7

    public init(mode: UInt16) {
        switch mode & 0xF000 {
        case 0x1000: self = .fifo
        case 0x2000: self = .characterDevice
        case 0x4000: self = .directory
        case 0x6000: self = .blockDevice
        case 0x8000: self = .regular
        case 0xA000: self = .symlink
        case 0xC000: self = .socket
        default: self = .unknown
        }
    }

    /// The letter `ls -l` shows.
    public var letter: Character {
        switch self {
        case .regular: "-"
        case .directory: "d"
        case .characterDevice: "c"
        case .blockDevice: "b"
        case .fifo: "p"
        case .socket: "s"
        case .symlink: "l"
        case .unknown: "?"
        }
    }
}

/// A timestamp with nanoseconds, as ext4 stores it (32-bit seconds plus an epoch extension).
public struct Timestamp: Sendable, Equatable, Comparable {
    public var seconds: Int64
    public var nanoseconds: UInt32

    public init(seconds: Int64, nanoseconds: UInt32) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }

    /// Decodes a base field and its optional `_extra` (low 2 bits: epoch; upper 30: nanoseconds).
    public init(base: UInt32, extra: UInt32?) {
        var s = Int64(Int32(bitPattern: base))
        var ns: UInt32 = 0
        if let extra {
            s += Int64(extra & 0x3) << 32
            ns = extra >> 2
        }
        self.init(seconds: s, nanoseconds: ns)
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool {
        (a.seconds, a.nanoseconds) < (b.seconds, b.nanoseconds)
    }
}

/// An inode record (inodes.rst). Decoded from the inode table slot of `inodeSize` bytes.
public struct Inode: Sendable {
    public let number: UInt32
    public let raw: [UInt8]

    public let mode: UInt16             // i_mode
    public let uid: UInt32              // i_uid | l_i_uid_high << 16
    public let gid: UInt32              // i_gid | l_i_gid_high << 16
    public let size: UInt64             // i_size_lo | i_size_high << 32
    public let accessTime: Timestamp    // i_atime + i_atime_extra
    public let changeTime: Timestamp    // i_ctime + i_ctime_extra
    public let modificationTime: Timestamp // i_mtime + i_mtime_extra
    public let creationTime: Timestamp? // i_crtime + i_crtime_extra
    public let deletionTime: UInt32     // i_dtime
    public let linksCount: UInt16       // i_links_count
    public let blocksRaw: UInt64        // i_blocks_lo | l_i_blocks_high << 32
    public let flags: UInt32            // i_flags
    public let generation: UInt32       // i_generation
    public let fileACL: UInt64          // i_file_acl_lo | l_i_file_acl_high << 32
    public let extraIsize: UInt16       // i_extra_isize
    public let projectID: UInt32        // i_projid

    // i_flags bits used by the read path.
    public static let flagIndex: UInt32 = 0x1000        // EXT4_INDEX_FL: hashed directory
    public static let flagHugeFile: UInt32 = 0x40000    // EXT4_HUGE_FILE_FL
    public static let flagExtents: UInt32 = 0x80000     // EXT4_EXTENTS_FL
    public static let flagEAInode: UInt32 = 0x200000    // EXT4_EA_INODE_FL
    public static let flagInlineData: UInt32 = 0x10000000 // EXT4_INLINE_DATA_FL
    public static let flagEncrypt: UInt32 = 0x800       // EXT4_ENCRYPT_FL
    public static let flagCasefold: UInt32 = 0x40000000 // EXT4_CASEFOLD_FL

    static let goodOldSize = 128
    static let checksumLoOffset = 0x7C
    static let checksumHiOffset = 0x82

    /// Decodes inode `number` and verifies its checksum when the image has metadata_csum.
    public init(_ raw: [UInt8], number: UInt32, superblock sb: Superblock) throws(CorruptionError) {
        self.number = number
        self.raw = raw
        mode = raw.le16(0x0)
        uid = UInt32(raw.le16(0x2)) | UInt32(raw.le16(0x78)) << 16
        gid = UInt32(raw.le16(0x18)) | UInt32(raw.le16(0x7A)) << 16
        size = UInt64(raw.le32(0x4)) | UInt64(raw.le32(0x6C)) << 32
        // As ext4_iget: an i_size that is negative as a loff_t is corruption.
        guard size <= UInt64(Int64.max) else {
            throw CorruptionError(.inode, inode: number, .outOfRange(field: "i_size", value: size, limit: UInt64(Int64.max)))
        }
        deletionTime = raw.le32(0x14)
        linksCount = raw.le16(0x1A)
        flags = raw.le32(0x20)
        generation = raw.le32(0x64)
        fileACL = UInt64(raw.le32(0x68)) | UInt64(raw.le16(0x76)) << 32
        blocksRaw = UInt64(raw.le32(0x1C)) | (sb.featureROCompat.contains(.hugeFile) ? UInt64(raw.le16(0x74)) << 32 : 0)

        var extra: UInt16 = 0
        if raw.count > Self.goodOldSize {
            extra = raw.le16(0x80)
            guard extra % 4 == 0, Self.goodOldSize + Int(extra) <= raw.count else {
                throw CorruptionError(.inode, inode: number, .outOfRange(field: "i_extra_isize", value: UInt64(extra), limit: UInt64(raw.count - Self.goodOldSize)))
            }
        }
        extraIsize = extra
        let extraEnd = Self.goodOldSize + Int(extra)
        func field(_ offset: Int) -> UInt32? { offset + 4 <= extraEnd ? raw.le32(offset) : nil }
        changeTime = Timestamp(base: raw.le32(0xC), extra: field(0x84))
        modificationTime = Timestamp(base: raw.le32(0x10), extra: field(0x88))
        accessTime = Timestamp(base: raw.le32(0x8), extra: field(0x8C))
        creationTime = field(0x90).map { Timestamp(base: $0, extra: field(0x94)) }
        projectID = field(0x9C) ?? 0

        if sb.hasMetadataChecksums {
            let hasHi = Self.checksumHiOffset + 2 <= extraEnd
            let stored = UInt32(raw.le16(Self.checksumLoOffset)) | (hasHi ? UInt32(raw.le16(Self.checksumHiOffset)) << 16 : 0)
            let computed = Self.computeChecksum(raw, number: number, generation: generation, extraEnd: extraEnd, superblock: sb)
            let mask: UInt32 = hasHi ? 0xFFFF_FFFF : 0xFFFF
            if stored != computed & mask {
                throw CorruptionError(.inode, inode: number, .badChecksum(stored: stored, computed: computed & mask))
            }
        }
    }

    /// crc32c over the whole slot with both checksum halves taken as zero.
    public static func computeChecksum(_ raw: [UInt8], number: UInt32, generation: UInt32, extraEnd: Int, superblock sb: Superblock) -> UInt32 {
        var copy = raw
        copy.setLE16(checksumLoOffset, 0)
        if checksumHiOffset + 2 <= extraEnd { copy.setLE16(checksumHiOffset, 0) }
        var c = CRC32C.update(sb.checksumSeed, littleEndian: number)
        c = CRC32C.update(c, littleEndian: generation)
        return CRC32C.update(c, copy)
    }

    /// The seed for checksums of blocks owned by this inode (extent blocks, directory blocks).
    public func checksumSeed(_ sb: Superblock) -> UInt32 {
        CRC32C.update(CRC32C.update(sb.checksumSeed, littleEndian: number), littleEndian: generation)
    }

    public var fileType: FileType { FileType(mode: mode) }
    public var permissions: UInt16 { mode & 0o7777 }
    public var usesExtents: Bool { flags & Self.flagExtents != 0 }
    public var hasInlineData: Bool { flags & Self.flagInlineData != 0 }
    public var isHashIndexed: Bool { flags & Self.flagIndex != 0 }

    /// The 60-byte i_block area: extent root, block map, fast symlink target or inline data.
    public var blockArea: [UInt8] { raw.bytes(0x28, 60) }

    /// i_blocks in 512-byte sectors (huge_file inodes count in filesystem blocks).
    public func sectors(_ sb: Superblock) -> UInt64 {
        if sb.featureROCompat.contains(.hugeFile) && flags & Self.flagHugeFile != 0 {
            return blocksRaw * UInt64(sb.blockSize / 512)
        }
        return blocksRaw
    }

    /// Device number for character and block devices: old (i_block[0]) or new (i_block[1]) encoding.
    public var device: (major: UInt32, minor: UInt32) {
        let b0 = raw.le32(0x28)
        if b0 != 0 { return ((b0 >> 8) & 0xFF, b0 & 0xFF) }
        let d = raw.le32(0x2C)
        return ((d & 0xFFF00) >> 8, (d & 0xFF) | ((d >> 12) & 0xFFF00))
    }

    /// The region of the slot after the extra fields, where in-inode xattrs live.
    public var inlineXattrRegion: ArraySlice<UInt8>? {
        let start = Self.goodOldSize + Int(extraIsize)
        guard raw.count > Self.goodOldSize, start + 4 <= raw.count else { return nil }
        return raw[start...]
    }
}
