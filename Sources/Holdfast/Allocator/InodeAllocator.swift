import HoldfastFormat

/// Inode allocation: top-level directories spread over the groups, everything else near its parent.
extension Allocator {
    /// The group's inode bitmap; an INODE_UNINIT group's starts empty (padding bits set).
    func inodeBitmap(_ gd: inout GroupDescriptorRecord) throws -> [UInt8] {
        if gd.flags & GroupDescriptor.inodeUninit == 0 { return try handle.read(gd.inodeBitmap) }
        var bitmap = [UInt8](repeating: 0, count: blockSize)
        Bitmap.setRange(&bitmap, from: Int(sb.inodesPerGroup), to: blockSize * 8)
        gd.flags &= ~GroupDescriptor.inodeUninit
        try handle.create(gd.inodeBitmap, bitmap)
        return bitmap
    }

    func group(ofInode n: UInt32) -> UInt32 { geometry.inodeSlot(n).group }

    /// A free inode for a new file or directory under `parent`.
    func allocateInode(parent: UInt32, directory: Bool) throws -> UInt32 {
        let groups = UInt32(sb.groupCount)
        var first = group(ofInode: parent)
        if directory && parent == Filesystem.rootInode && groups > 1 {
            // Orlov-like spreading of top-level directories: round-robin over groups with room.
            first = space.nextDirectoryGroup % groups
            space.nextDirectoryGroup = (first + 1) % groups
        }
        for step in 0..<groups {
            let g = (first + step) % groups
            var gd = try descriptor(g)
            guard gd.freeInodesCount > 0 else { continue }
            // A new directory wants a group with free blocks too.
            if directory && step < groups - 1 && gd.freeBlocksCount == 0 { continue }
            var bitmap = try inodeBitmap(&gd)
            let from = g == 0 ? Int(sb.firstInode) - 1 : 0
            guard let index = Bitmap.firstClear(bitmap, from: from, limit: Int(sb.inodesPerGroup)) else { continue }
            Bitmap.set(&bitmap, index)
            gd.freeInodesCount -= 1
            changes.inodes -= 1
            if directory { gd.usedDirsCount += 1 }
            let unused = sb.inodesPerGroup - UInt32(index) - 1
            if sb.hasGDTChecksums || checksums { gd.inodeTableUnused = min(gd.inodeTableUnused, unused) }
            gd.setInodeBitmapChecksum(bitmap[...], sb)
            try handle.write(gd.inodeBitmap, bitmap)
            try store(gd)
            return g * sb.inodesPerGroup + UInt32(index) + 1
        }
        throw HoldfastError.noSpace("no free inodes")
    }

    /// Returns inode `n` to its group's bitmap.
    func freeInode(_ n: UInt32, directory: Bool) throws {
        let g = group(ofInode: n)
        var gd = try descriptor(g)
        var bitmap = try inodeBitmap(&gd)
        let index = geometry.inodeSlot(n).index
        guard Bitmap.isSet(bitmap, index) else {
            throw CorruptionError(.inodeBitmap, inode: n, .impossible("inode \(n) freed twice"))
        }
        Bitmap.clear(&bitmap, index)
        gd.freeInodesCount += 1
        changes.inodes += 1
        if directory && gd.usedDirsCount > 0 { gd.usedDirsCount -= 1 }
        gd.setInodeBitmapChecksum(bitmap[...], sb)
        try handle.write(gd.inodeBitmap, bitmap)
        try store(gd)
    }
}
