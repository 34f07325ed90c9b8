import HoldfastFormat
import HoldfastMemory
import Synchronization

/// Directory reading: linear scans for listing, the htree index for lookups.
extension Filesystem {
    /// All entries of a directory, '.' and '..' included, in on-disk order.
    /// The listing is charged to the budget while it is read; the returned array is the caller's.
    public func directoryEntries(_ dir: Inode) throws(HoldfastError) -> [DirectoryEntry] {
        try guarded { try withDirectory(dir) { $0 } }
    }

    /// Calls `body` with the directory's entries ('.' and '..' included), charged to the budget
    /// while `body` runs: a walk that recurses holds each level's listing, and the budget sees it.
    public func withDirectoryEntries(_ dir: Inode, _ body: ([DirectoryEntry]) -> Void) throws(HoldfastError) {
        try guarded { try withDirectory(dir, body) }
    }

    /// Calls `body` with the directory's entries, charged at `.directoryListing` while held.
    func withDirectory<R>(_ dir: Inode, _ body: ([DirectoryEntry]) throws -> R) throws -> R {
        guard dir.fileType == .directory else { throw HoldfastError.notADirectory(.inode(dir.number)) }
        var charged = 0
        defer { if charged > 0 { budget.uncharge(charged, for: .directoryListing) } }
        func take(_ entries: [DirectoryEntry]) throws -> [DirectoryEntry] {
            let bytes = entries.reduce(0) { $0 + Self.listingCost($1) }
            try budget.chargeOrThrow(bytes, at: .directoryListing)
            charged += bytes
            return entries
        }
        var result: [DirectoryEntry] = []
        if dir.hasInlineData {
            result = try take(try inlineDirectory(dir))
        } else {
            try forEachDirectoryBlock(dir) { logical, physical, block in
                result += try take(try leafEntries(dir, block: block, logical: logical, physical: physical))
                return true
            }
        }
        return try body(result)
    }

    /// What one listed entry holds: the value, its name's storage and the array slot.
    static func listingCost(_ e: DirectoryEntry) -> Int { MemoryLayout<DirectoryEntry>.stride + 32 + e.name.count }

    /// Calls `body` with every block of the directory (holes skipped), verifying sizes.
    private func forEachDirectoryBlock(_ dir: Inode, _ body: (UInt64, UInt64, [UInt8]) throws -> Bool) throws {
        let bs = UInt64(blockSize)
        guard dir.size % bs == 0, dir.size / bs <= UInt64(UInt32.max) else {
            throw CorruptionError(.inode, inode: dir.number, .impossible("directory size \(dir.size) is not a whole number of blocks"))
        }
        let count = dir.size / bs
        try forEachRun(dir) { run in
            guard run.hasData else { return true }
            var i: UInt64 = 0
            while i < run.length && run.logical + i < count {
                let physical = run.physical! + i
                let block = try metadataBlock(physical, for: .directoryBlock, inode: dir.number)
                if try !body(run.logical + i, physical, block) { return false }
                i += 1
            }
            return run.logical + run.length < count
        }
    }

    /// Is hashed lookup in force for this directory?
    func isIndexed(_ dir: Inode) -> Bool {
        dir.isHashIndexed && superblock.featureCompat.contains(.dirIndex) && !dir.hasInlineData
    }

    /// The entries of one directory block, after verifying its checksum (leaf tail or dx tail).
    private func leafEntries(_ dir: Inode, block: [UInt8], logical: UInt64, physical: UInt64) throws -> [DirectoryEntry] {
        let csum = superblock.hasMetadataChecksums
        let seed = csum ? dir.checksumSeed(superblock) : 0
        if isIndexed(dir) && logical == 0 {
            // The dx root: '.' and '..' come first, then the index hidden in '..'s slack.
            let info = try DxRootInfo(block, inode: dir.number, blockNumber: physical, largeDir: superblock.featureIncompat.contains(.largeDir))
            _ = try DxNode(block, offset: 0x18 + Int(info.infoLength), inode: dir.number, blockNumber: physical, checksumSeed: csum ? seed : nil)
            guard let dots = DotEntries.decode(block) else {
                throw CorruptionError(.htree, inode: dir.number, block: physical, .impossible("root block does not start with '.' and '..'"))
            }
            return [dots.dot, dots.dotDot]
        }
        if isIndexed(dir) && DirectoryBlock.isDxNode(block) {
            _ = try DxNode(block, offset: 8, inode: dir.number, blockNumber: physical, checksumSeed: csum ? seed : nil)
            return []
        }
        return try DirectoryBlock.entries(try checkedRecords(dir, block: block, physical: physical), blockSize: blockSize,
                                          inode: dir.number, blockNumber: physical)
    }

