/// The superblock being written: raw bytes with setters at the kernel's offsets (super.rst).
public struct SuperblockRecord: Sendable {
    public var raw: [UInt8]

    public init(_ sb: Superblock) { raw = sb.raw }
    public init(raw: [UInt8]) { precondition(raw.count == Superblock.size); self.raw = raw }

    private var is64: Bool { IncompatFeatures(rawValue: raw.le32(0x60)).contains(.bit64) }

    public var freeBlocksCount: UInt64 {
        get { UInt64(raw.le32(0xC)) | (is64 ? UInt64(raw.le32(0x158)) << 32 : 0) }
        set {
            raw.setLE32(0xC, UInt32(truncatingIfNeeded: newValue))
            if is64 { raw.setLE32(0x158, UInt32(truncatingIfNeeded: newValue >> 32)) }
        }
    }
    public var freeInodesCount: UInt32 { get { raw.le32(0x10) } set { raw.setLE32(0x10, newValue) } }
    /// s_state: 1 = cleanly unmounted, 2 = errors detected.
    public var state: UInt16 { get { raw.le16(0x3A) } set { raw.setLE16(0x3A, newValue) } }
    public var lastOrphan: UInt32 { get { raw.le32(0xE8) } set { raw.setLE32(0xE8, newValue) } }
    public var kbytesWritten: UInt64 { get { raw.le64(0x178) } set { raw.setLE64(0x178, newValue) } }

    /// s_wtime and s_wtime_hi.
    public mutating func setWriteTime(_ seconds: Int64) {
        raw.setLE32(0x30, UInt32(truncatingIfNeeded: seconds))
        raw.setU8(0x274, UInt8(truncatingIfNeeded: seconds >> 32))
    }

    public static let stateValid: UInt16 = 0x1

    /// Writes s_checksum on metadata_csum images.
    public mutating func seal() {
        if ROCompatFeatures(rawValue: raw.le32(0x64)).contains(.metadataCsum) {
            raw.setLE32(0x3FC, CRC32C.update(~0, raw[0..<0x3FC]))
        }
    }
}
