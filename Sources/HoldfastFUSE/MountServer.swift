#if canImport(Glibc)
import Glibc
#endif
import CFuse3
import CFuseDevice
import Holdfast
import Synchronization

/// How `holdfast mount` serves an image (see `MountCommand` for the user's words).
public struct MountOptions: Sendable {
    /// Serve reads only; the image is opened read-only and never changed.
    public var readOnly = false
    /// Let users other than the one who mounted use the mount (FUSE's allow_other).
    public var allowOther = false
    /// Let the kernel gather writes in its page cache and send them later (FUSE writeback cache).
    public var writebackCache = false
    /// How long the kernel may trust a name, and an inode's attributes, without asking (seconds).
    /// Safe to make long: every change to the image comes through this mount.
    public var entryTimeout = 60.0
    public var attributeTimeout = 1.0
    /// Worker threads of the session loop.
    public var threads = 8
    /// How long a worker that answered a request stays awake for the next one before it sleeps
    /// in poll(2) (microseconds; 0: at once). A stream of requests then finds it awake, which
    /// saves a server thread's wake-up per request; an idle mount wakes once every 200 ms.
    public var spinMicroseconds = 150
    /// During a stream of requests, ask the kernel (its CPU-latency QoS, /dev/cpu_dma_latency)
    /// to keep idle CPUs polling rather than asleep, so a reply wakes the process waiting for it
    /// at once: a sleeping CPU takes about 15 µs to wake on a virtual machine, more than most
    /// requests take to answer. The request is withdrawn this many milliseconds after the last
    /// request (0: never made); see `hf_fuse_loop_poll` for where it is not made at all.
    public var cpuLatencyMilliseconds = 10
    /// Reads of 32 KiB and more move the image's bytes into the reply with splice(2), not
    /// through a buffer of this process (`Filesystem.readSpliced`); false: always through one.
    public var splice = true
    /// The source shown by `mount` and `df` (FUSE's fsname); the image path by default.
    public var sourceName: String?
    /// Print every FUSE request (libfuse's debug output), with `-f`.
    public var debug = false

    public init() {}
}

extension AllocationSite {
    /// The mount's sites, for `holdfast sites`.
    public static let fuseSites: [AllocationSite] = [.fuseRequestBuffers, .fuseReply]

    /// The request buffers of the session's worker threads: libfuse allocates them, the budget
    /// is charged for them when the mount starts, so caches leave them room.
    public static let fuseRequestBuffers = AllocationSite("fuse.request-buffers", .mayFail, .io,
        "the FUSE session's request buffers (one of max_write plus a page per worker thread), charged at mount")
    /// A reply buffer of a readdir, a read or a getxattr, sized by the request and freed when replied.
    public static let fuseReply = AllocationSite("fuse.reply", .mayFail, .io,
        "a reply buffer of read or readdir, sized by the request: the request fails with ENOMEM when it cannot be had")
}

/// The FUSE low-level server over one open `Filesystem`: FUSE node ids are ext4 inode numbers
/// (FUSE's root 1 is ext4's 2), each node the kernel knows of holds the inode open, so an
/// unlinked file stays on the orphan list until its last forget and release.
final class MountServer: Sendable {
    let fs: Filesystem
    let options: MountOptions
    /// Nodes the kernel has looked up, with their lookup counts; each holds its inode open.
    private let nodes = Mutex<[UInt32: Node]>([:])
    /// Open files by FUSE file handle: each is an open file description of the library (errseq).
    private let files = Mutex<[UInt64: OpenFile]>([:])
    /// Open directories by handle: the listing read at the first readdir (offset 0).
    private let directories = Mutex<[UInt64: DirectoryListing]>([:])
    private let nextHandle = Atomic<UInt64>(1)

    struct Node {
        var lookups: UInt64
        let file: OpenFile
    }

    init(_ fs: Filesystem, options: MountOptions, directory: String) {
        self.fs = fs
        self.options = options
        self.directory = directory
    }

