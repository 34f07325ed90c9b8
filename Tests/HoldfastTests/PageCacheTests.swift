import Foundation
import Holdfast
import HoldfastCache
import HoldfastDevice
import HoldfastMemory
import Testing

/// A device in front of an image file that fails writes touching chosen blocks with EIO while
/// `failing` is set: the disk that loses writes in writeback (xfstests generic/441 and 487).
final class FailingWritesDevice: BlockDevice, @unchecked Sendable {
    let underlying: ImageFile
    private let state = Locked<(failing: Bool, blocks: Range<UInt64>, failed: Int)>((false, 0..<0, 0))
    let blockSize: UInt64

    init(path: String, blockSize: Int) throws {
        underlying = try ImageFile(path: path, writable: true)
        self.blockSize = UInt64(blockSize)
    }

    func fail(_ blocks: Range<UInt64>) { state.withLock { $0.failing = true; $0.blocks = blocks } }
    func heal() { state.withLock { $0.failing = false } }
    var failedWrites: Int { state.withLock { $0.failed } }

    var byteCount: UInt64 { underlying.byteCount }
    var path: String { underlying.path }
    var isWritable: Bool { true }

    private func check(_ offset: UInt64, _ count: Int) throws(DeviceError) {
        let first = offset / blockSize, end = (offset + UInt64(count) + blockSize - 1) / blockSize
        let hit = state.withLock { s -> Bool in
            guard s.failing, first < s.blocks.upperBound, end > s.blocks.lowerBound else { return false }
            s.failed += 1
            return true
        }
        if hit { throw DeviceError(.write, path: path, offset: offset, errno: EIO) }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DeviceError) { try underlying.read(into: buffer, at: offset) }
    func copy(from offset: UInt64, count: Int, to fd: Int32, at destination: UInt64) throws(DeviceError) {
        try underlying.copy(from: offset, count: count, to: fd, at: destination)
    }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DeviceError) {
        try check(offset, bytes.count)
        try underlying.write(bytes, at: offset)
    }
    func write(fromFile fd: Int32, at source: UInt64, count: Int, to offset: UInt64) throws(DeviceError) {
        try check(offset, count)
        try underlying.write(fromFile: fd, at: source, count: count, to: offset)
    }
    func write(gathering pieces: [UnsafeRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        try check(offset, pieces.reduce(0) { $0 + $1.count })
        try underlying.write(gathering: pieces, at: offset)
    }
    func flush() throws(DeviceError) { try underlying.flush() }
}

