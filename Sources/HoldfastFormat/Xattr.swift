/// Extended attributes (attributes.rst): a magic, then entries; values in-inode or in one block.
public struct XattrEntry: Sendable, Equatable {
    public let nameIndex: UInt8     // e_name_index
    public let name: [UInt8]        // e_name (without the prefix)
    public let valueOffset: UInt16  // e_value_offs
    public let valueInode: UInt32   // e_value_inum (ea_inode feature)
    public let valueSize: UInt32    // e_value_size

    /// The full attribute name as userspace sees it, or nil for an index Holdfast does not know.
    public var fullName: [UInt8]? {
        guard let prefix = Xattr.prefixes[nameIndex] else { return nil }
        return Array(prefix.utf8) + name
    }
}

/// A decoded attribute: name and value bytes.
public struct XattrValue: Sendable, Equatable {
    public let name: [UInt8]
    public var value: [UInt8]

    public init(name: [UInt8], value: [UInt8]) {
        self.name = name
        self.value = value
    }

    public var nameString: String { String(decoding: name, as: UTF8.self) }
}

public enum Xattr {
    public static let magic: UInt32 = 0xEA02_0000
    public static let blockHeaderSize = 32
    /// Index 7 ("system.") with name "data" holds inline data beyond i_block.
    public static let systemIndex: UInt8 = 7

    public static let prefixes: [UInt8: String] = [
        0: "", 1: "user.", 2: "system.posix_acl_access", 3: "system.posix_acl_default", 4: "trusted.",
        6: "security.", 7: "system.", 8: "system.richacl",
    ]

    /// Walks entries starting at `start` in `region`, until the 4-byte zero terminator.
    static func parseEntries(_ region: ArraySlice<UInt8>, start: Int, structure: Structure, inode: UInt32, block: UInt64?) throws(CorruptionError) -> [XattrEntry] {
        var result: [XattrEntry] = []
        var o = start
        let end = region.endIndex
        while true {
            guard o + 4 <= end else {
                throw CorruptionError(structure, inode: inode, block: block, .impossible("entry list runs past the end without a terminator"))
            }
            let first = UInt32(region[o]) | UInt32(region[o + 1]) << 8 | UInt32(region[o + 2]) << 16 | UInt32(region[o + 3]) << 24
            if first == 0 { break }
            guard o + 16 <= end else {
                throw CorruptionError(structure, inode: inode, block: block, .impossible("entry at offset \(o - region.startIndex) runs past the end"))
            }
            let nameLength = Int(region[o])
            let index = region[o + 1]
            let valueOffset = UInt16(region[o + 2]) | UInt16(region[o + 3]) << 8
            func u32(_ p: Int) -> UInt32 { UInt32(region[p]) | UInt32(region[p + 1]) << 8 | UInt32(region[p + 2]) << 16 | UInt32(region[p + 3]) << 24 }
            let valueInode = u32(o + 4)
            let valueSize = u32(o + 8)
            // The POSIX ACLs (indexes 2 and 3) are whole names: their e_name is empty, as ext4 writes them.
            guard nameLength > 0 || index == 2 || index == 3, o + 16 + nameLength <= end else {
                throw CorruptionError(structure, inode: inode, block: block, .outOfRange(field: "e_name_len", value: UInt64(nameLength), limit: UInt64(end - o - 16)))
            }
            result.append(XattrEntry(nameIndex: index, name: Array(region[(o + 16)..<(o + 16 + nameLength)]),
                                     valueOffset: valueOffset, valueInode: valueInode, valueSize: valueSize))
            o += (16 + nameLength + 3) & ~3
        }
        return result
    }

    /// Entries and inline values of the in-inode area (after i_extra_isize). Values in EA inodes come back with
    /// `valueInode` set and an empty value; the caller reads them.
    public static func inodeBody(_ region: ArraySlice<UInt8>, inode: UInt32) throws(CorruptionError) -> [(XattrEntry, [UInt8])] {
        let s = region.startIndex
        guard region.count >= 4 else { return [] }
        let magicFound = UInt32(region[s]) | UInt32(region[s + 1]) << 8 | UInt32(region[s + 2]) << 16 | UInt32(region[s + 3]) << 24
        guard magicFound == magic else { return [] }
        let entries = try parseEntries(region, start: s + 4, structure: .xattrInInode, inode: inode, block: nil)
        // Value offsets count from the first entry.
        return try values(entries, base: s + 4, region: region, structure: .xattrInInode, inode: inode, block: nil)
    }

