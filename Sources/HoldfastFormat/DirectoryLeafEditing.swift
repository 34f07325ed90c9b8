/// Changing directory leaf blocks in place (directory.rst, "Linear (Classic) Directories"):
/// entries are packed records whose rec_len covers the slack after them; a deleted entry's
/// space joins the record before it, or its inode becomes 0 when it is first in the block.
public enum DirectoryLeaf {
    /// The space a record with a name of `nameLength` bytes needs: header + name, rounded up to 4.
    @inlinable public static func recordSize(nameLength: Int) -> Int { (8 + nameLength + 3) & ~3 }

    /// rec_len as stored (64 KiB blocks encode the full length specially).
    public static func encodeRecordLength(_ length: Int, blockSize: Int) -> UInt16 {
        if length < 65536 { return UInt16(length) }
        if length == 65536 { return 65535 }
        return UInt16((length & 65532) | ((length >> 16) & 3))
    }

    /// Bytes of a leaf block that hold entries (the checksum tail excluded).
    public static func usable(blockSize: Int, checksums: Bool) -> Int {
        checksums ? blockSize - DirectoryBlock.tailSize : blockSize
    }

    /// A leaf with one empty record spanning it (and a tail on metadata_csum images).
    public static func empty(blockSize: Int, checksums: Bool) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: blockSize)
        let u = usable(blockSize: blockSize, checksums: checksums)
        b.setLE16(4, encodeRecordLength(u, blockSize: blockSize))
        if checksums { writeTail(&b) }
        return b
    }

    /// The first block of a new directory: '.' and '..', the second record taking the rest.
    /// `dotFileType` is 0 on images without the filetype feature.
    public static func initial(selfInode: UInt32, parent: UInt32, blockSize: Int, checksums: Bool,
                               dotFileType: UInt8 = FileType.directory.rawValue) -> [UInt8] {
        var b = empty(blockSize: blockSize, checksums: checksums)
        let u = usable(blockSize: blockSize, checksums: checksums)
        writeRecord(&b, at: 0, inode: selfInode, name: [0x2E], fileType: dotFileType, length: 12, blockSize: blockSize)
        writeRecord(&b, at: 12, inode: parent, name: [0x2E, 0x2E], fileType: dotFileType, length: u - 12, blockSize: blockSize)
        return b
    }

    public static func writeRecord(_ b: inout [UInt8], at o: Int, inode: UInt32, name: [UInt8], fileType: UInt8, length: Int, blockSize: Int) {
        b.setLE32(o, inode)
        b.setLE16(o + 4, encodeRecordLength(length, blockSize: blockSize))
        b.setU8(o + 6, UInt8(name.count))
        b.setU8(o + 7, fileType)
        b.setBytes(o + 8, name)
    }

    /// The fake entry and tail header that mark a checksum tail (ext4_dir_entry_tail).
    static func writeTail(_ b: inout [UInt8]) {
        let t = b.count - DirectoryBlock.tailSize
        b.setLE32(t, 0)
        b.setLE16(t + 4, UInt16(DirectoryBlock.tailSize))
        b.setU8(t + 6, 0)
        b.setU8(t + 7, DirectoryBlock.tailFileType)
    }

    /// det_checksum: crc32c(directory inode seed, the block before the tail).
    public static func seal(_ b: inout [UInt8], seed: UInt32?) {
        guard let seed else { return }
        writeTail(&b)
        let t = b.count - DirectoryBlock.tailSize
        b.setLE32(t + 8, CRC32C.update(seed, b[0..<t]))
    }

    /// Puts an entry into the first record with room for it. Returns false when the block is full.
    public static func insert(_ b: inout [UInt8], inode: UInt32, name: [UInt8], fileType: UInt8, blockSize: Int, checksums: Bool) -> Bool {
        let need = recordSize(nameLength: name.count)
        let end = usable(blockSize: blockSize, checksums: checksums)
        var o = 0
        while o + 8 <= end {
            let rec = DirectoryBlock.recordLength(b.le16(o + 4), blockSize: blockSize)
            guard rec >= 8 else { return false }
            let occupant = b.le32(o)
            if occupant == 0 && rec >= need {
                writeRecord(&b, at: o, inode: inode, name: name, fileType: fileType, length: rec, blockSize: blockSize)
                return true
            }
            let used = occupant == 0 ? 0 : recordSize(nameLength: Int(b.u8(o + 6)))
            if occupant != 0 && rec - used >= need {
                b.setLE16(o + 4, encodeRecordLength(used, blockSize: blockSize))
                writeRecord(&b, at: o + used, inode: inode, name: name, fileType: fileType, length: rec - used, blockSize: blockSize)
                return true
            }
            o += rec
        }
        return false
    }

    /// Removes the entry named `name`; returns its inode, or nil when the block does not hold it.
    public static func remove(_ b: inout [UInt8], name: [UInt8], blockSize: Int, checksums: Bool) -> UInt32? {
        let end = usable(blockSize: blockSize, checksums: checksums)
        var o = 0
        var previous: Int?
        while o + 8 <= end {
            let rec = DirectoryBlock.recordLength(b.le16(o + 4), blockSize: blockSize)
            guard rec >= 8 else { return nil }
            let ino = b.le32(o)
            if ino != 0, Int(b.u8(o + 6)) == name.count, b[(o + 8)..<(o + 8 + name.count)].elementsEqual(name) {
                if let p = previous {
                    let prevRec = DirectoryBlock.recordLength(b.le16(p + 4), blockSize: blockSize)
                    b.setLE16(p + 4, encodeRecordLength(prevRec + rec, blockSize: blockSize))
                } else {
                    b.setLE32(o, 0)
                }
                return ino
            }
            previous = o
            o += rec
        }
        return nil
    }

    /// Points an existing entry at another inode (rename over an existing name, '..' of a moved directory).
    public static func retarget(_ b: inout [UInt8], name: [UInt8], to inode: UInt32, fileType: UInt8, blockSize: Int, checksums: Bool) -> Bool {
        let end = usable(blockSize: blockSize, checksums: checksums)
        var o = 0
        while o + 8 <= end {
            let rec = DirectoryBlock.recordLength(b.le16(o + 4), blockSize: blockSize)
            guard rec >= 8 else { return false }
            if b.le32(o) != 0, Int(b.u8(o + 6)) == name.count, b[(o + 8)..<(o + 8 + name.count)].elementsEqual(name) {
                b.setLE32(o, inode)
                b.setU8(o + 7, fileType)
                return true
            }
            o += rec
        }
        return false
    }

    /// A block built from `entries`, packed from the start, the last record taking the slack.
    public static func packed(_ entries: [DirectoryEntry], blockSize: Int, checksums: Bool) -> [UInt8] {
        var b = empty(blockSize: blockSize, checksums: checksums)
        let end = usable(blockSize: blockSize, checksums: checksums)
        var o = 0
        for (i, e) in entries.enumerated() {
            let size = i == entries.count - 1 ? end - o : recordSize(nameLength: e.name.count)
            writeRecord(&b, at: o, inode: e.inode, name: e.name, fileType: e.fileType, length: size, blockSize: blockSize)
            o += size
        }
        return b
    }

    /// Does a leaf block hold any live entry?
    public static func isEmpty(_ b: [UInt8], blockSize: Int, checksums: Bool) -> Bool {
        let end = usable(blockSize: blockSize, checksums: checksums)
        var o = 0
        while o + 8 <= end {
            if b.le32(o) != 0 { return false }
            let rec = DirectoryBlock.recordLength(b.le16(o + 4), blockSize: blockSize)
            guard rec >= 8 else { return false }
            o += rec
        }
        return true
    }
}

