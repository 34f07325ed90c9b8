/// Inline data (inlinedata.rst): a small file's bytes, or a small directory's entries, kept in
/// the inode. The first 60 bytes live in i_block; the rest is the value of the in-inode xattr
/// "system.data", which must exist (if empty) while EXT4_INLINE_DATA_FL is set.
public enum InlineData {
    /// Bytes held in i_block (EXT4_MIN_INLINE_DATA_SIZE).
    public static let blockAreaSize = 60
    /// The xattr holding the rest: name index 7 ("system."), name "data".
    public static let xattrIndex = Xattr.systemIndex
    public static let xattrName: [UInt8] = Array("data".utf8)

    public static func isDataXattr(index: UInt8, name: [UInt8]) -> Bool {
        index == xattrIndex && name == xattrName
    }

    /// Where an inline directory's entries start in i_block: after the parent's inode number.
    public static let directoryEntriesOffset = 4

    /// An inline directory's data: the parent, then i_block's record chain (56 bytes), then
    /// system.data's.
    public static func directory(parent: UInt32, first: [UInt8], second: [UInt8]) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: directoryEntriesOffset)
        b.setLE32(0, parent)
        return b + first + second
    }

    /// The parent and the two record chains of an inline directory's data (at least 60 bytes).
    public static func directoryParts(_ data: [UInt8]) -> (parent: UInt32, first: [UInt8], second: [UInt8]) {
        (data.le32(0), Array(data[directoryEntriesOffset..<blockAreaSize]), Array(data[blockAreaSize...]))
    }

    /// An empty inline directory's data: the parent, then one unused record over the other 56
    /// bytes (as the kernel's ext4_try_create_inline_dir writes it).
    public static func emptyDirectory(parent: UInt32) -> [UInt8] {
        var first = [UInt8](repeating: 0, count: blockAreaSize - directoryEntriesOffset)
        first.setLE16(4, UInt16(first.count))  // rec_len; inode 0: unused
        return directory(parent: parent, first: first, second: [])
    }

    /// The space an in-inode xattr entry named "data" takes (header and name, rounded to 4).
    public static var xattrEntrySize: Int { XattrRecord(index: xattrIndex, name: xattrName, value: []).entrySize }

    /// Makes `region` (a record chain that fills it) `extra` bytes longer: the last record's
    /// rec_len takes the new space, so the next insert can split it. Nil if the chain is broken.
    public static func grownRegion(_ region: [UInt8], by extra: Int) -> [UInt8]? {
        var b = region + [UInt8](repeating: 0, count: extra)
        if region.isEmpty {
            b.setLE16(4, UInt16(extra))
            return b
        }
        var o = 0
        while o + 8 <= region.count {
            let rec = Int(b.le16(o + 4))
            guard rec >= 8, o + rec <= region.count else { return nil }
            if o + rec == region.count {
                b.setLE16(o + 4, UInt16(rec + extra))
                return b
            }
            o += rec
        }
        return nil
    }
}