    let directory: String
    private let readaheadPending = Atomic(true)

    /// The readahead the mount asks for, in KiB: 1 MiB, or less where a spliced reply could not
    /// carry 1 MiB. (libfuse's pipe for a reply holds it whole; without CAP_SYS_RESOURCE a pipe
    /// is at most /proc/sys/fs/pipe-max-size, 1 MiB by default, which leaves 1008 KiB for data.)
    var readaheadKiB: Int {
        let fits = options.splice ? hf_splice_limit(1) / 4096 * 4 : 0
        // No pipe to splice through at all: nothing is spliced, and the readahead stays.
        return fits >= 1024 || fits < 128 ? 1024 : fits
    }

    /// Once the kernel has taken the init reply (which can only lower its readahead), the first
    /// lookup or getattr raises it (`MountSession.raiseReadahead`).
    func raiseReadaheadOnce() {
        guard readaheadPending.load(ordering: .relaxed), readaheadPending.exchange(false, ordering: .relaxed) else { return }
        MountSession.raiseReadahead(of: directory, kib: readaheadKiB)
    }

    // MARK: Node ids

    static let fuseRoot: fuse_ino_t = 1

    /// The ext4 inode number behind a FUSE node id.
    @inline(__always) func inode(_ node: fuse_ino_t) -> UInt32 {
        node == Self.fuseRoot ? Filesystem.rootInode : UInt32(truncatingIfNeeded: node)
    }

    /// The FUSE node id of an ext4 inode.
    @inline(__always) func node(_ inode: UInt32) -> fuse_ino_t {
        inode == Filesystem.rootInode ? Self.fuseRoot : fuse_ino_t(inode)
    }

    // MARK: Lookup counts

    /// Counts one more kernel reference to `inode` (a reply that carries an entry). The first one
    /// opens the inode, so it outlives an unlink until `forget` drops the last reference.
    func remember(_ inode: UInt32) throws(HoldfastError) {
        guard inode != Filesystem.rootInode else { return }
        if counted(inode) { return }
        let file = try fs.openFile(inode)
        let spare: OpenFile? = nodes.withLock { table in
            if var node = table[inode] {
                node.lookups += 1
                table[inode] = node
                return file
            }
            table[inode] = Node(lookups: 1, file: file)
            return nil
        }
        spare.map(Self.closeQuietly)
    }

    private func counted(_ inode: UInt32) -> Bool {
        nodes.withLock { table in
            guard var node = table[inode] else { return false }
            node.lookups += 1
            table[inode] = node
            return true
        }
    }

    /// The kernel dropped `count` references; the last one closes the inode (and frees it when
    /// it was unlinked). Never fails: an eviction that cannot finish leaves the orphan for the
    /// next open, as a crash would.
    func forget(_ inode: UInt32, _ count: UInt64) {
        guard inode != Filesystem.rootInode else { return }
        let last: OpenFile? = nodes.withLock { table in
            guard var node = table[inode] else { return nil }
            node.lookups -= min(count, node.lookups)
            if node.lookups > 0 {
                table[inode] = node
                return nil
            }
            table[inode] = nil
            return node.file
        }
        last.map(Self.closeQuietly)
    }

    static func closeQuietly(_ file: OpenFile) {
        do { try file.close() } catch {
            // A write error this reference never promised to report; the file's own
            // descriptions hear of it at fsync. An eviction left undone stays an orphan.
        }
    }

    // MARK: File and directory handles

    func openHandle(_ inode: UInt32) throws(HoldfastError) -> UInt64 {
        let file = try fs.openFile(inode)
        let handle = nextHandle.add(1, ordering: .relaxed).oldValue
        files.withLock { $0[handle] = file }
        return handle
    }

    func file(_ handle: UInt64) -> OpenFile? { files.withLock { $0[handle] } }

    /// Drops a file handle; the last close frees an unlinked inode. Never fails.
    func releaseHandle(_ handle: UInt64) {
        let file = files.withLock { $0.removeValue(forKey: handle) }
        file.map(Self.closeQuietly)
    }

