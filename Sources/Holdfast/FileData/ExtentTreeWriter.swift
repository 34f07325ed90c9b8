import HoldfastFormat

/// Changing extent trees (extents.rst): insert with merging, leaf and index splits, growth in depth
/// when the root in i_block is full, and removal from a logical block onward (truncate). Index keys
/// always equal the first key of their child, as e2fsck checks.
extension Operation {
    enum ExtentEntries {
        case leaf([Extent])
        case index([ExtentIndex])

        var count: Int {
            switch self {
            case .leaf(let e): e.count
            case .index(let e): e.count
            }
        }

        var firstKey: UInt32 {
            switch self {
            case .leaf(let e): e.first?.logical ?? 0
            case .index(let e): e.first?.logical ?? 0
            }
        }

        init(_ node: ExtentNode) {
            switch node {
            case .leaf(let e): self = .leaf(e)
            case .index(let e, _): self = .index(e)
            }
        }

        func encoded(depth: UInt16, byteCount: Int) -> [UInt8] {
            switch self {
            case .leaf(let e): ExtentNodeEncoding.leaf(e, byteCount: byteCount)
            case .index(let e): ExtentNodeEncoding.index(e, depth: depth, byteCount: byteCount)
            }
        }

        /// Halves (or, after an append at the end, everything but the last entry and the last).
        func split(appended: Bool) -> (ExtentEntries, ExtentEntries) {
            func cut<T>(_ a: [T]) -> ([T], [T]) {
                let m = appended ? a.count - 1 : a.count / 2
                return (Array(a[..<m]), Array(a[m...]))
            }
            switch self {
            case .leaf(let e): let (l, r) = cut(e); return (.leaf(l), .leaf(r))
            case .index(let e): let (l, r) = cut(e); return (.index(l), .index(r))
            }
        }
    }

    private func rootNode(_ rec: InodeRecord) throws -> (ExtentEntries, UInt16) {
        let node = try ExtentNode(rec.blockArea, inode: rec.number, block: nil, checksumSeed: nil)
        return (ExtentEntries(node), node.depth)
    }

    private func loadNode(_ block: UInt64, depth: UInt16, rec: InodeRecord) throws -> ExtentEntries {
        guard block >= UInt64(sb.firstDataBlock), block < sb.blocksCount else {
            throw CorruptionError(.extentTree, inode: rec.number, block: block, .outOfRange(field: "index block", value: block, limit: sb.blocksCount))
        }
        let bytes = try handle.read(block)
        let node = try ExtentNode(bytes, inode: rec.number, block: block, checksumSeed: seed(rec))
        guard node.depth == depth else {
            throw CorruptionError(.extentTree, inode: rec.number, block: block, .loop("node at depth \(node.depth) where depth \(depth) belongs"))
        }
        return ExtentEntries(node)
    }

    private func storeNode(_ entries: ExtentEntries, depth: UInt16, at block: UInt64, fresh: Bool, rec: InodeRecord) throws {
        var bytes = entries.encoded(depth: depth, byteCount: blockSize)
        ExtentNodeEncoding.seal(&bytes, seed: seed(rec))
        if fresh { try handle.create(block, bytes) } else { try handle.write(block, bytes) }
    }

    private func storeRoot(_ entries: ExtentEntries, depth: UInt16, rec: inout InodeRecord) {
        rec.blockArea = entries.encoded(depth: depth, byteCount: 60)
    }

    /// A block for a tree node, near the data it maps; counted in i_blocks.
    private func allocateTreeBlock(near goal: UInt64, rec: inout InodeRecord) throws -> UInt64 {
        let (block, _) = try allocateBlocks(goal: goal, count: 1)
        rec.sectors += sectors(1)
        return block
    }

    private static func canMerge(_ a: Extent, _ b: Extent) -> Bool {
        a.unwritten == b.unwritten
            && UInt64(a.logical) + UInt64(a.length) == UInt64(b.logical)
            && a.physical + UInt64(a.length) == b.physical
            && UInt32(a.length) + UInt32(b.length) <= ExtentNodeEncoding.maxLength(unwritten: a.unwritten)
    }

    /// Maps a new run of blocks. The run must not overlap anything already mapped.
    func insertExtent(_ e: Extent, into rec: inout InodeRecord) throws {
        noteRemap(rec.number)
        precondition(e.length > 0)
        let (root, depth) = try rootNode(rec)
        let entries = try insert(e, into: root, depth: depth, rec: &rec)
        if entries.count <= ExtentNodeEncoding.capacity(60) {
            storeRoot(entries, depth: depth, rec: &rec)
            return
        }
        // The root is full: move it into a block and point the root at that block, one level deeper.
        let block = try allocateTreeBlock(near: e.physical, rec: &rec)
        try storeNode(entries, depth: depth, at: block, fresh: true, rec: rec)
        storeRoot(.index([ExtentIndex(logical: entries.firstKey, child: block)]), depth: depth + 1, rec: &rec)
    }

