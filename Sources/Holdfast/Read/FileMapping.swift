import HoldfastFormat

/// Logical-to-physical mapping of a file's blocks: extent trees of any depth and ext2/ext3 block maps.
extension Filesystem {
    /// Calls `body` with each mapped run (in logical order) that ends after `start`; holes are left out.
    /// `body` returns false to stop early.
    func forEachRun(_ inode: Inode, from start: UInt64 = 0, _ body: (BlockRun) throws -> Bool) throws {
        if inode.hasInlineData { return }
        if inode.usesExtents {
            let root = try ExtentNode(inode.blockArea, inode: inode.number, block: nil, checksumSeed: nil)
            let rootDepth: UInt16
            if case .index(_, let d) = root { rootDepth = d } else { rootDepth = 0 }
            _ = try walkExtents(root, depth: rootDepth, inode: inode, from: start, body)
        } else {
            try walkBlockMap(inode, from: start, body)
        }
    }

    /// The physical block behind logical block `logical`, or nil for a hole.
    func physicalBlock(of inode: Inode, logical: UInt64) throws -> UInt64? {
        var found: UInt64?
        try forEachRun(inode, from: logical) { run in
            if run.logical <= logical, logical < run.logical + run.length { found = run.physical! + (logical - run.logical) }
            return false
        }
        return found
    }

    private var seedForChecksums: Bool { superblock.hasMetadataChecksums }

    private func checkPhysical(_ start: UInt64, _ length: UInt64, inode: UInt32, structure: Structure, block: UInt64?) throws {
        let sb = superblock
        if start < UInt64(sb.firstDataBlock) || start + length > sb.blocksCount || start + length < start {
            throw CorruptionError(structure, inode: inode, block: block, .outOfRange(field: "physical block", value: start + length, limit: sb.blocksCount))
        }
    }

    /// Returns false when `body` asked to stop.
    private func walkExtents(_ node: ExtentNode, depth: UInt16, inode: Inode, from start: UInt64, _ body: (BlockRun) throws -> Bool) throws -> Bool {
        switch node {
        case .leaf(let extents):
            for e in extents where UInt64(e.logical) + UInt64(e.length) > start && e.length > 0 {
                try checkPhysical(e.physical, UInt64(e.length), inode: inode.number, structure: .extentTree, block: nil)
                if try !body(BlockRun(logical: UInt64(e.logical), length: UInt64(e.length), physical: e.physical, unwritten: e.unwritten)) {
                    return false
                }
            }
            return true
        case .index(let entries, _):
            for (i, entry) in entries.enumerated() {
                // Skip children that end before `start`.
                if i + 1 < entries.count, UInt64(entries[i + 1].logical) <= start { continue }
                try checkPhysical(entry.child, 1, inode: inode.number, structure: .extentTree, block: nil)
                let bytes = try metadataBlock(entry.child, for: .extentTree, inode: inode.number)
                let child = try ExtentNode(bytes, inode: inode.number, block: entry.child,
                                           checksumSeed: seedForChecksums ? inode.checksumSeed(superblock) : nil)
                let childDepth: UInt16
                if case .index(_, let d) = child { childDepth = d } else { childDepth = 0 }
                // Depth must fall by exactly one per level: this is what rules out loops.
                guard childDepth + 1 == depth else {
                    throw CorruptionError(.extentTree, inode: inode.number, block: entry.child, .loop("node at depth \(childDepth) under a node at depth \(depth)"))
                }
                if try !walkExtents(child, depth: childDepth, inode: inode, from: start, body) { return false }
            }
            return true
        }
    }

    /// ext2/ext3 block maps: 12 direct pointers, then single, double and triple indirect blocks.
    private func walkBlockMap(_ inode: Inode, from start: UInt64, _ body: (BlockRun) throws -> Bool) throws {
        let area = inode.blockArea
        let perBlock = UInt64(blockSize / 4)
        var pending: BlockRun?
        // Adjacent blocks are merged into runs before they reach `body`.
        func emit(_ logical: UInt64, _ physical: UInt64) throws -> Bool {
            if var p = pending, p.logical + p.length == logical, p.physical! + p.length == physical {
                p.length += 1
                pending = p
                return true
            }
            if let p = pending, try !body(p) { pending = nil; return false }
            pending = BlockRun(logical: logical, length: 1, physical: physical)
            return true
        }
        func walk(_ pointer: UInt64, level: Int, base: UInt64) throws -> Bool {
            let span = level == 0 ? 1 : (0..<level).reduce(UInt64(1)) { acc, _ in acc * perBlock }
            if base + span <= start { return true }
            try checkPhysical(pointer, 1, inode: inode.number, structure: .blockMap, block: nil)
            if level == 0 { return try emit(base, pointer) }
            let bytes = try metadataBlock(pointer, for: .blockMap, inode: inode.number)
            let childSpan = span / perBlock
            for i in 0..<Int(perBlock) {
                let p = UInt64(bytes.blockPointer(i))
                if p == 0 { continue }
                if try !walk(p, level: level - 1, base: base + UInt64(i) * childSpan) { return false }
            }
            return true
        }
        var base: UInt64 = 0
        var keepGoing = true
        for i in 0..<15 where keepGoing {
            let pointer = UInt64(area.blockPointer(i))
            let level = i < 12 ? 0 : i - 11
            let span = level == 0 ? 1 : (0..<level).reduce(UInt64(1)) { acc, _ in acc * perBlock }
            if pointer != 0 { keepGoing = try walk(pointer, level: level, base: base) }
            base += span
        }
        if keepGoing, let p = pending { _ = try body(p) }
    }
}

extension Filesystem {
    /// The mapped runs of a file in logical order (holes left out), for `stat` and tests.
    public func blockRuns(_ inode: Inode, _ body: (BlockRun) throws -> Void) throws(HoldfastError) {
        try guarded {
            try forEachRun(inode) { run in
                do { try body(run) } catch let e as HoldfastError { throw e } catch { throw CallerError(error: error) }
                return true
            }
        }
    }

    /// Verifies every group descriptor and, with metadata_csum, every initialized bitmap; returns the problems.
    public func checkGroups() -> [String] {
        var problems: [String] = []
        for g in 0..<UInt32(superblock.groupCount) {
            do {
                let gd = try descriptor(g)
                if superblock.hasMetadataChecksums {
                    try gd.verifyBlockBitmap(try metadataBlock(gd.blockBitmap, for: .blockBitmap), group: g, superblock: superblock)
                    try gd.verifyInodeBitmap(try metadataBlock(gd.inodeBitmap, for: .inodeBitmap), group: g, superblock: superblock)
                }
            } catch {
                problems.append("group \(g): \(HoldfastError.wrap(error))")
            }
        }
        return problems
    }
}
