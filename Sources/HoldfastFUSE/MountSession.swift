#if canImport(Glibc)
import Glibc
#endif
import CFuse3
import CFuseDevice
import Holdfast

/// Why a mount could not start: libfuse's words, or the system call that failed.
public struct MountError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// One FUSE session serving an open `Filesystem` at a directory, on libfuse3's low-level API.
///
/// The life of a mount: `init` mounts (the directory shows the image from then on), `run` serves
/// requests on up to `MountOptions.threads` worker threads (one reads the device at a time and
/// answers what it reads; see `hf_fuse_loop_poll`) until `umount DIR`, `fusermount3 -u DIR`,
/// SIGTERM, SIGINT or SIGHUP; `finish` then drops every reference the kernel held (unlinked files
/// are freed) and unmounts. Closing the `Filesystem` afterwards, which writes and commits
/// everything and marks the journal clean, is the caller's.
///
/// Signals: the caller blocks SIGTERM, SIGINT, SIGHUP and SIGQUIT before it opens the filesystem,
/// so that the library's threads never take them; `run` unblocks them on the calling thread alone,
/// where libfuse's handlers end the loop.
public final class MountSession {
    private let session: OpaquePointer
    private let server: MountServer
    private let retained: Unmanaged<MountServer>
    public let directory: String
    private var mounted = true
    /// `init` got through: until then its failure paths undo what they did, and `deinit` (which
    /// Swift runs for an init that throws once every property is set) must not undo it again.
    private var started = false
    /// Bytes charged to `fuse.request-buffers` for the session's life.
    private let requestBuffers: Int
    /// What `run`'s loop did with the CPU-latency request (`MountOptions.cpuLatencyMilliseconds`).
    public private(set) var cpuLatency = CPULatencyReport()

    public init(_ fs: Filesystem, image: String, at directory: String, options: MountOptions) throws(MountError) {
        // libfuse's request buffers, one a worker thread, each max_write and a page of headers.
        requestBuffers = max(1, options.threads) * ((1 << 20) + 4096)
        do { try fs.budget.chargeOrThrow(requestBuffers, at: .fuseRequestBuffers) } catch {
            throw MountError("--memory leaves no room for \(options.threads) FUSE request buffers of 1 MiB: \(error)")
        }
        let server = MountServer(fs, options: options, directory: directory)
        let retained = Unmanaged.passRetained(server)
        self.server = server
        self.retained = retained
        self.directory = directory

        var words = ["holdfast", "-o", Self.mountOptions(image: options.sourceName ?? image, options)]
        if options.debug { words.append("-d") }
        var argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var ops = Self.operations()
        let made = argv.withUnsafeMutableBufferPointer { p -> OpaquePointer? in
            var args = fuse_args(argc: Int32(words.count), argv: p.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            return fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, retained.toOpaque())
        }
        let charged = requestBuffers
        // What a failed start undoes, after the session (when there is one) is destroyed.
        let abandon = {
            retained.release()
            fs.budget.uncharge(charged, for: .fuseRequestBuffers)
        }
        guard let made else {
            abandon()
            throw MountError("libfuse refused the session (its message is above)")
        }
        session = made
        guard fuse_set_signal_handlers(session) == 0 else {
            fuse_session_destroy(session)
            abandon()
            throw MountError("cannot install the signal handlers")
        }
        guard fuse_session_mount(session, directory) == 0 else {
            fuse_remove_signal_handlers(session)
            fuse_session_destroy(session)
            abandon()
            throw MountError("cannot mount at \(directory) (is /dev/fuse there, and may this user mount?)")
        }
        // Device I/O through CFuseDevice, which negotiates HANDLE_KILLPRIV_V2 (fuse_device.c) and
        // sends spliced replies.
        var io = fuse_custom_io(writev: hf_device_writev, read: hf_device_read, splice_receive: nil, splice_send: hf_device_splice_send)
        let installed = fuse_session_custom_io(session, &io, fuse_session_fd(session))
        guard installed == 0 else {
            fuse_session_unmount(session)
            fuse_remove_signal_handlers(session)
            fuse_session_destroy(session)
            abandon()
            throw MountError("cannot set up the FUSE device I/O (errno \(-installed))")
        }
        started = true
    }

