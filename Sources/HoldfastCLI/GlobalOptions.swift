import ArgumentParser
import Holdfast
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Options every command takes.
struct ImageOptions: ParsableArguments {
    @Argument(help: "The ext4 image file (or block device).")
    var image: String

    @Option(name: .long, help: ArgumentHelp("Memory budget for caches and buffers, e.g. 8M, 64M, 1G.", valueName: "size"))
    var memory: String = "64M"

    @Option(name: .long, help: ArgumentHelp(
        "Fail allocations on purpose, for testing: a comma list of nth=N, site=NAME, category=NAME, persistent, probability=P, seed=S (also HOLDFAST_INJECT).",
        valueName: "spec"))
    var inject: String?

    @Flag(name: .long, help: "At exit, print one line per allocation site that was hit, the budget's used, peak and limit, and the page cache's counts (dirty, writeback, clean pages, flusher passes, writeback retries, throttled writers, write errors), on standard error.")
    var stats = false

    @Option(name: .long, help: ArgumentHelp(
        "What a failed write of file data does, as ext4's errors=: continue (report it at fsync and exit), remount-ro (accept no further changes), panic (stop at once). Dirty data is kept and retried either way.",
        valueName: "policy"))
    var errors: String = "continue"

    /// One writer per image: an exclusive flock on the image, held until the process exits. A
    /// mount holds it for its life, so a changing command cannot write under it (and a second
    /// mount or changing command is refused while one runs). Taken once per process.
    func lockImage() throws(HoldfastError) {
        try Self.imageLock.withLock { (held: inout Int32?) throws(HoldfastError) in
            guard held == nil else { return }
            let fd = Glibc.open(image, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw .hostFile(path: image, operation: "open", errno: errno) }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
                let e = errno
                Glibc.close(fd)
                if e == EWOULDBLOCK { throw .invalidArgument("\(image) is in use by another holdfast process (a mount, or a changing command); try again when it ends") }
                throw .hostFile(path: image, operation: "flock", errno: e)
            }
            held = fd  // stays open: the lock lasts as long as this process
        }
    }

    private static let imageLock = Mutex<Int32?>(nil)

    func open(writable: Bool = false) throws(HoldfastError) -> Filesystem {
        if writable { try lockImage() }
        guard let bytes = parseSize(memory), bytes >= 1 << 20 else {
            throw .invalidArgument("--memory \(memory): give a size of at least 1M, like 8M or 1G")
        }
        var options = OpenOptions(memoryBudget: bytes, writable: writable)
        guard let policy = ErrorsPolicy(rawValue: errors) else {
            throw .invalidArgument("--errors \(errors): give continue, remount-ro or panic")
        }
        options.errors = policy
        if let spec = inject ?? environment("HOLDFAST_INJECT") {
            do { options.faultPlan = try FaultPlan(parsing: spec) } catch {
                throw .invalidArgument("--inject \(spec): \(error)")
            }
        }
        options.recordingLog = environment("HOLDFAST_RECORD")
        return try MemoryReport.open(image, options, stats: stats)
    }

    private func environment(_ name: String) -> String? {
        guard let p = getenv(name) else { return nil }
        let s = String(cString: p)
        return s.isEmpty ? nil : s
    }
}

/// What `--stats` prints after the command, even when it failed: the library's report, kept
/// from the moment the budget exists. One command runs per process, so one report suffices.
enum MemoryReport {
    static let shared = StatisticsReport()
    /// Set by `--stats`, before the command opens anything.
    static let enabled = Atomic<Bool>(false)

    static func lines() -> [String] {
        enabled.load(ordering: .relaxed) ? (shared.statistics?.lines ?? []) + added.withLock { $0 } : []
    }

    /// A line of the command's own for the report (the mount's CPU-latency request).
    static func add(_ line: String) { added.withLock { $0.append(line) } }
    private static let added = Mutex<[String]>([])

    /// Opens `path` as every command does: warnings to standard error, and the `--stats` report
    /// kept from the moment the budget exists.
    static func open(_ path: String, _ options: OpenOptions, stats: Bool) throws(HoldfastError) -> Filesystem {
        var options = options
        options.logger = StandardErrorLog.logger
        options.onBudget = { shared.watch($0) }
        enabled.store(stats, ordering: .relaxed)
        let fs = try Filesystem.open(path: path, options: options)
        shared.watch(fs)
        if !options.writable && !stats { keptUntilExit.withLock { $0.append(fs) } }
        return fs
    }

    /// Read-only filesystems are never torn down: the process's exit gives their memory back at
    /// once, where freeing the caches entry by entry cost `ls -l` of a 20,000-entry directory a
    /// fifth of its time. A read-only open has nothing to write at close. (With `--stats` the
    /// teardown runs, so the report shows every charge given back.)
    private static let keptUntilExit = Mutex<[Filesystem]>([])
}

/// "64M" -> 67108864. Suffixes K, M, G, T (powers of 1024); a plain number is bytes.
func parseSize(_ text: String) -> Int? {
    let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var digits = text.uppercased()
    var scale = 1
    if digits.hasSuffix("B") { digits.removeLast() }
    if digits.hasSuffix("I") { digits.removeLast() }
    if let last = digits.last, let u = units[last] {
        scale = u
        digits.removeLast()
    }
    guard let n = Int(digits), n >= 0 else { return nil }
    let (v, overflow) = n.multipliedReportingOverflow(by: scale)
    return overflow ? nil : v
}
