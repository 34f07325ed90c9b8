import FuzzSupport
import HoldfastFormat

/// Target (d): directory-block and htree decoding. The first input byte picks the block size
/// (bits 0-1: 1, 2 or 4 KiB), large_dir (bit 6) and checksums (bit 7); the rest is the block
/// (zero-padded). A block whose entries decode is then edited as the writer edits one: an insert
/// and a remove.
func fuzzDirectory(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let control = data[0]
    let blockSize = 1024 << min(Int(control & 0x3), 2)
    let checksums = control & 0x80 != 0
    var block = [UInt8](repeating: 0, count: blockSize)
    for i in 0..<min(size - 1, blockSize) { block[i] = data[i + 1] }
    let seed: UInt32? = checksums ? 0x1234_5678 : nil

    _ = DirectoryBlock.hasTail(block)
    _ = DotEntries.decode(block)
    if let seed { _ = try? DirectoryBlock.verifyLeafChecksum(block, seed: seed, inode: 2, blockNumber: 9) }
    if DirectoryBlock.isDxNode(block) {
        _ = try? DxNode(block, offset: 8, inode: 2, blockNumber: 9, checksumSeed: seed)
    }
    if let root = try? DxRootInfo(block, inode: 2, blockNumber: 9, largeDir: control & 0x40 != 0),
       let node = try? DxNode(block, offset: 0x18 + Int(root.infoLength), inode: 2, blockNumber: 9, checksumSeed: seed) {
        let version = DirectoryHash.Version(rawValue: root.hashVersion) ?? .halfMD4
        let hash = DirectoryHash.hash(Array("fuzz".utf8), version: version, seed: [1, 2, 3, 4])
        _ = node.entries[node.slot(for: hash)]
    }
    let usable = checksums ? blockSize - DirectoryBlock.tailSize : blockSize
    guard let entries = try? DirectoryBlock.entries(block[0..<usable], blockSize: blockSize, inode: 2, blockNumber: 9) else { return 0 }
    for entry in entries.prefix(64) {
        for version in [DirectoryHash.Version.legacy, .halfMD4, .tea, .legacyUnsigned, .halfMD4Unsigned, .teaUnsigned] {
            _ = DirectoryHash.hash(entry.name, version: version, seed: [0x0102_0304, 0, 0xFFFF_FFFF, 7])
        }
    }
    var edited = block
    if DirectoryLeaf.insert(&edited, inode: 12, name: Array("new-entry".utf8), fileType: 1, blockSize: blockSize, checksums: checksums) {
        guard let after = try? DirectoryBlock.entries(edited[0..<usable], blockSize: blockSize, inode: 2, blockNumber: 9),
              after.contains(where: { $0.name == Array("new-entry".utf8) }) else { fatalError("an insert that succeeded left no readable entry") }
    }
    if let first = entries.first(where: { $0.name != [0x2E] && $0.name != [0x2E, 0x2E] }) {
        _ = DirectoryLeaf.remove(&edited, name: first.name, blockSize: blockSize, checksums: checksums)
    }
    return 0
}
