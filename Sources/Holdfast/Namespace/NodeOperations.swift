import HoldfastFormat

/// Who a new inode belongs to and its permission bits.
/// The owner and permission bits of a new inode, as its creator asks for them.
///
/// By default the kernel's inode_init_owner applies on top: in a setgid directory the new inode
/// takes the directory's group, and a new directory its setgid bit too. `exact` sets uid, gid and
/// permissions as given (an import restoring a tree, or an owner given on the command line).
public struct Ownership: Sendable, Equatable {
    public var uid: UInt32
    public var gid: UInt32
    public var permissions: UInt16
    public var exact: Bool

    public init(uid: UInt32 = 0, gid: UInt32 = 0, permissions: UInt16, exact: Bool = false) {
        self.uid = uid
        self.gid = gid
        self.permissions = permissions & 0o7777
        self.exact = exact
    }
}

/// What a new inode is.
public enum NodeKind: Sendable, Equatable {
    case regular
    case directory
    case symlink(target: [UInt8])
    case characterDevice(major: UInt32, minor: UInt32)
    case blockDevice(major: UInt32, minor: UInt32)
    case fifo
    case socket

    var fileType: FileType {
        switch self {
        case .regular: .regular
        case .directory: .directory
        case .symlink: .symlink
        case .characterDevice: .characterDevice
        case .blockDevice: .blockDevice
        case .fifo: .fifo
        case .socket: .socket
        }
    }

    var modeBits: UInt16 {
        switch self {
        case .regular: 0x8000
        case .directory: 0x4000
        case .symlink: 0xA000
        case .characterDevice: 0x2000
        case .blockDevice: 0x6000
        case .fifo: 0x1000
        case .socket: 0xC000
        }
    }
}

/// The kernel's EXT4_LINK_MAX: more links than this is EMLINK (directories switch to dir_nlink's 1).
let linkMax: UInt16 = 65000

extension Operation {
    /// A name as a directory entry can hold it.
    static func checkName(_ name: [UInt8], subject: ErrorSubject) throws {
        guard !name.isEmpty, name != [0x2E], name != [0x2E, 0x2E], !name.contains(0x2F), !name.contains(0) else {
            throw HoldfastError.invalidArgument("\(subject): not a valid file name")
        }
        guard name.count <= 255 else { throw HoldfastError.nameTooLong(subject) }
    }

    /// Is `name` taken in `dir`? (Through the read path, which sees this transaction's blocks.)
    func lookup(_ name: [UInt8], in dir: InodeRecord) throws -> UInt32? {
        try fs.find(name, in: try decoded(dir))
    }

