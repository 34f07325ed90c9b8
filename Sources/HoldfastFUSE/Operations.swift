#if canImport(Glibc)
import Glibc
#endif
import CFuse3
import CFuseDevice
import Holdfast

// The FUSE requests, each answered from the public `Filesystem` API. Every request gets exactly
// one reply: its result, or the errno of the `HoldfastError` that stopped it (one table,
// `HoldfastError.errno`). Forget and release never fail.

/// Runs `body`, which replies on success; a thrown error becomes the request's errno reply.
@inline(__always)
private func respond(_ req: fuse_req_t?, _ body: () throws(HoldfastError) -> Void) {
    do { try body() } catch { fuse_reply_err(req, error.errno) }
}

/// A name from the kernel, as bytes; longer than ext4's 255 is ENAMETOOLONG before anything
/// is looked at or changed (the kernel's ext4 says the same; FUSE leaves it to the server).
private func name(_ text: UnsafePointer<CChar>?, in parent: UInt32) throws(HoldfastError) -> [UInt8] {
    guard let text else { throw .invalidArgument("no name") }
    let length = strlen(text)
    let bytes = Array(UnsafeRawBufferPointer(start: text, count: length))
    guard length <= 255 else { throw .nameTooLong(.entry(directory: parent, name: Array(bytes.prefix(64)))) }
    return bytes
}

private let renameNoReplace: UInt32 = 1  // RENAME_NOREPLACE
private let renameExchange: UInt32 = 2   // RENAME_EXCHANGE
private let xattrCreate: Int32 = 1       // XATTR_CREATE
private let xattrReplace: Int32 = 2      // XATTR_REPLACE
private let fallocKeepSize: Int32 = 0x01, fallocPunchHole: Int32 = 0x02, fallocZeroRange: Int32 = 0x10

extension MountServer {
    // MARK: Names

    func lookup(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ text: UnsafePointer<CChar>?) {
        raiseReadaheadOnce()
        respond(req) { () throws(HoldfastError) in
            let dir = inode(parent)
            let name = try name(text, in: dir)
            guard let found = try fs.lookup(name, in: try fs.inode(dir)) else {
                // A negative entry the kernel may cache: only this mount changes the image.
                var e = fuse_entry_param()
                e.entry_timeout = options.entryTimeout
                fuse_reply_entry(req, &e)
                return
            }
            try replyEntry(req, found)
        }
    }

    /// Replies with `inode`'s entry and counts the kernel's new reference to it.
    func replyEntry(_ req: fuse_req_t?, _ number: UInt32) throws(HoldfastError) {
        let i = try fs.inode(number)
        try remember(number)
        var e = entry(i)
        if fuse_reply_entry(req, &e) != 0 { forget(number, 1) }  // the request was interrupted
    }

    func create(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ text: UnsafePointer<CChar>?, mode: mode_t, kind: NodeKind) {
        respond(req) { () throws(HoldfastError) in
            let dir = inode(parent)
            let name = try name(text, in: dir)
            let created = try fs.create(name, in: dir, kind: kind, owner: owner(req, mode: mode),
                                        umask: umask(req))
            try replyEntry(req, created)
        }
    }

    /// The caller as the owner of a new inode; the library applies inode_init_owner (a setgid
    /// parent's group, and for a directory its setgid bit).
    func owner(_ req: fuse_req_t?, mode: mode_t) -> Ownership {
        let caller = fuse_req_ctx(req)!.pointee
        return Ownership(uid: UInt32(caller.uid), gid: UInt32(caller.gid), permissions: UInt16(truncatingIfNeeded: mode) & 0o7777)
    }

    /// The caller's umask: the kernel leaves it to this server (DONT_MASK), which applies it
    /// unless the parent's default ACL decides the new inode's permissions.
    func umask(_ req: fuse_req_t?) -> UInt16 { UInt16(truncatingIfNeeded: fuse_req_ctx(req)!.pointee.umask) & 0o777 }

