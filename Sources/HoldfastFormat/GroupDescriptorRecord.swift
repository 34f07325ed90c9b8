/// A group descriptor being written: raw bytes with setters at the kernel's offsets (group_descr.rst).
/// The high halves exist only in 64-byte descriptors; `seal` writes bg_checksum last.
public struct GroupDescriptorRecord: Sendable {
    public let group: UInt32
    public var raw: [UInt8]

    public init(_ raw: [UInt8], group: UInt32) {
        self.group = group
        self.raw = raw
    }

    private var wide: Bool { raw.count >= 64 }

    private func get64(_ lo: Int, _ hi: Int) -> UInt64 { UInt64(raw.le32(lo)) | (wide ? UInt64(raw.le32(hi)) << 32 : 0) }
    private mutating func set64(_ lo: Int, _ hi: Int, _ v: UInt64) {
        raw.setLE32(lo, UInt32(truncatingIfNeeded: v))
        if wide { raw.setLE32(hi, UInt32(truncatingIfNeeded: v >> 32)) }
    }
    private func get32(_ lo: Int, _ hi: Int) -> UInt32 { UInt32(raw.le16(lo)) | (wide ? UInt32(raw.le16(hi)) << 16 : 0) }
    private mutating func set32(_ lo: Int, _ hi: Int, _ v: UInt32) {
        raw.setLE16(lo, UInt16(truncatingIfNeeded: v))
        if wide { raw.setLE16(hi, UInt16(truncatingIfNeeded: v >> 16)) }
    }

    public var blockBitmap: UInt64 { get { get64(0x0, 0x20) } set { set64(0x0, 0x20, newValue) } }
    public var inodeBitmap: UInt64 { get { get64(0x4, 0x24) } set { set64(0x4, 0x24, newValue) } }
    public var inodeTable: UInt64 { get { get64(0x8, 0x28) } set { set64(0x8, 0x28, newValue) } }
    public var freeBlocksCount: UInt32 { get { get32(0xC, 0x2C) } set { set32(0xC, 0x2C, newValue) } }
    public var freeInodesCount: UInt32 { get { get32(0xE, 0x2E) } set { set32(0xE, 0x2E, newValue) } }
    public var usedDirsCount: UInt32 { get { get32(0x10, 0x30) } set { set32(0x10, 0x30, newValue) } }
    public var inodeTableUnused: UInt32 { get { get32(0x1C, 0x32) } set { set32(0x1C, 0x32, newValue) } }
    public var flags: UInt16 { get { raw.le16(0x12) } set { raw.setLE16(0x12, newValue) } }

    /// bg_block_bitmap_csum: crc32c(seed, bitmap bytes for the group's clusters), truncated to what fits.
    public mutating func setBlockBitmapChecksum(_ bitmap: ArraySlice<UInt8>, _ sb: Superblock) {
        guard sb.hasMetadataChecksums else { return }
        let c = CRC32C.update(sb.checksumSeed, bitmap.prefix(Int(sb.clustersPerGroup / 8)))
        raw.setLE16(0x18, UInt16(truncatingIfNeeded: c))
        if raw.count >= GroupDescriptor.bitmapChecksumHiEnd { raw.setLE16(0x38, UInt16(truncatingIfNeeded: c >> 16)) }
    }

    /// bg_inode_bitmap_csum: crc32c(seed, the bitmap's first inodes_per_group bits).
    public mutating func setInodeBitmapChecksum(_ bitmap: ArraySlice<UInt8>, _ sb: Superblock) {
        guard sb.hasMetadataChecksums else { return }
        let c = CRC32C.update(sb.checksumSeed, bitmap.prefix(Int(sb.inodesPerGroup / 8)))
        raw.setLE16(0x1A, UInt16(truncatingIfNeeded: c))
        if raw.count >= GroupDescriptor.bitmapChecksumHiEnd { raw.setLE16(0x3A, UInt16(truncatingIfNeeded: c >> 16)) }
    }

    /// Writes bg_checksum (crc32c or crc16, whichever the image uses).
    public mutating func seal(_ sb: Superblock) {
        if let c = GroupDescriptor.computeChecksum(raw, group: group, superblock: sb) {
            raw.setLE16(GroupDescriptor.checksumOffset, c)
        }
    }
}
