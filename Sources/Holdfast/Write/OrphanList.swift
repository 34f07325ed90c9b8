import HoldfastCache
import HoldfastFormat
import HoldfastMemory

/// The orphan list (the kernel's s_last_orphan chain): inodes whose last link went while a file
/// description still had them open, and files in the middle of a truncate that takes several
/// handles. The superblock names the first orphan; each orphan's i_dtime names the next. Whoever
/// opens the image next (the kernel at mount, Holdfast at a writable open) finishes the work: an
/// orphan without links is freed, one with links is cut back to its i_size. So an interrupted
/// operation leaks no blocks and no inodes.
extension WriteContext {
    /// The first orphan as this operation sees it.
    var orphanHead: UInt32 { pending.orphanHead ?? state.superblock.lastOrphan }

    func isOrphan(_ number: UInt32) -> Bool {
        if pending.orphansAdded.contains(number) { return true }
        if pending.orphansRemoved.contains(number) { return false }
        return state.orphans.contains(number)
    }

    /// Puts `rec` at the head of the list; the caller stores `rec`.
    func addOrphan(_ rec: inout InodeRecord) {
        precondition(!isOrphan(rec.number))
        rec.deletionTime = orphanHead
        pending.orphanHead = rec.number
        pending.orphansRemoved.remove(rec.number)
        pending.orphansAdded.insert(rec.number)
    }

    /// Takes `rec` off the list (its successor takes its place); the caller stores `rec`.
    func removeOrphan(_ rec: inout InodeRecord) throws {
        let next = rec.deletionTime
        if orphanHead == rec.number {
            pending.orphanHead = next
        } else {
            var current = orphanHead
            var steps: UInt32 = 0
            while true {
                guard current != 0 else {
                    throw CorruptionError(.superblock, inode: rec.number, .impossible("inode \(rec.number) is missing from the orphan list"))
                }
                guard steps <= sb.inodesCount else { throw CorruptionError(.superblock, .loop("the orphan list loops")) }
                var before = try inode(current)
                if before.deletionTime == rec.number {
                    before.deletionTime = next
                    try store(before)
                    break
                }
                current = before.deletionTime
                steps += 1
            }
        }
        rec.deletionTime = 0
        pending.orphansAdded.remove(rec.number)
        pending.orphansRemoved.insert(rec.number)
    }

    /// The orphan numbers from the superblock onward, checked (at open, before any change).
    func orphanChain() throws -> [UInt32] {
        var list: [UInt32] = []
        var seen = Set<UInt32>()
        var current = orphanHead
        while current != 0 {
            guard current >= sb.firstInode, current <= sb.inodesCount else {
                throw CorruptionError(.superblock, .outOfRange(field: "orphan inode", value: UInt64(current), limit: UInt64(sb.inodesCount)))
            }
            guard seen.insert(current).inserted else { throw CorruptionError(.superblock, .loop("the orphan list comes back to inode \(current)")) }
            let rec = try inode(current)
            guard rec.mode != 0 else {
                throw CorruptionError(.inode, inode: current, .impossible("orphan inode \(current) is not in use"))
            }
            list.append(current)
            current = rec.deletionTime
        }
        return list
    }
}

/// What one operation changes outside its handle: orphan list changes (applied to the write
/// state only if it succeeds), the groups whose bitmaps it changed, and device zeroing it defers.
final class PendingChanges {
    var orphanHead: UInt32?
    var orphansAdded: Set<UInt32> = []
    var orphansRemoved: Set<UInt32> = []
    /// Groups whose block bitmap this operation changed: a rollback makes their buddies stale.
    var bitmapGroups: Set<UInt32> = []
    /// Bytes [from, to) of a file block to zero once the operation can no longer fail (truncate
    /// and punch edges): in its cached page, else at `device` on the image.
    var zeroing: [(inode: UInt32, index: UInt64, from: Int, to: Int, device: UInt64)] = []
    /// Pages taken before the write lock for this operation's data; what is left goes back.
    var spare: [Page] = []
    /// Pages this operation holds in the page cache, per inode: published as dirty if it succeeds.
    var heldPages: [UInt32: [(index: UInt64, isNew: Bool)]] = [:]
    /// Logical block ranges whose blocks this operation freed: their pages go when it succeeds.
    var droppedRanges: [(inode: UInt32, from: UInt64, to: UInt64)] = []
    /// Change to the blocks reserved for delayed pages (new ones up, mapped or dropped ones down).
    var reserved: Int64 = 0
    /// Delayed pages this operation gave blocks: [first, first+count) of an inode, from `physical`.
    var assigned: [(inode: UInt32, first: UInt64, count: UInt64, physical: UInt64)] = []
    /// Inodes whose extent tree or block map this operation changed: their extent-status entries go.
    var remapped: Set<UInt32> = []
    /// Stretches of new delayed pages [first, first+count) per inode, for the extent-status cache.
    var delayedRuns: [(inode: UInt32, first: UInt64, count: UInt64)] = []
    /// Set while delayed pages get their blocks: that allocation spends the reservation.
    var mappingDelayed = false
    /// Inodes whose slot this operation wrote: their cached copies go when it ends, either way.
    var storedInodes: Set<UInt32> = []