    func mknod(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ text: UnsafePointer<CChar>?, _ mode: mode_t, _ rdev: dev_t) {
        let device = Self.majorMinor(rdev)
        let kind: NodeKind
        switch mode & 0o170000 {
        case 0o100000, 0: kind = .regular
        case 0o020000: kind = .characterDevice(major: device.major, minor: device.minor)
        case 0o060000: kind = .blockDevice(major: device.major, minor: device.minor)
        case 0o010000: kind = .fifo
        case 0o140000: kind = .socket
        default:
            fuse_reply_err(req, EINVAL)
            return
        }
        create(req, parent, text, mode: mode, kind: kind)
    }

    func symlink(_ req: fuse_req_t?, _ target: UnsafePointer<CChar>?, _ parent: fuse_ino_t, _ text: UnsafePointer<CChar>?) {
        guard let target else { return fail(req, EINVAL) }
        let bytes = Array(UnsafeRawBufferPointer(start: target, count: strlen(target)))
        // The kernel's limit for a symlink's target is the block size; ext4 says ENAMETOOLONG.
        guard bytes.count < fs.blockSize else { return fail(req, ENAMETOOLONG) }
        create(req, parent, text, mode: 0o777, kind: .symlink(target: bytes))
    }

    func link(_ req: fuse_req_t?, _ node: fuse_ino_t, _ parent: fuse_ino_t, _ text: UnsafePointer<CChar>?) {
        respond(req) { () throws(HoldfastError) in
            let dir = inode(parent)
            let name = try name(text, in: dir)
            let target = inode(node)
            try fs.link(target, in: dir, name: name)
            try replyEntry(req, target)
        }
    }

    func unlink(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ text: UnsafePointer<CChar>?, directory: Bool) {
        respond(req) { () throws(HoldfastError) in
            let dir = inode(parent)
            let name = try name(text, in: dir)
            if directory { try fs.removeDirectory(name, in: dir) } else { try fs.unlink(name, in: dir) }
            fuse_reply_err(req, 0)
        }
    }

    func rename(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ text: UnsafePointer<CChar>?,
                _ newParent: fuse_ino_t, _ newText: UnsafePointer<CChar>?, _ flags: UInt32) {
        respond(req) { () throws(HoldfastError) in
            let from = inode(parent), to = inode(newParent)
            let old = try name(text, in: from), new = try name(newText, in: to)
            let mode: RenameMode
            switch flags {
            case 0: mode = .replace
            case renameNoReplace: mode = .noReplace
            case renameExchange: mode = .exchange
            default: throw .invalidArgument("rename flags \(flags)")  // RENAME_WHITEOUT and unknown bits
            }
            try fs.rename(old, in: from, to: new, in: to, mode: mode)
            fuse_reply_err(req, 0)
        }
    }

    func readlink(_ req: fuse_req_t?, _ node: fuse_ino_t) {
        respond(req) { () throws(HoldfastError) in
            let i = try fs.inode(inode(node))
            guard i.fileType == .symlink else { throw .invalidArgument("not a symbolic link") }
            let target = try fs.readLink(i) + [0]
            target.withUnsafeBufferPointer { p in
                p.withMemoryRebound(to: CChar.self) { _ = fuse_reply_readlink(req, $0.baseAddress) }
            }
        }
    }

    // MARK: Attributes

    func getattr(_ req: fuse_req_t?, _ node: fuse_ino_t) {
        raiseReadaheadOnce()
        respond(req) { () throws(HoldfastError) in
            var st = attributes(try fs.inode(inode(node)))
            fuse_reply_attr(req, &st, options.attributeTimeout)
        }
    }

