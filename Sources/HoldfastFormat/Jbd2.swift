/// jbd2 on-disk structures (journal.rst). Everything in the journal is big-endian.
public enum Jbd2 {
    public static let magic: UInt32 = 0xC03B_3998

    /// A logged block whose first four bytes were the jbd2 magic is written with them zeroed and
    /// its tag flagged JBD2_FLAG_ESCAPE; replay puts the magic back.
    public static func unescape(_ block: inout [UInt8]) { block.setBE32(0, magic) }

    /// The same, for a block read straight into a buffer.
    public static func unescape(_ block: UnsafeMutableRawBufferPointer) {
        precondition(block.count >= 4, "an escaped block holds at least the magic")
        block.storeBytes(of: magic.bigEndian, toByteOffset: 0, as: UInt32.self)
    }

    public enum BlockType: UInt32, Sendable {
        case descriptor = 1, commit = 2, superblockV1 = 3, superblockV2 = 4, revoke = 5
    }

    // Journal feature bits.
    public static let compatChecksum: UInt32 = 0x1
    public static let incompatRevoke: UInt32 = 0x1
    public static let incompat64Bit: UInt32 = 0x2
    public static let incompatAsyncCommit: UInt32 = 0x4
    public static let incompatCsumV2: UInt32 = 0x8
    public static let incompatCsumV3: UInt32 = 0x10
    public static let incompatFastCommit: UInt32 = 0x20
    public static let knownIncompat: UInt32 = 0x3F

    // Descriptor tag flags (t_flags).
    public static let tagEscape: UInt32 = 0x1
    public static let tagSameUUID: UInt32 = 0x2
    public static let tagDeleted: UInt32 = 0x4
    public static let tagLast: UInt32 = 0x8

    /// The 12-byte header every journal metadata block starts with.
    public struct Header: Sendable {
        public let magic: UInt32      // h_magic
        public let type: UInt32       // h_blocktype
        public let sequence: UInt32   // h_sequence

        public init(_ b: [UInt8]) {
            magic = b.be32(0)
            type = b.be32(4)
            sequence = b.be32(8)
        }
    }

    /// The journal superblock's bytes with a named accessor for every field (journal.rst,
    /// big-endian): the one offset table of the journal superblock, which the decoder reads
    /// through and writers (mkfs, the journal) write through.
    public struct SuperblockRecord: Sendable {
        public var raw: [UInt8]

        public init(raw: [UInt8]) { self.raw = raw }

        /// A zeroed block of `blockSize` bytes.
        public static func empty(blockSize: Int) -> SuperblockRecord {
            SuperblockRecord(raw: [UInt8](repeating: 0, count: blockSize))
        }

        /// h_magic
        public var magic: UInt32 { get { raw.be32(0x0) } set { raw.setBE32(0x0, newValue) } }
        /// h_blocktype
        public var blockType: UInt32 { get { raw.be32(0x4) } set { raw.setBE32(0x4, newValue) } }
        /// s_blocksize
        public var blockSize: UInt32 { get { raw.be32(0xC) } set { raw.setBE32(0xC, newValue) } }
        /// s_maxlen
        public var maxLength: UInt32 { get { raw.be32(0x10) } set { raw.setBE32(0x10, newValue) } }
        /// s_first: the first block of the log
        public var first: UInt32 { get { raw.be32(0x14) } set { raw.setBE32(0x14, newValue) } }
        /// s_sequence: the first transaction expected in the log
        public var sequence: UInt32 { get { raw.be32(0x18) } set { raw.setBE32(0x18, newValue) } }
        /// s_start: where the log begins (0: nothing to recover)
        public var start: UInt32 { get { raw.be32(0x1C) } set { raw.setBE32(0x1C, newValue) } }
        /// s_errno (as its bit pattern)
        public var errno: UInt32 { get { raw.be32(0x20) } set { raw.setBE32(0x20, newValue) } }
        /// s_feature_compat
        public var featureCompat: UInt32 { get { raw.be32(0x24) } set { raw.setBE32(0x24, newValue) } }
        /// s_feature_incompat
        public var featureIncompat: UInt32 { get { raw.be32(0x28) } set { raw.setBE32(0x28, newValue) } }
        /// s_feature_ro_compat
        public var featureROCompat: UInt32 { get { raw.be32(0x2C) } set { raw.setBE32(0x2C, newValue) } }
        /// s_nr_users
        public var usersCount: UInt32 { get { raw.be32(0x40) } set { raw.setBE32(0x40, newValue) } }
        /// s_num_fc_blks
        public var fastCommitBlocks: UInt32 { get { raw.be32(0x54) } set { raw.setBE32(0x54, newValue) } }
        /// s_checksum
        public var checksum: UInt32 { get { raw.be32(0xFC) } set { raw.setBE32(0xFC, newValue) } }
        /// s_uuid
        public var uuid: [UInt8] { get { raw.bytes(0x30, 16) } set { raw.setBytes(0x30, newValue.prefix(16)) } }
        /// s_checksum_type: 4 = crc32c
        public var checksumType: UInt8 { get { raw.u8(0x50) } set { raw.setU8(0x50, newValue) } }

