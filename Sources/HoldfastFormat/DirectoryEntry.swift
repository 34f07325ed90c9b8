/// A directory entry (ext4_dir_entry_2, directory.rst).
public struct DirectoryEntry: Sendable, Equatable {
    public let inode: UInt32      // inode
    public let name: [UInt8]      // name[name_len]
    public let fileType: UInt8    // file_type (with the filetype feature)

    /// The entry's file type as a name; `.unknown` on images without the filetype feature
    /// (the inode then says what it is).
    public var kind: FileType { FileType(rawValue: fileType) ?? .unknown }

    public init(inode: UInt32, name: [UInt8], fileType: UInt8) {
        self.inode = inode
        self.name = name
        self.fileType = fileType
    }

    public var nameString: String { String(decoding: name, as: UTF8.self) }
    public var isDotOrDotDot: Bool { name == [0x2E] || name == [0x2E, 0x2E] }
}

/// The shape of a directory block: which checksum it carries.
public enum DirectoryBlockKind: Sendable {
    case leaf
    case dxRoot
    case dxNode
}

/// Decoding of leaf directory blocks and their checksum tails.
public enum DirectoryBlock {
    /// The 12-byte tail that metadata_csum adds to every leaf block.
    public static let tailSize = 12
    static let tailFileType: UInt8 = 0xDE

    /// rec_len as stored, with the 64 KiB-block encoding.
    @inlinable public static func recordLength(_ raw: UInt16, blockSize: Int) -> Int {
        if blockSize < 65536 { return Int(raw) }
        if raw == 65535 || raw == 0 { return blockSize }
        return Int(raw & 65532) | Int(raw & 3) << 16
    }

    /// Does this block end in a checksum tail?
    public static func hasTail(_ block: [UInt8]) -> Bool {
        let t = block.count - tailSize
        return t >= 0 && block.le32(t) == 0 && block.le16(t + 4) == 12 && block.u8(t + 6) == 0 && block.u8(t + 7) == tailFileType
    }

    /// Is this block an htree interior node (a fake empty entry spanning the block)?
    public static func isDxNode(_ block: [UInt8]) -> Bool {
        block.count >= 16 && block.le32(0) == 0 && recordLength(block.le16(4), blockSize: block.count) == block.count && block.u8(6) == 0
    }

    /// Verifies the leaf tail checksum; `seed` is the directory inode's checksum seed.
    public static func verifyLeafChecksum(_ block: [UInt8], seed: UInt32, inode: UInt32, blockNumber: UInt64) throws(CorruptionError) {
        guard hasTail(block) else {
            throw CorruptionError(.directoryBlock, inode: inode, block: blockNumber, .impossible("no checksum tail"))
        }
        let t = block.count - tailSize
        let stored = block.le32(t + 8)
        let computed = CRC32C.update(seed, block[0..<t])
        guard stored == computed else {
            throw CorruptionError(.directoryBlock, inode: inode, block: blockNumber, .badChecksum(stored: stored, computed: computed))
        }
    }

    /// Walks the entries of a linear block (or an inline-data region), skipping empty slots.
    /// Validates rec_len and name_len so a corrupt block cannot take the walk outside itself.
    public static func entries(
        _ block: ArraySlice<UInt8>, blockSize: Int, inode: UInt32, blockNumber: UInt64?, structure: Structure = .directoryBlock
    ) throws(CorruptionError) -> [DirectoryEntry] {
        var result: [DirectoryEntry] = []
        try walk(block, blockSize: blockSize, inode: inode, blockNumber: blockNumber, structure: structure) { ino, name, type in
            result.append(DirectoryEntry(inode: ino, name: Array(block[name]), fileType: type))
        }
        return result
    }

    /// The inode of the entry named `name`, as `entries` would find it, without making the list:
    /// a lookup copies no name. The whole block is validated, as `entries` does.
    public static func find(
        _ name: [UInt8], in block: ArraySlice<UInt8>, blockSize: Int, inode: UInt32, blockNumber: UInt64?, structure: Structure = .directoryBlock
    ) throws(CorruptionError) -> UInt32? {
        var found: UInt32?
        try walk(block, blockSize: blockSize, inode: inode, blockNumber: blockNumber, structure: structure) { ino, range, _ in
            if found == nil && range.count == name.count && block[range].elementsEqual(name) { found = ino }
        }
        return found
    }