/// Writing htree index blocks (directory.rst, "Hash Tree Directories").
public enum DxEncoding {
    /// Where dx_countlimit sits in the root block and in interior nodes.
    public static let rootEntriesOffset = 0x20
    public static let nodeEntriesOffset = 0x8

    /// How many (hash, block) entries fit at `offset`, leaving room for the dx_tail when checksummed.
    public static func limit(blockSize: Int, offset: Int, checksums: Bool) -> Int {
        (blockSize - offset) / 8 - (checksums ? 1 : 0)
    }

    /// A root block: '.', '..' spanning the block, dx_root_info, then the entries.
    public static func root(selfInode: UInt32, parent: UInt32, hashVersion: UInt8, levels: UInt8,
                            entries: [(hash: UInt32, block: UInt32)], blockSize: Int, checksums: Bool,
                            dotFileType: UInt8 = FileType.directory.rawValue) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: blockSize)
        DirectoryLeaf.writeRecord(&b, at: 0, inode: selfInode, name: [0x2E], fileType: dotFileType, length: 12, blockSize: blockSize)
        DirectoryLeaf.writeRecord(&b, at: 12, inode: parent, name: [0x2E, 0x2E], fileType: dotFileType, length: blockSize - 12, blockSize: blockSize)
        b.setLE32(0x18, 0)          // reserved_zero
        b.setU8(0x1C, hashVersion)  // hash_version
        b.setU8(0x1D, 8)            // info_length
        b.setU8(0x1E, levels)       // indirect_levels
        b.setU8(0x1F, 0)            // unused_flags
        writeEntries(&b, offset: rootEntriesOffset, entries: entries, blockSize: blockSize, checksums: checksums)
        return b
    }

    /// An interior node: a fake empty entry spanning the block, then the entries.
    public static func node(entries: [(hash: UInt32, block: UInt32)], blockSize: Int, checksums: Bool) -> [UInt8] {
        var b = [UInt8](repeating: 0, count: blockSize)
        b.setLE32(0, 0)
        b.setLE16(4, DirectoryLeaf.encodeRecordLength(blockSize, blockSize: blockSize))
        writeEntries(&b, offset: nodeEntriesOffset, entries: entries, blockSize: blockSize, checksums: checksums)
        return b
    }

    /// dx_countlimit (limit, count), the first entry's block, then (hash, block) pairs.
    public static func writeEntries(_ b: inout [UInt8], offset: Int, entries: [(hash: UInt32, block: UInt32)], blockSize: Int, checksums: Bool) {
        let lim = limit(blockSize: blockSize, offset: offset, checksums: checksums)
        precondition(entries.count >= 1 && entries.count <= lim)
        for i in 0..<lim { b.setLE64(offset + 8 * i, 0) }
        b.setLE16(offset, UInt16(lim))
        b.setLE16(offset + 2, UInt16(entries.count))
        b.setLE32(offset + 4, entries[0].block)
        for i in 1..<entries.count {
            b.setLE32(offset + 8 * i, entries[i].hash)
            b.setLE32(offset + 8 * i + 4, entries[i].block)
        }
    }

    /// dx_tail.dt_checksum: crc32c(seed, the block up to the last used entry, then the tail with its checksum zero).
    public static func seal(_ b: inout [UInt8], offset: Int, seed: UInt32?) {
        guard let seed else { return }
        let lim = Int(b.le16(offset)), count = Int(b.le16(offset + 2))
        let tail = offset + 8 * lim
        b.setLE32(tail, 0)
        var c = CRC32C.update(seed, b[0..<(offset + 8 * count)])
        c = CRC32C.update(c, b[tail..<(tail + 4)])
        c = CRC32C.update(c, littleEndian: UInt32(0))
        b.setLE32(tail + 4, c)
    }
}