    /// The kernel reads ahead 128 KiB on a FUSE mount, and the server cannot ask for more in its
    /// init reply; as root it can, through the mount's backing device in sysfs, which lets
    /// sequential reads come in 1 MiB requests. Best effort: elsewhere the default stays. The
    /// device number comes from /proc/self/mountinfo, since a stat of the mount point would be
    /// a request to this very server before it serves.
    static func raiseReadahead(of directory: String, kib: Int) {
        var resolved = [CChar](repeating: 0, count: Int(PATH_MAX))
        guard realpath(directory, &resolved) != nil else { return }
        let point = String(cString: resolved).replacingSpaces()
        let fd = Glibc.open("/proc/self/mountinfo", O_RDONLY)
        guard fd >= 0 else { return }
        defer { Glibc.close(fd) }
        var text: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { break }
            text += chunk[..<n]
        }
        // Fields: id, parent id, major:minor, root, mount point, ...; the last match is ours.
        let device = String(decoding: text, as: UTF8.self).split(separator: "\n").compactMap { line -> Substring? in
            let fields = line.split(separator: " ")
            return fields.count > 4 && fields[4] == point ? fields[2] : nil
        }.last
        guard let device else { return }
        let path = "/sys/class/bdi/\(device)/read_ahead_kb"
        let out = Glibc.open(path, O_WRONLY)
        guard out >= 0 else { return }
        let value = Array("\(kib)\n".utf8)
        _ = value.withUnsafeBytes { Glibc.write(out, $0.baseAddress, $0.count) }
        Glibc.close(out)
    }

    /// FUSE mount options: the image as the source, permissions checked by the kernel from the
    /// inodes' modes and owners, as the kernel's ext4 checks them.
    static func mountOptions(image: String, _ options: MountOptions) -> String {
        var escaped = ""  // libfuse's option syntax: a comma or backslash in the path is escaped
        for c in image {
            if c == "," || c == "\\" { escaped.append("\\") }
            escaped.append(c)
        }
        var list = ["fsname=\(escaped)", "subtype=holdfast", "default_permissions"]
        if options.allowOther { list.append("allow_other") }
        if options.readOnly { list.append("ro") }
        return list.joined(separator: ",")
    }

    /// Serves requests until the mount goes away or a signal ends it; the result is 0, or a
    /// negative errno from the session loop.
    public func run() -> Int32 {
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in Self.stopSignals { sigaddset(&signals, s) }
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
        let threads = UInt32(max(1, server.options.threads))
        // The polling loop (shim.h): a worker spins for the next request before it sleeps, and a
        // request that keeps it busy past a millisecond hands the device to another worker.
        var stats = hf_loop_stats()
        let result = hf_fuse_loop_poll(session, threads, server.options.spinMicroseconds * 1000, Self.rescueNanoseconds,
                                       server.options.cpuLatencyMilliseconds * 1_000_000, &stats)
        cpuLatency = CPULatencyReport(stats)
        // A refused FUSE_INIT ends the session at once: that is the error, as libfuse's loop says.
        return result == 0 ? hf_init_error() : result
    }

    /// How long one request may keep the device's reader before another worker reads on.
    static let rescueNanoseconds = 1_000_000

    /// The signals that unmount: the caller blocks them before it starts any thread.
    public static let stopSignals: [Int32] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT]

    /// Blocks `stopSignals` on the calling thread and on every thread it starts from now on.
    public static func blockStopSignals() {
        var signals = sigset_t()
        sigemptyset(&signals)
        for s in stopSignals { sigaddset(&signals, s) }
        pthread_sigmask(SIG_BLOCK, &signals, nil)
    }

    /// fork(2), for a server that goes to the background: call it while the process has one
    /// thread, before anything is opened.
    public static func forkProcess() -> pid_t { hf_fork() }

    /// After `run`: every reference the kernel held is dropped (an unlinked file open until now is
    /// freed), then the directory is unmounted if it still is mounted. Safe to call twice.
    public func finish() {
        guard mounted else { return }
        mounted = false
        fuse_remove_signal_handlers(session)
        server.dropAll()
        fuse_session_unmount(session)
        server.fs.budget.uncharge(requestBuffers, for: .fuseRequestBuffers)
    }

    deinit {
        guard started else { return }
        finish()
        fuse_session_destroy(session)
        retained.release()
    }
}

