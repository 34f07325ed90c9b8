/// The htree name hashes (directory.rst, "Hash Tree Directories"): legacy, half-MD4 and TEA,
/// each in a signed-char and an unsigned-char flavour, seeded by s_hash_seed.
public enum DirectoryHash {
    public enum Version: UInt8, Sendable {
        case legacy = 0, halfMD4 = 1, tea = 2
        case legacyUnsigned = 3, halfMD4Unsigned = 4, teaUnsigned = 5
        case siphash = 6

        public var name: String {
            switch self {
            case .legacy: "legacy"
            case .halfMD4: "half_md4"
            case .tea: "tea"
            case .legacyUnsigned: "legacy_unsigned"
            case .halfMD4Unsigned: "half_md4_unsigned"
            case .teaUnsigned: "tea_unsigned"
            case .siphash: "siphash"
            }
        }

        /// A dx_root names 0...2; the superblock's s_flags decides signedness.
        public func resolved(unsigned: Bool) -> Version {
            guard unsigned, rawValue <= 2 else { return self }
            return Version(rawValue: rawValue + 3)!
        }
    }

    /// The major hash with the low bit cleared, as stored in dx entries.
    public static func hash(_ name: [UInt8], version: Version, seed: [UInt32]) -> UInt32 {
        var state: (UInt32, UInt32, UInt32, UInt32) = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
        if seed.count == 4, seed.contains(where: { $0 != 0 }) {
            state = (seed[0], seed[1], seed[2], seed[3])
        }
        var h: UInt32
        switch version {
        case .legacy: h = legacy(name, signed: true)
        case .legacyUnsigned: h = legacy(name, signed: false)
        case .halfMD4, .halfMD4Unsigned:
            var i = 0
            while i < name.count {
                halfMD4(&state, pack(name, from: i, words: 8, signed: version == .halfMD4))
                i += 32
            }
            h = state.1
        case .tea, .teaUnsigned:
            var i = 0
            while i < name.count {
                tea(&state, pack(name, from: i, words: 4, signed: version == .tea))
                i += 16
            }
            h = state.0
        case .siphash:
            h = 0 // casefolded+encrypted directories are refused before lookup
        }
        h &= ~1
        // 0x7fffffff << 1 marks end-of-directory for 32-bit readdir cookies; the kernel moves it one down.
        if h == 0x7FFF_FFFF << 1 { h = (0x7FFF_FFFF - 1) << 1 }
        return h
    }

    /// A byte as the C `char` of the hash: sign-extended or not.
    @inline(__always) static func widen(_ b: UInt8, signed: Bool) -> UInt32 {
        signed ? UInt32(bitPattern: Int32(Int8(bitPattern: b))) : UInt32(b)
    }

    static func legacy(_ name: [UInt8], signed: Bool) -> UInt32 {
        var h0: UInt32 = 0x12A3FE2D, h1: UInt32 = 0x37ABE8F9
        for b in name {
            var h = h1 &+ (h0 ^ (widen(b, signed: signed) &* 7152373))
            if h & 0x8000_0000 != 0 { h = h &- 0x7FFF_FFFF }
            h1 = h0
            h0 = h
        }
        return h0 << 1
    }

    /// Packs up to 4*`words` bytes of the name into words, padding with the length byte pattern.
    static func pack(_ name: [UInt8], from start: Int, words: Int, signed: Bool) -> [UInt32] {
        let remaining = name.count - start
        var pad = UInt32(truncatingIfNeeded: remaining) | UInt32(truncatingIfNeeded: remaining) << 8
        pad |= pad << 16
        var out: [UInt32] = []
        out.reserveCapacity(words)
        var value = pad
        let n = min(remaining, words * 4)
        for i in 0..<n {
            value = widen(name[start + i], signed: signed) &+ (value << 8)
            if i % 4 == 3 {
                out.append(value)
                value = pad
            }
        }
        if out.count < words && n % 4 != 0 { out.append(value) }
        while out.count < words { out.append(pad) }
        return out
    }