    /// chmod, chown, truncate and utimens. The kernel has already decided what the caller may do
    /// (default_permissions). Which setuid and setgid bits a change clears is this server's to do
    /// under HANDLE_KILLPRIV_V2 (`CFuseDevice`): the kernel marks a truncate or chown whose caller
    /// lacks CAP_FSETID with FATTR_KILL_SUIDGID (libfuse 3.14 passes it on as KILL_SUID), and
    /// sends its other clearings (chown(f, -1, -1); file_remove_privs before fallocate and the
    /// like) as a setattr with nothing left in it. Without v2 the kernel sends a mode change.
    func setattr(_ req: fuse_req_t?, _ node: fuse_ino_t, _ attr: UnsafeMutablePointer<stat>?, _ toSet: Int32) {
        respond(req) { () throws(HoldfastError) in
            guard let attr = attr?.pointee else { throw .invalidArgument("no attributes") }
            let number = inode(node)
            let set = { (bit: Int32) in toSet & bit != 0 }
            var changes = AttributeChanges()
            let empty = toSet & ~FUSE_SET_ATTR_CTIME == 0
            if hf_killpriv_v2() != 0, set(FUSE_SET_ATTR_KILL_SUID) || empty, !set(FUSE_SET_ATTR_MODE) {
                // Read before anything changes: setattr_should_drop_sgid judges the group the file has.
                let i = try fs.inode(number)
                if i.fileType != .directory && i.fileType != .symlink {  // a link's mode cannot change
                    let cleared = clearedSetID(i, caller: req)
                    if cleared != UInt16(truncatingIfNeeded: i.mode) & 0o7777 { changes.permissions = cleared }
                    if empty { changes.dropPrivileges = true }  // the capabilities too
                }
            }
            if set(FUSE_SET_ATTR_SIZE) {
                // The set-id clearing goes with the size, in one operation.
                try fs.truncate(number, to: UInt64(bitPattern: Int64(attr.st_size)), dropSetID: set(FUSE_SET_ATTR_KILL_SUID),
                                permissions: set(FUSE_SET_ATTR_MODE) ? nil : changes.permissions)
                if !set(FUSE_SET_ATTR_MODE) { changes.permissions = nil }
            }
            if set(FUSE_SET_ATTR_MODE) { changes.permissions = UInt16(truncatingIfNeeded: attr.st_mode) & 0o7777 }
            if set(FUSE_SET_ATTR_UID) { changes.uid = UInt32(attr.st_uid) }
            if set(FUSE_SET_ATTR_GID) { changes.gid = UInt32(attr.st_gid) }
            let now = Self.now()
            if set(FUSE_SET_ATTR_ATIME_NOW) { changes.accessTime = now } else if set(FUSE_SET_ATTR_ATIME) {
                changes.accessTime = Self.timestamp(attr.st_atim)
            }
            if set(FUSE_SET_ATTR_MTIME_NOW) { changes.modificationTime = now } else if set(FUSE_SET_ATTR_MTIME) {
                changes.modificationTime = Self.timestamp(attr.st_mtim)
            }
            // The kernel's own change time when it keeps times itself (writeback cache).
            if set(FUSE_SET_ATTR_CTIME) { changes.changeTime = Self.timestamp(attr.st_ctim) }
            // Every setattr changes the change time, an empty one too (chown(f, -1, -1)); a
            // truncate alone has set it already.
            let sizeOnly = ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_KILL_SUID)
            if toSet & sizeOnly != 0 || !set(FUSE_SET_ATTR_SIZE) || changes.permissions != nil { try fs.setAttributes(number, changes) }
            var st = attributes(try fs.inode(number))
            fuse_reply_attr(req, &st, options.attributeTimeout)
        }
    }

    /// The permissions left once the kernel's setattr_should_drop_suidgid has cleared what it
    /// clears: setuid; setgid where group-execute is set, or where the caller is neither in the
    /// file's group nor privileged (root stands for CAP_FSETID: FUSE passes no capabilities).
    func clearedSetID(_ i: Inode, caller req: fuse_req_t?) -> UInt16 {
        var permissions = UInt16(truncatingIfNeeded: i.mode) & 0o7777 & ~0o4000
        guard permissions & 0o2000 != 0 else { return permissions }
        if permissions & 0o010 != 0 || !inGroupOrPrivileged(req, i.gid) { permissions &= ~0o2000 }
        return permissions
    }

    private func inGroupOrPrivileged(_ req: fuse_req_t?, _ gid: UInt32) -> Bool {
        let caller = fuse_req_ctx(req)!.pointee
        if caller.uid == 0 || UInt32(caller.gid) == gid { return true }
        var groups = [gid_t](repeating: 0, count: 64)
        var n = Int(fuse_req_getgroups(req, Int32(groups.count), &groups))
        if n > groups.count {
            groups = [gid_t](repeating: 0, count: n)
            n = Int(fuse_req_getgroups(req, Int32(groups.count), &groups))
        }
        // Unknown (a caller in another pid namespace): kept. A setgid bit without group-execute
        // gives no privilege, so keeping it errs on the harmless side.
        guard n >= 0 else { return true }
        return groups.prefix(min(n, groups.count)).contains(gid_t(gid))
    }

    static func now() -> Timestamp {
        var t = Glibc.timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return timestamp(t)
    }

    static func timestamp(_ t: Glibc.timespec) -> Timestamp {
        Timestamp(seconds: Int64(t.tv_sec), nanoseconds: UInt32(clamping: t.tv_nsec))
    }

    // MARK: Files

    func open(_ req: fuse_req_t?, _ node: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        respond(req) { () throws(HoldfastError) in
            guard let fi else { throw .invalidArgument("no file info") }
            fi.pointee.fh = try openHandle(inode(node))
            // Every change comes through this mount, so what the kernel cached is still true; and
            // flush has nothing to do here (fsync is where data is made durable), so the kernel
            // need not send one at every close.
            hf_fi_set_keep_cache(fi, 1)
            hf_fi_set_noflush(fi, 1)
            if fuse_reply_open(req, fi) != 0 { releaseHandle(fi.pointee.fh) }
        }
    }

    func createAndOpen(_ req: fuse_req_t?, _ parent: fuse_ino_t, _ text: UnsafePointer<CChar>?, _ mode: mode_t,
                       _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        respond(req) { () throws(HoldfastError) in
            guard let fi else { throw .invalidArgument("no file info") }
            let dir = inode(parent)
            let name = try name(text, in: dir)
            let created = try fs.create(name, in: dir, kind: .regular, owner: owner(req, mode: mode),
                                        umask: umask(req))
            let i = try fs.inode(created)
            fi.pointee.fh = try openHandle(created)
            do throws(HoldfastError) { try remember(created) } catch {
                releaseHandle(fi.pointee.fh)
                throw error
            }
            hf_fi_set_keep_cache(fi, 1)
            hf_fi_set_noflush(fi, 1)
            var e = entry(i)
            if fuse_reply_create(req, &e, fi) != 0 {
                releaseHandle(fi.pointee.fh)
                forget(created, 1)
            }
        }
    }

    /// Reads from this size on are spliced where they can be (smaller ones cost more to set up
    /// than their copy).
    static let spliceMinimum = 32 << 10

    func read(_ req: fuse_req_t?, _ node: fuse_ino_t, _ size: Int, _ offset: off_t) {
        respond(req) { () throws(HoldfastError) in
            let node = try fs.inode(inode(node))
            let at = UInt64(bitPattern: Int64(offset))
            if options.splice && size >= Self.spliceMinimum {
                // Large reads: the image's bytes go into the reply without passing through here.
                let replied = try fs.readSpliced(node, offset: at, count: size) { plan -> Bool? in
                    var pieces: [hf_read_piece] = []
                    pieces.reserveCapacity(plan.pieces.count)
                    for piece in plan.pieces {
                        switch piece {
                        case .image(let from, let n): pieces.append(hf_read_piece(fd: plan.descriptor, pos: off_t(from), size: n))
                        case .zeros(let n): pieces.append(hf_read_piece(fd: -1, pos: 0, size: n))
                        }
                    }
                    // 1: not a reply libfuse can splice (too large for its pipe, too many pieces).
                    return pieces.withUnsafeBufferPointer { hf_reply_pieces(req, $0.baseAddress, $0.count) } == 1 ? nil : true
                }
                if replied == true {
                    noteAccess(node)
                    return
                }
            }
            let buffer = try ReplyBuffer(size, budget: fs.budget)
            defer { buffer.free() }
            // The kernel keeps what it reads (keep_cache): what this cache does not hold comes
            // from the image straight into the reply, and is not kept twice.
            let count = try fs.read(node, offset: at, into: UnsafeMutableRawBufferPointer(start: buffer.pointer, count: size), caching: false)
            noteAccess(node)
            fuse_reply_buf(req, buffer.pointer, count)
        }
    }

    /// relatime: a read moves the access time when it is stale. FUSE leaves atime to the server
    /// (the kernel marks FUSE inodes S_NOATIME), so reads the kernel's page cache answers do not
    /// count. A failure to record it fails no read.
    private func noteAccess(_ number: UInt32) {
        do { try fs.noteAccess(number) } catch {}
    }

    private func noteAccess(_ node: Inode) {
        do { try fs.noteAccess(node) } catch {}
    }

    /// lseek(2) with SEEK_DATA or SEEK_HOLE; the kernel answers the other whences itself.
    func lseek(_ req: fuse_req_t?, _ node: fuse_ino_t, _ offset: off_t, _ whence: Int32) {
        respond(req) { () throws(HoldfastError) in
            guard whence == Syscall.seekData || whence == Syscall.seekHole, offset >= 0 else { throw .invalidArgument("lseek whence \(whence)") }
            guard let found = try fs.seek(inode(node), from: UInt64(offset), to: whence == Syscall.seekData ? .data : .hole) else {
                fuse_reply_err(req, ENXIO)
                return
            }
            fuse_reply_lseek(req, off_t(found))
        }
    }

    /// `dropSetID`: the kernel's FUSE_WRITE_KILL_SUIDGID (the writer lacks CAP_FSETID).
    func write(_ req: fuse_req_t?, _ node: fuse_ino_t, _ buffer: UnsafePointer<CChar>?, _ size: Int, _ offset: off_t, dropSetID: Bool) {
        respond(req) { () throws(HoldfastError) in
            do throws(HoldfastError) {
                try fs.write(inode(node), at: UInt64(bitPattern: Int64(offset)), UnsafeRawBufferPointer(start: buffer, count: size),
                             dropSetID: dropSetID)
            } catch {
                // write(2)'s short count: the caller asks again for the rest, and hears the error then.
                guard case .partialWrite(let written, _, _) = error, written > 0 else { throw error }
                fuse_reply_write(req, written)
                return
            }
            fuse_reply_write(req, size)
        }
    }

    func release(_ req: fuse_req_t?, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        if let fi { releaseHandle(fi.pointee.fh) }
        fuse_reply_err(req, 0)
    }

    func fsync(_ req: fuse_req_t?, _ node: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        respond(req) { () throws(HoldfastError) in
            if let fi, let file = file(fi.pointee.fh) { try file.sync() } else { try fs.fsync(inode(node)) }
            fuse_reply_err(req, 0)
        }
    }

    func fallocate(_ req: fuse_req_t?, _ node: fuse_ino_t, _ mode: Int32, _ offset: off_t, _ length: off_t) {
        respond(req) { () throws(HoldfastError) in
            let how: FallocateMode
            switch mode {
            case 0: how = .allocate
            case fallocKeepSize: how = .keepSize
            case fallocPunchHole | fallocKeepSize: how = .punchHole
            case fallocZeroRange: how = .zeroRange(keepSize: false)
            case fallocZeroRange | fallocKeepSize: how = .zeroRange(keepSize: true)
            default: throw .unsupported("fallocate mode \(mode)")  // collapse and insert range
            }
            guard offset >= 0, length > 0 else { throw .invalidArgument("fallocate range") }
            try fs.fallocate(inode(node), offset: UInt64(offset), length: UInt64(length), mode: how)
            fuse_reply_err(req, 0)
        }
    }

    /// copy_file_range: read and written through the page cache, a megabyte at a time.
    func copyRange(_ req: fuse_req_t?, from source: fuse_ino_t, _ sourceOffset: off_t,
                   to destination: fuse_ino_t, _ destinationOffset: off_t, _ length: Int) {
        respond(req) { () throws(HoldfastError) in
            let from = try fs.inode(inode(source))
            let to = inode(destination)
            var copied = 0
            while copied < length {
                let at = UInt64(bitPattern: Int64(sourceOffset)) + UInt64(copied)
                let chunk = try fs.read(from, offset: at, count: min(length - copied, 1 << 20))
                if chunk.isEmpty { break }
                try fs.write(to, at: UInt64(bitPattern: Int64(destinationOffset)) + UInt64(copied), chunk)
                copied += chunk.count
            }
            fuse_reply_write(req, copied)
        }
    }

    // MARK: Directories

    func opendir(_ req: fuse_req_t?, _ node: fuse_ino_t, _ fi: UnsafeMutablePointer<fuse_file_info>?) {
        guard let fi else { return fail(req, EINVAL) }
        fi.pointee.fh = openDirectory(inode(node))
        if fuse_reply_open(req, fi) != 0 { releaseDirectory(fi.pointee.fh) }
    }

    /// readdir and readdirplus: entries from `offset` (a position in the listing) while they fit
    /// in `size` bytes. With `plus`, each entry but . and .. carries its attributes and counts as
    /// a lookup.
    func readdir(_ req: fuse_req_t?, _ size: Int, _ offset: off_t, _ fi: UnsafeMutablePointer<fuse_file_info>?, plus: Bool) {
        respond(req) { () throws(HoldfastError) in
            guard let fi, let listing = directory(fi.pointee.fh) else { throw .invalidArgument("no directory handle") }
            let entries = try listing.entries(from: Int(offset), fs)
            if offset == 0 { noteAccess(listing.inode) }
            let buffer = try ReplyBuffer(size, budget: fs.budget)
            defer { buffer.free() }
            let text = UnsafeMutablePointer<CChar>.allocate(capacity: 256)  // the entry's name, NUL-terminated
            defer { text.deallocate() }
            var used = 0
            var index = Int(offset)
            while index < entries.count {
                let e = entries[index]
                e.name.withUnsafeBytes { UnsafeMutableRawPointer(text).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                text[e.name.count] = 0
                let slot = buffer.pointer + used, room = size - used, next = off_t(index + 1)
                let n: Int
                if plus {
                    guard let added = try addPlus(req, slot, room, text, e, next) else { break }
                    n = added
                } else {
                    var st = stat()
                    st.st_ino = ino_t(e.inode)
                    st.st_mode = mode_t(e.kind.modeBits)
                    n = fuse_add_direntry(req, slot, room, text, &st, next)
                    guard n <= room else { break }
                }
                used += n
                index += 1
            }
            fuse_reply_buf(req, buffer.pointer, used)
        }
    }

    /// One readdirplus entry, or nil when it does not fit in `room` (then nothing is counted).
    private func addPlus(_ req: fuse_req_t?, _ slot: UnsafeMutablePointer<CChar>, _ room: Int, _ cname: UnsafePointer<CChar>,
                         _ e: DirectoryEntry, _ next: off_t) throws(HoldfastError) -> Int? {
        var param = fuse_entry_param()
        if e.isDotOrDotDot {
            // The kernel takes no reference for . and ..: their numbers and types only.
            param.attr.st_ino = ino_t(e.inode)
            param.attr.st_mode = mode_t(e.kind.modeBits)
            let n = fuse_add_direntry_plus(req, slot, room, cname, &param, next)
            return n <= room ? n : nil
        }
        // Sized first with the entry's attributes; counted only once it is known to fit.
        let i: Inode
        do { i = try fs.inode(e.inode) } catch .notFound { return 0 }  // removed since the listing was read
        param = entry(i)
        guard fuse_add_direntry_plus(req, nil, 0, cname, &param, next) <= room else { return nil }
        try remember(e.inode)
        return fuse_add_direntry_plus(req, slot, room, cname, &param, next)
    }

    func fsyncdir(_ req: fuse_req_t?, _ node: fuse_ino_t) {
        respond(req) { () throws(HoldfastError) in
            try fs.fsync(inode(node))
            fuse_reply_err(req, 0)
        }
    }

    func statfs(_ req: fuse_req_t?) {
        respond(req) { () throws(HoldfastError) in
            let usage = try fs.spaceUsage()
            var st = statvfs()
            st.f_bsize = UInt(usage.blockSize)
            st.f_frsize = UInt(usage.blockSize)
            st.f_blocks = fsblkcnt_t(usage.blocks)
            st.f_bfree = fsblkcnt_t(usage.freeBlocks)
            st.f_bavail = fsblkcnt_t(usage.availableBlocks)
            st.f_files = fsfilcnt_t(usage.inodes)
            st.f_ffree = fsfilcnt_t(usage.freeInodes)
            st.f_favail = fsfilcnt_t(usage.freeInodes)
            st.f_namemax = UInt(usage.maxNameLength)
            fuse_reply_statfs(req, &st)
        }
    }

    // MARK: Extended attributes

    func setxattr(_ req: fuse_req_t?, _ node: fuse_ino_t, _ text: UnsafePointer<CChar>?, _ value: UnsafePointer<CChar>?,
                  _ size: Int, _ flags: Int32) {
        withAttributeName(req, text) { name throws(HoldfastError) in
            let number = inode(node)
            let mode: XattrSetMode = switch flags {
            case xattrCreate: .create
            case xattrReplace: .replace
            case 0: .createOrReplace
            default: throw .invalidArgument("setxattr flags \(flags)")
            }
            try fs.setXattr(number, name: name, value: Array(UnsafeRawBufferPointer(start: value, count: size)), mode: mode)
            fuse_reply_err(req, 0)
        }
    }

    func getxattr(_ req: fuse_req_t?, _ node: fuse_ino_t, _ text: UnsafePointer<CChar>?, _ size: Int) {
        withAttributeName(req, text) { name throws(HoldfastError) in
            let all = try fs.xattrs(try fs.inode(inode(node)))
            guard let found = all.first(where: { $0.name == name }) else { throw .noSuchAttribute(String(decoding: name, as: UTF8.self)) }
            replySized(req, found.value, size)
        }
    }

    private static let namespaces: Set<String> = ["user.", "trusted.", "security.", "system."]

    func listxattr(_ req: fuse_req_t?, _ node: fuse_ino_t, _ size: Int) {
        respond(req) { () throws(HoldfastError) in
            var all = try fs.xattrs(try fs.inode(inode(node)))
            // trusted.* is listed to the privileged only, as the kernel's ext4 lists it (root
            // stands for CAP_SYS_ADMIN here: FUSE does not pass capabilities).
            if fuse_req_ctx(req)!.pointee.uid != 0 { all.removeAll { $0.name.starts(with: Array("trusted.".utf8)) } }
            replySized(req, all.flatMap { $0.name + [0] }, size)
        }
    }

    func removexattr(_ req: fuse_req_t?, _ node: fuse_ino_t, _ text: UnsafePointer<CChar>?) {
        withAttributeName(req, text) { name throws(HoldfastError) in
            try fs.removeXattr(inode(node), name: name)
            fuse_reply_err(req, 0)
        }
    }

    /// Runs `body` with an xattr name checked as the kernel's VFS checks it for a filesystem of
    /// its own: not empty (EINVAL), at most 255 bytes (ERANGE).
    private func withAttributeName(_ req: fuse_req_t?, _ text: UnsafePointer<CChar>?, _ body: ([UInt8]) throws(HoldfastError) -> Void) {
        guard let text, strlen(text) > 0 else { return fail(req, EINVAL) }
        guard strlen(text) <= 255 else { return fail(req, ERANGE) }
        // A namespace with nothing after it ("user.") names no attribute.
        guard !Self.namespaces.contains(String(cString: text)) else { return fail(req, EINVAL) }
        respond(req) { () throws(HoldfastError) in try body(Array(UnsafeRawBufferPointer(start: text, count: strlen(text)))) }
    }

    /// getxattr and listxattr's protocol: size 0 asks for the length, a short buffer is ERANGE.
    private func replySized(_ req: fuse_req_t?, _ bytes: [UInt8], _ size: Int) {
        if size == 0 { fuse_reply_xattr(req, bytes.count); return }
        guard bytes.count <= size else { fuse_reply_err(req, ERANGE); return }
        bytes.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
    }
}

extension FileType {
    /// The S_IFMT bits of this type, for directory entries.
    var modeBits: UInt32 {
        switch self {
        case .regular: 0o100000
        case .directory: 0o040000
        case .symlink: 0o120000
        case .characterDevice: 0o020000
        case .blockDevice: 0o060000
        case .fifo: 0o010000
        case .socket: 0o140000
        default: 0
        }
    }
}

/// A reply buffer charged to the budget (site `fuse.reply`) for as long as the reply is built.
struct ReplyBuffer {
    let pointer: UnsafeMutablePointer<CChar>
    let size: Int
    let budget: MemoryBudget

    init(_ size: Int, budget: MemoryBudget) throws(HoldfastError) {
        do { try budget.chargeOrThrow(size, at: .fuseReply) } catch { throw .outOfMemory(error) }
        self.size = size
        self.budget = budget
        pointer = .allocate(capacity: max(size, 1))
    }

    func free() {
        pointer.deallocate()
        budget.uncharge(size, for: .fuseReply)
    }
}

/// Replies `code` to a request, in a function that returns nothing.
@inline(__always)
private func fail(_ req: fuse_req_t?, _ code: Int32) { fuse_reply_err(req, code) }
