import CHoldfastShim

/// crc32c as ext4 and jbd2 use it: the raw register, seeded by the caller, no final inversion.
public enum CRC32C {
    @inlinable public static func update(_ crc: UInt32, _ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { hf_crc32c_update(crc, $0.baseAddress, $0.count) }
    }

    @inlinable public static func update(_ crc: UInt32, _ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.withUnsafeBytes { hf_crc32c_update(crc, $0.baseAddress, $0.count) }
    }

    @inlinable public static func update(_ crc: UInt32, _ buffer: UnsafeRawBufferPointer) -> UInt32 {
        hf_crc32c_update(crc, buffer.baseAddress, buffer.count)
    }

    @inlinable public static func update<T: FixedWidthInteger>(_ crc: UInt32, littleEndian value: T) -> UInt32 {
        withUnsafeBytes(of: value.littleEndian) { hf_crc32c_update(crc, $0.baseAddress, $0.count) }
    }

    /// The ordinary (finalized) crc32c, for known-answer tests: ~update(~0, data).
    public static func standard(_ bytes: [UInt8]) -> UInt32 { ~update(~0, bytes) }

    public static var isHardwareAccelerated: Bool { hf_crc32c_is_hardware() != 0 }

    public static func portable(_ crc: UInt32, _ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { hf_crc32c_update_portable(crc, $0.baseAddress, $0.count) }
    }
}

/// crc16 (ANSI, reflected polynomial 0xA001) for the uninit_bg group-descriptor checksum of older images.
public enum CRC16 {
    static let table: [UInt16] = (0..<256).map { i -> UInt16 in
        var c = UInt16(i)
        for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xA001 : c >> 1 }
        return c
    }

    public static func update(_ crc: UInt16, _ bytes: ArraySlice<UInt8>) -> UInt16 {
        var c = crc
        for b in bytes { c = (c >> 8) ^ table[Int((c ^ UInt16(b)) & 0xFF)] }
        return c
    }

    public static func update(_ crc: UInt16, _ bytes: [UInt8]) -> UInt16 { update(crc, bytes[...]) }
}
