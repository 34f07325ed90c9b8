import HoldfastFormat

/// Adding and removing directory entries: linear directories while they fit in one block, then
/// (with dir_index) an htree: hashed inserts with leaf splits, index node splits and a new index
/// level when the root fills, so large directories never need a scan.
extension Operation {
    var hasDirIndex: Bool { sb.featureCompat.contains(.dirIndex) }
    var largeDir: Bool { sb.featureIncompat.contains(.largeDir) }

    func isIndexed(_ dir: InodeRecord) -> Bool { dir.flags & Inode.flagIndex != 0 && hasDirIndex }

    func fileTypeCode(_ type: FileType) -> UInt8 {
        sb.featureIncompat.contains(.filetype) ? type.rawValue : 0
    }

    /// Physical block of the directory's logical block `logical`.
    func directoryBlock(_ dir: InodeRecord, _ logical: UInt64) throws -> UInt64 {
        let runs = try mappedRuns(dir, from: logical, to: logical + 1)
        guard let run = runs.first, run.logical <= logical, let p = run.physical else {
            throw CorruptionError(.directoryBlock, inode: dir.number, .impossible("directory block \(logical) is a hole"))
        }
        return p + (logical - run.logical)
    }

    private func sealLeaf(_ b: inout [UInt8], _ dir: InodeRecord) { DirectoryLeaf.seal(&b, seed: seed(dir)) }

    /// Appends a block to the directory; returns its logical number.
    func appendDirectoryBlock(_ dir: inout InodeRecord, _ bytes: [UInt8]) throws -> UInt32 {
        let bs = UInt64(blockSize)
        let logical = dir.size / bs
        let goal = try dataGoal(dir, logical: logical)
        let (block, _) = try allocateBlocks(goal: goal, count: 1)
        try mapNewRun(logical: logical, physical: block, count: 1, into: &dir)
        dir.size += bs
        try handle.create(block, bytes)
        return UInt32(logical)
    }

    /// Adds `name` -> `inode` to the directory. The caller has checked that the name is free.
    func addEntry(_ dir: inout InodeRecord, name: [UInt8], inode: UInt32, type: FileType) throws {
        let code = fileTypeCode(type)
        if isInline(dir) {
            if try addInlineEntry(&dir, name: name, inode: inode, code: code) { return }
            try convertInlineDirectory(&dir)
        }
        if isIndexed(dir) {
            try htreeInsert(&dir, name: name, inode: inode, type: code)
            return
        }
        let bs = UInt64(blockSize)
        let count = dir.size / bs
        for logical in 0..<count {
            let physical = try directoryBlock(dir, logical)
            var block = try handle.read(physical)
            if DirectoryLeaf.insert(&block, inode: inode, name: name, fileType: code, blockSize: blockSize, checksums: checksums) {
                sealLeaf(&block, dir)
                try handle.write(physical, block)
                return
            }
        }
        if hasDirIndex && count == 1 {
            try makeIndexed(&dir, adding: DirectoryEntry(inode: inode, name: name, fileType: code))
            return
        }
        var block = DirectoryLeaf.empty(blockSize: blockSize, checksums: checksums)
        _ = DirectoryLeaf.insert(&block, inode: inode, name: name, fileType: code, blockSize: blockSize, checksums: checksums)
        sealLeaf(&block, dir)
        _ = try appendDirectoryBlock(&dir, block)
    }

    // MARK: htree

    private var hashVersion: DirectoryHash.Version {
        (DirectoryHash.Version(rawValue: sb.defaultHashVersion) ?? .halfMD4).resolved(unsigned: sb.hashIsUnsigned)
    }

    private func hash(_ name: [UInt8], _ version: DirectoryHash.Version) -> UInt32 {
        DirectoryHash.hash(name, version: version, seed: sb.hashSeed)
    }

    private func live(_ block: [UInt8], _ dir: InodeRecord, physical: UInt64) throws -> [DirectoryEntry] {
        let usable = DirectoryLeaf.usable(blockSize: blockSize, checksums: checksums)
        return try DirectoryBlock.entries(block[0..<usable], blockSize: blockSize, inode: dir.number, blockNumber: physical)
    }

