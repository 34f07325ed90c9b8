/// Extent tree nodes (extents.rst): a 12-byte header, then index or leaf entries of 12 bytes each.
public struct ExtentHeader: Sendable {
    public static let magic: UInt16 = 0xF30A
    public static let size = 12
    public static let maxDepth: UInt16 = 5

    public let entries: UInt16   // eh_entries
    public let max: UInt16       // eh_max
    public let depth: UInt16     // eh_depth

    /// Decodes and sanity-checks a node occupying `bytes` (60 bytes in the inode, or one block).
    public init(_ bytes: [UInt8], inode: UInt32, block: UInt64?) throws(CorruptionError) {
        let magic = bytes.le16(0)
        guard magic == Self.magic else {
            throw CorruptionError(.extentTree, inode: inode, block: block, .badMagic(found: UInt64(magic), expected: UInt64(Self.magic)))
        }
        entries = bytes.le16(2)
        max = bytes.le16(4)
        depth = bytes.le16(6)
        let capacity = (bytes.count - Self.size) / 12
        guard max >= 1, Int(max) <= capacity else {
            throw CorruptionError(.extentTree, inode: inode, block: block, .outOfRange(field: "eh_max", value: UInt64(max), limit: UInt64(capacity)))
        }
        guard entries <= max else {
            throw CorruptionError(.extentTree, inode: inode, block: block, .outOfRange(field: "eh_entries", value: UInt64(entries), limit: UInt64(max)))
        }
        guard depth <= Self.maxDepth else {
            throw CorruptionError(.extentTree, inode: inode, block: block, .outOfRange(field: "eh_depth", value: UInt64(depth), limit: UInt64(Self.maxDepth)))
        }
    }
}

/// A leaf entry: logical blocks [logical, logical+length) at physical blocks [physical, ...).
public struct Extent: Sendable, Equatable {
    public let logical: UInt32     // ee_block
    public let length: UInt16      // ee_len, without the unwritten bit
    public let physical: UInt64    // ee_start_lo | ee_start_hi << 32
    public let unwritten: Bool     // ee_len > 32768

    public static let maxInitializedLength: UInt16 = 32768

    public init(logical: UInt32, length: UInt16, physical: UInt64, unwritten: Bool) {
        self.logical = logical
        self.length = length
        self.physical = physical
        self.unwritten = unwritten
    }

    init(_ b: [UInt8], at o: Int) {
        logical = b.le32(o)
        let rawLength = b.le16(o + 4)
        unwritten = rawLength > Self.maxInitializedLength
        length = unwritten ? rawLength - Self.maxInitializedLength : rawLength
        physical = UInt64(b.le16(o + 6)) << 32 | UInt64(b.le32(o + 8))
    }
}

/// An index entry: the subtree for logical blocks from `logical` lives at block `child`.
public struct ExtentIndex: Sendable, Equatable {
    public let logical: UInt32  // ei_block
    public let child: UInt64    // ei_leaf_lo | ei_leaf_hi << 32

    public init(logical: UInt32, child: UInt64) {
        self.logical = logical
        self.child = child
    }

    init(_ b: [UInt8], at o: Int) {
        logical = b.le32(o)
        child = UInt64(b.le32(o + 4)) | UInt64(b.le16(o + 8)) << 32
    }
}

/// One decoded extent tree node.
public enum ExtentNode: Sendable {
    case leaf([Extent])
    case index([ExtentIndex], depth: UInt16)

    /// eh_depth: 0 for a leaf.
    public var depth: UInt16 {
        switch self {
        case .leaf: 0
        case .index(_, let depth): depth
        }
    }

    /// Decodes a node; `block` is nil for the root in i_block. Block nodes have their tail checksum verified.
    public init(_ bytes: [UInt8], inode: UInt32, block: UInt64?, checksumSeed: UInt32?) throws(CorruptionError) {
        let header = try ExtentHeader(bytes, inode: inode, block: block)
        if let block, let seed = checksumSeed {
            let tail = ExtentHeader.size + 12 * Int(header.max)
            guard tail + 4 <= bytes.count else {
                throw CorruptionError(.extentTree, inode: inode, block: block, .impossible("no room for the checksum tail"))
            }
            let stored = bytes.le32(tail)
            let computed = CRC32C.update(seed, bytes[0..<tail])
            guard stored == computed else {
                throw CorruptionError(.extentTree, inode: inode, block: block, .badChecksum(stored: stored, computed: computed))
            }
        }
        let n = Int(header.entries)
        if header.depth == 0 {
            var extents: [Extent] = []
            extents.reserveCapacity(n)
            var previousEnd: UInt64 = 0
            for i in 0..<n {
                let e = Extent(bytes, at: ExtentHeader.size + 12 * i)
                guard UInt64(e.logical) >= previousEnd else {
                    throw CorruptionError(.extentTree, inode: inode, block: block, .impossible("extents out of order or overlapping at logical block \(e.logical)"))
                }
                previousEnd = UInt64(e.logical) + UInt64(e.length)
                guard previousEnd <= 1 << 32 else {
                    throw CorruptionError(.extentTree, inode: inode, block: block, .outOfRange(field: "extent end", value: previousEnd, limit: 1 << 32))
                }
                extents.append(e)
            }
            self = .leaf(extents)
        } else {
            var entries: [ExtentIndex] = []
            entries.reserveCapacity(n)
            for i in 0..<n {
                let e = ExtentIndex(bytes, at: ExtentHeader.size + 12 * i)
                if let last = entries.last, e.logical <= last.logical {
                    throw CorruptionError(.extentTree, inode: inode, block: block, .impossible("index entries out of order at logical block \(e.logical)"))
                }
                entries.append(e)
            }
            self = .index(entries, depth: header.depth)
        }
    }
}

/// A run of a file's logical blocks: mapped (possibly unwritten) or a hole.
public struct BlockRun: Sendable, Equatable {
    public var logical: UInt64
    public var length: UInt64
    /// nil for a hole.
    public var physical: UInt64?
    public var unwritten: Bool

    public init(logical: UInt64, length: UInt64, physical: UInt64?, unwritten: Bool = false) {
        self.logical = logical
        self.length = length
        self.physical = physical
        self.unwritten = unwritten
    }

    /// Data to read from disk (not a hole, not unwritten).
    public var hasData: Bool { physical != nil && !unwritten }
}