    /// Inserts into a node's entries; the result may hold one more than the node can (the caller splits).
    private func insert(_ e: Extent, into node: ExtentEntries, depth: UInt16, rec: inout InodeRecord) throws -> ExtentEntries {
        switch node {
        case .leaf(var list):
            let pos = list.firstIndex { $0.logical > e.logical } ?? list.count
            if pos > 0, Self.canMerge(list[pos - 1], e) {
                let l = list[pos - 1]
                list[pos - 1] = Extent(logical: l.logical, length: l.length + e.length, physical: l.physical, unwritten: l.unwritten)
                if pos < list.count, Self.canMerge(list[pos - 1], list[pos]) {
                    let m = list[pos - 1], r = list[pos]
                    list[pos - 1] = Extent(logical: m.logical, length: m.length + r.length, physical: m.physical, unwritten: m.unwritten)
                    list.remove(at: pos)
                }
            } else if pos < list.count, Self.canMerge(e, list[pos]) {
                let r = list[pos]
                list[pos] = Extent(logical: e.logical, length: e.length + r.length, physical: e.physical, unwritten: e.unwritten)
            } else {
                list.insert(e, at: pos)
            }
            return .leaf(list)
        case .index(var list):
            guard !list.isEmpty else { throw CorruptionError(.extentTree, inode: rec.number, .impossible("empty index node")) }
            let idx = max(0, (list.lastIndex { $0.logical <= e.logical }) ?? 0)
            let childBlock = list[idx].child
            let child = try loadNode(childBlock, depth: depth - 1, rec: rec)
            let grown = try insert(e, into: child, depth: depth - 1, rec: &rec)
            if grown.count <= ExtentNodeEncoding.capacity(blockSize) {
                try storeNode(grown, depth: depth - 1, at: childBlock, fresh: false, rec: rec)
                list[idx] = ExtentIndex(logical: grown.firstKey, child: childBlock)
            } else {
                let appended = e.logical >= child.lastKeyOrZero && idx == list.count - 1
                let (left, right) = grown.split(appended: appended)
                let sibling = try allocateTreeBlock(near: e.physical, rec: &rec)
                try storeNode(left, depth: depth - 1, at: childBlock, fresh: false, rec: rec)
                try storeNode(right, depth: depth - 1, at: sibling, fresh: true, rec: rec)
                list[idx] = ExtentIndex(logical: left.firstKey, child: childBlock)
                list.insert(ExtentIndex(logical: right.firstKey, child: sibling), at: idx + 1)
            }
            return .index(list)
        }
    }

    /// Unmaps everything at or after logical block `from`, giving the blocks back (truncate).
    /// Returns how many data blocks were freed.
    @discardableResult
    func removeExtents(from: UInt32, of rec: inout InodeRecord) throws -> Int {
        noteRemap(rec.number)
        let (root, depth) = try rootNode(rec)
        var freed = 0
        let left = try remove(from: from, in: root, depth: depth, rec: &rec, freed: &freed)
        if left.count == 0 {
            storeRoot(.leaf([]), depth: 0, rec: &rec)
        } else {
            storeRoot(left, depth: depth, rec: &rec)
        }
        return freed
    }

    /// Frees data blocks of `rec` and takes them off i_blocks (block maps use this too).
    func freeData(_ physical: UInt64, _ count: Int, rec: inout InodeRecord, freed: inout Int) throws {
        guard count > 0 else { return }
        try freeBlocks(physical, count)
        // A directory's blocks live in the buffer cache, perhaps dirty: their copies must never be
        // written over the blocks' next owner.
        if FileType(mode: rec.mode) == .directory {
            for b in physical..<(physical + UInt64(count)) { handle.release(b) }
        }
        rec.sectors -= min(rec.sectors, sectors(count))
        freed += count
    }

    /// Frees one extent tree (or indirect) block of `rec` and drops its cached copy.
    func freeTreeBlock(_ block: UInt64, rec: inout InodeRecord) throws {
        try freeBlocks(block, 1)
        handle.release(block)
        rec.sectors -= min(rec.sectors, sectors(1))
    }