    /// Turns a full one-block linear directory into an htree: the root replaces block 0, its entries
    /// move, sorted by hash, into new leaves.
    private func makeIndexed(_ dir: inout InodeRecord, adding new: DirectoryEntry) throws {
        let rootPhysical = try directoryBlock(dir, 0)
        let old = try handle.read(rootPhysical)
        let all = try live(old, dir, physical: rootPhysical)
        guard all.count >= 2, all[0].name == [0x2E], all[1].name == [0x2E, 0x2E] else {
            throw CorruptionError(.directoryBlock, inode: dir.number, block: rootPhysical, .impossible("first block does not start with '.' and '..'"))
        }
        let version = hashVersion
        let entries = (all.dropFirst(2) + [new]).map { (hash($0.name, version), $0) }.sorted { $0.0 < $1.0 }
        let usable = DirectoryLeaf.usable(blockSize: blockSize, checksums: checksums)
        var leaves: [[DirectoryEntry]] = [[]]
        var keys: [UInt32] = [0]
        var used = 0
        for (i, (h, e)) in entries.enumerated() {
            let size = DirectoryLeaf.recordSize(nameLength: e.name.count)
            if used + size > usable {
                leaves.append([])
                keys.append(h | (i > 0 && entries[i - 1].0 == h ? 1 : 0))
                used = 0
            }
            leaves[leaves.count - 1].append(e)
            used += size
        }
        var index: [(hash: UInt32, block: UInt32)] = []
        for (k, leaf) in leaves.enumerated() {
            var b = DirectoryLeaf.packed(leaf, blockSize: blockSize, checksums: checksums)
            sealLeaf(&b, dir)
            let logical = try appendDirectoryBlock(&dir, b)
            index.append((keys[k], logical))
        }
        var root = DxEncoding.root(selfInode: dir.number, parent: all[1].inode, hashVersion: sb.defaultHashVersion, levels: 0,
                                   entries: index, blockSize: blockSize, checksums: checksums, dotFileType: fileTypeCode(.directory))
        DxEncoding.seal(&root, offset: DxEncoding.rootEntriesOffset, seed: seed(dir))
        try handle.write(rootPhysical, root)
        dir.flags |= Inode.flagIndex
    }

    /// One level of the path from the root to a leaf.
    private struct DxLevel {
        var physical: UInt64
        var offset: Int
        var entries: [(hash: UInt32, block: UInt32)]
        var slot: Int
    }

    private struct DxPath {
        var version: DirectoryHash.Version
        var levels: [DxLevel]
        var indirect: Int
        var parent: UInt32
        var rootHashVersion: UInt8
    }

    private func dxPath(_ dir: InodeRecord, hash h: UInt32?, name: [UInt8]) throws -> (DxPath, UInt32) {
        let rootPhysical = try directoryBlock(dir, 0)
        let root = try handle.read(rootPhysical)
        let info = try DxRootInfo(root, inode: dir.number, blockNumber: rootPhysical, largeDir: largeDir)
        guard let base = DirectoryHash.Version(rawValue: info.hashVersion), base != .siphash else {
            throw HoldfastError.unsupported("directory \(dir.number) uses hash version \(info.hashVersion)")
        }
        let version = base.resolved(unsigned: sb.hashIsUnsigned)
        let target = h ?? hash(name, version)
        var levels: [DxLevel] = []
        var node = try DxNode(root, offset: DxEncoding.rootEntriesOffset, inode: dir.number, blockNumber: rootPhysical, checksumSeed: seed(dir))
        var physical = rootPhysical, offset = DxEncoding.rootEntriesOffset
        for level in 0...Int(info.indirectLevels) {
            let slot = node.slot(for: target)
            levels.append(DxLevel(physical: physical, offset: offset, entries: node.entries, slot: slot))
            if level == Int(info.indirectLevels) { break }
            physical = try directoryBlock(dir, UInt64(node.entries[slot].block))
            offset = DxEncoding.nodeEntriesOffset
            let b = try handle.read(physical)
            node = try DxNode(b, offset: offset, inode: dir.number, blockNumber: physical, checksumSeed: seed(dir))
        }
        return (DxPath(version: version, levels: levels, indirect: Int(info.indirectLevels), parent: DotEntries.parent(root), rootHashVersion: info.hashVersion), target)
    }