/// The page cache and writeback (DESIGN.md rules 4 to 8): dirty data is held until it is written,
/// inside the budget; failures are retried or reported, never dropped.
@Suite("page cache and writeback", .serialized)
struct PageCacheTests {
    /// Deterministic contents: a different byte pattern per seed and position.
    static func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
        var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            return UInt8(truncatingIfNeeded: x)
        }
    }

    /// The file as debugfs reads it from the image (an outside judge of what reached the disk).
    static func dumped(_ image: String, _ path: String, _ scratch: Scratch) throws -> [UInt8] {
        let out = scratch.path("dump-\(UUID().uuidString)")
        try Support.sh(["debugfs", "-R", "dump \(path) \(out)", image])
        return Array(try Data(contentsOf: URL(fileURLWithPath: out)))
    }

    static func physicalBlock(_ image: String, _ path: String) throws -> UInt64 {
        let out = try Support.sh(["debugfs", "-R", "bmap \(path) 0", image])
        guard let n = UInt64(out.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").last ?? "") else {
            throw Support.Failure("debugfs bmap: \(out)")
        }
        return n
    }

    @Test("64 MiB through a 2 MiB budget, with the flusher and without: the budget holds, the data is exact", arguments: [true, false])
    func throughSmallBudget(flusher: Bool) throws {
        let scratch = try Scratch()
        let image = scratch.path("s.img")
        try WritePathTests.makeImage(image, blockSize: 4096, megabytes: 256)
        var options = OpenOptions(memoryBudget: 2 << 20, writable: true)
        options.flusher = flusher
        let fs = try Filesystem.open(path: image, options: options)
        let f = try fs.create(path: "/big", kind: .regular, owner: Ownership(permissions: 0o644))
        let piece = Self.pattern(1 << 20, seed: 5)
        for i in 0..<64 { try fs.write(f, at: UInt64(i) << 20, piece) }
        let stats = fs.pageCache!.statistics
        if flusher {
            #expect(stats.flusherPasses > 0, "the flusher writes under pressure")
        } else {
            #expect(stats.throttledWriters > 0, "without a flusher, writers meet the throttle and write back themselves")
        }
        // Read back while open: what is still dirty comes from the cache.
        #expect(try fs.read(try fs.inode(f), offset: 63 << 20, count: 1 << 20) == piece)
        try fs.close()
        #expect(fs.budget.peak <= 2 << 20)
        #expect(fs.pageCache!.statistics.pagesWritten >= 64 * 256)
        #expect(fs.budget.used == 0, "every page given back")
        try WritePathTests.expectClean(image)
        let back = try Self.dumped(image, "/big", scratch)
        #expect(back.count == 64 << 20)
        #expect(stride(from: 0, to: back.count, by: 1 << 20).allSatisfy { Array(back[$0..<($0 + (1 << 20))]) == piece })
    }

    @Test("writeback out of memory is retried and never reported: exact data, the retries counted", arguments: [1, 2, 3])
    func writebackOutOfMemory(seed: Int) throws {
        let scratch = try Scratch()
        let image = scratch.path("m.img")
        try WritePathTests.makeImage(image, blockSize: 4096, megabytes: 128)
        let plan = try FaultPlan(parsing: "category=writeback,probability=0.3,seed=\(seed)")
        let fs = try WritePathTests.open(image, memory: 2 << 20, faults: plan)
        var expected: [String: [UInt8]] = [:]
        for i in 0..<4 {
            let data = Self.pattern(3 << 20 + i * 4097, seed: UInt64(seed * 10 + i))
            let f = try fs.create(path: "/f\(i)", kind: .regular, owner: Ownership(permissions: 0o644))
            try fs.write(f, at: 0, data)
            expected["/f\(i)"] = data
        }
        for i in 0..<40 {
            let data = Self.pattern(100 + i * 300, seed: UInt64(1000 + i))
            let f = try fs.create(path: "/s\(i)", kind: .regular, owner: Ownership(permissions: 0o644))
            try fs.write(f, at: 0, data)
            expected["/s\(i)"] = data
        }
        try fs.close()
        let vector = fs.budget.statistics(.writebackVector)
        #expect(vector.injected > 0, "the plan must have failed writeback allocations")
        let stats = fs.pageCache!.statistics
        #expect(stats.writebackRetries + stats.reserveRuns > 0, "failed allocations are retried or written page by page")
        #expect(stats.writeErrors == 0)
        try WritePathTests.expectClean(image)
        for (path, data) in expected { #expect(try Self.dumped(image, path, scratch) == data, "\(path)") }
    }

    /// An image with /f written and synced, opened on a device that can fail its blocks' writes.
    static func failingSetup(_ scratch: Scratch, errors: ErrorsPolicy = .continue) throws -> (Filesystem, FailingWritesDevice, UInt32, Range<UInt64>) {
        let image = scratch.path("e.img")
        try WritePathTests.makeImage(image, blockSize: 4096, megabytes: 64)
        do {
            let fs = try WritePathTests.open(image)
            let f = try fs.create(path: "/f", kind: .regular, owner: Ownership(permissions: 0o644))
            try fs.write(f, at: 0, Self.pattern(64 << 10, seed: 1))
            try fs.close()
        }
        let first = try Self.physicalBlock(image, "/f")
        let device = try FailingWritesDevice(path: image, blockSize: 4096)
        var options = OpenOptions(memoryBudget: 16 << 20, writable: true)
        options.flusher = false  // writeback happens at sync and close only: the test decides when
        options.errors = errors
        let fs = try Filesystem(device: device, options: options)
        let f = try fs.resolve("/f").number
        return (fs, device, f, first..<(first + 16))
    }

    @Test("a failed writeback reaches every file description's fsync once; the data stays dirty and is written later")
    func errorsReachEveryDescription() throws {
        let scratch = try Scratch()
        let (fs, device, f, blocks) = try Self.failingSetup(scratch)
        let a = try fs.openFile(f), b = try fs.openFile(f)
        let newer = Self.pattern(64 << 10, seed: 2)
        try fs.write(f, at: 0, newer)
        device.fail(blocks)
        #expect(throws: HoldfastError.self) { try a.sync() }
        #expect(device.failedWrites > 0)
        #expect(fs.pageCache!.statistics.dirtyPages >= 16, "a failed write leaves its pages dirty")
        #expect(try fs.read(try fs.inode(f), offset: 0, count: 64 << 10) == newer, "the data is still there to read")
        // Still failing, the retry is a new error, and a hears of that one too.
        #expect(throws: HoldfastError.self) { try a.sync() }
        device.heal()
        #expect(throws: HoldfastError.self, "b has not heard of the error") { try b.sync() }
        try b.sync()
        try a.sync()
        let c = try fs.openFile(f)
        try c.sync()
        for d in [a, b, c] { try d.close() }
        try fs.close()
        #expect(try Self.dumped(scratch.path("e.img"), "/f", scratch) == newer)
        try WritePathTests.expectClean(scratch.path("e.img"))
    }

    @Test("the anonymous fsync hears of an error once too (generic/441 at the API)")
    func anonymousFsync() throws {
        let scratch = try Scratch()
        let (fs, device, f, blocks) = try Self.failingSetup(scratch)
        try fs.write(f, at: 4096, Self.pattern(8192, seed: 3))
        device.fail(blocks)
        #expect(throws: HoldfastError.self) { try fs.fsync(f) }
        device.heal()
        try fs.fsync(f)  // written now, and the error was told already
        try fs.close()
        try WritePathTests.expectClean(scratch.path("e.img"))
    }

    @Test("close with data the device refuses fails, names the file and leaves the image marked for e2fsck")
    func closeNamesUnwrittenFiles() throws {
        let scratch = try Scratch()
        let (fs, device, f, blocks) = try Self.failingSetup(scratch)
        try fs.write(f, at: 0, Self.pattern(64 << 10, seed: 4))
        device.fail(blocks)
        let e = #expect(throws: HoldfastError.self, "close must not report success with unwritten data") { try fs.close() }
        if case .dataNotWritten(let inodes, _) = e { #expect(inodes == [f]) } else { Issue.record("wrong error: \(String(describing: e))") }
        #expect(e?.description.contains("could not be written") == true)
        let header = try Support.sh(["dumpe2fs", "-h", scratch.path("e.img")])
        #expect(header.contains("not clean"), "the superblock must not say the filesystem was cleanly unmounted")
    }

    @Test("errors=remount-ro: after a failed writeback no change is accepted, the dirty data is still written")
    func remountReadOnly() throws {
        let scratch = try Scratch()
        let (fs, device, f, blocks) = try Self.failingSetup(scratch, errors: .remountReadOnly)
        let newer = Self.pattern(64 << 10, seed: 6)
        try fs.write(f, at: 0, newer)
        device.fail(blocks)
        #expect(throws: HoldfastError.self) { try fs.sync() }
        let e = #expect(throws: HoldfastError.self, "a write accepted after remount-ro") { try fs.write(f, at: 0, [1, 2, 3]) }
        if case .readOnly = e {} else { Issue.record("wrong error: \(String(describing: e))") }
        device.heal()
        try fs.close()
        #expect(try Self.dumped(scratch.path("e.img"), "/f", scratch) == newer)
    }
}
