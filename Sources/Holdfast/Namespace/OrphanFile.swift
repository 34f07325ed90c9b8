import HoldfastCache
import HoldfastFormat
import HoldfastMemory

/// Where an orphan sits in the orphan file: block index in the file, slot in the block.
struct OrphanSlot: Hashable, Sendable {
    let block: Int
    let slot: Int
}

/// The orphan file (feature orphan_file, orphan.rst) of a journaled image, used as the kernel
/// uses it: an orphan takes a free slot there, and the s_last_orphan chain is only the fallback
/// for a full file. Its blocks are journaled metadata, written through the operation's handle.
/// The superblock carries orphan_present while slots are in use: set in the commit that fills the
/// first, cleared in the one that empties the last (and at a clean close, for a flag another
/// writer left on an empty file). The kernel sets it for its whole mount, but e2fsck calls the
/// flag on an empty file an error, and an open that fails part way would leave it so.
/// Kept in the write state, changed under the write lock only.
final class OrphanFile {
    let inode: UInt32
    /// The physical block of each orphan block, in file order (from the inode's i_size and map).
    let blocks: [UInt64]
    /// The seed of the blocks' checksums (the orphan inode's), nil without metadata_csum.
    let seed: UInt32?
    let slotsPerBlock: Int
    /// The committed slot of each orphan in the file.
    var slots: [UInt32: OrphanSlot] = [:]
    /// Committed used slots per block.
    var used: [Int]

    init(inode: UInt32, blocks: [UInt64], seed: UInt32?, blockSize: Int) {
        self.inode = inode
        self.blocks = blocks
        self.seed = seed
        self.slotsPerBlock = OrphanBlock.slotCount(blockSize: blockSize)
        self.used = Array(repeating: 0, count: blocks.count)
    }

    /// Folds in what a successful operation added and removed.
    func apply(added: [UInt32: OrphanSlot], removed: [UInt32: OrphanSlot]) {
        for (number, slot) in removed where slots.removeValue(forKey: number) != nil { used[slot.block] -= 1 }
        for (number, slot) in added {
            slots[number] = slot
            used[slot.block] += 1
        }
    }
}

extension Operation {
    /// Reads the orphan file at a writable open, before any change: checks every block, and
    /// collects the inodes its slots hold (a crash, the kernel's or ours, left them for this open
    /// to finish). A slot naming no inode in use (out of range, twice, or a free inode) is
    /// emptied here, as the kernel's ext4_orphan_get passes over such entries. nil when the image
    /// has no orphan file to use: the feature is off, or there is no journal (the kernel keeps
    /// no orphans then either).
    func loadOrphanFile() throws -> OrphanFile? {
        guard sb.featureCompat.contains(.orphanFile), state.transaction.journal != nil else { return nil }
        let number = sb.orphanFileInode
        guard number >= 1, number <= sb.inodesCount else {
            throw CorruptionError(.orphanFile, .outOfRange(field: "s_orphan_file_inum", value: UInt64(number), limit: UInt64(sb.inodesCount)))
        }
        let rec = try inode(number)
        let bs = UInt64(blockSize)
        // i_size says how many blocks there are: mkfs sizes the file by the filesystem's size, and
        // e2fsprogs 1.47.4 could make one of 2 blocks.
        guard FileType(mode: rec.mode) == .regular, rec.size > 0, rec.size % bs == 0, rec.size / bs <= 1 << 20 else {
            throw CorruptionError(.orphanFile, inode: number, .impossible("the orphan file is not a regular file of whole blocks (i_size \(rec.size))"))
        }
        let count = rec.size / bs
        var physical = [UInt64](repeating: 0, count: Int(count))
        var mapped: UInt64 = 0
        try fs.forEachRun(try decoded(rec)) { run in
            guard let start = run.physical else { return true }  // a hole: left unmapped, refused below
            guard !run.unwritten, run.logical + run.length <= count, start + run.length <= sb.blocksCount else { return false }
            for k in 0..<run.length { physical[Int(run.logical + k)] = start + k }
            mapped += run.length
            return true
        }
        guard mapped == count, !physical.contains(0) else {
            throw CorruptionError(.orphanFile, inode: number, .impossible("the orphan file's \(count) blocks are not all mapped and written"))
        }
        let file = OrphanFile(inode: number, blocks: physical, seed: seed(rec), blockSize: blockSize)
        for (index, block) in physical.enumerated() {
            var bytes = try handle.read(block)
            try OrphanBlock.verify(bytes, seed: file.seed, physical: block, inode: number)
            var emptied = false
            for (slot, orphan) in OrphanBlock.usedSlots(bytes) {
                let inUse = orphan >= sb.firstInode && orphan <= sb.inodesCount && file.slots[orphan] == nil
                    && (try? inode(orphan))?.mode ?? 0 != 0
                guard inUse else {
                    OrphanBlock.setEntry(&bytes, slot, 0)
                    emptied = true
                    continue
                }
                file.slots[orphan] = OrphanSlot(block: index, slot: slot)
                file.used[index] += 1
            }
            if emptied {
                OrphanBlock.seal(&bytes, seed: file.seed, physical: block)
                try handle.write(block, bytes)
            }
        }
        return file
    }

    /// Where `number` sits in the orphan file, as this operation sees it.
    func orphanSlot(_ number: UInt32) -> OrphanSlot? {
        if let s = pending.orphanSlotsAdded[number] { return s }
        if pending.orphanSlotsRemoved[number] != nil { return nil }
        return state.orphanFile?.slots[number]
    }

    /// Puts `number` in a free slot of the orphan file; false when there is no file or it is full.
    func addToOrphanFile(_ number: UInt32) throws -> Bool {
        guard let file = state.orphanFile else { return false }
        for index in file.blocks.indices {
            var used = file.used[index]
            for slot in pending.orphanSlotsAdded.values where slot.block == index { used += 1 }
            for slot in pending.orphanSlotsRemoved.values where slot.block == index { used -= 1 }
            guard used < file.slotsPerBlock else { continue }
            var bytes = try handle.read(file.blocks[index])
            guard let free = (0..<file.slotsPerBlock).first(where: { OrphanBlock.entry(bytes, $0) == 0 }) else { continue }
            OrphanBlock.setEntry(&bytes, free, number)
            OrphanBlock.seal(&bytes, seed: file.seed, physical: file.blocks[index])
            try handle.write(file.blocks[index], bytes)
            pending.orphanSlotsAdded[number] = OrphanSlot(block: index, slot: free)
            return true
        }
        return false
    }

    /// Empties the slot of `number`.
    func removeFromOrphanFile(_ number: UInt32, _ slot: OrphanSlot) throws {
        guard let file = state.orphanFile else { return }
        let block = file.blocks[slot.block]
        var bytes = try handle.read(block)
        guard OrphanBlock.entry(bytes, slot.slot) == number else {
            throw CorruptionError(.orphanFile, inode: file.inode, block: block, .impossible("slot \(slot.slot) no longer holds orphan \(number)"))
        }
        OrphanBlock.setEntry(&bytes, slot.slot, 0)
        OrphanBlock.seal(&bytes, seed: file.seed, physical: block)
        try handle.write(block, bytes)
        if pending.orphanSlotsAdded.removeValue(forKey: number) == nil { pending.orphanSlotsRemoved[number] = slot }
    }
}
