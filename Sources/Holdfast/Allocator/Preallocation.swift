import HoldfastFormat

/// Per-inode preallocation windows (ext4's inode PAs): a file appended to while it is open gets a
/// run of blocks beyond what it asked for, held in memory only (free on disk, marked taken in the
/// group's buddy, which stays pinned), so appends that interleave with other files' still land
/// contiguously. A window goes at the file's last close, when the file is truncated, punched or
/// freed, when a write does not continue it, when space runs out, and at close of the image.
/// Nothing of it is on disk: a crash loses only the reservation.
struct Preallocation: Sendable, Equatable {
    /// The next logical block the window serves.
    var logical: UInt64
    /// Where that block goes.
    var physical: UInt64
    /// Blocks left in the window.
    var count: Int
    let group: UInt32
}

extension Operation {
    /// Blocks a window holds beyond an append: up to 8 MiB, as ext4's stream allocation.
    var preallocationWindow: Int { max(8, (8 << 20) / blockSize) }

    /// Blocks [start, count) of group `g` that windows hold, relative to the group's first block.
    func reservedRanges(in g: UInt32) -> [(start: Int, count: Int)] {
        let first = fs.geometry.groupFirstBlock(UInt64(g))
        return state.preallocations.values.filter { $0.group == g && $0.count > 0 }.map { (Int($0.physical - first), $0.count) }
    }

    /// New data blocks for logical block `logical` of `rec`: from the file's window when the write
    /// continues it, else from the allocator (opening a window when an open file is appended to).
    func allocateData(_ rec: InodeRecord, logical: UInt64, want: Int, goal: UInt64, appending: Bool) throws -> (start: UInt64, count: Int) {
        if let pa = state.preallocations[rec.number] {
            if pa.logical == logical && pa.count > 0 {
                let n = min(want, pa.count)
                do { try takeReserved(pa.physical, n) } catch {
                    discardPreallocation(rec.number)
                    throw error
                }
                var next = pa
                next.logical += UInt64(n)
                next.physical += UInt64(n)
                next.count -= n
                if next.count == 0 { dropPreallocation(rec.number) } else { state.preallocations[rec.number] = next }
                return (pa.physical, n)
            }
            discardPreallocation(rec.number)
        }
        let streaming = appending && fs.isOpen(state, rec.number) && FileType(mode: rec.mode) == .regular
        guard streaming else { return try allocateBlocks(goal: goal, count: want) }
        let (start, taken, run) = try allocateBlocks(goal: goal, count: want + preallocationWindow, take: want)
        if run > taken {
            // The rest of the run is reserved only where a buddy marked it (and stays pinned);
            // without one (no memory for it), the blocks simply stay free.
            let g = group(ofBlock: start)
            if fs.buddies?.pin(g) == true {
                state.preallocations[rec.number] = Preallocation(logical: logical + UInt64(taken), physical: start + UInt64(taken), count: run - taken, group: g)
                fs.inodeCache.setPreallocated(rec.number, true)
            }
        }
        return (start, taken)
    }

    func discardPreallocation(_ inode: UInt32) { fs.discardPreallocation(inode, state) }
    private func dropPreallocation(_ inode: UInt32) { fs.dropPreallocation(inode, state) }
    func discardAllPreallocations() { fs.discardAllPreallocations(state) }
}

extension Filesystem {
    /// Gives a file's window back: its blocks are free for everyone again. Memory only; cannot fail.
    func discardPreallocation(_ inode: UInt32, _ state: WriteState) {
        guard let pa = state.preallocations[inode] else { return }
        let first = geometry.groupFirstBlock(UInt64(pa.group))
        buddies?.update(pa.group) { $0.mark(Int(pa.physical - first), pa.count, taken: false) }
        dropPreallocation(inode, state)
    }

    func dropPreallocation(_ inode: UInt32, _ state: WriteState) {
        guard let pa = state.preallocations.removeValue(forKey: inode) else { return }
        buddies?.unpin(pa.group)
        inodeCache.setPreallocated(inode, false)
    }

    func discardAllPreallocations(_ state: WriteState) {
        for inode in Array(state.preallocations.keys) { discardPreallocation(inode, state) }
    }

    /// Blocks held by preallocation windows, and the buddy memory pinned for them (tests, --stats).
    public var preallocationUsage: (windows: Int, blocks: Int, buddyBytes: Int, pinnedBuddyBytes: Int) {
        let (windows, blocks) = writer?.withLock { s in (s.preallocations.count, s.preallocations.values.reduce(0) { $0 + $1.count }) } ?? (0, 0)
        let usage = buddies?.usage ?? (total: 0, pinned: 0)
        return (windows, blocks, usage.total, usage.pinned)
    }
}