    /// Entries and values of an xattr block, with header and checksum verified.
    public static func block(_ bytes: [UInt8], blockNumber: UInt64, inode: UInt32, superblock sb: Superblock) throws(CorruptionError) -> [(XattrEntry, [UInt8])] {
        try checkBlockMagic(bytes, blockNumber: blockNumber, inode: inode)
        guard bytes.le32(8) == 1 else {
            throw CorruptionError(.xattrBlock, inode: inode, block: blockNumber, .outOfRange(field: "h_blocks", value: UInt64(bytes.le32(8)), limit: 1))
        }
        if sb.hasMetadataChecksums {
            var copy = bytes
            copy.setLE32(0x10, 0)
            let computed = CRC32C.update(CRC32C.update(sb.checksumSeed, littleEndian: blockNumber), copy)
            let stored = bytes.le32(0x10)
            guard computed == stored else {
                throw CorruptionError(.xattrBlock, inode: inode, block: blockNumber, .badChecksum(stored: stored, computed: computed))
            }
        }
        let entries = try parseEntries(bytes[...], start: blockHeaderSize, structure: .xattrBlock, inode: inode, block: blockNumber)
        return try values(entries, base: 0, region: bytes[...], structure: .xattrBlock, inode: inode, block: blockNumber)
    }

    static func values(_ entries: [XattrEntry], base: Int, region: ArraySlice<UInt8>, structure: Structure, inode: UInt32, block: UInt64?) throws(CorruptionError) -> [(XattrEntry, [UInt8])] {
        var out: [(XattrEntry, [UInt8])] = []
        for e in entries {
            if e.valueInode != 0 {
                out.append((e, []))
                continue
            }
            let start = base + Int(e.valueOffset)
            let end = start + Int(e.valueSize)
            guard e.valueSize <= 65536, start >= region.startIndex, end <= region.endIndex else {
                throw CorruptionError(structure, inode: inode, block: block, .outOfRange(field: "value of \(String(decoding: e.name, as: UTF8.self))", value: UInt64(end), limit: UInt64(region.endIndex)))
            }
            out.append((e, Array(region[start..<end])))
        }
        return out
    }
}

/// POSIX ACLs: ext4 stores a compact form (version 1, short entries for the *_OBJ, MASK and OTHER tags);
/// userspace (getfacl, setxattr) speaks the xattr form (version 2, every entry 8 bytes).
public enum PosixACL {
    static let userObj: UInt16 = 0x01, user: UInt16 = 0x02, groupObj: UInt16 = 0x04, group: UInt16 = 0x08
    static let mask: UInt16 = 0x10, other: UInt16 = 0x20

    /// Converts ext4's on-disk ACL to the userspace xattr format; nil when it does not parse.
    public static func toXattr(_ disk: [UInt8]) -> [UInt8]? {
        guard disk.count >= 4, disk.le32(0) == 1 else { return nil }
        var out = UInt32(2).littleEndianBytes
        var o = 4
        while o < disk.count {
            guard o + 4 <= disk.count else { return nil }
            let tag = disk.le16(o)
            let perm = disk.le16(o + 2)
            var id: UInt32 = 0xFFFF_FFFF
            switch tag {
            case user, group:
                guard o + 8 <= disk.count else { return nil }
                id = disk.le32(o + 4)
                o += 8
            case userObj, groupObj, mask, other:
                o += 4
            default:
                return nil
            }
            out += tag.littleEndianBytes + perm.littleEndianBytes + id.littleEndianBytes
        }
        return out
    }
}

/// An attribute as stored: name index, name without its prefix, value in the on-disk form.
public struct XattrRecord: Sendable, Equatable {
    public var index: UInt8
    public var name: [UInt8]
    public var value: [UInt8]

    /// A name in "system." that ext4 has no handler for (system.data, the inline data itself,
    /// or system.richacl): never set or replaced by a caller (EOPNOTSUPP).
    public var isUnhandledSystemName: Bool { index == Xattr.systemIndex || index == 8 }

    public init(index: UInt8, name: [UInt8], value: [UInt8]) {
        self.index = index
        self.name = name
        self.value = value
    }

    /// Bytes of its entry (header + name, padded) and of its value (padded).
    public var entrySize: Int { (16 + name.count + 3) & ~3 }
    public var valueSize: Int { (value.count + 3) & ~3 }

    /// Splits a userspace name into the index and the rest, longest prefix first; nil for an
    /// unknown namespace.
    public init?(fullName: [UInt8], value: [UInt8]) {
        for (index, prefix) in Xattr.prefixes.sorted(by: { $0.value.count > $1.value.count }) where index != 0 {
            let p = Array(prefix.utf8)
            guard fullName.starts(with: p) else { continue }
            let rest = Array(fullName[p.count...])
            // The ACL names are whole names; the namespaces need something after the dot.
            if index == 2 || index == 3 || index == 8 { guard rest.isEmpty else { continue } } else { guard !rest.isEmpty else { continue } }
            self.init(index: index, name: rest, value: value)
            return
        }
        return nil
    }