    /// A plain leaf's records: its checksum checked, the tail cut off.
    private func checkedRecords(_ dir: Inode, block: [UInt8], physical: UInt64) throws -> ArraySlice<UInt8> {
        guard superblock.hasMetadataChecksums else { return block[...] }
        try DirectoryBlock.verifyLeafChecksum(block, seed: dir.checksumSeed(superblock), inode: dir.number, blockNumber: physical)
        return block[0..<(block.count - DirectoryBlock.tailSize)]
    }

    /// The inode `name` names in one block of `dir`, checked as `leafEntries` checks it; a plain
    /// leaf is searched in place, without copying its names.
    private func leafFind(_ name: [UInt8], _ dir: Inode, block: [UInt8], logical: UInt64, physical: UInt64) throws -> UInt32? {
        guard !isIndexed(dir) || (logical != 0 && !DirectoryBlock.isDxNode(block)) else {
            return try leafEntries(dir, block: block, logical: logical, physical: physical).first { $0.name == name }?.inode
        }
        return try DirectoryBlock.find(name, in: try checkedRecords(dir, block: block, physical: physical), blockSize: blockSize,
                                       inode: dir.number, blockNumber: physical)
    }

    /// Inline directories: the parent in the first 4 bytes of i_block, entries after it and in system.data.
    private func inlineDirectory(_ dir: Inode) throws -> [DirectoryEntry] {
        let data = try inlineData(dir)
        let parent = DotEntries.inlineParent(data)
        var result = [
            DirectoryEntry(inode: dir.number, name: [0x2E], fileType: FileType.directory.rawValue),
            DirectoryEntry(inode: parent, name: [0x2E, 0x2E], fileType: FileType.directory.rawValue),
        ]
        result += try DirectoryBlock.entries(data[4..<60], blockSize: blockSize, inode: dir.number, blockNumber: nil, structure: .inlineData)
        if data.count > 60 {
            result += try DirectoryBlock.entries(data[60...], blockSize: blockSize, inode: dir.number, blockNumber: nil, structure: .inlineData)
        }
        return result
    }

    /// Finds `name` in a directory: through the hash index when the directory has one, else by scanning.
    public func lookup(_ name: [UInt8], in dir: Inode) throws(HoldfastError) -> UInt32? {
        try guarded { try find(name, in: dir) }
    }

    func find(_ name: [UInt8], in dir: Inode) throws -> UInt32? {
        guard dir.fileType == .directory else { throw HoldfastError.notADirectory(.inode(dir.number)) }
        if isIndexed(dir) {
            // '.' and '..' sit in the root block ahead of the index: no hash leads to them.
            if name == [0x2E] || name == [0x2E, 0x2E] { return try indexedDots(dir, parent: name.count == 2) }
            return try indexedLookup(name, in: dir)
        }
        if dir.hasInlineData { return try inlineDirectory(dir).first { $0.name == name }?.inode }
        var found: UInt32?
        try forEachDirectoryBlock(dir) { logical, physical, block in
            found = try leafFind(name, dir, block: block, logical: logical, physical: physical)
            return found == nil
        }
        return found
    }

    /// '.' or '..' of an indexed directory, from its root block.
    private func indexedDots(_ dir: Inode, parent: Bool) throws -> UInt32 {
        guard dir.size >= UInt64(blockSize), let physical = try physicalBlock(of: dir, logical: 0) else {
            throw CorruptionError(.htree, inode: dir.number, .impossible("indexed directory has no root block"))
        }
        let root = try metadataBlock(physical, for: .htree, inode: dir.number)
        guard let dots = DotEntries.decode(root) else {
            throw CorruptionError(.htree, inode: dir.number, block: physical, .impossible("root block does not start with '.' and '..'"))
        }
        return parent ? dots.dotDot.inode : dots.dot.inode
    }

