import HoldfastCache
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

extension Allocator {
    /// Blocks a window holds beyond an append: up to 8 MiB, as ext4's stream allocation.
    var preallocationWindow: Int { max(8, (8 << 20) / blockSize) }

    /// Blocks [start, count) of group `g` that windows hold, or that were freed since the last
    /// commit (by this operation too), relative to the group's first block.
    func reservedRanges(in g: UInt32) -> [(start: Int, count: Int)] {
        let first = geometry.groupFirstBlock(UInt64(g))
        return space.preallocations.values.filter { $0.group == g && $0.count > 0 }.map { (Int($0.physical - first), $0.count) }
            + freedRanges(in: g)
    }

    /// Blocks of group `g` freed since the last commit (this operation's frees included).
    func freedRanges(in g: UInt32) -> [(start: Int, count: Int)] {
        (space.freedUncommitted[g] ?? []) + changes.freed.filter { $0.group == g }.map { ($0.start, $0.count) }
    }

    /// New data blocks for logical block `logical` of inode `inode`: from its window when the
    /// write continues it, else from the allocator (opening a window when `streaming`: an open
    /// regular file appended to).
    func allocateData(_ inode: UInt32, logical: UInt64, want: Int, goal: UInt64, streaming: Bool) throws -> (start: UInt64, count: Int) {
        if let pa = space.preallocations[inode] {
            if pa.logical == logical && pa.count > 0 {
                let n = min(want, pa.count)
                do { try takeReserved(pa.physical, n) } catch {
                    discardPreallocation(inode)
                    throw error
                }
                var next = pa
                next.logical += UInt64(n)
                next.physical += UInt64(n)
                next.count -= n
                if next.count == 0 { dropPreallocation(inode) } else { space.preallocations[inode] = next }
                return (pa.physical, n)
            }
            discardPreallocation(inode)
        }
        guard streaming else { return try allocateBlocks(goal: goal, count: want) }
        let (start, taken, run) = try allocateBlocks(goal: goal, count: want + preallocationWindow, take: want)
        if run > taken {
            // The rest of the run is reserved only where a buddy marked it (and stays pinned);
            // without one (no memory for it), the blocks simply stay free.
            let g = group(ofBlock: start)
            if buddies?.pin(g) == true {
                space.preallocations[inode] = Preallocation(logical: logical + UInt64(taken), physical: start + UInt64(taken), count: run - taken, group: g)
                inodeCache.setPreallocated(inode, true)
            }
        }
        return (start, taken)
    }

    func discardPreallocation(_ inode: UInt32) { windows.discard(inode) }
    private func dropPreallocation(_ inode: UInt32) { windows.drop(inode) }
    func discardAllPreallocations() { windows.discardAll() }

    var windows: PreallocationWindows {
        PreallocationWindows(geometry: geometry, buddies: buddies, inodeCache: inodeCache, space: space)
    }
}

/// The windows' bookkeeping: memory only (the buddies' marks and pins, the inode cache's note),
/// so it needs no handle; a last close and the image's close discard windows through it.
struct PreallocationWindows {
    let geometry: Geometry
    let buddies: BuddyCache?
    let inodeCache: InodeCache
    let space: FreeSpace

    /// Gives a file's window back: its blocks are free for everyone again. Cannot fail.
    func discard(_ inode: UInt32) {
        guard let pa = space.preallocations[inode] else { return }
        let first = geometry.groupFirstBlock(UInt64(pa.group))
        buddies?.update(pa.group) { $0.mark(Int(pa.physical - first), pa.count, taken: false) }
        drop(inode)
    }

    /// Forgets a window whose blocks are all taken (or given back).
    func drop(_ inode: UInt32) {
        guard let pa = space.preallocations.removeValue(forKey: inode) else { return }
        buddies?.unpin(pa.group)
        inodeCache.setPreallocated(inode, false)
    }

    func discardAll() {
        for inode in Array(space.preallocations.keys) { discard(inode) }
    }
}

extension Filesystem {
    /// The windows outside an operation (a last close, the image's close).
    func preallocationWindows(_ state: WriteState) -> PreallocationWindows {
        PreallocationWindows(geometry: geometry, buddies: buddies, inodeCache: inodeCache, space: state.space)
    }

    /// Gives a file's window back (its last close). Memory only; cannot fail.
    func discardPreallocation(_ inode: UInt32, _ state: WriteState) { preallocationWindows(state).discard(inode) }

    func discardAllPreallocations(_ state: WriteState) { preallocationWindows(state).discardAll() }

    /// Blocks held by preallocation windows, and the buddy memory pinned for them (tests, --stats).
    public var preallocationUsage: (windows: Int, blocks: Int, buddyBytes: Int, pinnedBuddyBytes: Int) {
        let (windows, blocks) = writer?.withLock { s in (s.space.preallocations.count, s.space.preallocations.values.reduce(0) { $0 + $1.count }) } ?? (0, 0)
        let usage = buddies?.usage ?? (total: 0, pinned: 0)
        return (windows, blocks, usage.total, usage.pinned)
    }
}