    /// Creates an inode of `kind` named `name` in directory `parent`; returns its number.
    func createNode(in parent: UInt32, name: [UInt8], kind: NodeKind, owner: Ownership, subject: ErrorSubject,
                    times: (access: Timestamp, modification: Timestamp)? = nil, umask: UInt16 = 0) throws -> UInt32 {
        try Self.checkName(name, subject: subject)
        var dir = try inode(parent)
        guard FileType(mode: dir.mode) == .directory else { throw HoldfastError.notADirectory(.inode(parent)) }
        guard dir.linksCount > 0 else { throw HoldfastError.notFound(.inode(parent)) }
        if try lookup(name, in: dir) != nil { throw HoldfastError.exists(subject) }
        let isDirectory = kind == .directory
        if isDirectory && dir.linksCount >= linkMax && !sb.featureROCompat.contains(.dirNlink) {
            throw HoldfastError.tooManyLinks(subject)
        }
        let number = try allocateInode(parent: parent, directory: isDirectory)
        let extra: UInt16 = sb.inodeSize > 128 ? max(32, sb.wantExtraIsize, sb.minExtraIsize) : 0
        var rec = InodeRecord(number: number, inodeSize: Int(sb.inodeSize), extraIsize: min(extra, sb.inodeSize - 128))
        let now = Self.now()
        var requested = owner.permissions
        var gid = owner.gid
        if !owner.exact && dir.mode & 0o2000 != 0 {
            gid = dir.gid
            if isDirectory { requested |= 0o2000 }
        }
        let (permissions, acls) = try inheritedPermissions(requested, from: dir, kind: kind, umask: umask)
        rec.mode = kind.modeBits | permissions
        rec.uid = owner.uid
        rec.gid = gid
        rec.accessTime = times?.access ?? now
        rec.changeTime = now
        rec.modificationTime = times?.modification ?? now
        rec.creationTime = now
        rec.generation = UInt32(truncatingIfNeeded: state.random.next())
        rec.linksCount = isDirectory ? 2 : 1
        let extents = sb.featureIncompat.contains(.extents)
        switch kind {
        case .regular, .directory:
            if extents {
                rec.flags |= Inode.flagExtents
                rec.blockArea = ExtentNodeEncoding.leaf([], byteCount: 60)
            }
        case .symlink(let target):
            guard !target.isEmpty, target.count < blockSize else {
                throw HoldfastError.invalidArgument("\(subject): a symlink target must be 1 to \(blockSize - 1) bytes")
            }
            if target.count < 60 {
                var area = [UInt8](repeating: 0, count: 60)
                area.setBytes(0, target)
                rec.blockArea = area
                rec.size = UInt64(target.count)
            } else {
                if extents {
                    rec.flags |= Inode.flagExtents
                    rec.blockArea = ExtentNodeEncoding.leaf([], byteCount: 60)
                }
                try target.withUnsafeBytes { try writeData(&rec, offset: 0, data: $0) }
            }
        case .characterDevice(let major, let minor), .blockDevice(let major, let minor):
            rec.setDevice(major: major, minor: minor)
        case .fifo, .socket:
            break
        }
        if !acls.isEmpty { try storeXattrs(acls, in: &rec) }
        if isDirectory {
            if try !makeInlineDirectory(&rec, parent: parent) {
                var block = DirectoryLeaf.initial(selfInode: number, parent: parent, blockSize: blockSize, checksums: checksums,
                                                  dotFileType: fileTypeCode(.directory))
                DirectoryLeaf.seal(&block, seed: seed(rec))
                _ = try appendDirectoryBlock(&rec, block)
            }
            incrementLinks(&dir)
        }
        try store(rec)
        try addEntry(&dir, name: name, inode: number, type: kind.fileType)
        dir.modificationTime = now
        dir.changeTime = now
        try store(dir)
        return number
    }

    /// One more link to a directory: past the limit, dir_nlink's "many" (1). Callers refuse
    /// EMLINK first without dir_nlink; a damaged count at the top stays there, never wraps.
    func incrementLinks(_ dir: inout InodeRecord) {
        if dir.linksCount == 1 { return }
        if dir.linksCount >= linkMax - 1 && sb.featureROCompat.contains(.dirNlink) {
            dir.linksCount = 1
        } else if dir.linksCount < .max {
            dir.linksCount += 1
        }
    }

    /// One link fewer to a directory (never below 2 while it exists; 1 means "many").
    func decrementDirectoryLinks(_ dir: inout InodeRecord) {
        if dir.linksCount > 2 { dir.linksCount -= 1 }
    }

    /// Adds a hard link `name` in `parent` to the existing non-directory inode `target`.
    func link(_ target: UInt32, in parent: UInt32, name: [UInt8], subject: ErrorSubject) throws {
        try Self.checkName(name, subject: subject)
        var rec = try inode(target)
        let type = FileType(mode: rec.mode)
        guard type != .directory else { throw HoldfastError.isADirectory(subject) }
        guard rec.linksCount < linkMax else { throw HoldfastError.tooManyLinks(subject) }
        var dir = try inode(parent)
        guard FileType(mode: dir.mode) == .directory else { throw HoldfastError.notADirectory(.inode(parent)) }
        if try lookup(name, in: dir) != nil { throw HoldfastError.exists(subject) }
        let now = Self.now()
        rec.linksCount += 1
        rec.changeTime = now
        try store(rec)
        try addEntry(&dir, name: name, inode: target, type: type)
        dir.modificationTime = now
        dir.changeTime = now
        try store(dir)
    }

