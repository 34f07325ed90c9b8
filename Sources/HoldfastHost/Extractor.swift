#if canImport(Glibc)
import Glibc
#endif
import CHoldfastShim
import Holdfast

extension AllocationSite {
    static let extractHardLink = AllocationSite("extract.hard-link", .mayFail, .inode, "where extract put the first link of a multiply-linked inode")

    /// The host bridges' sites (`holdfast sites` lists them after the engine's).
    public static let hostSites: [AllocationSite] = [.extractHardLink]
}

/// Options for copying a tree out of the image.
public struct ExtractOptions: Sendable {
    /// Allow a destination that already has files in it (entries of the same name are replaced).
    public var force = false
    /// Restore owners (only root can); nil means "when running as root".
    public var restoreOwners: Bool?
    public init(force: Bool = false, restoreOwners: Bool? = nil) {
        self.force = force
        self.restoreOwners = restoreOwners
    }
}

/// Running totals, passed to the progress callback.
public struct ExtractProgress: Sendable {
    public var files = 0
    public var directories = 0
    public var bytes: UInt64 = 0
    /// Entries that could not be extracted (each reported through `problem`).
    public var errors = 0
    public var skippedDevices = 0
}

/// Copies a tree out of an image onto the host. Never writes outside the destination: every entry is
/// created relative to an open directory descriptor of a directory this run created or checked,
/// never following symlinks, and names that could climb out ('..', '/') are refused.
public final class Extractor {
    let fs: Filesystem
    let options: ExtractOptions
    let restoreOwners: Bool
    var progress = ExtractProgress()
    let onProgress: (ExtractProgress) -> Void
    let onProblem: (String) -> Void
    /// Inodes with more than one link: where the first copy went (path relative to the destination).
    var firstLinks: [UInt32: [UInt8]] = [:]
    /// Bytes charged at `.extractHardLink` for `firstLinks`.
    var firstLinksBytes = 0
    var rootFD: Int32 = -1
    /// Running out of memory ends the walk: it is reported as the run's error, not per entry.
    var fatal: HoldfastError?
    /// The directories on the path being extracted: a corrupt image can list a directory inside
    /// itself, and the walk must neither loop nor recurse without end.
    private var ancestors: Set<UInt32> = []
    /// Deeper than any host path can reach (PATH_MAX is 4,096 bytes, two a level at least).
    static let deepestNesting = 2048

    public init(_ fs: Filesystem, options: ExtractOptions = ExtractOptions(),
                onProgress: @escaping (ExtractProgress) -> Void = { _ in },
                onProblem: @escaping (String) -> Void = { _ in }) {
        self.fs = fs
        self.options = options
        self.restoreOwners = options.restoreOwners ?? (geteuid() == 0)
        self.onProgress = onProgress
        self.onProblem = onProblem
    }

    /// Extracts `source` (a directory or a single entry in the image) into `destination`.
    /// Per-entry failures are reported through `onProblem` and counted; the walk goes on.
    /// Running out of memory stops the walk and is thrown (what was extracted so far stays).
    public func run(source: String = "/", destination: String) throws(HoldfastError) -> ExtractProgress {
        defer {
            firstLinks = [:]
            if firstLinksBytes > 0 { fs.budget.uncharge(firstLinksBytes, for: .extractHardLink) }
            firstLinksBytes = 0
        }
        let top = try fs.resolve(source, followFinal: true)
        var created = false
        if mkdir(destination, 0o700) == 0 {
            created = true
        } else if errno != EEXIST {
            // Create missing parents as `mkdir -p` would.
            let e = errno
            guard e == ENOENT, makeParents(destination), mkdir(destination, 0o700) == 0 else {
                throw .hostFile(path: destination, operation: "create directory", errno: e == ENOENT ? errno : e)
            }
            created = true
        }
        let fd = open(destination, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw .hostFile(path: destination, operation: "open", errno: errno) }
        defer { close(fd) }
        rootFD = fd
        if !created && !options.force && !isEmptyDirectory(fd) {
            throw .invalidArgument("\(destination) exists and is not empty (use --force to extract into it)")
        }
        if top.fileType == .directory {
            extractChildren(of: top, into: fd, relative: [])
            if created { applyMetadata(top, dirFD: -1, name: [], fd: fd, display: destination) }
        } else {
            let name = Array(source.utf8.split(separator: UInt8(ascii: "/")).last ?? [])
            extractEntry(DirectoryEntry(inode: top.number, name: name, fileType: 0), preloaded: top, parent: top.number, in: fd, relative: [])
        }
        if let fatal { throw fatal }
        onProgress(progress)
        return progress
    }

