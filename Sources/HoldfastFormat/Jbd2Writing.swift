/// Encoders for the blocks a jbd2 writer puts in the log (journal.rst): descriptor blocks with
/// their tags, escaped data blocks, revoke blocks and commit blocks, each sealed with the
/// checksums the journal's features ask for. The decoders beside them (`tags`, `revoked`,
/// `verify*`) read exactly what these write.
extension Jbd2 {
    /// One block to log: the filesystem block it belongs at, and its bytes as they should land
    /// there (before escaping).
    public struct LoggedBlock: Sendable {
        public let target: UInt64
        public let bytes: [UInt8]

        public init(target: UInt64, bytes: [UInt8]) {
            self.target = target
            self.bytes = bytes
        }
    }

    /// A block whose first four bytes are the jbd2 magic would read as a journal block: it is
    /// logged with them zeroed, and its tag says ESCAPE. Returns whether it escaped the block.
    @discardableResult
    public static func escape(_ block: inout [UInt8]) -> Bool {
        guard block.count >= 4, block.be32(0) == magic else { return false }
        block.setBE32(0, 0)
        return true
    }

    /// The same, for a block staged in a buffer.
    @discardableResult
    public static func escape(_ block: UnsafeMutableRawBufferPointer) -> Bool {
        guard block.count >= 4, block.load(fromByteOffset: 0, as: UInt32.self) == magic.bigEndian else { return false }
        block.storeBytes(of: 0, toByteOffset: 0, as: UInt32.self)
        return true
    }

    /// The checksum of a logged block in its tag: crc32c over the transaction's sequence number
    /// (big-endian) and the block as logged, escaped or not (the kernel verifies it before it
    /// puts the magic back).
    public static func dataChecksum(_ logged: [UInt8], sequence: UInt32, journal: Superblock) -> UInt32 {
        CRC32C.update(CRC32C.update(journal.checksumSeed, sequence.bigEndianBytes), logged)
    }

    /// The same, for a block staged in a buffer.
    public static func dataChecksum(_ logged: UnsafeRawBufferPointer, sequence: UInt32, journal: Superblock) -> UInt32 {
        CRC32C.update(CRC32C.update(journal.checksumSeed, sequence.bigEndianBytes), logged)
    }

    /// The 12-byte header of a journal block of `type` in transaction `sequence`.
    static func header(_ block: inout [UInt8], _ type: BlockType, sequence: UInt32) {
        block.setBE32(0, magic)
        block.setBE32(4, type.rawValue)
        block.setBE32(8, sequence)
    }

    /// Bytes at the end of descriptor and revoke blocks for their checksum (v2 and v3).
    static func tailSize(_ journal: Superblock) -> Int { journal.hasChecksumV2orV3 ? 4 : 0 }

    /// How many tags one descriptor block holds: the first carries the journal's UUID after it,
    /// the rest say SAME_UUID.
    public static func tagsPerDescriptor(_ journal: Superblock) -> Int {
        let room = Int(journal.blockSize) - 12 - tailSize(journal) - 16
        return max(0, room / journal.tagSize)
    }

    /// A descriptor block for the blocks of `logged` (at most `tagsPerDescriptor`), in order, in
    /// transaction `sequence`. `escaped[i]` says the i-th block was logged escaped, and
    /// `checksums[i]` is its `dataChecksum` (ignored without checksums).
    public static func descriptorBlock(targets: [UInt64], escaped: [Bool], checksums: [UInt32],
                                       sequence: UInt32, journal: Superblock) -> [UInt8] {
        precondition(!targets.isEmpty && targets.count <= tagsPerDescriptor(journal), "a descriptor holds 1 to tagsPerDescriptor tags")
        precondition(escaped.count == targets.count && checksums.count == targets.count, "one flag and one checksum per tag")
        var block = [UInt8](repeating: 0, count: Int(journal.blockSize))
        header(&block, .descriptor, sequence: sequence)
        var o = 12
        for (i, target) in targets.enumerated() {
            precondition(journal.is64Bit || target <= UInt64(UInt32.max), "block \(target) needs a 64-bit journal")
            var flags: UInt32 = 0
            if escaped[i] { flags |= tagEscape }
            if i > 0 { flags |= tagSameUUID }
            if i == targets.count - 1 { flags |= tagLast }
            block.setBE32(o, UInt32(truncatingIfNeeded: target))
            if journal.hasChecksumV3 {
                block.setBE32(o + 4, flags)
                if journal.is64Bit { block.setBE32(o + 8, UInt32(truncatingIfNeeded: target >> 32)) }
                block.setBE32(o + 12, checksums[i])
            } else {
                let v2 = journal.featureIncompat & incompatCsumV2 != 0
                block.setBE16(o + 4, v2 ? UInt16(truncatingIfNeeded: checksums[i]) : 0)
                block.setBE16(o + 6, UInt16(flags))
                if journal.is64Bit { block.setBE32(o + 8, UInt32(truncatingIfNeeded: target >> 32)) }
            }
            o += journal.tagSize
            if i == 0 {
                block.setBytes(o, journal.uuid.prefix(16))
                o += 16
            }
        }
        sealTail(&block, journal)
        return block
    }