    /// e_hash (attributes.rst): the name's bytes, then the value's little-endian words.
    public var hash: UInt32 {
        var h: UInt32 = 0
        for c in name { h = (h << 5) ^ (h >> 27) ^ UInt32(c) }
        var padded = value
        while padded.count % 4 != 0 { padded.append(0) }
        for i in stride(from: 0, to: padded.count, by: 4) { h = (h << 16) ^ (h >> 16) ^ padded.le32(i) }
        return h
    }
}

extension Xattr {
    /// Writes entries and values into a region: entries from `entriesStart`, values packed down from
    /// the region's end, offsets counted from `base`. Returns false when they do not fit.
    static func layout(_ records: [XattrRecord], into b: inout [UInt8], entriesStart: Int, end: Int, base: Int) -> Bool {
        var e = entriesStart
        var v = end
        for r in records {
            v -= r.valueSize
            guard e + r.entrySize + 4 <= v else { return false }
            b.setU8(e, UInt8(r.name.count))
            b.setU8(e + 1, r.index)
            b.setLE16(e + 2, r.value.isEmpty ? 0 : UInt16(v - base))
            b.setLE32(e + 4, 0)
            b.setLE32(e + 8, UInt32(r.value.count))
            b.setLE32(e + 12, r.hash)
            b.setBytes(e + 16, r.name)
            b.setBytes(v, r.value)
            e += r.entrySize
        }
        b.setLE32(e, 0)
        return true
    }

    /// Space `records` take: entries, terminator, values.
    public static func bytesNeeded(_ records: [XattrRecord]) -> Int {
        records.reduce(4) { $0 + $1.entrySize + $1.valueSize }
    }

    /// The in-inode area after i_extra_isize: magic, entries, values at the end. False if it does not fit.
    public static func writeInodeBody(_ records: [XattrRecord], into raw: inout [UInt8], start: Int) -> Bool {
        for i in start..<raw.count { raw[i] = 0 }
        guard !records.isEmpty else { return true }
        guard start + 4 + bytesNeeded(records) <= raw.count else { return false }
        raw.setLE32(start, magic)
        return layout(records, into: &raw, entriesStart: start + 4, end: raw.count, base: start + 4)
    }

    /// The order the kernel keeps a block's entries in: name index, name length, name.
    public static func blockOrder(_ a: XattrRecord, _ b: XattrRecord) -> Bool {
        (a.index, a.name.count) < (b.index, b.name.count)
            || ((a.index, a.name.count) == (b.index, b.name.count) && a.name.lexicographicallyPrecedes(b.name))
    }

    /// An xattr block: header (refcount, one block, hash), entries sorted as the kernel keeps them,
    /// values from the end, and the checksum. Nil when they do not fit.
    public static func makeBlock(_ records: [XattrRecord], blockNumber: UInt64, refcount: UInt32, blockSize: Int, superblock sb: Superblock) -> [UInt8]? {
        let sorted = records.sorted(by: blockOrder)
        var b = [UInt8](repeating: 0, count: blockSize)
        guard layout(sorted, into: &b, entriesStart: blockHeaderSize, end: blockSize, base: 0) else { return nil }
        b.setLE32(0x0, magic)
        b.setLE32(0x4, refcount)
        b.setLE32(0x8, 1)
        var h: UInt32 = 0
        for r in sorted { h = (h << 16) ^ (h >> 16) ^ r.hash }
        b.setLE32(0xC, h)
        sealBlock(&b, blockNumber: blockNumber, superblock: sb)
        return b
    }

    /// h_refcount: how many inodes share the block.
    public static func refcount(_ block: [UInt8]) -> UInt32 { block.le32(0x4) }

    public static func setRefcount(_ block: inout [UInt8], _ count: UInt32) { block.setLE32(0x4, count) }

    /// Checks h_magic of an xattr block that `inode` names.
    public static func checkBlockMagic(_ block: [UInt8], blockNumber: UInt64, inode: UInt32) throws(CorruptionError) {
        let m = block.le32(0)
        guard m == magic else {
            throw CorruptionError(.xattrBlock, inode: inode, block: blockNumber, .badMagic(found: UInt64(m), expected: UInt64(magic)))
        }
    }

    /// h_checksum: crc32c(seed, block number, the block with the checksum zero).
    public static func sealBlock(_ b: inout [UInt8], blockNumber: UInt64, superblock sb: Superblock) {
        guard sb.hasMetadataChecksums else { return }
        b.setLE32(0x10, 0)
        b.setLE32(0x10, CRC32C.update(CRC32C.update(sb.checksumSeed, littleEndian: blockNumber), b))
    }
}

