import HoldfastFormat

/// How `setXattr` treats an existing attribute (setxattr flags).
public enum XattrSetMode: Sendable {
    case createOrReplace
    /// XATTR_CREATE: fail with `exists` if present.
    case create
    /// XATTR_REPLACE: fail with `noSuchAttribute` if absent.
    case replace
}

/// Extended attributes: in the inode's spare area first, the rest in one xattr block. A block
/// shared with other inodes (refcount > 1) is never changed in place: the inode gets its own copy.
extension Operation {
    /// The inode's attributes as stored (values in on-disk form).
    func xattrRecords(_ rec: InodeRecord) throws -> [XattrRecord] {
        var out: [XattrRecord] = []
        let inode = try decoded(rec)
        var raw: [(XattrEntry, [UInt8])] = []
        if let region = inode.inlineXattrRegion { raw += try Xattr.inodeBody(region, inode: rec.number) }
        if rec.fileACL != 0 {
            let block = try handle.read(rec.fileACL)
            raw += try Xattr.block(block, blockNumber: rec.fileACL, inode: rec.number, superblock: sb)
        }
        for (e, v) in raw {
            guard e.valueInode == 0 else { throw HoldfastError.unsupported("changing xattrs held in EA inodes (inode \(rec.number))") }
            out.append(XattrRecord(index: e.nameIndex, name: e.name, value: v))
        }
        return out
    }

    /// Stores `records` as the inode's whole attribute set.
    func storeXattrs(_ records: [XattrRecord], in rec: inout InodeRecord) throws {
        let bodyStart = 128 + Int(rec.extraIsize)
        var inBody: [XattrRecord] = []
        var inBlock: [XattrRecord] = []
        // Small attributes first into the inode, as many as fit; the rest go to the block.
        let room = rec.raw.count > bodyStart + 4 ? rec.raw.count - bodyStart - 4 : 0
        var used = 4
        // Inline data's system.data must stay in the inode (the read side looks nowhere else).
        let isData = { (r: XattrRecord) in InlineData.isDataXattr(index: r.index, name: r.name) }
        for r in records.filter(isData) + records.filter({ !isData($0) }).sorted(by: { $0.entrySize + $0.valueSize < $1.entrySize + $1.valueSize }) {
            if used + r.entrySize + r.valueSize <= room {
                inBody.append(r)
                used += r.entrySize + r.valueSize
            } else if isData(r) {
                throw HoldfastError.noSpace("inline data of inode \(rec.number) does not fit in the inode")
            } else {
                inBlock.append(r)
            }
        }
        if rec.raw.count > bodyStart {
            guard Xattr.writeInodeBody(inBody, into: &rec.raw, start: bodyStart) else {
                throw HoldfastError.noSpace("xattrs of inode \(rec.number) do not fit")
            }
        }
        if inBlock.isEmpty {
            if rec.fileACL != 0 { try releaseXattrBlock(&rec) }
            return
        }
        guard Xattr.bytesNeeded(inBlock) + Xattr.blockHeaderSize <= blockSize else {
            throw HoldfastError.noSpace("xattrs of inode \(rec.number) need more than one block")
        }
        var target = rec.fileACL
        if target != 0 {
            let old = try handle.read(target)
            // The block already holds exactly these (an inline-data or in-body change): left
            // alone, shared or not, so such a change never costs a block or a journal write.
            let held = try Xattr.block(old, blockNumber: target, inode: rec.number, superblock: sb)
                .map { XattrRecord(index: $0.0.nameIndex, name: $0.0.name, value: $0.1) }
            if held.count == inBlock.count && held.sorted(by: Xattr.blockOrder) == inBlock.sorted(by: Xattr.blockOrder) { return }
            if Xattr.refcount(old) > 1 {
                try releaseXattrBlock(&rec)  // shared: drop our reference, write our own copy
                target = 0
            }
        }
        if target == 0 {
            // Near the file's first extent when its root is a leaf that has one, else its group.
            var goal = fs.geometry.groupFirstBlock(UInt64(group(ofInode: rec.number)))
            if case .leaf(let extents)? = try? ExtentNode(rec.blockArea, inode: rec.number, block: nil, checksumSeed: nil),
               let first = extents.first {
                goal = first.physical
            }
            let (block, _) = try allocateBlocks(goal: goal, count: 1)
            target = block
            rec.fileACL = block
            rec.sectors += sectors(1)
            guard let bytes = Xattr.makeBlock(inBlock, blockNumber: block, refcount: 1, blockSize: blockSize, superblock: sb) else {
                throw HoldfastError.noSpace("xattrs of inode \(rec.number) do not fit in a block")
            }
            try handle.create(block, bytes)
        } else {
            guard let bytes = Xattr.makeBlock(inBlock, blockNumber: target, refcount: 1, blockSize: blockSize, superblock: sb) else {
                throw HoldfastError.noSpace("xattrs of inode \(rec.number) do not fit in a block")
            }
            try handle.write(target, bytes)
        }
    }

