import HoldfastFormat

extension Filesystem {
    /// Extended attributes as userspace sees them: in-inode first, then the xattr block; POSIX ACLs
    /// converted to the xattr format; values in EA inodes read in; system.data (inline data) left out.
    public func xattrs(_ inode: Inode) throws(HoldfastError) -> [XattrValue] {
        try guarded { try readXattrs(inode) }
    }

    func readXattrs(_ inode: Inode) throws -> [XattrValue] {
        var raw: [(XattrEntry, [UInt8])] = []
        if let region = inode.inlineXattrRegion {
            raw += try Xattr.inodeBody(region, inode: inode.number)
        }
        if inode.fileACL != 0 {
            let block = try metadataBlock(inode.fileACL, for: .xattrBlock, inode: inode.number)
            raw += try Xattr.block(block, blockNumber: inode.fileACL, inode: inode.number, superblock: superblock)
        }
        var out: [XattrValue] = []
        for (entry, value) in raw {
            if entry.nameIndex == Xattr.systemIndex && entry.name == Array("data".utf8) { continue }
            guard let name = entry.fullName else { continue }  // unknown name index: not visible to userspace
            var bytes = value
            if entry.valueInode != 0 { bytes = try eaInodeValue(entry, owner: inode) }
            if entry.nameIndex == 2 || entry.nameIndex == 3 {
                guard let converted = PosixACL.toXattr(bytes) else {
                    throw CorruptionError(inode.fileACL != 0 ? .xattrBlock : .xattrInInode, inode: inode.number, .impossible("malformed POSIX ACL in \(String(decoding: name, as: UTF8.self))"))
                }
                bytes = converted
            }
            out.append(XattrValue(name: name, value: bytes))
        }
        return out
    }

    /// A value stored in its own inode (the ea_inode feature).
    private func eaInodeValue(_ entry: XattrEntry, owner: Inode) throws -> [UInt8] {
        let valueInode = try readInode(entry.valueInode)
        guard valueInode.flags & Inode.flagEAInode != 0, valueInode.size == UInt64(entry.valueSize) else {
            throw CorruptionError(.xattrInInode, inode: owner.number, .impossible("xattr value inode \(entry.valueInode) is not a matching EA inode"))
        }
        return try read(valueInode, offset: 0, count: Int(entry.valueSize))
    }
}