extension String {
    /// The escaping /proc/self/mountinfo uses for spaces, tabs, newlines and backslashes.
    fileprivate func replacingSpaces() -> String {
        var out = ""
        for c in self {
            switch c {
            case " ": out += "\\040"
            case "\t": out += "\\011"
            case "\n": out += "\\012"
            case "\\": out += "\\134"
            default: out.append(c)
            }
        }
        return out
    }
}

// MARK: The operations table

/// The server behind a request (the session's user data).
@inline(__always)
private func serverOf(_ req: fuse_req_t?) -> MountServer {
    Unmanaged<MountServer>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
}

extension MountSession {
    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { userdata, conn in
            guard let userdata, let conn else { return }
            let server = Unmanaged<MountServer>.fromOpaque(userdata).takeUnretainedValue()
            // Writes of up to 1 MiB a request; readdirplus; O_TRUNC as a setattr. Not the old
            // HANDLE_KILLPRIV: CFuseDevice's HANDLE_KILLPRIV_V2 takes its place where the kernel
            // offers it (the kernel then says which writes and truncates clear setuid and setgid,
            // and asks no security.capability before each write); elsewhere the kernel sends
            // those clearings as mode changes.
            conn.pointee.max_write = 1 << 20
            conn.pointee.time_gran = 1
            // POSIX ACLs: the kernel caches and enforces them; this server keeps them in step with
            // the mode and passes default ACLs on to new inodes, in place of the umask it gets
            // unapplied (DONT_MASK).
            var want = UInt32(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_ASYNC_READ | FUSE_CAP_PARALLEL_DIROPS
                | FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK)
            var drop = UInt32(FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_ATOMIC_O_TRUNC)
            // Large reads spliced from the image (`MountOptions.splice`); libfuse offers it with
            // the custom io's splice_send.
            if server.options.splice { want |= UInt32(FUSE_CAP_SPLICE_WRITE) } else { drop |= UInt32(FUSE_CAP_SPLICE_WRITE) }
            if server.options.writebackCache { want |= UInt32(FUSE_CAP_WRITEBACK_CACHE) } else { drop |= UInt32(FUSE_CAP_WRITEBACK_CACHE) }
            hf_conn_want(conn, want, drop)
        }
        ops.lookup = { req, parent, name in serverOf(req).lookup(req, parent, name) }
        ops.forget = { req, node, count in
            let s = serverOf(req)
            s.forget(s.inode(node), count)
            fuse_reply_none(req)
        }
        ops.forget_multi = { req, count, forgets in
            let s = serverOf(req)
            for i in 0..<count {
                let f = forgets![i]
                s.forget(s.inode(f.ino), f.nlookup)
            }
            fuse_reply_none(req)
        }
        ops.getattr = { req, node, _ in serverOf(req).getattr(req, node) }
        ops.setattr = { req, node, attr, toSet, _ in serverOf(req).setattr(req, node, attr, toSet) }
        ops.readlink = { req, node in serverOf(req).readlink(req, node) }
        ops.mknod = { req, parent, name, mode, rdev in serverOf(req).mknod(req, parent, name, mode, rdev) }
        ops.mkdir = { req, parent, name, mode in
            serverOf(req).create(req, parent, name, mode: mode, kind: .directory)
        }
        ops.unlink = { req, parent, name in serverOf(req).unlink(req, parent, name, directory: false) }
        ops.rmdir = { req, parent, name in serverOf(req).unlink(req, parent, name, directory: true) }
        ops.symlink = { req, target, parent, name in serverOf(req).symlink(req, target, parent, name) }
        ops.rename = { req, parent, name, newParent, newName, flags in
            serverOf(req).rename(req, parent, name, newParent, newName, flags)
        }
        ops.link = { req, node, parent, name in serverOf(req).link(req, node, parent, name) }
        ops.open = { req, node, fi in serverOf(req).open(req, node, fi) }
        ops.create = { req, parent, name, mode, fi in serverOf(req).createAndOpen(req, parent, name, mode, fi) }
        ops.read = { req, node, size, offset, _ in serverOf(req).read(req, node, size, offset) }
        ops.write = { req, node, buffer, size, offset, _ in
            serverOf(req).write(req, node, buffer, size, offset, dropSetID: hf_write_kills_suidgid() != 0)
        }
        ops.flush = { req, _, _ in fuse_reply_err(req, 0) }
        ops.release = { req, _, fi in serverOf(req).release(req, fi) }
        ops.fsync = { req, node, _, fi in serverOf(req).fsync(req, node, fi) }
        ops.opendir = { req, node, fi in serverOf(req).opendir(req, node, fi) }
        ops.readdir = { req, _, size, offset, fi in serverOf(req).readdir(req, size, offset, fi, plus: false) }
        ops.readdirplus = { req, _, size, offset, fi in serverOf(req).readdir(req, size, offset, fi, plus: true) }
        ops.releasedir = { req, _, fi in
            if let fi { serverOf(req).releaseDirectory(fi.pointee.fh) }
            fuse_reply_err(req, 0)
        }
        ops.fsyncdir = { req, node, _, _ in serverOf(req).fsyncdir(req, node) }
        ops.statfs = { req, _ in serverOf(req).statfs(req) }
        ops.setxattr = { req, node, name, value, size, flags in serverOf(req).setxattr(req, node, name, value, size, flags) }
        ops.getxattr = { req, node, name, size in serverOf(req).getxattr(req, node, name, size) }
        ops.listxattr = { req, node, size in serverOf(req).listxattr(req, node, size) }
        ops.removexattr = { req, node, name in serverOf(req).removexattr(req, node, name) }
        ops.fallocate = { req, node, mode, offset, length, _ in serverOf(req).fallocate(req, node, mode, offset, length) }
        ops.copy_file_range = { req, source, sourceOffset, _, destination, destinationOffset, _, length, _ in
            serverOf(req).copyRange(req, from: source, sourceOffset, to: destination, destinationOffset, length)
        }
        ops.lseek = { req, node, offset, whence, _ in serverOf(req).lseek(req, node, offset, whence) }
        return ops
    }
}

