import ArgumentParser
import Holdfast
import HoldfastFUSE

#if canImport(Glibc)
import Glibc
#endif

struct MountCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mount", abstract: "Mount an image at a directory through FUSE, read-write and journaled.",
        discussion: """
            Serves the image as a POSIX filesystem with the kernel's ext4
            semantics. Every change goes through the image's journal, so a killed
            mount or a power cut leaves an image that the next open (Holdfast's or
            the kernel's) recovers, and fsync means on disk. Permissions are
            checked by the kernel from the inodes' modes and owners (FUSE's
            default_permissions). The whole mount lives inside --memory.

            Without -f, the command returns once the directory is mounted and the
            server goes on in the background; it appends its warnings and errors
            to --log when given, else sends its errors to the system log.

            Unmount with `umount DIR` or `fusermount3 -u DIR`; SIGTERM, SIGINT and
            SIGHUP unmount too. The server then writes and commits everything,
            marks the journal clean and exits. It holds a lock on the image until
            then, so `flock IMAGE true` waits for the image to be final.

            Mount options (-o, comma-separated, as with mount and fuse2fs):
              ro                 read only: the image is not changed
              rw                 read-write (the default)
              allow_other        let other users use the mount
              writeback_cache    the kernel gathers writes before sending them
              nosplice           copy large reads through the server (by default
                                 they are spliced from the image into the reply)
              entry_timeout=S    seconds the kernel trusts a name (default 60)
              attr_timeout=S     seconds the kernel trusts attributes (default 1)
              fsname=NAME        the source mount and df show (default: the image)
              default_permissions, rw, dev, suid, noatime, relatime: accepted; implied

            Examples:
              holdfast mount disk.img /mnt/disk
              holdfast mount -o ro,allow_other disk.img /mnt/disk
              holdfast mount -f --memory 32M --stats disk.img /mnt/disk   # in the foreground
              umount /mnt/disk && flock disk.img true                     # unmount, wait for the image
            """)
    @OptionGroup var options: ImageOptions
    @Argument(help: "The directory to mount the image at.") var directory: String
    @Flag(name: .short, help: "Stay in the foreground: warnings to standard error, exit when unmounted.") var foreground = false
    @Flag(name: .short, help: "Print every FUSE request (implies -f).") var debug = false
    @Option(name: .short, help: ArgumentHelp("Mount options, comma-separated (see above).", valueName: "options"))
    var o: [String] = []
    @Option(help: "Worker threads serving requests.") var threads = 8
    @Option(help: ArgumentHelp(
        "How long the worker that answered a request waits awake for the next one before it sleeps (busy polling; a stream of requests is answered without waking a thread each time; an idle mount only wakes every 200 ms). 0 sleeps at once.",
        valueName: "microseconds"))
    var spin = 150
    @Option(name: .customLong("cpu-latency"), help: ArgumentHelp(
        "auto: during a stream of requests (16 in a row) and until 10 ms after the last, ask the kernel to keep idle CPUs polling rather than asleep (its CPU-latency QoS, /dev/cpu_dma_latency), so a reply wakes the waiting process at once; a sleeping virtual CPU takes about 15 µs to wake, more than most requests take to answer. The request is the whole machine's: every idle CPU spins while it stands. Not made where it could not help (no cpuidle driver), where this process may run on only some of the CPUs, or where the device will not open (other users than root); --stats says which. off: never.",
        valueName: "auto|off"))
    var cpuLatency = "auto"
    @Option(help: ArgumentHelp("Without -f: the file the server appends its warnings and errors to (else errors go to the system log).", valueName: "file"))
    var log: String?

    func validate() throws {
        guard threads >= 1, threads <= 256 else { throw ValidationError("--threads: give 1 to 256") }
        guard spin >= 0, spin <= 1_000_000 else { throw ValidationError("--spin: give 0 to 1000000 microseconds") }
        guard cpuLatency == "auto" || cpuLatency == "off" else { throw ValidationError("--cpu-latency: give auto or off") }
        _ = try parsedOptions()
        var st = stat()
        guard stat(directory, &st) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw ValidationError("\(directory): not a directory to mount at")
        }
    }

    /// `-o` words as `MountOptions`; an unknown word is a usage error that names it.
    func parsedOptions() throws -> MountOptions {
        var mount = MountOptions()
        mount.threads = threads
        mount.spinMicroseconds = spin
        mount.cpuLatencyMilliseconds = cpuLatency == "off" ? 0 : 10
        mount.debug = debug
        for word in o.flatMap({ $0.split(separator: ",").map(String.init) }) {
            let (key, value) = word.firstIndex(of: "=").map { (String(word[..<$0]), String(word[word.index(after: $0)...])) } ?? (word, "")
            switch key {
            case "ro": mount.readOnly = true
            case "rw": mount.readOnly = false
            case "allow_other": mount.allowOther = true
            case "writeback_cache": mount.writebackCache = true
            case "nosplice": mount.splice = false
            case "entry_timeout", "attr_timeout":
                guard let seconds = Double(value), seconds >= 0 else { throw ValidationError("-o \(word): give seconds, like \(key)=1") }
                if key == "entry_timeout" { mount.entryTimeout = seconds } else { mount.attributeTimeout = seconds }
            case "fsname":
                guard !value.isEmpty else { throw ValidationError("-o fsname: give a name") }
                mount.sourceName = value
            case "default_permissions", "dev", "suid", "noatime", "relatime", "atime": break
            default: throw ValidationError("-o \(word): not a mount option holdfast knows (see holdfast mount --help)")
            }
        }
        return mount
    }

    func run() throws {
        let mount = try parsedOptions()
        let daemon = foreground || debug ? nil : try Daemon.detach()
        // Before any thread exists: the library's threads must never take the stop signals.
        MountSession.blockStopSignals()
        do {
            try reportingErrors {
                try options.lockImage()
                let fs = try options.open(writable: !mount.readOnly)
                let session: MountSession
                do { session = try MountSession(fs, image: options.image, at: directory, options: mount) } catch {
                    try? fs.close()
                    throw HoldfastError.invalidArgument("\(error)")
                }
                daemon?.mounted(log: log)
                let rc = session.run()
                MemoryReport.add(session.cpuLatency.line)
                session.finish()
                try fs.close()
                if rc < 0 { throw HoldfastError.hostFile(path: "/dev/fuse", operation: "the FUSE session loop", errno: -rc) }
            }
        } catch {
            daemon?.failed(error)
            throw error
        }
    }
}

