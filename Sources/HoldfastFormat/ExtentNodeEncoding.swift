/// Writing extent tree nodes (extents.rst): header, 12-byte entries, and the checksum tail of block nodes.
public enum ExtentNodeEncoding {
    /// Entries that fit in a node of `byteCount` bytes (60 in i_block: 4; a 4 KiB block: 340).
    public static func capacity(_ byteCount: Int) -> Int { (byteCount - ExtentHeader.size) / 12 }

    /// A node holding `extents` (leaf) laid out in `byteCount` bytes.
    public static func leaf(_ extents: [Extent], byteCount: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: byteCount)
        writeHeader(&b, entries: extents.count, depth: 0)
        for (i, e) in extents.enumerated() { write(e, into: &b, at: i) }
        return b
    }

    /// A node holding index entries at `depth` (1 or more).
    public static func index(_ entries: [ExtentIndex], depth: UInt16, byteCount: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: byteCount)
        writeHeader(&b, entries: entries.count, depth: depth)
        for (i, e) in entries.enumerated() { write(e, into: &b, at: i) }
        return b
    }

    /// eh_magic, eh_entries, eh_max (the node's full capacity), eh_depth; eh_generation stays 0.
    public static func writeHeader(_ b: inout [UInt8], entries: Int, depth: UInt16) {
        let max = capacity(b.count)
        precondition(entries <= max)
        b.setLE16(0, ExtentHeader.magic)
        b.setLE16(2, UInt16(entries))
        b.setLE16(4, UInt16(max))
        b.setLE16(6, depth)
        b.setLE32(8, 0)
    }

    /// ee_block, ee_len (plus 32768 when unwritten), ee_start_hi, ee_start_lo.
    public static func write(_ e: Extent, into b: inout [UInt8], at i: Int) {
        let o = ExtentHeader.size + 12 * i
        b.setLE32(o, e.logical)
        b.setLE16(o + 4, e.unwritten ? e.length + Extent.maxInitializedLength : e.length)
        b.setLE16(o + 6, UInt16(truncatingIfNeeded: e.physical >> 32))
        b.setLE32(o + 8, UInt32(truncatingIfNeeded: e.physical))
    }

    /// ei_block, ei_leaf_lo, ei_leaf_hi, ei_unused.
    public static func write(_ e: ExtentIndex, into b: inout [UInt8], at i: Int) {
        let o = ExtentHeader.size + 12 * i
        b.setLE32(o, e.logical)
        b.setLE32(o + 4, UInt32(truncatingIfNeeded: e.child))
        b.setLE16(o + 8, UInt16(truncatingIfNeeded: e.child >> 32))
        b.setLE16(o + 10, 0)
    }

    /// The ext4_extent_tail after eh_max entries: crc32c(inode seed, everything before it).
    public static func seal(_ b: inout [UInt8], seed: UInt32?) {
        guard let seed else { return }
        let tail = ExtentHeader.size + 12 * Int(b.le16(4))
        b.setLE32(tail, CRC32C.update(seed, b[0..<tail]))
    }

    /// The longest extent: initialized 32768 blocks, unwritten 32767.
    public static func maxLength(unwritten: Bool) -> UInt32 { unwritten ? 32767 : 32768 }
}