    private func writeIndex(_ level: DxLevel, isRoot: Bool, _ dir: InodeRecord, path: DxPath, indirect: Int) throws {
        var b: [UInt8]
        if isRoot {
            b = DxEncoding.root(selfInode: dir.number, parent: path.parent, hashVersion: path.rootHashVersion, levels: UInt8(indirect),
                                entries: level.entries, blockSize: blockSize, checksums: checksums, dotFileType: fileTypeCode(.directory))
        } else {
            b = DxEncoding.node(entries: level.entries, blockSize: blockSize, checksums: checksums)
        }
        DxEncoding.seal(&b, offset: level.offset, seed: seed(dir))
        try handle.write(level.physical, b)
    }

    private func htreeInsert(_ dir: inout InodeRecord, name: [UInt8], inode: UInt32, type: UInt8) throws {
        let (path, h) = try dxPath(dir, hash: nil, name: name)
        let last = path.levels[path.levels.count - 1]
        let leafPhysical = try directoryBlock(dir, UInt64(last.entries[last.slot].block))
        var leaf = try handle.read(leafPhysical)
        if DirectoryLeaf.insert(&leaf, inode: inode, name: name, fileType: type, blockSize: blockSize, checksums: checksums) {
            sealLeaf(&leaf, dir)
            try handle.write(leafPhysical, leaf)
            return
        }
        // Split the leaf by hash: the upper half moves to a new block at the end of the directory.
        var entries = try live(leaf, dir, physical: leafPhysical).map { (hash($0.name, path.version), $0) }
        entries.append((h, DirectoryEntry(inode: inode, name: name, fileType: type)))
        entries.sort { $0.0 < $1.0 }
        let total = entries.reduce(0) { $0 + DirectoryLeaf.recordSize(nameLength: $1.1.name.count) }
        var m = 0, used = 0
        while m < entries.count - 1 && used + DirectoryLeaf.recordSize(nameLength: entries[m].1.name.count) <= total / 2 {
            used += DirectoryLeaf.recordSize(nameLength: entries[m].1.name.count)
            m += 1
        }
        m = max(1, m)
        let splitHash = entries[m].0 | (entries[m].0 == entries[m - 1].0 ? 1 : 0)
        var left = DirectoryLeaf.packed(entries[..<m].map(\.1), blockSize: blockSize, checksums: checksums)
        var right = DirectoryLeaf.packed(entries[m...].map(\.1), blockSize: blockSize, checksums: checksums)
        sealLeaf(&left, dir)
        sealLeaf(&right, dir)
        try handle.write(leafPhysical, left)
        let newLeaf = try appendDirectoryBlock(&dir, right)
        try insertIndexEntry(&dir, path: path, level: path.levels.count - 1, hash: splitHash, block: newLeaf)
    }

    /// Puts (hash, block) after the path's slot at `level`, splitting index nodes or adding a level as needed.
    private func insertIndexEntry(_ dir: inout InodeRecord, path: DxPath, level: Int, hash: UInt32, block: UInt32) throws {
        var node = path.levels[level]
        node.entries.insert((hash, block), at: node.slot + 1)
        let isRoot = level == 0
        let limit = DxEncoding.limit(blockSize: blockSize, offset: node.offset, checksums: checksums)
        if node.entries.count <= limit {
            try writeIndex(node, isRoot: isRoot, dir, path: path, indirect: path.indirect)
            return
        }
        if isRoot {
            let maxIndirect = largeDir ? 2 : 1
            guard path.indirect < maxIndirect else {
                throw HoldfastError.noSpace("directory inode \(dir.number) has a full hash index (\(path.indirect + 1) levels)")
            }
            // A new level: the root's entries move into one interior node under a one-entry root.
            var moved = DxEncoding.node(entries: node.entries, blockSize: blockSize, checksums: checksums)
            DxEncoding.seal(&moved, offset: DxEncoding.nodeEntriesOffset, seed: seed(dir))
            let child = try appendDirectoryBlock(&dir, moved)
            let root = DxLevel(physical: node.physical, offset: node.offset, entries: [(0, child)], slot: 0)
            try writeIndex(root, isRoot: true, dir, path: path, indirect: path.indirect + 1)
            return
        }
        // Split a full interior node; its upper half's first hash goes up a level.
        let half = node.entries.count / 2
        let upper = Array(node.entries[half...])
        node.entries = Array(node.entries[..<half])
        try writeIndex(node, isRoot: false, dir, path: path, indirect: path.indirect)
        var fresh = DxEncoding.node(entries: upper, blockSize: blockSize, checksums: checksums)
        DxEncoding.seal(&fresh, offset: DxEncoding.nodeEntriesOffset, seed: seed(dir))
        let sibling = try appendDirectoryBlock(&dir, fresh)
        try insertIndexEntry(&dir, path: path, level: level - 1, hash: upper[0].hash, block: sibling)
    }