    func apply(to state: WriteState) {
        if let head = orphanHead { state.superblock.lastOrphan = head }
        state.orphans.subtract(orphansRemoved)
        state.orphans.formUnion(orphansAdded)
    }

    /// The operation succeeded: freed ranges lose their pages (waiting out writes in flight, so no
    /// freed block is written after the lock goes), held pages become dirty.
    func publishPages(_ cache: PageCache?, _ extents: ExtentStatusCache) {
        // Before the pages go: a read that maps afresh after the drop finds no stale extent.
        // Dropped delayed pages leave no trace in the tree: their delayed extents go too.
        let forgotten = remapped.union(droppedRanges.map(\.inode))
        for inode in forgotten { extents.invalidate(inode) }
        for d in delayedRuns where !forgotten.contains(d.inode) { extents.markDelayed(d.inode, first: d.first, count: d.count) }
        guard let cache else { return }
        defer { for inode in remapped { cache.endRemap(inode) } }
        for a in assigned { cache.assign(a.inode, first: a.first, count: a.count, physical: a.physical) }
        for d in droppedRanges { reserved -= Int64(cache.drop(d.inode, from: d.from, to: d.to)) }
        for (inode, held) in heldPages { cache.publish(inode, held.map(\.index)) }
    }

    /// The operation failed and its blocks are rolled back: pages it added go.
    func discardPages(_ cache: PageCache?, _ extents: ExtentStatusCache) {
        // Reads may have cached the tree as the operation left it half-changed.
        for inode in remapped { extents.invalidate(inode) }
        guard let cache else { return }
        defer { for inode in remapped { cache.endRemap(inode) } }
        for (inode, held) in heldPages { cache.discard(inode, held) }
    }
}

/// Logical blocks freed per handle when a truncate runs in steps (bounded undo memory).
let truncateStepBlocks: UInt64 = 16384

extension Filesystem {
    /// Finishes an orphan: frees it if it has no links (its last user closed it), else cuts its
    /// blocks back to i_size in bounded steps; then takes it off the list.
    func finishOrphan(_ number: UInt32) throws {
        try cutToSize(number)
        try mutate(credits: directoryCredits) { ctx in
            var rec = try ctx.inode(number)
            guard ctx.isOrphan(number) else { return }
            try ctx.removeOrphan(&rec)
            if rec.linksCount == 0 {
                let directory = FileType(mode: rec.mode) == .directory
                try ctx.freeInodeContents(&rec)
                rec.deletionTime = UInt32(truncatingIfNeeded: WriteContext.now().seconds)
                try ctx.store(rec)
                try ctx.freeInode(number, directory: directory)
            } else {
                try ctx.store(rec)
            }
        }
    }

    /// Frees the blocks past i_size of an orphan, the last `truncateStepBlocks` logical blocks per
    /// handle, so no single handle grows with the file.
    func cutToSize(_ number: UInt32) throws {
        var done = false
        while !done {
            try mutate(credits: 64) { ctx in
                var rec = try ctx.inode(number)
                // Only regular files are cut back; other orphans (an unlinked open directory or
                // fast symlink a kernel left) are freed whole, and their i_block may hold no map.
                guard FileType(mode: rec.mode) == .regular else { done = true; return }
                let bs = UInt64(blockSize)
                let keep = (rec.size + bs - 1) / bs
                let end = try ctx.mappedEnd(rec)
                guard end > keep else { done = true; return }
                let from = max(keep, end > truncateStepBlocks ? end - truncateStepBlocks : 0)
                try ctx.unmapFrom(from, of: &rec)
                try ctx.store(rec)
            }
        }
    }

    /// At a writable open: finishes every orphan the last user of the image left (as the kernel
    /// does at mount), so nothing they held stays allocated.
    func cleanUpOrphans() throws -> Int {
        let chain = try mutate(credits: 1) { ctx in
            let chain = try ctx.orphanChain()
            ctx.pending.orphansAdded.formUnion(chain)
            return chain
        }
        for number in chain { try finishOrphan(number) }
        return chain.count
    }
}

extension WriteContext {
    /// One past the last mapped logical block (0 for a file with no blocks).
    func mappedEnd(_ rec: InodeRecord) throws -> UInt64 {
        var end: UInt64 = 0
        try fs.forEachRun(try decoded(rec)) { run in
            end = run.logical + run.length
            return true
        }
        return end
    }
}