    /// Calls `body` with each live entry's inode, the range of its name in `block`, and its file
    /// type, in order; every record is checked first (rec_len, name_len).
    private static func walk(
        _ block: ArraySlice<UInt8>, blockSize: Int, inode: UInt32, blockNumber: UInt64?, structure: Structure,
        _ body: (UInt32, Range<Int>, UInt8) -> Void
    ) throws(CorruptionError) {
        var o = block.startIndex
        let end = block.endIndex
        while o < end {
            guard o + 8 <= end else {
                throw CorruptionError(structure, inode: inode, block: blockNumber, .impossible("entry header at offset \(o - block.startIndex) runs past the end"))
            }
            let ino = UInt32(block[o]) | UInt32(block[o + 1]) << 8 | UInt32(block[o + 2]) << 16 | UInt32(block[o + 3]) << 24
            let rawRec = UInt16(block[o + 4]) | UInt16(block[o + 5]) << 8
            let rec = recordLength(rawRec, blockSize: blockSize)
            let nameLength = Int(block[o + 6])
            let type = block[o + 7]
            guard rec >= 8, rec % 4 == 0, o + rec <= end else {
                throw CorruptionError(structure, inode: inode, block: blockNumber, .outOfRange(field: "rec_len at offset \(o - block.startIndex)", value: UInt64(rec), limit: UInt64(end - o)))
            }
            if ino != 0 {
                guard nameLength > 0, 8 + nameLength <= rec else {
                    throw CorruptionError(structure, inode: inode, block: blockNumber, .outOfRange(field: "name_len at offset \(o - block.startIndex)", value: UInt64(nameLength), limit: UInt64(rec - 8)))
                }
                body(ino, (o + 8)..<(o + 8 + nameLength), type)
            }
            o += rec
        }
    }
}

/// htree index structures (directory.rst, "Hash Tree Directories").
public struct DxRootInfo: Sendable {
    public let hashVersion: UInt8      // dx_root_info.hash_version
    public let infoLength: UInt8       // dx_root_info.info_length (8)
    public let indirectLevels: UInt8   // dx_root_info.indirect_levels
    public let unusedFlags: UInt8      // dx_root_info.unused_flags

    /// The root block: '.' (12 bytes) and '..' entries, then dx_root_info at 0x18.
    public init(_ block: [UInt8], inode: UInt32, blockNumber: UInt64, largeDir: Bool) throws(CorruptionError) {
        guard block.count >= 0x20 + 8 else {
            throw CorruptionError(.htree, inode: inode, block: blockNumber, .impossible("root block too small"))
        }
        hashVersion = block.u8(0x1C)
        infoLength = block.u8(0x1D)
        indirectLevels = block.u8(0x1E)
        unusedFlags = block.u8(0x1F)
        guard block.le32(0x18) == 0, infoLength == 8 else {
            throw CorruptionError(.htree, inode: inode, block: blockNumber, .impossible("bad dx_root_info (info_length \(infoLength))"))
        }
        let maxLevels: UInt8 = largeDir ? 3 : 2
        guard indirectLevels < maxLevels else {
            throw CorruptionError(.htree, inode: inode, block: blockNumber, .outOfRange(field: "indirect_levels", value: UInt64(indirectLevels), limit: UInt64(maxLevels - 1)))
        }
        guard hashVersion <= DirectoryHash.Version.teaUnsigned.rawValue || hashVersion == DirectoryHash.Version.siphash.rawValue else {
            throw CorruptionError(.htree, inode: inode, block: blockNumber, .outOfRange(field: "hash_version", value: UInt64(hashVersion), limit: 6))
        }
    }

    /// Where the count/limit header sits in the root block.
    public static let entriesOffset = 0x20
}