    // MARK: Removal

    /// Removes `name` from the directory; returns the inode it named. An inline directory changes
    /// in its inode, stored at once (and in `dir`).
    func removeEntry(_ dir: inout InodeRecord, name: [UInt8]) throws -> UInt32? {
        if isInline(dir) { return try removeInlineEntry(&dir, name: name) }
        return try editEntry(dir, name: name) { block in
            DirectoryLeaf.remove(&block, name: name, blockSize: blockSize, checksums: checksums)
        }
    }

    /// Points `name` at another inode (rename over an existing entry).
    func retargetEntry(_ dir: inout InodeRecord, name: [UInt8], to inode: UInt32, type: FileType) throws -> Bool {
        let code = fileTypeCode(type)
        if isInline(dir) { return try retargetInlineEntry(&dir, name: name, to: inode, code: code) }
        return try editEntry(dir, name: name) { block in
            DirectoryLeaf.retarget(&block, name: name, to: inode, fileType: code, blockSize: blockSize, checksums: checksums) ? inode : nil
        } != nil
    }

    /// Finds the leaf holding `name` (through the index when there is one) and applies `edit` to it.
    private func editEntry(_ dir: InodeRecord, name: [UInt8], _ edit: (inout [UInt8]) -> UInt32?) throws -> UInt32? {
        let bs = UInt64(blockSize)
        // Indexed: the leaves the hash leads to. Linear: every block in turn, walked without a
        // list (a corrupt i_size may claim millions; the first hole past the real ones is
        // corruption, and ends the walk).
        var candidates: [UInt64] = []
        if isIndexed(dir) {
            let (path, h) = try dxPath(dir, hash: nil, name: name)
            let last = path.levels[path.levels.count - 1]
            candidates.append(UInt64(last.entries[last.slot].block))
            // Equal hashes may continue into following leaves (bit 0 of the next key).
            var slot = last.slot + 1
            while slot < last.entries.count, last.entries[slot].hash & ~1 == h, last.entries[slot].hash & 1 == 1 {
                candidates.append(UInt64(last.entries[slot].block))
                slot += 1
            }
        }
        func visit(_ logical: UInt64) throws -> UInt32? {
            let physical = try directoryBlock(dir, logical)
            var block = try handle.read(physical)
            guard let ino = edit(&block) else { return nil }
            sealLeaf(&block, dir)
            try handle.write(physical, block)
            return ino
        }
        if isIndexed(dir) {
            for logical in candidates where logical != 0 {
                if let ino = try visit(logical) { return ino }
            }
        } else {
            for logical in 0..<(dir.size / bs) {
                if let ino = try visit(logical) { return ino }
            }
        }
        return nil
    }

    /// Rewrites '..' of a directory that moved to another parent.
    func setParent(_ dir: inout InodeRecord, to parent: UInt32) throws {
        if isInline(dir) { return try setInlineParent(&dir, to: parent) }
        let physical = try directoryBlock(dir, 0)
        var block = try handle.read(physical)
        guard DotEntries.hasDotDot(block) else {
            throw CorruptionError(.directoryBlock, inode: dir.number, block: physical, .impossible("no '..' entry where it belongs"))
        }
        DotEntries.setParent(&block, parent)
        if isIndexed(dir) {
            DxEncoding.seal(&block, offset: DxEncoding.rootEntriesOffset, seed: seed(dir))
        } else {
            sealLeaf(&block, dir)
        }
        try handle.write(physical, block)
    }
}
