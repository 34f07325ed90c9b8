/// Bit operations on on-disk bitmaps (bit i is byte i/8, bit i%8; 1 = in use).
enum Bitmap {
    @inline(__always) static func isSet(_ b: [UInt8], _ i: Int) -> Bool { b[i >> 3] & (1 << UInt8(i & 7)) != 0 }
    @inline(__always) static func set(_ b: inout [UInt8], _ i: Int) { b[i >> 3] |= 1 << UInt8(i & 7) }
    @inline(__always) static func clear(_ b: inout [UInt8], _ i: Int) { b[i >> 3] &= ~(1 << UInt8(i & 7)) }

    /// The first clear bit in [from, limit), skipping full bytes and words.
    static func firstClear(_ b: [UInt8], from: Int, limit: Int) -> Int? {
        var i = from
        while i < limit {
            if i & 63 == 0, i + 64 <= limit {
                let word = b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: i >> 3, as: UInt64.self) }
                if word == .max { i += 64; continue }
                return i + (~UInt64(littleEndian: word)).trailingZeroBitCount
            }
            if i & 7 == 0, i + 8 <= limit, b[i >> 3] == 0xFF { i += 8; continue }
            if !isSet(b, i) { return i }
            i += 1
        }
        return nil
    }

    /// How many clear bits follow `start` (itself clear), up to `maximum` and `limit`.
    static func clearRun(_ b: [UInt8], from start: Int, maximum: Int, limit: Int) -> Int {
        var i = start
        let end = min(limit, start + maximum)
        while i < end {
            if i & 63 == 0, i + 64 <= end {
                let word = b.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: i >> 3, as: UInt64.self) }
                if word == 0 { i += 64; continue }
                return i + UInt64(littleEndian: word).trailingZeroBitCount - start
            }
            if isSet(b, i) { break }
            i += 1
        }
        return i - start
    }

    /// Sets bits [from, to) of a bitmap block: the padding past a group's last block or inode.
    static func setRange(_ b: inout [UInt8], from: Int, to: Int) {
        var i = from
        while i < to {
            if i & 7 == 0, i + 8 <= to { b[i >> 3] = 0xFF; i += 8 } else { set(&b, i); i += 1 }
        }
    }
}
