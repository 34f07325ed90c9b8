/// An inode slot being written: the raw bytes with field setters at the kernel's offsets
/// (inodes.rst). `seal` puts the checksum in last.
public struct InodeRecord: Sendable {
    public let number: UInt32
    public var raw: [UInt8]

    /// The decoded inode's slot, to change.
    public init(_ inode: Inode) {
        number = inode.number
        raw = inode.raw
    }

    /// A zeroed slot of `inodeSize` bytes with i_extra_isize set (new inodes).
    public init(number: UInt32, inodeSize: Int, extraIsize: UInt16) {
        self.number = number
        raw = [UInt8](repeating: 0, count: inodeSize)
        if inodeSize > 128 { raw.setLE16(0x80, extraIsize) }
    }

    public var mode: UInt16 {
        get { raw.le16(0x0) }
        set { raw.setLE16(0x0, newValue) }
    }

    /// i_uid and l_i_uid_high.
    public var uid: UInt32 {
        get { UInt32(raw.le16(0x2)) | UInt32(raw.le16(0x78)) << 16 }
        set { raw.setLE16(0x2, UInt16(truncatingIfNeeded: newValue)); raw.setLE16(0x78, UInt16(truncatingIfNeeded: newValue >> 16)) }
    }

    /// i_gid and l_i_gid_high.
    public var gid: UInt32 {
        get { UInt32(raw.le16(0x18)) | UInt32(raw.le16(0x7A)) << 16 }
        set { raw.setLE16(0x18, UInt16(truncatingIfNeeded: newValue)); raw.setLE16(0x7A, UInt16(truncatingIfNeeded: newValue >> 16)) }
    }

    /// i_size_lo and i_size_high.
    public var size: UInt64 {
        get { UInt64(raw.le32(0x4)) | UInt64(raw.le32(0x6C)) << 32 }
        set { raw.setLE32(0x4, UInt32(truncatingIfNeeded: newValue)); raw.setLE32(0x6C, UInt32(truncatingIfNeeded: newValue >> 32)) }
    }

    public var deletionTime: UInt32 {
        get { raw.le32(0x14) }
        set { raw.setLE32(0x14, newValue) }
    }

    public var linksCount: UInt16 {
        get { raw.le16(0x1A) }
        set { raw.setLE16(0x1A, newValue) }
    }

    /// i_blocks_lo and l_i_blocks_high, in 512-byte sectors (Holdfast never sets EXT4_HUGE_FILE_FL).
    public var sectors: UInt64 {
        get { UInt64(raw.le32(0x1C)) | UInt64(raw.le16(0x74)) << 32 }
        set { raw.setLE32(0x1C, UInt32(truncatingIfNeeded: newValue)); raw.setLE16(0x74, UInt16(truncatingIfNeeded: newValue >> 32)) }
    }

    public var flags: UInt32 {
        get { raw.le32(0x20) }
        set { raw.setLE32(0x20, newValue) }
    }

    public var generation: UInt32 {
        get { raw.le32(0x64) }
        set { raw.setLE32(0x64, newValue) }
    }

    /// i_file_acl_lo and l_i_file_acl_high: the xattr block.
    public var fileACL: UInt64 {
        get { UInt64(raw.le32(0x68)) | UInt64(raw.le16(0x76)) << 32 }
        set { raw.setLE32(0x68, UInt32(truncatingIfNeeded: newValue)); raw.setLE16(0x76, UInt16(truncatingIfNeeded: newValue >> 32)) }
    }

    public var extraIsize: UInt16 { raw.count > 128 ? raw.le16(0x80) : 0 }
    /// False when the inode surely has no extended attributes: no xattr block, and no magic at
    /// the start of the in-inode area. A cheap test before decoding them.
    public var mayHaveXattrs: Bool {
        fileACL != 0 || (raw.count >= extraEnd + 4 && raw.le32(extraEnd) == Xattr.magic)
    }
    private var extraEnd: Int { 128 + Int(extraIsize) }

