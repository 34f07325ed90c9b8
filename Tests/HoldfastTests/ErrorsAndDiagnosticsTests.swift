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
            (.notFound(.path("/a")), ENOENT), (.exists(.path("/a")), EEXIST), (.notEmpty(.path("/d")), ENOTEMPTY),
            (.notADirectory(.path("/a")), ENOTDIR), (.isADirectory(.path("/d")), EISDIR), (.nameTooLong(.path("/n")), ENAMETOOLONG),
            (.noSpace("full"), ENOSPC), (.readOnly(["why"]), EROFS), (.tooManyLinks(.path("/a")), EMLINK),
            (.tooManySymlinks(.path("/l")), ELOOP), (.wouldLoop(.path("/d")), EINVAL), (.invalidArgument("bad"), EINVAL),
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

    @Test("errors name their file as a value: paths from the path API, numbers and entries from the inode API")
    func subjectsAreValues() throws {
        let scratch = try Scratch()
        let image = scratch.path("s.img")
        try Images.make(image, blockSize: 4096, megabytes: 16)
        let fs = try Images.openWritable(image)
        defer { try? fs.close() }
        let root = Filesystem.rootInode
        let owner = Ownership(permissions: 0o644)
        let a = try fs.create(path: "/a", kind: .regular, owner: owner)
        _ = try fs.create(path: "/d", kind: .directory, owner: Ownership(permissions: 0o755))
        _ = try fs.create(path: "/d/x", kind: .regular, owner: owner)
        func error(_ body: () throws -> Void) -> HoldfastError? {
            do { try body(); return nil } catch let e as HoldfastError { return e } catch { return nil }
        }
        let name = Array("a".utf8)
        #expect(error { _ = try fs.create(name, in: root, kind: .regular, owner: owner) }?.subject == .entry(directory: root, name: name))
        #expect(error { _ = try fs.create(path: "/a", kind: .regular, owner: owner) }?.subject == .path("/a"))
        #expect(error { try fs.unlink(Array("gone".utf8), in: root) }?.subject == .entry(directory: root, name: Array("gone".utf8)))
        if case .notEmpty(.path("/d"))? = error({ try fs.removeDirectory(path: "/d") }) {} else { Issue.record("rmdir of a full directory") }
        // A rename names the entry it could not find by its directory and name.
        let missing = error { try fs.rename(Array("nope".utf8), in: root, to: Array("b".utf8), in: root) }
        if case .notFound(.entry(root, Array("nope".utf8)))? = missing {} else { Issue.record("rename: \(String(describing: missing))") }
        try fs.setXattr(a, name: Array("user.k".utf8), value: [1])
        let taken = error { try fs.setXattr(a, name: Array("user.k".utf8), value: [2], mode: .create) }
        #expect(taken?.subject == .attribute(inode: a, name: "user.k"))
        #expect(taken?.errno == EEXIST)
        try fs.unlink(path: "/a")
        let stale = error { _ = try fs.openFile(a) }
        if case .notFound(.inode(a))? = stale {} else { Issue.record("open of a freed inode: \(String(describing: stale))") }
        #expect(stale?.description == "inode \(a): no such file or directory in the image")
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