    /// htree lookup: hash the name, descend the index levels, scan the one leaf (and its collision successors).
    private func indexedLookup(_ name: [UInt8], in dir: Inode) throws -> UInt32? {
        let csum = superblock.hasMetadataChecksums
        let seed: UInt32? = csum ? dir.checksumSeed(superblock) : nil
        let bs = UInt64(blockSize)
        let dirBlocks = dir.size / bs
        func blockAt(_ logical: UInt64) throws -> ([UInt8], UInt64) {
            guard logical < dirBlocks, let physical = try physicalBlock(of: dir, logical: logical) else {
                throw CorruptionError(.htree, inode: dir.number, .outOfRange(field: "index block", value: logical, limit: dirBlocks))
            }
            return (try metadataBlock(physical, for: .htree, inode: dir.number), physical)
        }
        let (rootBlock, rootPhysical) = try blockAt(0)
        let info = try DxRootInfo(rootBlock, inode: dir.number, blockNumber: rootPhysical, largeDir: superblock.featureIncompat.contains(.largeDir))
        guard let version = DirectoryHash.Version(rawValue: info.hashVersion), version != .siphash else {
            throw CorruptionError(.htree, inode: dir.number, block: rootPhysical, .impossible("hash version \(info.hashVersion) needs casefolding"))
        }
        let hash = DirectoryHash.hash(name, version: version.resolved(unsigned: superblock.hashIsUnsigned), seed: superblock.hashSeed)
        lookupCounters.indexed()

        // Descend, remembering each level's node and slot to find collision successors.
        var path: [(node: DxNode, slot: Int)] = []
        var node = try DxNode(rootBlock, offset: 0x18 + Int(info.infoLength), inode: dir.number, blockNumber: rootPhysical, checksumSeed: seed)
        for level in 0...Int(info.indirectLevels) {
            let slot = node.slot(for: hash)
            path.append((node, slot))
            if level == Int(info.indirectLevels) { break }
            let (b, p) = try blockAt(UInt64(node.entries[slot].block))
            lookupCounters.blockRead()
            guard DirectoryBlock.isDxNode(b) else {
                throw CorruptionError(.htree, inode: dir.number, block: p, .impossible("index points at a leaf where a node belongs"))
            }
            node = try DxNode(b, offset: 8, inode: dir.number, blockNumber: p, checksumSeed: seed)
        }
        var visited = 0
        while true {
            let last = path[path.count - 1]
            let leafLogical = UInt64(last.node.entries[last.slot].block)
            let (leaf, leafPhysical) = try blockAt(leafLogical)
            lookupCounters.blockRead()
            if DirectoryBlock.isDxNode(leaf) {
                throw CorruptionError(.htree, inode: dir.number, block: leafPhysical, .impossible("index points at an index node where a leaf belongs"))
            }
            if let hit = try leafFind(name, dir, block: leaf, logical: leafLogical, physical: leafPhysical) { return hit }
            visited += 1
            guard visited <= Int(dirBlocks) else {
                throw CorruptionError(.htree, inode: dir.number, .loop("collision chain longer than the directory"))
            }
            // A run of equal hashes that continues into the next leaf is flagged by bit 0 of the next entry's hash.
            var level = path.count - 1
            while level >= 0 && path[level].slot + 1 >= path[level].node.entries.count { level -= 1 }
            guard level >= 0 else { return nil }
            path[level].slot += 1
            let nextHash = path[level].node.entries[path[level].slot].hash
            guard nextHash & ~1 == hash, nextHash & 1 == 1 else { return nil }
            // Re-descend along the leftmost edge below the level that moved.
            for deeper in (level + 1)..<path.count {
                let above = path[deeper - 1]
                let (b, p) = try blockAt(UInt64(above.node.entries[above.slot].block))
                lookupCounters.blockRead()
                guard DirectoryBlock.isDxNode(b) else {
                    throw CorruptionError(.htree, inode: dir.number, block: p, .impossible("index points at a leaf where a node belongs"))
                }
                path[deeper] = (try DxNode(b, offset: 8, inode: dir.number, blockNumber: p, checksumSeed: seed), 0)
            }
        }
    }
}

/// Counts for tests: how many hashed lookups ran on one filesystem and how many directory blocks they read.
public final class LookupCounters: Sendable {
    public init() {}
    private let counts = Mutex((lookups: 0, blocks: 0))
    func indexed() { counts.withLock { $0.lookups += 1 } }
    func blockRead() { counts.withLock { $0.blocks += 1 } }
    public var snapshot: (lookups: Int, blocks: Int) { counts.withLock { ($0.lookups, $0.blocks) } }
}
