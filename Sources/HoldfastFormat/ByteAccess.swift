// Explicit-offset integer access for on-disk structures.
// ext4 is little-endian; jbd2 is big-endian. Every decoder names its offsets.
// Getters and setters alike check their bounds in release builds: an offset computed from a
// damaged image traps here, never writes past the array (the raw store checks only in debug).

extension Array where Element == UInt8 {
    @inlinable public func u8(_ offset: Int) -> UInt8 { self[offset] }

    @inlinable public func le16(_ offset: Int) -> UInt16 {
        precondition(offset >= 0 && offset + 2 <= count)
        return withUnsafeBytes { UInt16(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
    }

    @inlinable public func le32(_ offset: Int) -> UInt32 {
        precondition(offset >= 0 && offset + 4 <= count)
        return withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    }

    @inlinable public func le64(_ offset: Int) -> UInt64 {
        precondition(offset >= 0 && offset + 8 <= count)
        return withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
    }

    @inlinable public func be16(_ offset: Int) -> UInt16 {
        precondition(offset >= 0 && offset + 2 <= count)
        return withUnsafeBytes { UInt16(bigEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
    }

    @inlinable public func be32(_ offset: Int) -> UInt32 {
        precondition(offset >= 0 && offset + 4 <= count)
        return withUnsafeBytes { UInt32(bigEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    }

    @inlinable public func be64(_ offset: Int) -> UInt64 {
        precondition(offset >= 0 && offset + 8 <= count)
        return withUnsafeBytes { UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
    }

    /// The bytes read as consecutive little-endian 32-bit words (a trailing partial word is dropped).
    public var littleEndianWords: [UInt32] { stride(from: 0, to: count - 3, by: 4).map { le32($0) } }

    /// Bytes [offset, offset+length) as a new array.
    @inlinable public func bytes(_ offset: Int, _ length: Int) -> [UInt8] {
        Array(self[offset..<(offset + length)])
    }

    /// A NUL-padded fixed-width string field (volume name, last mounted).
    public func cString(_ offset: Int, _ length: Int) -> String {
        var end = offset
        while end < offset + length && self[end] != 0 { end += 1 }
        return String(decoding: self[offset..<end], as: UTF8.self)
    }

    @inlinable public mutating func setLE16(_ offset: Int, _ value: UInt16) {
        precondition(offset >= 0 && offset + 2 <= count, "setLE16 at \(offset) past \(count) bytes")
        withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self) }
    }

    @inlinable public mutating func setLE32(_ offset: Int, _ value: UInt32) {
        precondition(offset >= 0 && offset + 4 <= count, "setLE32 at \(offset) past \(count) bytes")
        withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self) }
    }

    @inlinable public mutating func setBE32(_ offset: Int, _ value: UInt32) {
        precondition(offset >= 0 && offset + 4 <= count, "setBE32 at \(offset) past \(count) bytes")
        withUnsafeMutableBytes { $0.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self) }
    }
}

extension FixedWidthInteger {
    /// Little-endian bytes, for feeding checksum seeds (inode number, generation, block number).
    @inlinable public var littleEndianBytes: [UInt8] {
        withUnsafeBytes(of: self.littleEndian) { Array($0) }
    }
}

extension Array where Element == UInt8 {
    @inlinable public mutating func setU8(_ offset: Int, _ value: UInt8) { self[offset] = value }

    @inlinable public mutating func setLE64(_ offset: Int, _ value: UInt64) {
        precondition(offset >= 0 && offset + 8 <= count, "setLE64 at \(offset) past \(count) bytes")
        withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self) }
    }

    @inlinable public mutating func setBE16(_ offset: Int, _ value: UInt16) {
        precondition(offset >= 0 && offset + 2 <= count, "setBE16 at \(offset) past \(count) bytes")
        withUnsafeMutableBytes { $0.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self) }
    }

    @inlinable public mutating func setBE64(_ offset: Int, _ value: UInt64) {
        precondition(offset >= 0 && offset + 8 <= count, "setBE64 at \(offset) past \(count) bytes")
        withUnsafeMutableBytes { $0.storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self) }
    }

    /// Copies `bytes` in at `offset`.
    @inlinable public mutating func setBytes<C: Collection>(_ offset: Int, _ bytes: C) where C.Element == UInt8 {
        replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    }

    /// A NUL-padded fixed-width string field, truncated to fit.
    public mutating func setCString(_ offset: Int, _ length: Int, _ value: String) {
        let utf8 = Array(value.utf8.prefix(length))
        for i in 0..<length { self[offset + i] = i < utf8.count ? utf8[i] : 0 }
    }
}
