#if canImport(Glibc)
import Glibc
#endif
import CHoldfastShim
import Holdfast

private let oNoAtime: Int32 = 0o1000000

/// What an import copied.
public struct ImportSummary: Sendable, Equatable {
    public var files = 0
    public var directories = 0
    public var symlinks = 0
    public var specialFiles = 0
    public var hardLinks = 0
    public var bytes: UInt64 = 0
}

/// Copying host files into the image like `cp -a`: every file type, owners, permission bits,
/// nanosecond access and modification times, hard links within the copy, and sparse files with
/// their holes (trailing holes included).
/// One import's walk of the host tree: it reaches the image only through the filesystem's public
/// operations.
struct HostImporter {
    let fs: Filesystem

    struct HostFileID: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    private func hostError(_ path: [UInt8], _ operation: String) -> HoldfastError {
        .hostFile(path: String(decoding: path, as: UTF8.self), operation: operation, errno: errno)
    }

    /// Host paths stay bytes end to end, so names that are not UTF-8 copy exactly.
    private func withCPath<R>(_ path: [UInt8], _ body: (UnsafePointer<CChar>) -> R) -> R {
        (path.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Imports the host entry `leaf` of the directory open as `dirFD` (AT_FDCWD and a whole path
    /// at the top); `path` names it in errors. Lookups go through the directory's descriptor, so
    /// no call walks the whole path again.
    func importNode(_ path: [UInt8], at dirFD: Int32, leaf: [UInt8], into parent: UInt32, name: [UInt8], summary: inout ImportSummary,
                    links: inout [HostFileID: UInt32], progress: ((ImportSummary) -> Void)?) throws(HoldfastError) {
        var st = Glibc.stat()
        guard withCPath(leaf, { fstatat(dirFD, $0, &st, AT_SYMLINK_NOFOLLOW) }) == 0 else { throw hostError(path, "stat") }
        let type = st.st_mode & S_IFMT
        let owner = Ownership(uid: st.st_uid, gid: st.st_gid, permissions: UInt16(st.st_mode & 0o7777), exact: true)
        let times = (access: Timestamp(seconds: Int64(st.st_atim.tv_sec), nanoseconds: UInt32(st.st_atim.tv_nsec)),
                     modification: Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: UInt32(st.st_mtim.tv_nsec)))
        let id = HostFileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        if type != S_IFDIR && st.st_nlink > 1, let first = links[id] {
            do { try fs.link(first, in: parent, name: name) } catch { throw error.naming(String(decoding: path, as: UTF8.self)) }
            summary.hardLinks += 1
            return
        }
        let number: UInt32
        var attributes: [XattrValue]?
        switch type {
        case S_IFDIR:
            number = try named(path) { () throws(HoldfastError) in try fs.create(name, in: parent, kind: .directory, owner: owner) }
            summary.directories += 1
            let fd = withCPath(leaf) { openat(dirFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
            guard fd >= 0 else { throw hostError(path, "open directory") }
            let (dir, names) = try Self.listDirectory(fd, String(decoding: path, as: UTF8.self))
            defer { closedir(dir) }
            // Reading the directory moved its access time; copy the time it has now.
            _ = fstat(fd, &st)
            for child in names {
                let childPath = (path.last == 0x2F ? path : path + [0x2F]) + child
                try importNode(childPath, at: fd, leaf: child, into: number, name: child, summary: &summary, links: &links, progress: progress)
            }
            attributes = try hostXattrs(path, fd: fd)
        case S_IFREG:
            number = try named(path) { () throws(HoldfastError) in try fs.create(name, in: parent, kind: .regular, owner: owner, times: times) }
            // A file whose allocated blocks cover its size has no holes to look for.
            let dense = UInt64(st.st_blocks) * 512 >= UInt64(st.st_size)
            let (bytes, xattrs) = try copyHostFile(path, at: dirFD, leaf: leaf, size: UInt64(st.st_size), dense: dense, to: number)
            summary.bytes += bytes
            attributes = xattrs
            summary.files += 1
        case S_IFLNK:
            var target = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = target.withUnsafeMutableBufferPointer { t in withCPath(path) { readlink($0, t.baseAddress!, t.count) } }
            guard n > 0 else { throw hostError(path, "readlink") }
            number = try named(path) { () throws(HoldfastError) in
                try fs.create(name, in: parent, kind: .symlink(target: Array(target[0..<n])), owner: owner, times: times)
            }
            summary.symlinks += 1
        case S_IFCHR, S_IFBLK:
            let dev = UInt64(st.st_rdev)
            let major = UInt32(truncatingIfNeeded: ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF))
            let minor = UInt32(truncatingIfNeeded: (dev & 0xFF) | ((dev >> 12) & ~0xFF))
            let kind: NodeKind = type == S_IFCHR ? .characterDevice(major: major, minor: minor) : .blockDevice(major: major, minor: minor)
            number = try named(path) { () throws(HoldfastError) in try fs.create(name, in: parent, kind: kind, owner: owner, times: times) }
            summary.specialFiles += 1
        case S_IFIFO, S_IFSOCK:
            number = try named(path) { () throws(HoldfastError) in
                try fs.create(name, in: parent, kind: type == S_IFIFO ? .fifo : .socket, owner: owner, times: times)
            }
            summary.specialFiles += 1
        default:
            throw HoldfastError.invalidArgument("\(String(decoding: path, as: UTF8.self)): unknown file type")
        }
        if type != S_IFDIR && st.st_nlink > 1 { links[id] = number }
        let xattrs: [XattrValue]
        if let attributes { xattrs = attributes } else { xattrs = try hostXattrs(path, fd: nil) }
        if !xattrs.isEmpty {
            do { try fs.replaceXattrs(number, xattrs) } catch { throw error.naming(String(decoding: path, as: UTF8.self)) }
        }
        // A directory's times change as its entries arrive: set them once it is complete.
        if type == S_IFDIR {
            try fs.setAttributes(number, AttributeChanges(
                accessTime: Timestamp(seconds: Int64(st.st_atim.tv_sec), nanoseconds: UInt32(st.st_atim.tv_nsec)),
                modificationTime: Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: UInt32(st.st_mtim.tv_nsec))))
        }
        progress?(summary)
    }

    /// The names in the directory open as `fd`, '.' and '..' left out, in byte order (an import
    /// is reproducible). The stream owns `fd` from here: the caller closes it with `closedir`.
    static func listDirectory(_ fd: Int32, _ path: String) throws(HoldfastError) -> (stream: OpaquePointer, names: [[UInt8]]) {
        guard let dir = fdopendir(fd) else {
            let e = errno
            Glibc.close(fd)
            throw .hostFile(path: path, operation: "opendir", errno: e)
        }
        var names: [[UInt8]] = []
        while let entry = readdir(dir) {
            let n = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
            if n != [0x2E] && n != [0x2E, 0x2E] { names.append(n) }
        }
        return (dir, names.sorted { $0.lexicographicallyPrecedes($1) })
    }

    /// The host file's extended attributes: through `fd` when it is open (no path walk), else by
    /// path with llistxattr/lgetxattr (symlinks and special files, not followed).
    private func hostXattrs(_ path: [UInt8], fd: Int32?) throws(HoldfastError) -> [XattrValue] {
        func list(_ buffer: UnsafeMutablePointer<CChar>?, _ count: Int) -> Int {
            if let fd { return hf_flistxattr(fd, buffer, count) }
            return withCPath(path) { hf_llistxattr($0, buffer, count) }
        }
        var size = list(nil, 0)
        if size < 0 {
            if errno == ENOTSUP || errno == ENOSYS { return [] }
            throw hostError(path, "llistxattr")
        }
        guard size > 0 else { return [] }
        var names = [CChar](repeating: 0, count: size)
        size = names.withUnsafeMutableBufferPointer { list($0.baseAddress, $0.count) }
        guard size >= 0 else { throw hostError(path, "llistxattr") }
        var out: [XattrValue] = []
        for nameBytes in names[0..<size].split(separator: 0) {
            let name = nameBytes.map { UInt8(bitPattern: $0) }
            let cname = Array(nameBytes) + [0]
            var value = [UInt8](repeating: 0, count: 65536)
            let n = value.withUnsafeMutableBytes { v in
                if let fd { return hf_fgetxattr(fd, cname, v.baseAddress, v.count) }
                return withCPath(path) { hf_lgetxattr($0, cname, v.baseAddress, v.count) }
            }
            guard n >= 0 else { throw hostError(path, "lgetxattr " + String(decoding: name, as: UTF8.self)) }
            out.append(XattrValue(name: name, value: Array(value[0..<n])))
        }
        return out
    }

    private func named<T>(_ path: [UInt8], _ body: () throws(HoldfastError) -> T) throws(HoldfastError) -> T {
        do { return try body() } catch { throw error.naming(String(decoding: path, as: UTF8.self)) }
    }

    /// Copies the data regions of a host file (seekData/seekHole), then sets the size so a
    /// trailing hole stays a hole. Returns the bytes copied and the file's xattrs (read while it is open).
    private func copyHostFile(_ path: [UInt8], at dirFD: Int32, leaf: [UInt8], size: UInt64, dense: Bool,
                              to inode: UInt32) throws(HoldfastError) -> (UInt64, [XattrValue]) {
        // O_NOATIME keeps the copy from touching the source's access time (allowed to its owner and root).
        let flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC
        var fd = withCPath(leaf) { openat(dirFD, $0, flags | oNoAtime) }
        if fd < 0 && errno == EPERM { fd = withCPath(leaf) { openat(dirFD, $0, flags) } }
        guard fd >= 0 else { throw hostError(path, "open") }
        defer { Glibc.close(fd) }
        if dense {
            if size > 0 { try fs.write(inode, at: 0, fromFile: fd, source: 0, count: Int(size), keepTimes: true, delayAllocation: false) }
            return (size, try hostXattrs(path, fd: fd))
        }
        var copied: UInt64 = 0
        var position: off_t = 0
        while UInt64(position) < size {
            let dataStart = lseek(fd, position, Syscall.seekData)
            if dataStart < 0 {
                if errno == ENXIO { break }  // no data past here: the rest is a hole
                throw hostError(path, "seek")
            }
            var dataEnd = lseek(fd, dataStart, Syscall.seekHole)
            if dataEnd < 0 || UInt64(dataEnd) > size { dataEnd = off_t(size) }
            let n = Int(dataEnd - dataStart)
            if n > 0 {
                try fs.write(inode, at: UInt64(dataStart), fromFile: fd, source: UInt64(dataStart), count: n, keepTimes: true, delayAllocation: false)
                copied += UInt64(n)
            }
            position = dataEnd
        }
        if let node = try? fs.inode(inode), node.size != size { try fs.truncate(inode, to: size, keepTimes: true) }
        return (copied, try hostXattrs(path, fd: fd))
    }
}


extension Filesystem {
    /// Copies the host file or directory `hostPath` to `name` in directory `parent`, like `cp -a`.
    /// `progress` is called after each file with the running totals.
    @discardableResult
    public func importHost(_ hostPath: String, into parent: UInt32, name: [UInt8],
                           progress: ((ImportSummary) -> Void)? = nil) throws(HoldfastError) -> ImportSummary {
        var summary = ImportSummary()
        var links: [HostImporter.HostFileID: UInt32] = [:]
        let path = Array(hostPath.utf8)
        try HostImporter(fs: self).importNode(path, at: AT_FDCWD, leaf: path, into: parent, name: name,
                                              summary: &summary, links: &links, progress: progress)
        return summary
    }

    /// Fills the root directory from the host directory `hostPath` (mkfs --from): its entries become
    /// the root's, and the root takes the directory's owner, mode and times.
    @discardableResult
    public func populateRoot(from hostPath: String, progress: ((ImportSummary) -> Void)? = nil) throws(HoldfastError) -> ImportSummary {
        var st = Glibc.stat()
        guard lstat(hostPath, &st) == 0 else { throw .hostFile(path: hostPath, operation: "stat", errno: errno) }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw .hostFile(path: hostPath, operation: "import", errno: ENOTDIR) }
        let fd = Glibc.open(hostPath, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .hostFile(path: hostPath, operation: "open directory", errno: errno) }
        let (dir, names) = try HostImporter.listDirectory(fd, hostPath)
        defer { closedir(dir) }
        _ = fstat(fd, &st)
        var summary = ImportSummary()
        var links: [HostImporter.HostFileID: UInt32] = [:]
        let base = Array(hostPath.utf8)
        let root = try inode(Self.rootInode)
        for name in names {
            if name == Array("lost+found".utf8), (try? lookup(name, in: root)) != nil { continue }
            try HostImporter(fs: self).importNode((base.last == 0x2F ? base : base + [0x2F]) + name, at: fd, leaf: name, into: Self.rootInode, name: name,
                           summary: &summary, links: &links, progress: progress)
        }
        try setAttributes(Self.rootInode, AttributeChanges(
            permissions: UInt16(st.st_mode & 0o7777), uid: st.st_uid, gid: st.st_gid,
            accessTime: Timestamp(seconds: Int64(st.st_atim.tv_sec), nanoseconds: UInt32(st.st_atim.tv_nsec)),
            modificationTime: Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: UInt32(st.st_mtim.tv_nsec))))
        return summary
    }
}
