import Foundation
import Holdfast
import HoldfastTestSupport
import Logging
import Testing

/// Errors mapped once at the edge, and warnings that go to the caller's logger, never to a
/// file descriptor of the library's choosing.
@Suite("errors and diagnostics")
struct ErrorsAndDiagnosticsTests {
    @Test("every error maps to the errno the kernel's ext4 gives for it")
    func errnoTable() {
        let io = DeviceError(.read, path: "x", offset: 0, errno: EIO)
        let table: [(HoldfastError, Int32)] = [
            (.notFound("/a"), ENOENT), (.exists("/a"), EEXIST), (.notEmpty("/d"), ENOTEMPTY),
            (.notADirectory("/a"), ENOTDIR), (.isADirectory("/d"), EISDIR), (.nameTooLong("/n"), ENAMETOOLONG),
            (.noSpace("full"), ENOSPC), (.readOnly(["why"]), EROFS), (.tooManyLinks("/a"), EMLINK),
            (.tooManySymlinks("/l"), ELOOP), (.wouldLoop("/d"), EINVAL), (.invalidArgument("bad"), EINVAL),
            (.noSuchAttribute("user.x"), ENODATA), (.io(io), EIO), (.unsupported("x"), EOPNOTSUPP),
            (.corrupt(CorruptionError(.superblock, .impossible("x"))), EUCLEAN),
            (.corrupt(CorruptionError(.inode, .badChecksum(stored: 1, computed: 2))), EBADMSG), (.journal("x"), EUCLEAN),
            (.outOfMemory(OutOfMemoryError(site: .extentStatusEntry, bytes: 64, limit: 1 << 20)), ENOMEM),
            (.unsupportedFeatures(["verity"]), EINVAL),
            (.partialWrite(written: 1, requested: 2, cause: .noSpace("full")), ENOSPC),
            (.dataNotWritten(inodes: [12], cause: nil), EIO), (.internal("bug"), EIO),
            (.hostFile(path: "/out", operation: "write", errno: EACCES), EACCES),
        ]
        for (error, expected) in table {
            #expect(error.errno == expected, "\(error)")
        }
    }

    @Test("a failed writeback under errors=remount-ro reaches the caller's logger as an error")
    func warningsGoToTheLogger() throws {
        let scratch = try Scratch()
        let image = scratch.path("l.img")
        try Images.make(image, blockSize: 4096, megabytes: 32)
        let first: UInt64
        do {
            let fs = try Images.openWritable(image)
            let f = try fs.create(path: "/f", kind: .regular, owner: Ownership(permissions: 0o644))
            try fs.write(f, at: 0, Patterns.random(64 << 10, seed: 1))
            try fs.close()
            let out = try Support.sh(["debugfs", "-R", "bmap /f 0", image])
            first = try #require(UInt64(out.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").last ?? ""))
        }
        let log = CapturedLog()
        let device = try FailingWritesDevice(path: image, blockSize: 4096)
        var options = OpenOptions(memoryBudget: 16 << 20, writable: true)
        options.flusher = false
        options.errors = .remountReadOnly
        options.logger = Logger(label: "test", factory: { _ in log })
        let fs = try Filesystem(device: device, options: options)
        let f = try fs.resolve("/f").number
        try fs.write(f, at: 0, Patterns.random(64 << 10, seed: 2))
        device.fail(first..<(first + 16))
        #expect(throws: HoldfastError.self) { try fs.sync() }
        let errors = log.events.filter { $0.level == .error }.map(\.message)
        #expect(errors.contains { $0.contains("writing file data failed") && $0.contains("remount-ro") }, "\(log.events)")
        device.heal()
        try fs.close()
    }
}

/// A LogHandler that keeps what it is given.
final class CapturedLog: LogHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var kept: [(level: Logger.Level, message: String)] = []
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        lock.lock()
        kept.append((event.level, "\(event.message)"))
        lock.unlock()
    }
    var events: [(level: Logger.Level, message: String)] {
        lock.lock()
        defer { lock.unlock() }
        return kept
    }
}