/// Background operation: the command forks before anything else starts; the parent waits for the
/// child's word (mounted, or the error and exit status) and exits with it, so the shell sees a
/// mount that failed fail.
final class Daemon {
    /// The write end of the pipe to the parent, until the word is sent.
    private var pipe: Int32?

    private init(pipe: Int32) { self.pipe = pipe }

    /// Returns in the child only; the parent exits with the child's outcome.
    static func detach() throws -> Daemon {
        var ends: [Int32] = [0, 0]
        guard Glibc.pipe(&ends) == 0 else { throw HoldfastError.hostFile(path: "pipe", operation: "pipe", errno: errno) }
        let pid = MountSession.forkProcess()
        guard pid >= 0 else { throw HoldfastError.hostFile(path: "fork", operation: "fork", errno: errno) }
        if pid > 0 {
            Glibc.close(ends[1])
            Glibc.exit(waitForWord(ends[0]))
        }
        Glibc.close(ends[0])
        setsid()
        closeInheritedDescriptors(keeping: ends[1])
        return Daemon(pipe: ends[1])
    }

    /// A server outlives the command that started it: descriptors it inherited beyond the
    /// standard three (a caller's pipes and sockets, which tell that caller the command ended
    /// when they close) are closed, as daemons do.
    private static func closeInheritedDescriptors(keeping kept: Int32) {
        let limit = Int32(clamping: min(sysconf(Int32(_SC_OPEN_MAX)), 1 << 16))
        for fd in 3..<max(limit, 4) where fd != kept { Glibc.close(fd) }
    }

    /// The parent: the first byte is the exit status, the rest a message for standard error.
    private static func waitForWord(_ fd: Int32) -> Int32 {
        var word: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n > 0 { word += chunk[..<n]; continue }
            if n < 0 && errno == EINTR { continue }
            break
        }
        guard let status = word.first else {
            Output.error("holdfast: the mount server stopped before it mounted")
            return 1
        }
        if word.count > 1 { Output.raw(String(decoding: word.dropFirst(), as: UTF8.self)) }
        return Int32(status)
    }

    /// Mounted: the parent exits 0; standard input and output go to /dev/null, standard error to
    /// the log file (or /dev/null), and the working directory to /.
    func mounted(log: String?) {
        send(0, "")
        let null = Glibc.open("/dev/null", O_RDWR)
        let errors = log.map { Glibc.open($0, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644) } ?? null
        if log == nil {
            openlog("holdfast-mount", LOG_PID, LOG_DAEMON)
            Output.toSystemLog.store(true, ordering: .relaxed)
        }
        dup2(null, 0)
        dup2(null, 1)
        dup2(errors >= 0 ? errors : null, 2)
        _ = chdir("/")
    }

    /// Failed before mounting: the parent prints the reason and exits with its status.
    func failed(_ error: any Error) {
        let status: Int32 = if let code = error as? ExitCode { code.rawValue } else { 1 }
        let text = error is ExitCode ? "" : "holdfast: \(error)\n"
        send(UInt8(clamping: status), text)
    }

    private func send(_ status: UInt8, _ text: String) {
        guard let fd = pipe else { return }  // the parent has its word already
        pipe = nil
        let word = [status] + Array(text.utf8)
        word.withUnsafeBytes { _ = try? Syscall.writeFully(fd, $0, at: nil) }
        Glibc.close(fd)
    }
}