    /// Drops one link of `number`; at zero links the inode and everything it owns are freed.
    func dropLink(_ number: UInt32) throws {
        var rec = try inode(number)
        let type = FileType(mode: rec.mode)
        let now = Self.now()
        if type == .directory {
            rec.linksCount = 0
        } else if rec.linksCount > 0 {
            rec.linksCount -= 1
        }
        rec.changeTime = now
        if rec.linksCount > 0 {
            try store(rec)
            return
        }
        if type != .directory && fs.isOpen(state, number) {
            // Still open: it stays, with its blocks, on the orphan list until the last close.
            if !isOrphan(number) { try addOrphan(&rec) }
            try store(rec)
            return
        }
        if isOrphan(number) { try removeOrphan(&rec) }
        try freeInodeContents(&rec)
        rec.deletionTime = UInt32(truncatingIfNeeded: now.seconds)
        try store(rec)
        try freeInode(number, directory: type == .directory)
    }

    /// Frees an unlinked inode's blocks and xattr block.
    func freeInodeContents(_ rec: inout InodeRecord) throws {
        discardPreallocation(rec.number)
        if hasMappedBlocks(rec) { try unmapFrom(0, of: &rec) }
        if rec.fileACL != 0 { try releaseXattrBlock(&rec) }
        rec.size = 0
    }

    /// Gives up this inode's reference to its xattr block, freeing the block with the last reference.
    func releaseXattrBlock(_ rec: inout InodeRecord) throws {
        let block = rec.fileACL
        var bytes = try handle.read(block)
        try Xattr.checkBlockMagic(bytes, blockNumber: block, inode: rec.number)
        let refs = Xattr.refcount(bytes)
        if refs <= 1 {
            try freeBlocks(block, 1)
            handle.release(block)
        } else {
            Xattr.setRefcount(&bytes, refs - 1)
            Xattr.sealBlock(&bytes, blockNumber: block, superblock: fs.superblock)
            try handle.write(block, bytes)
        }
        rec.sectors -= min(rec.sectors, sectors(1))
        rec.fileACL = 0
    }

    /// unlink(2) and rmdir(2): removes `name` from `parent`.
    func remove(_ name: [UInt8], from parent: UInt32, directory: Bool, subject: ErrorSubject) throws {
        try Self.checkName(name, subject: subject)
        var dir = try inode(parent)
        guard FileType(mode: dir.mode) == .directory else { throw HoldfastError.notADirectory(.inode(parent)) }
        guard let number = try lookup(name, in: dir) else { throw HoldfastError.notFound(subject) }
        let target = try inode(number)
        let isDirectory = FileType(mode: target.mode) == .directory
        if directory && !isDirectory { throw HoldfastError.notADirectory(subject) }
        if !directory && isDirectory { throw HoldfastError.isADirectory(subject) }
        if isDirectory {
            let entries = try fs.withDirectory(try decoded(target)) { $0.count }
            guard entries <= 2 else { throw HoldfastError.notEmpty(subject) }
        }
        guard try removeEntry(&dir, name: name) == number else {
            throw CorruptionError(.directoryBlock, inode: parent, .impossible("entry \(subject) vanished between lookup and removal"))
        }
        if isDirectory { decrementDirectoryLinks(&dir) }
        let now = Self.now()
        dir.modificationTime = now
        dir.changeTime = now
        try store(dir)
        try dropLink(number)
    }
}

extension Operation {
    /// A new inode's permission bits and ACLs, as the kernel's ext4 makes them (posix_acl_create):
    /// under a parent with a default ACL, the ACL cuts the requested bits down in place of the
    /// umask, the inode gets an access ACL when the bits cannot say all of it, and a directory
    /// inherits the default ACL itself. Without one, the umask applies. Symlinks take neither.
    func inheritedPermissions(_ requested: UInt16, from dir: InodeRecord, kind: NodeKind, umask: UInt16) throws -> (UInt16, [XattrRecord]) {
        if case .symlink = kind { return (requested, []) }
        let defaultACL = try xattrRecords(dir).first { $0.index == 3 && $0.name.isEmpty }
        guard let defaultACL, let xattrForm = PosixACL.toXattr(defaultACL.value),
              let (bits, access) = PosixACL.inherit(xattrForm, mode: requested & 0o777) else {
            return (requested & ~(umask & 0o777), [])
        }
        var acls: [XattrRecord] = []
        if let access, let disk = PosixACL.toDisk(access) { acls.append(XattrRecord(index: 2, name: [], value: disk)) }
        if kind == .directory { acls.append(defaultACL) }
        return (requested & ~0o777 | bits, acls)
    }
}