    /// The revoke blocks that record `blocks` as revoked in transaction `sequence` (none for an
    /// empty list). Each holds as many block numbers as fit; r_count is the bytes it uses.
    public static func revokeBlocks(_ blocks: [UInt64], sequence: UInt32, journal: Superblock) -> [[UInt8]] {
        let size = journal.is64Bit ? 8 : 4
        let perBlock = (Int(journal.blockSize) - 16 - tailSize(journal)) / size
        var out: [[UInt8]] = []
        var start = 0
        while start < blocks.count {
            let part = blocks[start..<min(blocks.count, start + perBlock)]
            var block = [UInt8](repeating: 0, count: Int(journal.blockSize))
            header(&block, .revoke, sequence: sequence)
            var o = 16
            for b in part {
                if size == 8 {
                    block.setBE64(o, b)
                } else {
                    precondition(b <= UInt64(UInt32.max), "block \(b) needs a 64-bit journal")
                    block.setBE32(o, UInt32(b))
                }
                o += size
            }
            block.setBE32(0xC, UInt32(o))
            sealTail(&block, journal)
            out.append(block)
            start += part.count
        }
        return out
    }

    /// The commit block of transaction `sequence`, stamped with its commit time (which must not
    /// go back: the kernel takes an older time after a newer one for a stale log).
    public static func commitBlock(sequence: UInt32, seconds: UInt64, nanoseconds: UInt32, journal: Superblock) -> [UInt8] {
        var block = [UInt8](repeating: 0, count: Int(journal.blockSize))
        header(&block, .commit, sequence: sequence)
        block.setBE64(0x30, seconds)
        block.setBE32(0x38, nanoseconds)
        if journal.hasChecksumV2orV3 {
            // h_chksum_type and h_chksum_size stay 0; h_chksum[0] covers the whole block.
            block.setBE32(0x10, CRC32C.update(journal.checksumSeed, block))
        }
        return block
    }

    /// Writes the checksum of a descriptor or revoke block into its last four bytes.
    static func sealTail(_ block: inout [UInt8], _ journal: Superblock) {
        guard journal.hasChecksumV2orV3 else { return }
        let t = block.count - 4
        block.setBE32(t, 0)
        block.setBE32(t, CRC32C.update(journal.checksumSeed, block))
    }

    /// The log blocks of one transaction, in the order they go to the journal: for each group of
    /// blocks a descriptor followed by the (escaped) blocks, then the revoke blocks, then the
    /// commit block. The commit block comes last and separately, since it is written only after
    /// the rest is on stable storage.
    public struct EncodedTransaction: Sendable {
        /// Descriptors, logged blocks and revoke blocks, in log order.
        public var body: [[UInt8]]
        public var commit: [UInt8]
        /// Log blocks the transaction takes, its commit block included.
        public var length: Int { body.count + 1 }
    }

    public static func encodeTransaction(_ logged: [LoggedBlock], revoked: [UInt64], sequence: UInt32,
                                         commitSeconds: UInt64, commitNanoseconds: UInt32, journal: Superblock) -> EncodedTransaction {
        let perDescriptor = tagsPerDescriptor(journal)
        precondition(perDescriptor > 0, "a journal block too small for one tag")
        var body: [[UInt8]] = []
        var start = 0
        while start < logged.count {
            let group = logged[start..<min(logged.count, start + perDescriptor)]
            var blocks: [[UInt8]] = []
            var escaped: [Bool] = []
            var sums: [UInt32] = []
            for item in group {
                precondition(item.bytes.count == Int(journal.blockSize), "a logged block is one journal block")
                var b = item.bytes
                escaped.append(escape(&b))
                sums.append(journal.hasChecksumV2orV3 ? dataChecksum(b, sequence: sequence, journal: journal) : 0)
                blocks.append(b)
            }
            body.append(descriptorBlock(targets: group.map(\.target), escaped: escaped, checksums: sums, sequence: sequence, journal: journal))
            body += blocks
            start += group.count
        }
        body += revokeBlocks(revoked, sequence: sequence, journal: journal)
        let commit = commitBlock(sequence: sequence, seconds: commitSeconds, nanoseconds: commitNanoseconds, journal: journal)
        return EncodedTransaction(body: body, commit: commit)
    }
}