    static func tea(_ s: inout (UInt32, UInt32, UInt32, UInt32), _ w: [UInt32]) {
        var sum: UInt32 = 0
        var b0 = s.0, b1 = s.1
        let (a, b, c, d) = (w[0], w[1], w[2], w[3])
        for _ in 0..<16 {
            sum &+= 0x9E3779B9
            b0 &+= ((b1 << 4) &+ a) ^ (b1 &+ sum) ^ ((b1 >> 5) &+ b)
            b1 &+= ((b0 << 4) &+ c) ^ (b0 &+ sum) ^ ((b0 >> 5) &+ d)
        }
        s.0 &+= b0
        s.1 &+= b1
    }

    static func halfMD4(_ s: inout (UInt32, UInt32, UInt32, UInt32), _ x: [UInt32]) {
        var (a, b, c, d) = s
        @inline(__always) func rotl(_ v: UInt32, _ n: UInt32) -> UInt32 { (v << n) | (v >> (32 - n)) }
        @inline(__always) func f(_ x: UInt32, _ y: UInt32, _ z: UInt32) -> UInt32 { z ^ (x & (y ^ z)) }
        @inline(__always) func g(_ x: UInt32, _ y: UInt32, _ z: UInt32) -> UInt32 { (x & y) &+ ((x ^ y) & z) }
        @inline(__always) func h(_ x: UInt32, _ y: UInt32, _ z: UInt32) -> UInt32 { x ^ y ^ z }
        let k2: UInt32 = 0x5A82_7999, k3: UInt32 = 0x6ED9_EBA1
        // Round 1: message words in order, shifts 3 7 11 19.
        let r1: [(Int, UInt32)] = [(0, 3), (1, 7), (2, 11), (3, 19), (4, 3), (5, 7), (6, 11), (7, 19)]
        for (i, (k, sh)) in r1.enumerated() {
            switch i % 4 {
            case 0: a = rotl(a &+ f(b, c, d) &+ x[k], sh)
            case 1: d = rotl(d &+ f(a, b, c) &+ x[k], sh)
            case 2: c = rotl(c &+ f(d, a, b) &+ x[k], sh)
            default: b = rotl(b &+ f(c, d, a) &+ x[k], sh)
            }
        }
        // Round 2: odd words then even, shifts 3 5 9 13.
        let r2: [(Int, UInt32)] = [(1, 3), (3, 5), (5, 9), (7, 13), (0, 3), (2, 5), (4, 9), (6, 13)]
        for (i, (k, sh)) in r2.enumerated() {
            switch i % 4 {
            case 0: a = rotl(a &+ g(b, c, d) &+ x[k] &+ k2, sh)
            case 1: d = rotl(d &+ g(a, b, c) &+ x[k] &+ k2, sh)
            case 2: c = rotl(c &+ g(d, a, b) &+ x[k] &+ k2, sh)
            default: b = rotl(b &+ g(c, d, a) &+ x[k] &+ k2, sh)
            }
        }
        // Round 3: shifts 3 9 11 15.
        let r3: [(Int, UInt32)] = [(3, 3), (7, 9), (2, 11), (6, 15), (1, 3), (5, 9), (0, 11), (4, 15)]
        for (i, (k, sh)) in r3.enumerated() {
            switch i % 4 {
            case 0: a = rotl(a &+ h(b, c, d) &+ x[k] &+ k3, sh)
            case 1: d = rotl(d &+ h(a, b, c) &+ x[k] &+ k3, sh)
            case 2: c = rotl(c &+ h(d, a, b) &+ x[k] &+ k3, sh)
            default: b = rotl(b &+ h(c, d, a) &+ x[k] &+ k3, sh)
            }
        }
        s.0 &+= a
        s.1 &+= b
        s.2 &+= c
        s.3 &+= d
    }
}
