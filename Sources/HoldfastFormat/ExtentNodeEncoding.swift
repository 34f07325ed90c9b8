/// Writing extent tree nodes (extents.rst): header, 12-byte entries, and the checksum tail of block nodes.
public enum ExtentNodeEncoding {
    /// Entries that fit in a node of `byteCount` bytes (60 in i_block: 4; a 4 KiB block: 340).
    public static func capacity(_ byteCount: Int) -> Int { (byteCount - ExtentHeader.size) / 12 }

    /// A node holding `extents` (leaf) laid out in `byteCount` bytes.
    public static func leaf(_ extents: [Extent], byteCount: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: byteCount)
        writeHeader(&b, entries: extents.count, depth: 0)
        // One access to the bytes for the whole node: a leaf holds up to 340 entries, and a
        // checked store per field cost more than the rest of a small write (randwrite profile).
        b.withUnsafeMutableBytes { raw in
            for (i, e) in extents.enumerated() { store(e, into: raw, at: i) }
        }
        return b
    }

    /// A node holding index entries at `depth` (1 or more).
    public static func index(_ entries: [ExtentIndex], depth: UInt16, byteCount: Int) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: byteCount)
        writeHeader(&b, entries: entries.count, depth: depth)
        b.withUnsafeMutableBytes { raw in
            for (i, e) in entries.enumerated() { store(e, into: raw, at: i) }
        }
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
        precondition(i >= 0 && ExtentHeader.size + 12 * (i + 1) <= b.count, "extent entry \(i) past \(b.count) bytes")
        b.withUnsafeMutableBytes { store(e, into: $0, at: i) }
    }

    /// ei_block, ei_leaf_lo, ei_leaf_hi, ei_unused.
    public static func write(_ e: ExtentIndex, into b: inout [UInt8], at i: Int) {
        precondition(i >= 0 && ExtentHeader.size + 12 * (i + 1) <= b.count, "index entry \(i) past \(b.count) bytes")
        b.withUnsafeMutableBytes { store(e, into: $0, at: i) }
    }

    // The callers checked that entry `i` lies inside `raw` (writeHeader's capacity check, or the
    // preconditions above).
    private static func store(_ e: Extent, into raw: UnsafeMutableRawBufferPointer, at i: Int) {
        let o = ExtentHeader.size + 12 * i
        raw.storeBytes(of: e.logical.littleEndian, toByteOffset: o, as: UInt32.self)
        raw.storeBytes(of: (e.unwritten ? e.length + Extent.maxInitializedLength : e.length).littleEndian, toByteOffset: o + 4, as: UInt16.self)
        raw.storeBytes(of: UInt16(truncatingIfNeeded: e.physical >> 32).littleEndian, toByteOffset: o + 6, as: UInt16.self)
        raw.storeBytes(of: UInt32(truncatingIfNeeded: e.physical).littleEndian, toByteOffset: o + 8, as: UInt32.self)
    }

    private static func store(_ e: ExtentIndex, into raw: UnsafeMutableRawBufferPointer, at i: Int) {
        let o = ExtentHeader.size + 12 * i
        raw.storeBytes(of: e.logical.littleEndian, toByteOffset: o, as: UInt32.self)
        raw.storeBytes(of: UInt32(truncatingIfNeeded: e.child).littleEndian, toByteOffset: o + 4, as: UInt32.self)
        raw.storeBytes(of: UInt16(truncatingIfNeeded: e.child >> 32).littleEndian, toByteOffset: o + 8, as: UInt16.self)
        raw.storeBytes(of: UInt16(0), toByteOffset: o + 10, as: UInt16.self)
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