/// The CPU-latency request of a session (`MountOptions.cpuLatencyMilliseconds`), for `--stats`.
public struct CPULatencyReport: Sendable {
    /// Why none could be made, or nil: the loop could make one.
    public var unavailable: String? = "--cpu-latency off"
    /// How many times the loop asked for polling CPUs, and how long it held them in all.
    public var holds = 0
    public var heldNanoseconds: Int64 = 0

    /// One line: `cpu-latency holds=3 held-ms=4120`, or why there were none.
    public var line: String {
        if let unavailable { return "cpu-latency off (\(unavailable))" }
        return "cpu-latency holds=\(holds) held-ms=\(heldNanoseconds / 1_000_000)"
    }

    public init() {}

    init(_ stats: hf_loop_stats) {
        holds = Int(stats.latency_holds)
        heldNanoseconds = Int64(stats.latency_held_ns)
        switch Int(stats.latency_state) {
        case Int(HF_LATENCY_READY): unavailable = nil
        case Int(HF_LATENCY_NO_DEVICE):
            unavailable = "/dev/cpu_dma_latency: \(String(cString: strerror(stats.latency_errno)))"
        case Int(HF_LATENCY_NO_CPUIDLE): unavailable = "no cpuidle driver: idle CPUs halt whatever is asked"
        case Int(HF_LATENCY_CONFINED):
            unavailable = "this process may run on \(stats.allowed_cpus) of the \(stats.online_cpus) CPUs; the request would concern them all"
        case Int(HF_LATENCY_NO_WATCHDOG): unavailable = "the loop's watchdog, which withdraws it, did not start"
        default: unavailable = "--cpu-latency off"
        }
    }
}
