import HoldfastFormat

/// Inline directories written (inline_data images): a new directory starts in its inode, as the
/// kernel's ext4_try_create_inline_dir makes it, and is edited there while its entries fit.
///
/// The data is the parent's inode number, then two separate record chains: i_block's other 56
/// bytes and system.data's value (inlinedata.rst: entries never span the two). An insert that
/// finds no room in either grows system.data by the entry's size while the inode has space; past
/// that the directory moves to one block (ext4_convert_inline_data_nolock) and never comes back.
extension Operation {
    /// An inline directory's parent and its two record chains.
    private struct InlineDirectory {
        var parent: UInt32
        var first: [UInt8]
        var second: [UInt8]

        var bytes: [UInt8] { InlineData.directory(parent: parent, first: first, second: second) }
    }

    private func inlineDirectory(_ dir: InodeRecord) throws -> InlineDirectory {
        let data = try inlineBytes(dir)
        guard data.count >= InlineData.blockAreaSize else {
            throw CorruptionError(.inode, inode: dir.number, .impossible("inline directory shorter than i_block"))
        }
        let parts = InlineData.directoryParts(data)
        return InlineDirectory(parent: parts.parent, first: parts.first, second: parts.second)
    }

    private func storeInlineDirectory(_ d: InlineDirectory, in dir: inout InodeRecord) throws {
        let bytes = d.bytes
        try storeInline(bytes, in: &dir)
        dir.size = UInt64(bytes.count)
        try store(dir)
    }

    /// Applies `edit` to each chain in turn until it returns true; stores the directory then.
    private func editInline(_ dir: inout InodeRecord, _ edit: (inout [UInt8]) -> Bool) throws -> Bool {
        var d = try inlineDirectory(dir)
        if edit(&d.first) || (!d.second.isEmpty && edit(&d.second)) {
            try storeInlineDirectory(d, in: &dir)
            return true
        }
        return false
    }

    /// A new directory's contents in its own inode; false when the inode has no room for them
    /// (128-byte inodes), and the directory gets a block.
    func makeInlineDirectory(_ rec: inout InodeRecord, parent: UInt32) throws -> Bool {
        guard inlineDataEnabled, try inlineCapacity(rec) >= InlineData.blockAreaSize else { return false }
        let bytes = InlineData.emptyDirectory(parent: parent)
        try storeInline(bytes, in: &rec)
        rec.size = UInt64(bytes.count)
        return true
    }

    /// Adds an entry to an inline directory in place. False when it does not fit: the caller
    /// converts the directory.
    func addInlineEntry(_ dir: inout InodeRecord, name: [UInt8], inode: UInt32, code: UInt8) throws -> Bool {
        func insert(_ region: inout [UInt8]) -> Bool {
            DirectoryLeaf.insert(&region, inode: inode, name: name, fileType: code, blockSize: region.count, checksums: false)
        }
        if try editInline(&dir, insert) { return true }
        // No room: system.data grows by the record, if the inode has the space.
        var d = try inlineDirectory(dir)
        let need = DirectoryLeaf.recordSize(nameLength: name.count)
        guard InlineData.blockAreaSize + d.second.count + need <= (try inlineCapacity(dir)),
              let grown = InlineData.grownRegion(d.second, by: need) else { return false }
        d.second = grown
        guard insert(&d.second) else { return false }
        try storeInlineDirectory(d, in: &dir)
        return true
    }

    func removeInlineEntry(_ dir: inout InodeRecord, name: [UInt8]) throws -> UInt32? {
        var removed: UInt32?
        _ = try editInline(&dir) { region in
            removed = DirectoryLeaf.remove(&region, name: name, blockSize: region.count, checksums: false)
            return removed != nil
        }
        return removed
    }

    func retargetInlineEntry(_ dir: inout InodeRecord, name: [UInt8], to inode: UInt32, code: UInt8) throws -> Bool {
        try editInline(&dir) { region in
            DirectoryLeaf.retarget(&region, name: name, to: inode, fileType: code, blockSize: region.count, checksums: false)
        }
    }

    func setInlineParent(_ dir: inout InodeRecord, to parent: UInt32) throws {
        var d = try inlineDirectory(dir)
        d.parent = parent
        try storeInlineDirectory(d, in: &dir)
    }

    /// Moves an inline directory into one new block: '.', '..', then its entries in order.
    func convertInlineDirectory(_ dir: inout InodeRecord) throws {
        let entries = try fs.withDirectory(try decoded(dir)) { $0 }
        let parent = try inlineDirectory(dir).parent
        var block = DirectoryLeaf.initial(selfInode: dir.number, parent: parent, blockSize: blockSize, checksums: checksums,
                                          dotFileType: fileTypeCode(.directory))
        for e in entries where !e.isDotOrDotDot {
            guard DirectoryLeaf.insert(&block, inode: e.inode, name: e.name, fileType: e.fileType, blockSize: blockSize, checksums: checksums) else {
                throw CorruptionError(.inode, inode: dir.number, .impossible("inline directory entries do not fit in one block"))
            }
        }
        try clearInline(&dir)
        dir.flags &= ~Inode.flagIndex  // one linear block; a damaged image's stray flag goes
        dir.size = 0
        DirectoryLeaf.seal(&block, seed: seed(dir))
        _ = try appendDirectoryBlock(&dir, block)
    }
}
