import HoldfastCache
import HoldfastFormat
import HoldfastMemory

/// What one operation changes outside its handle: orphan list changes (applied to the write
/// state only if it succeeds), page cache changes, and device zeroing it defers. (Its changes to
/// free space are `AllocationChanges`, the allocator's.)
final class PendingChanges {
    var orphanHead: UInt32?
    var orphansAdded: Set<UInt32> = []
    var orphansRemoved: Set<UInt32> = []
    /// Orphan-file slots this operation filled and emptied (OrphanFile.swift).
    var orphanSlotsAdded: [UInt32: OrphanSlot] = [:]
    var orphanSlotsRemoved: [UInt32: OrphanSlot] = [:]
    /// Bytes [from, to) of a file block to zero once the operation can no longer fail (truncate
    /// and punch edges): in its cached page, else at `device` on the image.
    var zeroing: [(inode: UInt32, index: UInt64, from: Int, to: Int, device: UInt64)] = []
    /// Pages taken before the write lock for this operation's data; what is left goes back.
    var spare: [Page] = []
    /// Pages filled before the write lock with whole blocks of the operation's write, by block
    /// (`Filesystem.pagesForWrite`); what is left goes back.
    var ready: [UInt64: Page] = [:]
    /// Pages this operation holds in the page cache, per inode: published as dirty if it succeeds.
    var heldPages: [UInt32: [(index: UInt64, isNew: Bool)]] = [:]
    /// Logical block ranges whose blocks this operation freed: their pages go when it succeeds.
    var droppedRanges: [(inode: UInt32, from: UInt64, to: UInt64)] = []
    /// Delayed pages this operation gave blocks: [first, first+count) of an inode, from `physical`.
    var assigned: [(inode: UInt32, first: UInt64, count: UInt64, physical: UInt64)] = []
    /// Inodes whose extent tree or block map this operation changed: their extent-status entries go.
    var remapped: Set<UInt32> = []
    /// Stretches of new delayed pages [first, first+count) per inode, for the extent-status cache.
    var delayedRuns: [(inode: UInt32, first: UInt64, count: UInt64)] = []
    /// Inodes whose slot this operation wrote: their cached copies go when it ends, either way.
    var storedInodes: Set<UInt32> = []

    func apply(to state: WriteState) {
        if let head = orphanHead { state.superblock.lastOrphan = head }
        state.orphans.subtract(orphansRemoved)
        state.orphans.formUnion(orphansAdded)
        if let file = state.orphanFile, !orphanSlotsAdded.isEmpty || !orphanSlotsRemoved.isEmpty {
            file.apply(added: orphanSlotsAdded, removed: orphanSlotsRemoved)
            // orphan_present marks a file with slots in use, in the commit that fills or empties them.
            if file.slots.isEmpty {
                state.superblock.featureROCompat.remove(.orphanPresent)
            } else {
                state.superblock.featureROCompat.insert(.orphanPresent)
            }
        }
        state.orderedData.formUnion(heldPages.keys)
    }

    /// The operation succeeded: freed ranges lose their pages (waiting out writes in flight, so no
    /// freed block is written after the lock goes), held pages become dirty.
    func publishPages(_ cache: PageCache?, _ extents: ExtentStatusCache, _ allocation: AllocationChanges) {
        // Before the pages go: a read that maps afresh after the drop finds no stale extent.
        // Dropped delayed pages leave no trace in the tree: their delayed extents go too.
        let forgotten = remapped.union(droppedRanges.map(\.inode))
        for inode in forgotten { extents.invalidate(inode) }
        for d in delayedRuns where !forgotten.contains(d.inode) { extents.markDelayed(d.inode, first: d.first, count: d.count) }
        guard let cache else { return }
        defer { for inode in remapped { cache.endRemap(inode) } }
        for a in assigned { cache.assign(a.inode, first: a.first, count: a.count, physical: a.physical) }
        for d in droppedRanges { allocation.reserved -= Int64(cache.drop(d.inode, from: d.from, to: d.to)) }
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