    func openDirectory(_ inode: UInt32) -> UInt64 {
        let handle = nextHandle.add(1, ordering: .relaxed).oldValue
        directories.withLock { $0[handle] = DirectoryListing(inode) }
        return handle
    }

    func directory(_ handle: UInt64) -> DirectoryListing? { directories.withLock { $0[handle] } }

    func releaseDirectory(_ handle: UInt64) { _ = directories.withLock { $0.removeValue(forKey: handle) } }

    /// At unmount: every reference the kernel held is gone, so unlinked inodes are freed now.
    func dropAll() {
        let held = nodes.withLock { table in
            defer { table.removeAll() }
            return table.values.map(\.file)
        }
        let open = files.withLock { table in
            defer { table.removeAll() }
            return Array(table.values)
        }
        directories.withLock { $0.removeAll() }
        for file in open + held { Self.closeQuietly(file) }
    }

    // MARK: Attributes

    /// stat(2) fields of an inode as the kernel's ext4 reports them.
    func attributes(_ i: Inode) -> stat {
        var st = stat()
        st.st_ino = ino_t(i.number)
        st.st_mode = mode_t(i.mode)
        st.st_nlink = nlink_t(i.linksCount)
        st.st_uid = uid_t(i.uid)
        st.st_gid = gid_t(i.gid)
        st.st_size = off_t(Int64(bitPattern: i.size))
        st.st_blocks = blkcnt_t(Int64(bitPattern: i.sectors(fs.superblock)))
        st.st_blksize = blksize_t(fs.blockSize)
        if i.fileType == .characterDevice || i.fileType == .blockDevice {
            st.st_rdev = Self.deviceNumber(major: i.device.major, minor: i.device.minor)
        }
        st.st_atim = Self.timespec(i.accessTime)
        st.st_mtim = Self.timespec(i.modificationTime)
        st.st_ctim = Self.timespec(i.changeTime)
        return st
    }

    func entry(_ i: Inode) -> fuse_entry_param {
        var e = fuse_entry_param()
        e.ino = node(i.number)
        e.generation = UInt64(i.generation)
        e.attr = attributes(i)
        e.attr_timeout = options.attributeTimeout
        e.entry_timeout = options.entryTimeout
        return e
    }

    static func timespec(_ t: Timestamp) -> Glibc.timespec {
        Glibc.timespec(tv_sec: Int(t.seconds), tv_nsec: Int(t.nanoseconds))
    }

    /// glibc's dev_t encoding (makedev) of a major and minor number.
    static func deviceNumber(major: UInt32, minor: UInt32) -> dev_t {
        let ma = UInt64(major), mi = UInt64(minor)
        return dev_t(mi & 0xFF | (ma & 0xFFF) << 8 | (mi & ~0xFF) << 12 | (ma & ~0xFFF) << 32)
    }

    static func majorMinor(_ dev: dev_t) -> (major: UInt32, minor: UInt32) {
        let d = UInt64(dev)
        let major = (d >> 8) & 0xFFF | (d >> 32) & ~0xFFF
        let minor = d & 0xFF | (d >> 12) & ~0xFF
        return (UInt32(truncatingIfNeeded: major), UInt32(truncatingIfNeeded: minor))
    }
}

/// The entries of an open directory, read whole at the first readdir at offset 0 (again after a
/// rewinddir): FUSE offsets are positions in this list, so a listing stays stable while it is read.
final class DirectoryListing: Sendable {
    let inode: UInt32
    private let entries = Mutex<[DirectoryEntry]?>(nil)

    init(_ inode: UInt32) { self.inode = inode }

    func entries(from offset: Int, _ fs: Filesystem) throws(HoldfastError) -> [DirectoryEntry] {
        let cached = entries.withLock { offset == 0 ? nil : $0 }
        if let cached { return cached }
        let read = try fs.directoryEntries(try fs.inode(inode))
        entries.withLock { $0 = read }
        return read
    }
}
