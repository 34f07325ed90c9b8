import HoldfastCache
import HoldfastFormat
import HoldfastJournal

/// Free space as the allocator keeps it between operations, under the write lock: the exact free
/// counts, what delayed pages hold, the preallocation windows, where directories go next.
final class FreeSpace {
    /// Free blocks and inodes, kept exact as operations end (summed from the descriptors at open).
    var freeBlocks: UInt64 = 0
    var freeInodes: UInt64 = 0
    /// Blocks reserved for delayed pages (free on disk, promised to data not yet written).
    var reservedBlocks: UInt64 = 0
    /// Preallocation windows of files being appended to while open.
    var preallocations: [UInt32: Preallocation] = [:]
    /// Where the next top-level directory goes, so they spread over the groups.
    var nextDirectoryGroup: UInt32 = 0
    /// Blocks freed since the last commit, by group (relative to the group's first block): free
    /// in the bitmap, but not handed out again until the commit that frees them is durable, as
    /// the kernel keeps them. Otherwise new data written over a block before the commit would
    /// land in a directory or tree block that a crash at that moment still has in use.
    var freedUncommitted: [UInt32: [(start: Int, count: Int)]] = [:]
    var freedUncommittedBlocks = 0
}

/// One operation's changes to free space, applied to `FreeSpace` only if the operation succeeds.
final class AllocationChanges {
    var blocks: Int64 = 0
    var inodes: Int64 = 0
    /// Groups whose block bitmap this operation changed: a rollback makes their buddies stale.
    var bitmapGroups: Set<UInt32> = []
    /// Change to the blocks reserved for delayed pages (new ones up, mapped or dropped ones down).
    var reserved: Int64 = 0
    /// Set while delayed pages get their blocks: that allocation spends the reservation.
    var mappingDelayed = false
    /// Blocks this operation freed (group, start in the group, count): kept from reuse until commit.
    var freed: [(group: UInt32, start: Int, count: Int)] = []

    func apply(to space: FreeSpace) {
        for f in freed {
            space.freedUncommitted[f.group, default: []].append((f.start, f.count))
            space.freedUncommittedBlocks += f.count
        }
        space.freeBlocks = UInt64(Int64(space.freeBlocks) + blocks)
        space.freeInodes = UInt64(Int64(space.freeInodes) + inodes)
        space.reservedBlocks = UInt64(max(0, Int64(space.reservedBlocks) + reserved))
    }
}

/// Block and inode allocation for one operation, built from only what it may touch: the
/// operation's handle (bitmaps and descriptors change through it, so a rollback undoes them),
/// the free space and this operation's changes to it, the buddy bitmaps, and the inode cache's
/// note of which inodes hold windows. The orphan list, directories and the page cache are out
/// of its reach. `BlockAllocator.swift`, `InodeAllocator.swift` and `Preallocation.swift` are
/// its parts.
struct Allocator {
    let handle: Handle
    let geometry: Geometry
    let buddies: BuddyCache?
    let inodeCache: InodeCache
    let space: FreeSpace
    let changes: AllocationChanges

    var sb: Superblock { geometry.superblock }
    var blockSize: Int { sb.blockSize }
    var checksums: Bool { sb.hasMetadataChecksums }

    /// Group `g`'s descriptor, through the handle.
    func descriptor(_ g: UInt32) throws -> GroupDescriptorRecord {
        let (block, offset) = geometry.descriptorLocation(g)
        return GroupDescriptorRecord(try handle.read(block, at: offset, count: sb.groupDescriptorSize), group: g)
    }

    /// Seals and writes a descriptor, through the handle.
    func store(_ gd: GroupDescriptorRecord) throws {
        var gd = gd
        gd.seal(sb)
        let (block, offset) = geometry.descriptorLocation(gd.group)
        let raw = gd.raw
        try handle.modify(block) { $0.setBytes(offset, raw) }
    }

    /// Blocks an allocation at writeback may need beyond the data: extent tree blocks.
    static func delayedMargin(_ reserved: Int64) -> Int64 { reserved / 128 + 64 }
}
