import HoldfastCache
import HoldfastFormat
import HoldfastMemory

/// The orphan list (the kernel's s_last_orphan chain, and the orphan file where the image has one:
/// OrphanFile.swift): inodes whose last link went while a file description still had them open,
/// and files in the middle of a truncate that takes several handles. On the chain the superblock
/// names the first orphan and each orphan's i_dtime the next. Whoever
/// opens the image next (the kernel at mount, Holdfast at a writable open) finishes the work: an
/// orphan without links is freed, one with links is cut back to its i_size. So an interrupted
/// operation leaks no blocks and no inodes.
extension Operation {
    /// The first orphan as this operation sees it.
    var orphanHead: UInt32 { pending.orphanHead ?? state.superblock.lastOrphan }

    func isOrphan(_ number: UInt32) -> Bool {
        if pending.orphansAdded.contains(number) { return true }
        if pending.orphansRemoved.contains(number) { return false }
        return state.orphans.contains(number)
    }

    /// Makes `rec` an orphan: in a free slot of the orphan file where the image has one, else at
    /// the head of the list; the caller stores `rec`.
    func addOrphan(_ rec: inout InodeRecord) throws {
        precondition(!isOrphan(rec.number))
        if try !addToOrphanFile(rec.number) {
            rec.deletionTime = orphanHead
            pending.orphanHead = rec.number
        }
        pending.orphansRemoved.remove(rec.number)
        pending.orphansAdded.insert(rec.number)
    }

    /// Takes `rec` off the orphan file or the list (its successor takes its place there); the
    /// caller stores `rec`.
    func removeOrphan(_ rec: inout InodeRecord) throws {
        if let slot = orphanSlot(rec.number) {
            try removeFromOrphanFile(rec.number, slot)
            pending.orphansAdded.remove(rec.number)
            pending.orphansRemoved.insert(rec.number)
            return
        }
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
                rec.deletionTime = UInt32(truncatingIfNeeded: Operation.now().seconds)
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
    /// Orphans in the orphan file (journaled images with orphan_file) come first, then the chain.
    func cleanUpOrphans() throws -> Int {
        // Credits for the orphan-file blocks whose stray slots the load empties.
        let orphans = try mutate(credits: 64) { ctx in
            var orphans: [UInt32] = []
            if let file = try ctx.loadOrphanFile() {
                ctx.state.orphanFile = file
                orphans = file.slots.keys.sorted()
            }
            for number in try ctx.orphanChain() where !orphans.contains(number) { orphans.append(number) }
            ctx.pending.orphansAdded.formUnion(orphans)
            return orphans
        }
        for number in orphans { try finishOrphan(number) }
        return orphans.count
    }
}

extension Operation {
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