    /// The 60-byte i_block area.
    public var blockArea: [UInt8] {
        get { raw.bytes(0x28, 60) }
        set { precondition(newValue.count == 60); raw.setBytes(0x28, newValue) }
    }

    public var accessTime: Timestamp {
        get { time(0x8, 0x8C) }
        set { setTime(newValue, 0x8, 0x8C) }
    }
    public var changeTime: Timestamp {
        get { time(0xC, 0x84) }
        set { setTime(newValue, 0xC, 0x84) }
    }
    public var modificationTime: Timestamp {
        get { time(0x10, 0x88) }
        set { setTime(newValue, 0x10, 0x88) }
    }
    /// i_crtime: only in slots whose extra fields reach it.
    public var creationTime: Timestamp {
        get { time(0x90, 0x94) }
        set { if 0x98 <= extraEnd { setTime(newValue, 0x90, 0x94) } }
    }

    private func time(_ base: Int, _ extra: Int) -> Timestamp {
        Timestamp(base: raw.le32(base), extra: extra + 4 <= extraEnd ? raw.le32(extra) : nil)
    }

    /// Stores `t`, clamped to what the slot can hold as the kernel clamps it: with the _extra
    /// field, 1901-12-13 to 2446-05-10 (two epoch bits); without, the signed 32-bit seconds.
    private mutating func setTime(_ t: Timestamp, _ base: Int, _ extra: Int) {
        let hasExtra = extra + 4 <= extraEnd
        var t = t
        let latest = hasExtra ? Timestamp.latestWithEpoch : Int64(Int32.max)
        if t.seconds > latest { t = Timestamp(seconds: latest, nanoseconds: 0) }
        if t.seconds < Int64(Int32.min) { t = Timestamp(seconds: Int64(Int32.min), nanoseconds: 0) }
        raw.setLE32(base, t.encodedBase)
        if hasExtra { raw.setLE32(extra, t.encodedExtra) }
    }

    /// Device numbers in i_block: the old 16-bit encoding when both fit, else the new one (as the kernel).
    public mutating func setDevice(major: UInt32, minor: UInt32) {
        var area = [UInt8](repeating: 0, count: 60)
        if major < 256 && minor < 256 {
            area.setLE32(0, major << 8 | minor)
        } else {
            area.setLE32(4, (minor & 0xFF) | (major & 0xFFF) << 8 | (minor & ~0xFF) << 12)
        }
        blockArea = area
    }

    /// Writes the checksum (metadata_csum images): crc32c of the slot with both checksum halves zero.
    public mutating func seal(_ sb: Superblock) {
        guard sb.hasMetadataChecksums else { return }
        let c = Inode.computeChecksum(raw, number: number, generation: generation, extraEnd: extraEnd, superblock: sb)
        raw.setLE16(Inode.checksumLoOffset, UInt16(truncatingIfNeeded: c))
        if Inode.checksumHiOffset + 2 <= extraEnd { raw.setLE16(Inode.checksumHiOffset, UInt16(truncatingIfNeeded: c >> 16)) }
    }

    /// The decoded view of this slot (the checksum must be sealed first on metadata_csum images).
    public func decoded(_ sb: Superblock) throws(CorruptionError) -> Inode {
        try Inode(raw, number: number, superblock: sb)
    }
}

extension Timestamp {
    /// The last second an inode with _extra fields can hold: 0x3_7FFF_FFFF (2446-05-10).
    public static let latestWithEpoch: Int64 = 0x3_7FFF_FFFF

    /// The 32-bit base field: the low 32 bits of the seconds.
    public var encodedBase: UInt32 { UInt32(truncatingIfNeeded: seconds) }
    /// The _extra field: epoch bits (seconds beyond the signed 32-bit range) and nanoseconds << 2.
    public var encodedExtra: UInt32 {
        let epoch = UInt32(truncatingIfNeeded: (seconds - Int64(Int32(truncatingIfNeeded: seconds))) >> 32) & 0x3
        return epoch | nanoseconds << 2
    }
}
