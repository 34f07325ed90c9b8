import Foundation
import HoldfastFormat
import HoldfastTestSupport
import Testing

@Suite("Checksums and directory hashes")
struct ChecksumAndHashTests {
    @Test("crc32c known answer, hardware and portable paths agree")
    func crc32c() {
        #expect(CRC32C.standard(Array("123456789".utf8)) == 0xE306_9283)
        #if arch(x86_64)
        #expect(CRC32C.isHardwareAccelerated, "this machine should take the SSE4.2 path the test is for")
        #endif
        var rng = Xorshift(state: 20261207)
        // Around the three-lane stride (3 x 336 bytes) and its multiples, and the block sizes.
        for length in [0, 1, 7, 8, 9, 63, 64, 1000, 1007, 1008, 1009, 1015, 1016, 1024, 2015, 2016, 2048, 3030, 4092, 4096, 65536] {
            let data = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            for seed: UInt32 in [~0, 0, 0x1234_5678] {
                #expect(CRC32C.update(seed, data) == CRC32C.portable(seed, data), "length \(length), seed \(seed)")
            }
            // A running crc over two pieces equals one over the whole.
            let cut = length / 3
            #expect(CRC32C.update(CRC32C.update(~0, Array(data[..<cut])), Array(data[cut...])) == CRC32C.update(~0, data), "length \(length) in two")
        }
    }

    @Test("crc16 known answer (CRC-16/ARC)")
    func crc16() {
        #expect(CRC16.update(0, Array("123456789".utf8)) == 0xBB3D)
    }

    /// debugfs's dx_hash is the outside judge for every hash and both signedness flavours.
    @Test("htree hashes match debugfs dx_hash", arguments: ["legacy", "half_md4", "tea", "legacy_unsigned", "half_md4_unsigned", "tea_unsigned"])
    func hashesMatchDebugfs(algorithm: String) throws {
        let scratch = try Scratch()
        let img = scratch.path("h.img")
        try Support.sh(["truncate", "-s", "2M", img])
        try Support.sh(["mkfs.ext4", "-q", img])
        let names: [String] = ["a", "hello", "f00001", "héllo wörld", String(repeating: "x", count: 31), String(repeating: "y", count: 32),
                               String(repeating: "z", count: 33), String(repeating: "long-name-", count: 25) + "12345", "\u{00ff}\u{00fe}\u{0080}", "..."]
        let seedText = "0cda15ec-c505-4f86-a6dd-d1939e818615"
        let seedBytes = Array(seedText.replacingOccurrences(of: "-", with: "").utf8)
        var seed: [UInt32] = []
        for w in 0..<4 {
            // s_hash_seed holds the UUID bytes; each word is read little-endian.
            var v: UInt32 = 0
            for b in 0..<4 {
                let hex = String(decoding: seedBytes[(w * 8 + b * 2)..<(w * 8 + b * 2 + 2)], as: UTF8.self)
                v |= UInt32(UInt8(hex, radix: 16)!) << (8 * UInt32(b))
            }
            seed.append(v)
        }
        let version: DirectoryHash.Version = switch algorithm {
        case "legacy": .legacy
        case "half_md4": .halfMD4
        case "tea": .tea
        case "legacy_unsigned": .legacyUnsigned
        case "half_md4_unsigned": .halfMD4Unsigned
        default: .teaUnsigned
        }
        // debugfs takes the unsigned variants by number only (3, 4, 5).
        let commands = names.map { "dx_hash -h \(version.rawValue) -s \(seedText) \"\($0)\"" }.joined(separator: "\n")
        try commands.write(toFile: scratch.path("cmds"), atomically: true, encoding: .utf8)
        let out = try Support.run(["debugfs", "-f", scratch.path("cmds"), img]).out
        let hashes = out.split(separator: "\n").compactMap { line -> UInt32? in
            guard let r = line.range(of: " is 0x") else { return nil }
            return UInt32(line[r.upperBound...].prefix { $0.isHexDigit }, radix: 16)
        }
        try #require(hashes.count == names.count, "debugfs printed: \(out)")
        for (name, expected) in zip(names, hashes) {
            #expect(DirectoryHash.hash(Array(name.utf8), version: version, seed: seed) == expected & ~1, "\(algorithm) of \(name)")
        }
    }
}

/// A seeded generator, so a failing length reruns with the same bytes (xorshift64).
private struct Xorshift: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}
