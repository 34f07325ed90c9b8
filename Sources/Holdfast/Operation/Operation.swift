#if canImport(Glibc)
import Glibc
#endif
import HoldfastFormat
import HoldfastJournal

/// One operation's view of the image for changing it: metadata reads and writes go through the
/// handle, so a failure anywhere rolls all of them back.
struct Operation {
    let fs: Filesystem
    let handle: Handle
    let state: WriteState
    /// This operation's changes to free space, applied to the state only if it succeeds.
    let allocation = AllocationChanges()
    /// This operation's orphan list and page cache changes, likewise.
    let pending: PendingChanges

    var sb: Superblock { fs.superblock }
    var blockSize: Int { fs.blockSize }
    var checksums: Bool { sb.hasMetadataChecksums }

    /// The wall clock, for inode times.
    static func now() -> Timestamp {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return Timestamp(seconds: Int64(t.tv_sec), nanoseconds: UInt32(t.tv_nsec))
    }


    // MARK: Group descriptors

    func descriptor(_ g: UInt32) throws -> GroupDescriptorRecord {
        let (block, offset) = fs.geometry.descriptorLocation(g)
        return GroupDescriptorRecord(try handle.read(block, at: offset, count: sb.groupDescriptorSize), group: g)
    }

    func store(_ gd: GroupDescriptorRecord) throws {
        var gd = gd
        gd.seal(sb)
        let (block, offset) = fs.geometry.descriptorLocation(gd.group)
        let raw = gd.raw
        try handle.modify(block) { $0.setBytes(offset, raw) }
    }

    // MARK: Inodes

    private func inodeLocation(_ number: UInt32) throws -> (block: UInt64, offset: Int) {
        guard number >= 1, number <= sb.inodesCount else {
            throw CorruptionError(.inode, inode: number, .outOfRange(field: "inode number", value: UInt64(number), limit: UInt64(sb.inodesCount)))
        }
        let gd = try descriptor(fs.geometry.inodeSlot(number).group)
        return fs.geometry.inodeLocation(number, inodeTable: gd.inodeTable)
    }

    /// The inode's slot, checksum-verified, ready to change.
    func inode(_ number: UInt32) throws -> InodeRecord {
        let (block, offset) = try inodeLocation(number)
        let decoded = try Inode(try handle.read(block, at: offset, count: Int(sb.inodeSize)), number: number, superblock: sb)
        return InodeRecord(decoded)
    }

    /// Seals and writes an inode slot.
    func store(_ record: InodeRecord) throws {
        var r = record
        r.seal(sb)
        let (block, offset) = try inodeLocation(r.number)
        let raw = r.raw
        try handle.modify(block) { $0.setBytes(offset, raw) }
        // The slot changed: no cached copy of it may stay (again when the operation ends, for a rollback).
        fs.inodeCache.invalidate(r.number)
        pending.storedInodes.insert(r.number)
    }

    /// The decoded view of a record (for the read path's walkers), sealed first.
    func decoded(_ record: InodeRecord) throws -> Inode {
        var r = record
        r.seal(sb)
        return try r.decoded(sb)
    }

    /// The checksum seed of blocks an inode owns, or nil without metadata_csum.
    func seed(_ record: InodeRecord) -> UInt32? {
        guard checksums else { return nil }
        return CRC32C.update(CRC32C.update(sb.checksumSeed, littleEndian: record.number), littleEndian: record.generation)
    }

    /// i_blocks change for `count` filesystem blocks.
    func sectors(_ count: Int) -> UInt64 { UInt64(count * blockSize / 512) }
}

extension Operation {
    /// The allocator, over this operation's handle and free-space changes only: allocation code
    /// cannot reach the orphan list, directories or the page cache.
    var allocator: Allocator {
        Allocator(handle: handle, geometry: fs.geometry, buddies: fs.buddies, inodeCache: fs.inodeCache,
                  space: state.space, changes: allocation)
    }

    // What the rest of the write path asks of the allocator.
    func allocateBlocks(goal: UInt64, count: Int) throws -> (start: UInt64, count: Int) {
        try allocator.allocateBlocks(goal: goal, count: count)
    }
    func freeBlocks(_ start: UInt64, _ count: Int) throws { try allocator.freeBlocks(start, count) }
    func allocateInode(parent: UInt32, directory: Bool) throws -> UInt32 {
        try allocator.allocateInode(parent: parent, directory: directory)
    }
    func freeInode(_ n: UInt32, directory: Bool) throws { try allocator.freeInode(n, directory: directory) }
    func allocateData(_ rec: InodeRecord, logical: UInt64, want: Int, goal: UInt64, appending: Bool) throws -> (start: UInt64, count: Int) {
        let streaming = appending && fs.isOpen(state, rec.number) && FileType(mode: rec.mode) == .regular
        return try allocator.allocateData(rec.number, logical: logical, want: want, goal: goal, streaming: streaming)
    }
    func discardPreallocation(_ inode: UInt32) { allocator.discardPreallocation(inode) }
    func group(ofInode n: UInt32) -> UInt32 { fs.geometry.inodeSlot(n).group }
}

extension Operation {
    /// This operation is about to change the mapping of `inode`: until it ends, reads of the file
    /// keep nothing they read (the tree, visible as it changes, may name blocks not yet written).
    func noteRemap(_ inode: UInt32) {
        if pending.remapped.insert(inode).inserted { fs.pageCache?.beginRemap(inode) }
    }
}
