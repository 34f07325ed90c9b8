#if canImport(Glibc)
import Glibc
#endif
import CHoldfastShim
import HoldfastFormat

// Linux's lseek whences for sparse files (not exported by Glibc's module map).
private let seekData: Int32 = 3
private let seekHole: Int32 = 4
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
extension Filesystem {
    /// Copies the host file or directory `hostPath` to `name` in directory `parent`.
    /// `progress` is called after each file with the running totals.
    @discardableResult
    public func importHost(_ hostPath: String, into parent: UInt32, name: [UInt8],
                           progress: ((ImportSummary) -> Void)? = nil) throws(HoldfastError) -> ImportSummary {
        var summary = ImportSummary()
        var links: [HostFileID: UInt32] = [:]
        try importNode(Array(hostPath.utf8), into: parent, name: name, summary: &summary, links: &links, progress: progress)
        return summary
    }

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

    func importNode(_ path: [UInt8], into parent: UInt32, name: [UInt8], summary: inout ImportSummary,
                            links: inout [HostFileID: UInt32], progress: ((ImportSummary) -> Void)?) throws(HoldfastError) {
        var st = Glibc.stat()
        guard withCPath(path, { lstat($0, &st) }) == 0 else { throw hostError(path, "stat") }
        let type = st.st_mode & S_IFMT
        let owner = Ownership(uid: st.st_uid, gid: st.st_gid, permissions: UInt16(st.st_mode & 0o7777))
        let times = (access: Timestamp(seconds: Int64(st.st_atim.tv_sec), nanoseconds: UInt32(st.st_atim.tv_nsec)),
                     modification: Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: UInt32(st.st_mtim.tv_nsec)))
        let id = HostFileID(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        if type != S_IFDIR && st.st_nlink > 1, let first = links[id] {
            do { try link(first, in: parent, name: name) } catch { throw error.naming(String(decoding: path, as: UTF8.self)) }
            summary.hardLinks += 1
            return
        }
        let number: UInt32
        switch type {
        case S_IFDIR:
            number = try named(path) { () throws(HoldfastError) in try create(name, in: parent, kind: .directory, owner: owner) }
            summary.directories += 1
            guard let dir = withCPath(path, { opendir($0) }) else { throw hostError(path, "opendir") }
            var names: [[UInt8]] = []
            while let entry = readdir(dir) {
                let n = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
                if n != [0x2E] && n != [0x2E, 0x2E] { names.append(n) }
            }
            closedir(dir)
            // Reading the directory moved its access time; copy the time it has now.
            _ = withCPath(path) { lstat($0, &st) }
            for child in names.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
                let childPath = (path.last == 0x2F ? path : path + [0x2F]) + child
                try importNode(childPath, into: number, name: child, summary: &summary, links: &links, progress: progress)
            }
        case S_IFREG:
            number = try named(path) { () throws(HoldfastError) in try create(name, in: parent, kind: .regular, owner: owner, times: times) }
            // A file whose allocated blocks cover its size has no holes to look for.
            let dense = UInt64(st.st_blocks) * 512 >= UInt64(st.st_size)
            summary.bytes += try copyHostFile(path, size: UInt64(st.st_size), dense: dense, to: number)
            summary.files += 1
        case S_IFLNK:
            var target = [UInt8](repeating: 0, count: Int(PATH_MAX) + 1)
            let n = target.withUnsafeMutableBufferPointer { t in withCPath(path) { readlink($0, t.baseAddress!, t.count) } }
            guard n > 0 else { throw hostError(path, "readlink") }
            number = try named(path) { () throws(HoldfastError) in
                try create(name, in: parent, kind: .symlink(target: Array(target[0..<n])), owner: owner, times: times)
            }
            summary.symlinks += 1
        case S_IFCHR, S_IFBLK:
            let dev = UInt64(st.st_rdev)
            let major = UInt32(truncatingIfNeeded: ((dev >> 8) & 0xFFF) | ((dev >> 32) & ~0xFFF))
            let minor = UInt32(truncatingIfNeeded: (dev & 0xFF) | ((dev >> 12) & ~0xFF))
            let kind: NodeKind = type == S_IFCHR ? .characterDevice(major: major, minor: minor) : .blockDevice(major: major, minor: minor)
            number = try named(path) { () throws(HoldfastError) in try create(name, in: parent, kind: kind, owner: owner, times: times) }
            summary.specialFiles += 1
        case S_IFIFO, S_IFSOCK:
            number = try named(path) { () throws(HoldfastError) in
                try create(name, in: parent, kind: type == S_IFIFO ? .fifo : .socket, owner: owner, times: times)
            }
            summary.specialFiles += 1
        default:
            throw HoldfastError.invalidArgument("\(String(decoding: path, as: UTF8.self)): unknown file type")
        }
        if type != S_IFDIR && st.st_nlink > 1 { links[id] = number }
        let attributes = try hostXattrs(path)
        if !attributes.isEmpty {
            do { try replaceXattrs(number, attributes) } catch { throw error.naming(String(decoding: path, as: UTF8.self)) }
        }
        // A directory's times change as its entries arrive: set them once it is complete.
        if type == S_IFDIR {
            try setAttributes(number, AttributeChanges(
                accessTime: Timestamp(seconds: Int64(st.st_atim.tv_sec), nanoseconds: UInt32(st.st_atim.tv_nsec)),
                modificationTime: Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: UInt32(st.st_mtim.tv_nsec))))
        }
        progress?(summary)
    }

    /// The host file's extended attributes (llistxattr/lgetxattr, symlinks not followed).
    private func hostXattrs(_ path: [UInt8]) throws(HoldfastError) -> [XattrValue] {
        var size = withCPath(path) { hf_llistxattr($0, nil, 0) }
        if size < 0 {
            if errno == ENOTSUP || errno == ENOSYS { return [] }
            throw hostError(path, "llistxattr")
        }
        guard size > 0 else { return [] }
        var list = [CChar](repeating: 0, count: size)
        size = withCPath(path) { p in list.withUnsafeMutableBufferPointer { hf_llistxattr(p, $0.baseAddress, $0.count) } }
        guard size >= 0 else { throw hostError(path, "llistxattr") }
        var out: [XattrValue] = []
        for nameBytes in list[0..<size].split(separator: 0) {
            let name = nameBytes.map { UInt8(bitPattern: $0) }
            let cname = Array(nameBytes) + [0]
            var value = [UInt8](repeating: 0, count: 65536)
            let n = withCPath(path) { p in value.withUnsafeMutableBytes { hf_lgetxattr(p, cname, $0.baseAddress, $0.count) } }
            guard n >= 0 else { throw hostError(path, "lgetxattr " + String(decoding: name, as: UTF8.self)) }
            out.append(XattrValue(name: name, value: Array(value[0..<n])))
        }
        return out
    }

    private func named<T>(_ path: [UInt8], _ body: () throws(HoldfastError) -> T) throws(HoldfastError) -> T {
        do { return try body() } catch { throw error.naming(String(decoding: path, as: UTF8.self)) }
    }

    /// Copies the data regions of a host file (seekData/seekHole), then sets the size so a
    /// trailing hole stays a hole. Returns the bytes copied.
    private func copyHostFile(_ path: [UInt8], size: UInt64, dense: Bool, to inode: UInt32) throws(HoldfastError) -> UInt64 {
        // O_NOATIME keeps the copy from touching the source's access time (allowed to its owner and root).
        var fd = withCPath(path) { Glibc.open($0, O_RDONLY | oNoAtime) }
        if fd < 0 && errno == EPERM { fd = withCPath(path) { Glibc.open($0, O_RDONLY) } }
        guard fd >= 0 else { throw hostError(path, "open") }
        defer { Glibc.close(fd) }
        if dense {
            if size > 0 { try write(inode, at: 0, source: .file(fd: fd, offset: 0, count: Int(size)), keepTimes: true) }
            return size
        }
        var copied: UInt64 = 0
        var position: off_t = 0
        while UInt64(position) < size {
            let dataStart = lseek(fd, position, seekData)
            if dataStart < 0 {
                if errno == ENXIO { break }  // no data past here: the rest is a hole
                throw hostError(path, "seek")
            }
            var dataEnd = lseek(fd, dataStart, seekHole)
            if dataEnd < 0 || UInt64(dataEnd) > size { dataEnd = off_t(size) }
            let n = Int(dataEnd - dataStart)
            if n > 0 {
                try write(inode, at: UInt64(dataStart), source: .file(fd: fd, offset: UInt64(dataStart), count: n), keepTimes: true)
                copied += UInt64(n)
            }
            position = dataEnd
        }
        if let node = try? self.inode(inode), node.size != size { try truncate(inode, to: size, keepTimes: true) }
        return copied
    }
}


