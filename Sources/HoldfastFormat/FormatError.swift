/// The ext4 structure a corruption was found in.
public enum Structure: String, Sendable, Equatable {
    case superblock = "superblock"
    case groupDescriptor = "group descriptor"
    case blockBitmap = "block bitmap"
    case inodeBitmap = "inode bitmap"
    case inode = "inode"
    case extentTree = "extent tree"
    case blockMap = "block map"
    case directoryBlock = "directory block"
    case htree = "htree index"
    case inlineData = "inline data"
    case xattrInInode = "in-inode xattrs"
    case xattrBlock = "xattr block"
    case symlink = "symlink"
    case journalSuperblock = "journal superblock"
    case orphanFile = "orphan file"
    case journal = "journal"
    case image = "image"
}

/// What is wrong with a structure.
public enum CorruptionKind: Sendable, Equatable {
    case badMagic(found: UInt64, expected: UInt64)
    case badChecksum(stored: UInt32, computed: UInt32)
    case outOfRange(field: String, value: UInt64, limit: UInt64)
    case impossible(String)
    case loop(String)
    case truncated(needed: UInt64, available: UInt64)
}

/// A corrupt image: names the structure, the inode or block, and what is wrong.
public struct CorruptionError: Error, Sendable, Equatable, CustomStringConvertible {
    public let structure: Structure
    public let inode: UInt32?
    public let block: UInt64?
    public let kind: CorruptionKind

    public init(_ structure: Structure, inode: UInt32? = nil, block: UInt64? = nil, _ kind: CorruptionKind) {
        self.structure = structure
        self.inode = inode
        self.block = block
        self.kind = kind
    }

    public var description: String {
        var place = structure.rawValue
        if let inode { place += " of inode \(inode)" }
        if let block { place += " at block \(block)" }
        switch kind {
        case .badMagic(let found, let expected):
            return "corrupt \(place): bad magic 0x\(String(found, radix: 16)) (expected 0x\(String(expected, radix: 16)))"
        case .badChecksum(let stored, let computed):
            return "corrupt \(place): checksum mismatch (stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16)))"
        case .outOfRange(let field, let value, let limit):
            return "corrupt \(place): \(field) \(value) out of range (limit \(limit))"
        case .impossible(let what):
            return "corrupt \(place): \(what)"
        case .loop(let what):
            return "corrupt \(place): loop detected (\(what))"
        case .truncated(let needed, let available):
            return "corrupt \(place): image truncated (needs \(needed) bytes, has \(available))"
        }
    }
}