    private func remove(from: UInt32, in node: ExtentEntries, depth: UInt16, rec: inout InodeRecord, freed: inout Int) throws -> ExtentEntries {
        switch node {
        case .leaf(let list):
            var kept: [Extent] = []
            for e in list {
                if e.logical >= from {
                    try freeData(e.physical, Int(e.length), rec: &rec, freed: &freed)
                } else if UInt64(e.logical) + UInt64(e.length) > UInt64(from) {
                    let keep = UInt16(from - e.logical)
                    try freeData(e.physical + UInt64(keep), Int(e.length - keep), rec: &rec, freed: &freed)
                    kept.append(Extent(logical: e.logical, length: keep, physical: e.physical, unwritten: e.unwritten))
                } else {
                    kept.append(e)
                }
            }
            return .leaf(kept)
        case .index(var list):
            while let last = list.last, last.logical >= from {
                try freeSubtree(last.child, depth: depth - 1, rec: &rec, freed: &freed)
                list.removeLast()
            }
            if let last = list.last {
                let child = try loadNode(last.child, depth: depth - 1, rec: rec)
                let left = try remove(from: from, in: child, depth: depth - 1, rec: &rec, freed: &freed)
                if left.count == 0 {
                    try freeTreeBlock(last.child, rec: &rec)
                    list.removeLast()
                } else {
                    try storeNode(left, depth: depth - 1, at: last.child, fresh: false, rec: rec)
                }
            }
            return .index(list)
        }
    }

    private func freeSubtree(_ block: UInt64, depth: UInt16, rec: inout InodeRecord, freed: inout Int) throws {
        let node = try loadNode(block, depth: depth, rec: rec)
        switch node {
        case .leaf(let list):
            for e in list { try freeData(e.physical, Int(e.length), rec: &rec, freed: &freed) }
        case .index(let list):
            for i in list { try freeSubtree(i.child, depth: depth - 1, rec: &rec, freed: &freed) }
        }
        try freeTreeBlock(block, rec: &rec)
    }
}

extension Operation.ExtentEntries {
    /// The last key in the node (0 when empty): an insert at or past it is an append.
    var lastKeyOrZero: UInt32 {
        switch self {
        case .leaf(let e): e.last?.logical ?? 0
        case .index(let e): e.last?.logical ?? 0
        }
    }
}

extension Operation {
    /// Removes the leaf entry that starts at `logical` (it must exist). Emptied nodes are freed
    /// and index keys follow their child's new first key.
    func deleteExtent(startingAt logical: UInt32, from rec: inout InodeRecord) throws {
        noteRemap(rec.number)
        let rootNode = try ExtentNode(rec.blockArea, inode: rec.number, block: nil, checksumSeed: nil)
        let root = ExtentEntries(rootNode)
        let depth = rootNode.depth
        let left = try delete(logical, in: root, depth: depth, rec: &rec)
        if left.count == 0 {
            rec.blockArea = ExtentNodeEncoding.leaf([], byteCount: 60)
        } else {
            rec.blockArea = left.encoded(depth: depth, byteCount: 60)
        }
    }

    private func delete(_ logical: UInt32, in node: ExtentEntries, depth: UInt16, rec: inout InodeRecord) throws -> ExtentEntries {
        switch node {
        case .leaf(var list):
            guard let i = list.firstIndex(where: { $0.logical == logical }) else {
                throw CorruptionError(.extentTree, inode: rec.number, .impossible("no extent starts at logical block \(logical)"))
            }
            list.remove(at: i)
            return .leaf(list)
        case .index(var list):
            guard let idx = list.lastIndex(where: { $0.logical <= logical }) else {
                throw CorruptionError(.extentTree, inode: rec.number, .impossible("no index covers logical block \(logical)"))
            }
            let childBlock = list[idx].child
            let bytes = try handle.read(childBlock)
            let child = ExtentEntries(try ExtentNode(bytes, inode: rec.number, block: childBlock, checksumSeed: seed(rec)))
            let left = try delete(logical, in: child, depth: depth - 1, rec: &rec)
            if left.count == 0 {
                try freeBlocks(childBlock, 1)
                handle.release(childBlock)
                rec.sectors -= min(rec.sectors, sectors(1))
                list.remove(at: idx)
            } else {
                var encoded = left.encoded(depth: depth - 1, byteCount: blockSize)
                ExtentNodeEncoding.seal(&encoded, seed: seed(rec))
                try handle.write(childBlock, encoded)
                list[idx] = ExtentIndex(logical: left.firstKey, child: childBlock)
            }
            return .index(list)
        }
    }

