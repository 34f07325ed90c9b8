import HoldfastFormat

/// Inline data written (inline_data images): small files keep their bytes in the inode, i_block
/// then the in-inode xattr system.data, as the kernel's fs/ext4/inline.c does.
///
/// - A regular file with no data and no blocks takes a first write inline when its end fits
///   (the kernel's EXT4_STATE_MAY_INLINE_DATA; an empty file stays extent-mapped until then).
/// - Writes inside the capacity change the inode; a write past it, a growing truncate and every
///   fallocate move the bytes to a block first (ext4_convert_inline_data), never back.
/// - A shrinking truncate cuts the inline bytes in place.
///
/// The inline bytes are metadata: they go through the operation's handle and the journal like the
/// rest of the inode, never through the page cache (reads of inline files bypass it too).
extension Operation {
    var inlineDataEnabled: Bool { sb.featureIncompat.contains(.inlineData) }

    func isInline(_ rec: InodeRecord) -> Bool { rec.flags & Inode.flagInlineData != 0 }

    /// The inline bytes as stored: i_block's 60, then system.data's value.
    func inlineBytes(_ rec: InodeRecord) throws -> [UInt8] { try fs.inlineData(try decoded(rec)) }

    /// The most bytes `rec` can hold inline: i_block plus a system.data value as large as the
    /// in-inode xattr space allows beside the other attributes there (ext4_get_max_inline_size).
    /// 0 when the inode has no room for system.data at all (128-byte inodes).
    func inlineCapacity(_ rec: InodeRecord) throws -> Int {
        let bodyStart = 128 + Int(rec.extraIsize)
        // Magic, the terminating entry and system.data's own entry.
        let fixed = 4 + 4 + InlineData.xattrEntrySize
        guard rec.raw.count >= bodyStart + fixed else { return 0 }
        var others = 0
        if let region = try decoded(rec).inlineXattrRegion {
            for (e, v) in try Xattr.inodeBody(region, inode: rec.number) where !InlineData.isDataXattr(index: e.nameIndex, name: e.name) {
                others += XattrRecord(index: e.nameIndex, name: e.name, value: v).entrySize + (v.count + 3) & ~3
            }
        }
        let room = rec.raw.count - bodyStart - fixed - others
        return room < 0 ? 0 : InlineData.blockAreaSize + room & ~3
    }

    /// Stores `bytes` as the inode's inline data (i_block zero-padded, the rest as system.data,
    /// which stays in the inode body) and sets the flag. The caller sets i_size.
    func storeInline(_ bytes: [UInt8], in rec: inout InodeRecord) throws {
        var area = [UInt8](repeating: 0, count: InlineData.blockAreaSize)
        area.setBytes(0, Array(bytes.prefix(InlineData.blockAreaSize)))
        var records = try xattrRecords(rec).filter { !InlineData.isDataXattr(index: $0.index, name: $0.name) }
        records.insert(XattrRecord(index: InlineData.xattrIndex, name: InlineData.xattrName, value: Array(bytes.dropFirst(InlineData.blockAreaSize))), at: 0)
        if !isInline(rec) { noteRemap(rec.number) }
        rec.flags = rec.flags & ~Inode.flagExtents | Inode.flagInlineData
        rec.blockArea = area
        try storeXattrs(records, in: &rec)
    }

    /// Drops the inline data: flag, system.data and i_block, which becomes an empty mapping
    /// (an extent root on extent images, a zeroed block map otherwise).
    func clearInline(_ rec: inout InodeRecord) throws {
        let records = try xattrRecords(rec).filter { !InlineData.isDataXattr(index: $0.index, name: $0.name) }
        noteRemap(rec.number)
        rec.flags &= ~Inode.flagInlineData
        try storeXattrs(records, in: &rec)
        if sb.featureIncompat.contains(.extents) {
            rec.flags |= Inode.flagExtents
            rec.blockArea = ExtentNodeEncoding.leaf([], byteCount: InlineData.blockAreaSize)
        } else {
            rec.blockArea = [UInt8](repeating: 0, count: InlineData.blockAreaSize)
        }
    }

