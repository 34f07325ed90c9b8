import HoldfastFormat
import Testing

@Suite("Directory blocks")
struct DirectoryBlockTests {
    /// A 1 KiB leaf, written record by record: names that are prefixes of each other, a deleted
    /// record (inode 0) still holding a name, a name twice (only a damaged block has that), and
    /// the last record running to the end.
    private func leaf() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 1024)
        let records: [(UInt32, String)] = [(11, "ab"), (12, "abc"), (0, "gone"), (13, "a"), (15, "abc"), (14, "name-" + String(repeating: "x", count: 200))]
        var o = 0
        for (k, (ino, name)) in records.enumerated() {
            let size = k == records.count - 1 ? 1024 - o : DirectoryLeaf.recordSize(nameLength: name.utf8.count)
            DirectoryLeaf.writeRecord(&b, at: o, inode: ino, name: Array(name.utf8), fileType: 1, length: size, blockSize: 1024)
            o += size
        }
        return b
    }

    @Test("find names the first entry entries lists by that name, exactly, and skips deleted records")
    func findAgreesWithEntries() throws {
        let b = leaf()
        let listed = try DirectoryBlock.entries(b[...], blockSize: 1024, inode: 2, blockNumber: 9)
        #expect(listed.map(\.inode) == [11, 12, 13, 15, 14])
        for e in listed {
            let first = listed.first { $0.name == e.name }!.inode
            #expect(try DirectoryBlock.find(e.name, in: b[...], blockSize: 1024, inode: 2, blockNumber: 9) == first)
        }
        for missing in ["gone", "abcd", "b", "", "name-"] {
            #expect(try DirectoryBlock.find(Array(missing.utf8), in: b[...], blockSize: 1024, inode: 2, blockNumber: 9) == nil, "\(missing)")
        }
        // A slice that does not start at 0 (the checksum tail cut off, say) reads the same.
        var shifted = [UInt8](repeating: 0xFF, count: 16) + b
        #expect(try DirectoryBlock.find(Array("abc".utf8), in: shifted[16...], blockSize: 1024, inode: 2, blockNumber: 9) == 12)
        // A record past the match that runs out of the block is corruption, as for entries.
        shifted[16 + 12 + 4] = 0xF0
        shifted[16 + 12 + 5] = 0x0F
        #expect(throws: CorruptionError.self) { try DirectoryBlock.find(Array("ab".utf8), in: shifted[16...], blockSize: 1024, inode: 2, blockNumber: 9) }
        #expect(throws: CorruptionError.self) { try DirectoryBlock.entries(shifted[16...], blockSize: 1024, inode: 2, blockNumber: 9) }
    }
}