        /// crc32c of the superblock's first 1024 bytes, its checksum field taken as zero.
        public var computedChecksum: UInt32 {
            var header = Array(raw.prefix(1024))
            header.setBE32(0xFC, 0)
            return CRC32C.update(~0, header)
        }

        /// Writes s_checksum (journals with checksum v2 or v3).
        public mutating func seal() { checksum = computedChecksum }
    }

    /// The journal superblock (block 0 of the journal).
    public struct Superblock: Sendable {
        public let blockType: UInt32        // h_blocktype
        public let blockSize: UInt32        // s_blocksize
        public let maxLength: UInt32        // s_maxlen
        public let first: UInt32            // s_first
        public let sequence: UInt32         // s_sequence
        public let start: UInt32            // s_start (0: nothing to recover)
        public let errno: Int32             // s_errno
        public let featureCompat: UInt32    // s_feature_compat
        public let featureIncompat: UInt32  // s_feature_incompat
        public let featureROCompat: UInt32  // s_feature_ro_compat
        public let uuid: [UInt8]            // s_uuid
        public let usersCount: UInt32       // s_nr_users
        public let checksumType: UInt8      // s_checksum_type
        public let fastCommitBlocks: UInt32 // s_num_fc_blks
        public let checksum: UInt32         // s_checksum

        public init(_ b: [UInt8], fsBlockSize: Int) throws(CorruptionError) {
            let h = Header(b)
            guard h.magic == Jbd2.magic else {
                throw CorruptionError(.journalSuperblock, .badMagic(found: UInt64(h.magic), expected: UInt64(Jbd2.magic)))
            }
            guard h.type == BlockType.superblockV1.rawValue || h.type == BlockType.superblockV2.rawValue else {
                throw CorruptionError(.journalSuperblock, .impossible("block type \(h.type) is not a journal superblock"))
            }
            let r = SuperblockRecord(raw: b)
            blockType = h.type
            blockSize = r.blockSize
            maxLength = r.maxLength
            first = r.first
            sequence = r.sequence
            start = r.start
            errno = Int32(bitPattern: r.errno)
            // Version 1 superblocks have no feature fields.
            let v2 = h.type == BlockType.superblockV2.rawValue
            featureCompat = v2 ? r.featureCompat : 0
            featureIncompat = v2 ? r.featureIncompat : 0
            featureROCompat = v2 ? r.featureROCompat : 0
            uuid = r.uuid
            usersCount = r.usersCount
            checksumType = r.checksumType
            fastCommitBlocks = r.fastCommitBlocks
            checksum = r.checksum
            guard Int(blockSize) == fsBlockSize else {
                throw CorruptionError(.journalSuperblock, .impossible("journal block size \(blockSize) differs from the filesystem's \(fsBlockSize)"))
            }
            guard first >= 1, first < maxLength else {
                throw CorruptionError(.journalSuperblock, .outOfRange(field: "s_first", value: UInt64(first), limit: UInt64(maxLength)))
            }
            guard start == 0 || (start >= first && start < maxLength) else {
                throw CorruptionError(.journalSuperblock, .outOfRange(field: "s_start", value: UInt64(start), limit: UInt64(maxLength)))
            }
            if hasChecksumV2orV3 {
                let computed = r.computedChecksum
                guard computed == checksum else {
                    throw CorruptionError(.journalSuperblock, .badChecksum(stored: checksum, computed: computed))
                }
            }
        }

        public var hasChecksumV2orV3: Bool { featureIncompat & (Jbd2.incompatCsumV2 | Jbd2.incompatCsumV3) != 0 }
        public var hasChecksumV3: Bool { featureIncompat & Jbd2.incompatCsumV3 != 0 }
        public var is64Bit: Bool { featureIncompat & Jbd2.incompat64Bit != 0 }
        public var hasRevoke: Bool { featureIncompat & Jbd2.incompatRevoke != 0 }
        /// The seed of descriptor, commit, revoke and data-tag checksums.
        public var checksumSeed: UInt32 { CRC32C.update(~0, uuid) }