    private func makeParents(_ path: String) -> Bool {
        var prefix = ""
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        for part in parts.dropLast() {
            prefix += (prefix.isEmpty && !path.hasPrefix("/") ? "" : "/") + part
            if mkdir(prefix, 0o755) != 0 && errno != EEXIST { return false }
        }
        return true
    }

    private func isEmptyDirectory(_ fd: Int32) -> Bool {
        let dup = dup(fd)
        guard dup >= 0, let dir = fdopendir(dup) else { return false }
        defer { closedir(dir) }
        while let e = readdir(dir) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in String(cString: raw.bindMemory(to: CChar.self).baseAddress!) }
            if name != "." && name != ".." { return false }
        }
        return true
    }

    private func display(_ relative: [UInt8], _ name: [UInt8]) -> String {
        "/" + String(decoding: relative.isEmpty ? name : relative + [UInt8(ascii: "/")] + name, as: UTF8.self)
    }

    private func problem(_ message: String) {
        progress.errors += 1
        onProblem(message)
    }

    /// A failure at one entry: out of memory ends the walk, anything else is counted and skipped.
    private func failed(_ shown: String, _ error: any Error) {
        let e = error as? HoldfastError ?? .internal("\(type(of: error)): \(error)")
        if case .outOfMemory = e {
            if fatal == nil { fatal = e }
            return
        }
        problem("\(shown): \(e)")
    }

    private func extractChildren(of dir: Inode, into fd: Int32, relative: [UInt8]) {
        do {
            try fs.withDirectoryEntries(dir) { entries in
                for entry in entries where !entry.isDotOrDotDot {
                    if fatal != nil { return }
                    extractEntry(entry, preloaded: nil, parent: dir.number, in: fd, relative: relative)
                }
            }
        } catch {
            failed(relative.isEmpty ? "/" : display([], relative), error)
        }
    }

    private func extractEntry(_ entry: DirectoryEntry, preloaded: Inode?, parent: UInt32, in dirFD: Int32, relative: [UInt8]) {
        let name = entry.name
        let shown = display(relative, name)
        // A name that could address anything but a new child of dirFD is refused.
        guard !name.isEmpty, name.count <= 255, !name.contains(0), !name.contains(UInt8(ascii: "/")),
              name != [0x2E], name != [0x2E, 0x2E] else {
            problem("\(shown): refusing unsafe name in the image")
            return
        }
        let inode: Inode
        do { inode = try preloaded ?? fs.inode(entry.inode, linkedFrom: parent) } catch {
            failed(shown, error)
            return
        }
        let childRelative = relative.isEmpty ? name : relative + [UInt8(ascii: "/")] + name
        if inode.fileType != .directory && inode.linksCount > 1 {
            if let first = firstLinks[inode.number] {
                replaceExisting(dirFD, name, isDirectory: false)
                let ok = first.withCString { src in name.withCString { dst in linkat(rootFD, src, dirFD, dst, 0) } } == 0
                if !ok { problem("\(shown): hard link to /\(String(decoding: first, as: UTF8.self)): \(errnoText())") }
                return
            }
            let cost = childRelative.count + 64
            do { try fs.budget.chargeOrThrow(cost, at: .extractHardLink) } catch {
                failed(shown, HoldfastError.outOfMemory(error))
                return
            }
            firstLinksBytes += cost
            firstLinks[inode.number] = childRelative
        }
        do {
            switch inode.fileType {
            case .directory:
                guard !ancestors.contains(inode.number) else {
                    throw HoldfastError.corrupt(CorruptionError(.directoryBlock, inode: parent, .loop("directory inode \(inode.number) is listed inside itself")))
                }
                guard ancestors.count < Self.deepestNesting else {
                    throw HoldfastError.invalidArgument("directories nested deeper than \(Self.deepestNesting) levels")
                }
                let fd = try makeDirectory(dirFD, name, shown)
                defer { close(fd) }
                progress.directories += 1
                ancestors.insert(inode.number)
                extractChildren(of: inode, into: fd, relative: childRelative)
                ancestors.remove(inode.number)
                applyMetadata(inode, dirFD: -1, name: name, fd: fd, display: shown)
            case .regular:
                try writeFile(inode, dirFD, name, shown)
            case .symlink:
                let target = try fs.readLink(inode)
                replaceExisting(dirFD, name, isDirectory: false)
                guard !target.contains(0) else { throw HoldfastError.corrupt(CorruptionError(.symlink, inode: inode.number, .impossible("target contains a NUL byte"))) }
                let rc = target.withCString { t in name.withCString { n in symlinkat(t, dirFD, n) } }
                guard rc == 0 else { throw HoldfastError.hostFile(path: shown, operation: "symlink", errno: errno) }
                applyMetadata(inode, dirFD: dirFD, name: name, fd: -1, display: shown)
                progress.files += 1
            case .fifo, .socket, .characterDevice, .blockDevice:
                var kind: mode_t = S_IFIFO
                var dev: dev_t = 0
                switch inode.fileType {
                case .socket: kind = S_IFSOCK
                case .characterDevice, .blockDevice:
                    guard restoreOwners else {
                        progress.skippedDevices += 1
                        onProblem("\(shown): device node skipped (creating devices needs root)")
                        return
                    }
                    kind = inode.fileType == .characterDevice ? S_IFCHR : S_IFBLK
                    let (major, minor) = inode.device
                    dev = hf_makedev(major, minor)
                default: break
                }
                replaceExisting(dirFD, name, isDirectory: false)
                let rc = name.withCString { mknodat(dirFD, $0, kind | 0o600, dev) }
                guard rc == 0 else { throw HoldfastError.hostFile(path: shown, operation: "mknod", errno: errno) }
                applyMetadata(inode, dirFD: dirFD, name: name, fd: -1, display: shown)
                progress.files += 1
            case .unknown:
                problem("\(shown): inode \(inode.number) has unknown file type (mode 0o\(String(inode.mode, radix: 8)))")
            }
        } catch {
            failed(shown, error)
        }
        onProgress(progress)
    }

    /// With --force, an existing non-directory of the same name is replaced.
    private func replaceExisting(_ dirFD: Int32, _ name: [UInt8], isDirectory: Bool) {
        guard options.force else { return }
        var st = stat()
        let exists = name.withCString { fstatat(dirFD, $0, &st, AT_SYMLINK_NOFOLLOW) } == 0
        if exists && (st.st_mode & S_IFMT) != S_IFDIR { _ = name.withCString { unlinkat(dirFD, $0, 0) } }
    }

    private func makeDirectory(_ dirFD: Int32, _ name: [UInt8], _ shown: String) throws -> Int32 {
        replaceExisting(dirFD, name, isDirectory: true)
        let rc = name.withCString { mkdirat(dirFD, $0, 0o700) }
        if rc != 0 && !(errno == EEXIST && options.force) {
            throw HoldfastError.hostFile(path: shown, operation: "create directory", errno: errno)
        }
        // O_NOFOLLOW: an existing symlink in the destination is never followed out of it.
        let fd = name.withCString { openat(dirFD, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        guard fd >= 0 else { throw HoldfastError.hostFile(path: shown, operation: "open directory", errno: errno) }
        return fd
    }

    private func writeFile(_ inode: Inode, _ dirFD: Int32, _ name: [UInt8], _ shown: String) throws {
        replaceExisting(dirFD, name, isDirectory: false)
        let fd = name.withCString { openat(dirFD, $0, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600) }
        guard fd >= 0 else { throw HoldfastError.hostFile(path: shown, operation: "create", errno: errno) }
        defer { close(fd) }
        do {
            progress.bytes += try fs.copyData(inode, to: fd)
        } catch {
            // A file whose contents could not be copied is not left behind half-written.
            _ = name.withCString { unlinkat(dirFD, $0, 0) }
            // A failed write is about the destination; name it by its path there.
            if case .io(let e) = error, e.operation == .write {
                throw HoldfastError.hostFile(path: shown, operation: "write", errno: e.errno)
            }
            throw error
        }
        guard ftruncate(fd, off_t(inode.size)) == 0 else {
            throw HoldfastError.hostFile(path: shown, operation: "set size of", errno: errno)
        }
        applyMetadata(inode, dirFD: -1, name: name, fd: fd, display: shown)
        progress.files += 1
    }

    /// Xattrs, owner, mode and times, in that order (chown clears set-id bits; times go last).
    /// Uses `fd` when the entry is open, else (dirFD, name) without following symlinks.
    private func applyMetadata(_ inode: Inode, dirFD: Int32, name: [UInt8], fd: Int32, display shown: String) {
        let isLink = inode.fileType == .symlink
        do {
            for x in try fs.xattrs(inode) {
                let rc: Int32 = x.name.withCString { n in
                    x.value.withUnsafeBytes { v in
                        if fd >= 0 { return hf_fsetxattr(fd, n, v.baseAddress, v.count, 0) }
                        // No setxattrat in glibc: name the entry through its directory's descriptor.
                        let path = "/proc/self/fd/\(dirFD)/" + String(decoding: name, as: UTF8.self)
                        return hf_lsetxattr(path, n, v.baseAddress, v.count, 0)
                    }
                }
                if rc != 0 { problem("\(shown): set xattr \(x.nameString): \(errnoText())") }
            }
        } catch {
            failed(shown, error)
        }
        if restoreOwners {
            let rc = fd >= 0 ? fchown(fd, inode.uid, inode.gid)
                : name.withCString { fchownat(dirFD, $0, inode.uid, inode.gid, AT_SYMLINK_NOFOLLOW) }
            if rc != 0 { problem("\(shown): chown: \(errnoText())") }
        }
        if !isLink {
            let rc = fd >= 0 ? fchmod(fd, mode_t(inode.permissions))
                : name.withCString { fchmodat(dirFD, $0, mode_t(inode.permissions), 0) }
            if rc != 0 { problem("\(shown): chmod: \(errnoText())") }
        }
        var times = [
            timespec(tv_sec: Int(inode.accessTime.seconds), tv_nsec: Int(inode.accessTime.nanoseconds)),
            timespec(tv_sec: Int(inode.modificationTime.seconds), tv_nsec: Int(inode.modificationTime.nanoseconds)),
        ]
        let rc = fd >= 0 ? futimens(fd, &times)
            : name.withCString { utimensat(dirFD, $0, &times, AT_SYMLINK_NOFOLLOW) }
        if rc != 0 { problem("\(shown): set times: \(errnoText())") }
    }
}

func errnoText() -> String { String(cString: strerror(errno)) }

extension Array where Element == UInt8 {
    /// The bytes as a NUL-terminated C string for the duration of `body`.
    func withCString<R>(_ body: (UnsafePointer<CChar>) throws -> R) rethrows -> R {
        try (self + [0]).withUnsafeBufferPointer { buf in
            try buf.withMemoryRebound(to: CChar.self) { try body($0.baseAddress!) }
        }
    }
}