extension PosixACL {
    /// Converts the userspace xattr form (version 2) to ext4's compact on-disk form (version 1).
    public static func toDisk(_ xattr: [UInt8]) -> [UInt8]? {
        guard xattr.count >= 4, (xattr.count - 4) % 8 == 0, xattr.le32(0) == 2 else { return nil }
        var out = UInt32(1).littleEndianBytes
        for o in stride(from: 4, to: xattr.count, by: 8) {
            let tag = xattr.le16(o), perm = xattr.le16(o + 2), id = xattr.le32(o + 4)
            switch tag {
            case user, group: out += tag.littleEndianBytes + perm.littleEndianBytes + id.littleEndianBytes
            case userObj, groupObj, mask, other: out += tag.littleEndianBytes + perm.littleEndianBytes
            default: return nil
            }
        }
        return out
    }
    /// The permission bits an access ACL (xattr form) stands for, as the kernel's
    /// posix_acl_equiv_mode reads them: owner from USER_OBJ, group from MASK when there is one
    /// (else GROUP_OBJ), other from OTHER; `equivalent` when the mode says all the ACL says (no
    /// named users or groups, no mask), so the kernel keeps the mode and drops the ACL.
    public static func modeBits(_ xattr: [UInt8]) -> (bits: UInt16, equivalent: Bool)? {
        guard xattr.count >= 4, (xattr.count - 4) % 8 == 0, xattr.le32(0) == 2 else { return nil }
        var owner: UInt16?, groupBits: UInt16?, maskBits: UInt16?, otherBits: UInt16?
        var extended = false
        for o in stride(from: 4, to: xattr.count, by: 8) {
            let perm = xattr.le16(o + 2) & 7
            switch xattr.le16(o) {
            case userObj: owner = perm
            case groupObj: groupBits = perm
            case mask: maskBits = perm
            case other: otherBits = perm
            case user, group: extended = true
            default: return nil
            }
        }
        guard let owner, let groupBits, let otherBits else { return nil }
        let bits = owner << 6 | (maskBits ?? groupBits) << 3 | otherBits
        return (bits, !extended && maskBits == nil)
    }

    /// A new inode's permissions under a parent's default ACL (xattr form), as the kernel's
    /// posix_acl_create: the ACL's owner, other and mask (or group) entries are cut down to the
    /// requested `mode`, and the mode to them. `access` is the new inode's access ACL, nil when
    /// the mode says all of it.
    public static func inherit(_ defaultACL: [UInt8], mode: UInt16) -> (mode: UInt16, access: [UInt8]?)? {
        guard defaultACL.count >= 4, (defaultACL.count - 4) % 8 == 0, defaultACL.le32(0) == 2 else { return nil }
        var acl = defaultACL
        var mode = mode & 0o777
        var extended = false
        var groupEntry: Int?, maskEntry: Int?
        for o in stride(from: 4, to: acl.count, by: 8) {
            let perm = acl.le16(o + 2)
            switch acl.le16(o) {
            case userObj:
                acl.setLE16(o + 2, perm & (mode >> 6 & 7))
                mode &= (acl.le16(o + 2) << 6) | 0o077
            case other:
                acl.setLE16(o + 2, perm & (mode & 7))
                mode &= acl.le16(o + 2) | 0o770
            case groupObj: groupEntry = o
            case mask: maskEntry = o; extended = true
            case user, group: extended = true
            default: return nil
            }
        }
        guard let g = maskEntry ?? groupEntry else { return nil }
        acl.setLE16(g + 2, acl.le16(g + 2) & (mode >> 3 & 7))
        mode &= (acl.le16(g + 2) << 3) | 0o707
        return (mode, extended ? acl : nil)
    }

    /// An access ACL (xattr form) after chmod to `mode`, as the kernel's posix_acl_chmod: the owner,
    /// other and mask (or, without a mask, group) entries take the mode's bits.
    public static func chmod(_ acl: [UInt8], mode: UInt16) -> [UInt8]? {
        guard acl.count >= 4, (acl.count - 4) % 8 == 0, acl.le32(0) == 2 else { return nil }
        var out = acl
        var groupEntry: Int?, maskEntry: Int?
        for o in stride(from: 4, to: out.count, by: 8) {
            switch out.le16(o) {
            case userObj: out.setLE16(o + 2, mode >> 6 & 7)
            case other: out.setLE16(o + 2, mode & 7)
            case groupObj: groupEntry = o
            case mask: maskEntry = o
            default: break
            }
        }
        guard let g = maskEntry ?? groupEntry else { return nil }
        out.setLE16(g + 2, mode >> 3 & 7)
        return out
    }
}