extension Filesystem {
    /// Fills the root directory from the host directory `hostPath` (mkfs --from): its entries become
    /// the root's, and the root takes the directory's owner, mode and times.
    @discardableResult
    public func populateRoot(from hostPath: String, progress: ((ImportSummary) -> Void)? = nil) throws(HoldfastError) -> ImportSummary {
        var st = Glibc.stat()
        guard lstat(hostPath, &st) == 0 else { throw .hostFile(path: hostPath, operation: "stat", errno: errno) }
        guard st.st_mode & S_IFMT == S_IFDIR else { throw .notADirectory(hostPath) }
        guard let dir = opendir(hostPath) else { throw .hostFile(path: hostPath, operation: "opendir", errno: errno) }
        var names: [[UInt8]] = []
        while let entry = readdir(dir) {
            let n = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
            if n != [0x2E] && n != [0x2E, 0x2E] { names.append(n) }
        }
        closedir(dir)
        _ = lstat(hostPath, &st)
        var summary = ImportSummary()
        var links: [HostFileID: UInt32] = [:]
        let base = Array(hostPath.utf8)
        let root = try inode(Self.rootInode)
        for name in names.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            if name == Array("lost+found".utf8), (try? lookup(name, in: root)) != nil { continue }
            try importNode((base.last == 0x2F ? base : base + [0x2F]) + name, into: Self.rootInode, name: name,
                           summary: &summary, links: &links, progress: progress)
        }
        try setAttributes(Self.rootInode, AttributeChanges(
            permissions: UInt16(st.st_mode & 0o7777), uid: st.st_uid, gid: st.st_gid,
            accessTime: Timestamp(seconds: Int64(st.st_atim.tv_sec), nanoseconds: UInt32(st.st_atim.tv_nsec)),
            modificationTime: Timestamp(seconds: Int64(st.st_mtim.tv_sec), nanoseconds: UInt32(st.st_mtim.tv_nsec))))
        return summary
    }
}