    /// Marks logical blocks [start, end), which lie inside one unwritten extent, written: in its
    /// leaf the extent becomes up to three (unwritten, written, unwritten), and a piece joins a
    /// neighbour it continues, as the kernel's conversion does. One walk and one node written,
    /// where unmapping and mapping again took five walks and wrote every node on their paths
    /// (a random 4 KiB write into a preallocated file spent most of its time there). No index key
    /// changes: the leaf's first entry keeps its start. Returns false, having changed nothing,
    /// when the range is not inside one unwritten extent or the leaf has no room for the pieces;
    /// the caller then unmaps and maps.
    func markWritten(_ start: UInt64, _ end: UInt64, of rec: inout InodeRecord) throws -> Bool {
        guard start < end else { return true }
        var (node, depth) = try rootNode(rec)
        let rootDepth = depth
        var leafBlock: UInt64?
        while case .index(let list) = node {
            guard let idx = list.lastIndex(where: { UInt64($0.logical) <= start }) else { return false }
            leafBlock = list[idx].child
            node = try loadNode(list[idx].child, depth: depth - 1, rec: rec)
            depth -= 1
        }
        guard case .leaf(let list) = node,
              let i = list.firstIndex(where: { UInt64($0.logical) <= start && start < UInt64($0.logical) + UInt64($0.length) })
        else { return false }
        let e = list[i]
        let eStart = UInt64(e.logical), eEnd = eStart + UInt64(e.length)
        guard e.unwritten, end <= eEnd else { return false }
        var pieces: [Extent] = []
        if start > eStart {
            pieces.append(Extent(logical: e.logical, length: UInt16(start - eStart), physical: e.physical, unwritten: true))
        }
        pieces.append(Extent(logical: UInt32(start), length: UInt16(end - start), physical: e.physical + (start - eStart), unwritten: false))
        if end < eEnd {
            pieces.append(Extent(logical: UInt32(end), length: UInt16(eEnd - end), physical: e.physical + (end - eStart), unwritten: true))
        }
        var entries = Array(list[..<i]) + pieces + Array(list[(i + 1)...])
        // Neighbours that now continue each other become one entry (only around the change).
        var k = max(0, i - 1)
        while k + 1 < entries.count && k <= i + pieces.count {
            if Self.canMerge(entries[k], entries[k + 1]) {
                let a = entries[k], b = entries[k + 1]
                entries[k] = Extent(logical: a.logical, length: a.length + b.length, physical: a.physical, unwritten: a.unwritten)
                entries.remove(at: k + 1)
            } else {
                k += 1
            }
        }
        let capacity = ExtentNodeEncoding.capacity(leafBlock == nil ? 60 : blockSize)
        guard entries.count <= capacity, entries.first?.logical == list.first?.logical else { return false }
        noteRemap(rec.number)
        if let leafBlock {
            try storeNode(.leaf(entries), depth: 0, at: leafBlock, fresh: false, rec: rec)
        } else {
            storeRoot(.leaf(entries), depth: rootDepth, rec: &rec)
        }
        return true
    }

    /// Unmaps logical blocks [start, end): extents that straddle an edge keep their outer parts.
    /// With `free`, the unmapped blocks go back to the allocator (punch hole); without, the caller
    /// maps them again (unwritten-to-written conversion).
    func unmapRange(_ start: UInt64, _ end: UInt64, of rec: inout InodeRecord, free: Bool) throws {
        noteRemap(rec.number)
        guard start < end else { return }
        if free { pending.droppedRanges.append((rec.number, start, end)) }
        let runs = try mappedRuns(rec, from: start, to: end)
        for run in runs where run.logical < end && run.logical + run.length > start {
            let physical = run.physical!
            try deleteExtent(startingAt: UInt32(run.logical), from: &rec)
            let cutFrom = max(start, run.logical), cutTo = min(end, run.logical + run.length)
            if free {
                try freeBlocks(physical + (cutFrom - run.logical), Int(cutTo - cutFrom))
                rec.sectors -= min(rec.sectors, sectors(Int(cutTo - cutFrom)))
            }
            if run.logical < cutFrom {
                try insertExtent(Extent(logical: UInt32(run.logical), length: UInt16(cutFrom - run.logical), physical: physical, unwritten: run.unwritten), into: &rec)
            }
            if cutTo < run.logical + run.length {
                try insertExtent(Extent(logical: UInt32(cutTo), length: UInt16(run.logical + run.length - cutTo),
                                        physical: physical + (cutTo - run.logical), unwritten: run.unwritten), into: &rec)
            }
        }
    }
}