    /// Moves an inline file's bytes into a block (allocated now) and maps it normally.
    func convertInlineFile(_ rec: inout InodeRecord) throws {
        let size = rec.size
        // Past the stored bytes the file reads as zeros: those stay a hole (a hostile i_size
        // cannot make this allocate more than the inode holds).
        let bytes = Array(try inlineBytes(rec).prefix(Int(min(size, UInt64(Int.max)))))
        try clearInline(&rec)
        // i_size stays: a file with a size never goes inline again, so this write takes a block.
        if !bytes.isEmpty {
            // Pages filled before the lock hold the caller's write, not these bytes.
            let ready = pending.ready
            pending.ready = [:]
            defer { pending.ready = ready }
            try bytes.withUnsafeBytes { try writeData(&rec, offset: 0, source: .memory($0), delay: false) }
        }
    }

    /// A regular file that may take its first write inline: nothing in it, nothing mapped, no
    /// cached pages (a size-0 file with preallocated blocks stays as it is).
    private func mayBecomeInline(_ rec: InodeRecord) -> Bool {
        guard inlineDataEnabled, !isInline(rec), FileType(mode: rec.mode) == .regular, rec.size == 0,
              !(fs.pageCache?.hasPages(rec.number) ?? false) else { return false }
        let xattrSectors: UInt64 = rec.fileACL != 0 ? sectors(1) : 0
        guard rec.sectors <= xattrSectors else { return false }
        if rec.flags & Inode.flagExtents != 0 {
            return (try? ExtentHeader(rec.blockArea, inode: rec.number, block: nil))?.entries == 0
        }
        return rec.blockArea.allSatisfy { $0 == 0 }
    }

    /// writeData's inline part. True when the write went into the inode; false when it is the
    /// block path's to do (an inline file that outgrew its inode is converted first).
    func writeInline(_ rec: inout InodeRecord, offset: UInt64, source data: DataSource) throws -> Bool {
        guard isInline(rec) || mayBecomeInline(rec) else { return false }
        let end = offset + UInt64(data.count)
        let capacity = UInt64(try inlineCapacity(rec))
        // A size past the room (only a damaged image has one) is not padded out in memory.
        guard FileType(mode: rec.mode) == .regular, end <= capacity, rec.size <= capacity else {
            if isInline(rec) { try convertInlineFile(&rec) }
            return false
        }
        var bytes = isInline(rec) ? Array(try inlineBytes(rec).prefix(Int(rec.size))) : []
        let newSize = max(Int(rec.size), Int(end))
        if bytes.count < newSize { bytes += [UInt8](repeating: 0, count: newSize - bytes.count) }
        try bytes.withUnsafeMutableBytes { buffer in
            try data.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[Int(offset)..<Int(end)]))
        }
        try storeInline(bytes, in: &rec)
        rec.size = UInt64(newSize)
        return true
    }

    /// truncate(2) of an inline file: shrinking (or the same size) cuts the bytes in place and
    /// returns true; growing converts the file and returns false (the block path sets the size),
    /// as the kernel's ext4_setattr does. The inline bytes are rewritten, and the xattr block
    /// left alone (`storeXattrs` skips a block that already holds its records).
    func truncateInline(_ rec: inout InodeRecord, to size: UInt64) throws -> Bool {
        guard isInline(rec) else { return false }
        // Growing, or a size the inode cannot hold (a damaged image's): to a block first.
        guard size <= rec.size, size <= UInt64(try inlineCapacity(rec)) else {
            try convertInlineFile(&rec)
            return false
        }
        try storeInline(Array(try inlineBytes(rec).prefix(Int(size))), in: &rec)
        rec.size = size
        return true
    }
}