    /// setxattr(2) / removexattr(2) on one attribute; `value` nil removes it.
    func changeXattr(_ number: UInt32, name: [UInt8], value: [UInt8]?, mode: XattrSetMode) throws {
        guard sb.featureCompat.contains(.extAttr) else { throw HoldfastError.unsupported("xattrs on an image without the ext_attr feature") }
        guard !name.isEmpty, name.count <= 255 + 24 else { throw HoldfastError.invalidArgument("xattr name of \(name.count) bytes") }
        var diskValue = value
        if let v = value, name == Array("system.posix_acl_access".utf8) || name == Array("system.posix_acl_default".utf8) {
            guard let converted = PosixACL.toDisk(v) else { throw HoldfastError.invalidArgument("malformed POSIX ACL value for \(String(decoding: name, as: UTF8.self))") }
            diskValue = converted
        }
        guard let key = XattrRecord(fullName: name, value: diskValue ?? []) else {
            throw HoldfastError.unsupported("xattr namespace of \(String(decoding: name, as: UTF8.self))")
        }
        // ext4 has no handler for other system.* names: system.data is the inline data itself.
        guard !key.isUnhandledSystemName else {
            throw HoldfastError.unsupported("xattr \(String(decoding: name, as: UTF8.self)) (no such system attribute on ext4)")
        }
        guard key.name.count <= 255 else { throw HoldfastError.nameTooLong(.attribute(inode: number, name: String(decoding: name, as: UTF8.self))) }
        var rec = try inode(number)
        let display = String(decoding: name, as: UTF8.self)
        // The kernel's xattr_permission: user.* only on regular files and directories.
        let type = FileType(mode: rec.mode)
        if key.index == Self.userIndex && type != .regular && type != .directory {
            throw HoldfastError.notPermitted("\(display) on a \(type == .symlink ? "symbolic link" : "special file") (user.* attributes are for files and directories)")
        }
        // A link has no ACL of its own (its mode cannot change): EOPNOTSUPP, as on ext4.
        if (key.index == 2 || key.index == 3) && type == .symlink {
            throw HoldfastError.unsupported("POSIX ACLs on a symbolic link (inode \(number))")
        }
        var records = try xattrRecords(rec)
        let existing = records.firstIndex { $0.index == key.index && $0.name == key.name }
        let isACL = key.index == 2 || key.index == 3
        // An access ACL sets the mode's permission bits; one the mode says all of is not kept
        // (the kernel's posix_acl_update_mode).
        if key.index == 2, let v = value {
            guard let (bits, equivalent) = PosixACL.modeBits(v) else { throw HoldfastError.invalidArgument("malformed POSIX ACL value for \(display)") }
            rec.mode = rec.mode & ~0o777 | bits
            if equivalent {
                guard mode != .create || existing == nil else { throw HoldfastError.exists(.attribute(inode: number, name: display)) }
                if let i = existing { records.remove(at: i) }
                try storeXattrs(records, in: &rec)
                rec.changeTime = Self.now()
                return try store(rec)
            }
        }
        switch (existing, diskValue) {
        case (nil, nil) where isACL: return  // removing an ACL that is not there succeeds, as on ext4
        case (nil, nil): throw HoldfastError.noSuchAttribute(display)
        case (let i?, nil): records.remove(at: i)
        case (let i?, _?):
            if mode == .create { throw HoldfastError.exists(.attribute(inode: number, name: display)) }
            records[i] = key
        case (nil, _?):
            if mode == .replace { throw HoldfastError.noSuchAttribute(display) }
            records.append(key)
        }
        try storeXattrs(records, in: &rec)
        rec.changeTime = Self.now()
        try store(rec)
    }
}

extension Operation {
    static let userIndex: UInt8 = 1

    /// chmod of an inode with an access ACL: the ACL's owner, mask (or group) and other entries
    /// follow the new mode, as the kernel's posix_acl_chmod.
    func chmodAccessACL(_ rec: inout InodeRecord) throws {
        var records = try xattrRecords(rec)
        guard let i = records.firstIndex(where: { $0.index == 2 && $0.name.isEmpty }),
              let acl = PosixACL.toXattr(records[i].value),
              let changed = PosixACL.chmod(acl, mode: rec.mode), let disk = PosixACL.toDisk(changed) else { return }
        records[i].value = disk
        try storeXattrs(records, in: &rec)
    }
}