/// The entries of one htree node (root or interior): (hash, block), the first with an implied hash of 0.
public struct DxNode: Sendable {
    public let limit: UInt16
    public let count: UInt16
    public let entries: [(hash: UInt32, block: UInt32)]

    /// Decodes the dx_countlimit at `offset` and its entries; verifies the dx_tail when `seed` is given.
    public init(_ block: [UInt8], offset: Int, inode: UInt32, blockNumber: UInt64, checksumSeed seed: UInt32?) throws(CorruptionError) {
        limit = block.le16(offset)
        count = block.le16(offset + 2)
        let room = (block.count - offset) / 8
        let tailRoom = seed != nil ? 1 : 0
        guard limit >= 1, Int(limit) + tailRoom <= room, count >= 1, count <= limit else {
            throw CorruptionError(.htree, inode: inode, block: blockNumber, .impossible("bad count \(count) / limit \(limit) (room for \(room))"))
        }
        if let seed {
            let tail = offset + 8 * Int(limit)
            let stored = block.le32(tail + 4)
            var c = CRC32C.update(seed, block[0..<(offset + 8 * Int(count))])
            // The whole dx_tail counts, with its checksum field taken as zero.
            c = CRC32C.update(c, block[tail..<(tail + 4)])
            c = CRC32C.update(c, littleEndian: UInt32(0))
            guard stored == c else {
                throw CorruptionError(.htree, inode: inode, block: blockNumber, .badChecksum(stored: stored, computed: c))
            }
        }
        var list: [(UInt32, UInt32)] = [(0, block.le32(offset + 4))]
        var previous: UInt32 = 0
        for i in 1..<Int(count) {
            let h = block.le32(offset + 8 * i)
            guard h >= previous else {
                throw CorruptionError(.htree, inode: inode, block: blockNumber, .impossible("hashes out of order at entry \(i)"))
            }
            previous = h
            list.append((h, block.le32(offset + 8 * i + 4)))
        }
        entries = list
    }

    /// Index of the last entry whose hash is <= `hash`.
    public func slot(for hash: UInt32) -> Int {
        var lo = 1, hi = entries.count - 1, found = 0
        while lo <= hi {
            let mid = (lo + hi) / 2
            if entries[mid].hash <= hash { found = mid; lo = mid + 1 } else { hi = mid - 1 }
        }
        return found
    }
}

/// The '.' and '..' entries that open every directory's first block, a dx root's included:
/// '.' at 0 with rec_len 12, then '..' at 12 (dir.rst, "Linear Directories" and "Hash Tree").
/// Inline directories keep only the parent's number, in the first 4 bytes of i_block.
public enum DotEntries {
    static let dotDotOffset = 12

    /// Both entries, or nil when the block does not start with them.
    public static func decode(_ block: [UInt8]) -> (dot: DirectoryEntry, dotDot: DirectoryEntry)? {
        guard block.count >= 24, block.u8(6) == 1, block.u8(8) == 0x2E, hasDotDot(block) else { return nil }
        return (DirectoryEntry(inode: block.le32(0), name: [0x2E], fileType: block.u8(7)),
                DirectoryEntry(inode: parent(block), name: [0x2E, 0x2E], fileType: block.u8(dotDotOffset + 7)))
    }

    /// Is '..' where it belongs (name_len 2, the name "..")?
    public static func hasDotDot(_ block: [UInt8]) -> Bool {
        block.count >= 24 && block.u8(dotDotOffset + 6) == 2 && block.u8(dotDotOffset + 8) == 0x2E && block.u8(dotDotOffset + 9) == 0x2E
    }

    /// The parent's inode number, as '..' names it.
    public static func parent(_ block: [UInt8]) -> UInt32 { block.le32(dotDotOffset) }

    /// Points '..' at `parent` (a directory that moved).
    public static func setParent(_ block: inout [UInt8], _ parent: UInt32) { block.setLE32(dotDotOffset, parent) }

    /// An inline directory's parent: the first 4 bytes of its data.
    public static func inlineParent(_ data: [UInt8]) -> UInt32 { data.le32(0) }
}