        /// Bytes per descriptor tag.
        public var tagSize: Int {
            if hasChecksumV3 { return 16 }
            var size = 12
            if featureIncompat & Jbd2.incompatCsumV2 != 0 { size += 2 }
            return is64Bit ? size : size - 4
        }

        public var featureNames: [String] {
            var names: [String] = []
            if featureCompat & Jbd2.compatChecksum != 0 { names.append("journal_checksum") }
            if featureIncompat & Jbd2.incompatRevoke != 0 { names.append("journal_incompat_revoke") }
            if featureIncompat & Jbd2.incompat64Bit != 0 { names.append("journal_64bit") }
            if featureIncompat & Jbd2.incompatAsyncCommit != 0 { names.append("journal_async_commit") }
            if featureIncompat & Jbd2.incompatCsumV2 != 0 { names.append("journal_checksum_v2") }
            if featureIncompat & Jbd2.incompatCsumV3 != 0 { names.append("journal_checksum_v3") }
            if featureIncompat & Jbd2.incompatFastCommit != 0 { names.append("journal_fast_commit") }
            return names
        }
    }

    /// One descriptor tag: the filesystem block the next journal block belongs at.
    public struct Tag: Sendable {
        public let target: UInt64
        public let flags: UInt32
        public let checksum: UInt32
    }

    /// Tags of a descriptor block; `tailSize` is 4 with checksums v2/v3.
    public static func tags(_ b: [UInt8], journal: Superblock) -> [Tag] {
        var tags: [Tag] = []
        let tagSize = journal.tagSize
        let tail = journal.hasChecksumV2orV3 ? 4 : 0
        var o = 12
        while o + tagSize <= b.count - tail {
            let low = UInt64(b.be32(o))
            var flags: UInt32
            var high: UInt64 = 0
            var csum: UInt32 = 0
            if journal.hasChecksumV3 {
                flags = b.be32(o + 4)
                if journal.is64Bit { high = UInt64(b.be32(o + 8)) }
                csum = b.be32(o + 12)
            } else {
                csum = UInt32(b.be16(o + 4))
                flags = UInt32(b.be16(o + 6))
                if journal.is64Bit { high = UInt64(b.be32(o + 8)) }
            }
            tags.append(Tag(target: low | high << 32, flags: flags, checksum: csum))
            o += tagSize
            if flags & tagSameUUID == 0 { o += 16 }
            if flags & tagLast != 0 { break }
        }
        return tags
    }

    /// Verifies the 4-byte tail checksum of a descriptor or revoke block.
    public static func verifyBlockTail(_ b: [UInt8], journal: Superblock) -> Bool {
        guard journal.hasChecksumV2orV3 else { return true }
        var copy = b
        let t = b.count - 4
        let stored = b.be32(t)
        copy.setBE32(t, 0)
        return CRC32C.update(journal.checksumSeed, copy) == stored
    }

    /// Verifies a commit block's checksum (h_chksum[0] at 0x10) for v2/v3 journals.
    public static func verifyCommit(_ b: [UInt8], journal: Superblock) -> Bool {
        guard journal.hasChecksumV2orV3 else { return true }
        var copy = b
        let stored = b.be32(0x10)
        copy.setBE32(0x10, 0)
        return CRC32C.update(journal.checksumSeed, copy) == stored
    }

    /// Verifies a logged data block, as logged (an escaped block with its first word zeroed),
    /// against its tag (v2: low 16 bits; v3: all 32).
    public static func verifyData(_ b: [UInt8], tag: Tag, sequence: UInt32, journal: Superblock) -> Bool {
        guard journal.hasChecksumV2orV3 else { return true }
        let c = CRC32C.update(CRC32C.update(journal.checksumSeed, sequence.bigEndianBytes), b)
        return journal.hasChecksumV3 ? c == tag.checksum : (c & 0xFFFF) == tag.checksum
    }

    /// Block numbers of a revoke block.
    public static func revoked(_ b: [UInt8], journal: Superblock) -> [UInt64] {
        let count = Int(b.be32(0xC))
        let size = journal.is64Bit ? 8 : 4
        var out: [UInt64] = []
        var o = 16
        while o + size <= min(count, b.count) {
            out.append(size == 8 ? b.be64(o) : UInt64(b.be32(o)))
            o += size
        }
        return out
    }
}

extension FixedWidthInteger {
    public var bigEndianBytes: [UInt8] { withUnsafeBytes(of: self.bigEndian) { Array($0) } }
}
