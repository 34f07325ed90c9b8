import Foundation
import Holdfast
import HoldfastCache
import HoldfastDevice
import HoldfastMemory
import HoldfastTestSupport
import Testing

/// The page cache and writeback (DESIGN.md rules 4 to 8): dirty data is held until it is written,
/// inside the budget; failures are retried or reported, never dropped.
@Suite("page cache and writeback", .serialized)
struct PageCacheTests {
    /// Deterministic contents: a different byte pattern per seed and position.
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
        try Images.make(image, blockSize: 4096, megabytes: 256)
        var options = OpenOptions(memoryBudget: 2 << 20, writable: true)
        options.flusher = flusher
        let fs = try Filesystem.open(path: image, options: options)
        let f = try fs.create(path: "/big", kind: .regular, owner: Ownership(permissions: 0o644))
        let piece = Patterns.random(1 << 20, seed: 5)
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
        try Images.expectClean(image)
        let back = try Images.dumped(image, "/big", scratch)
        #expect(back.count == 64 << 20)
        #expect(stride(from: 0, to: back.count, by: 1 << 20).allSatisfy { Array(back[$0..<($0 + (1 << 20))]) == piece })
    }

    @Test("a read that does not cache returns what the cache holds (dirty bytes too) and the image the rest, and keeps nothing")
    func readAroundTheCache() throws {
        let scratch = try Scratch()
        let image = scratch.path("r.img")
        try Images.make(image, blockSize: 4096, megabytes: 64)
        let a = Patterns.random(2 << 20, seed: 11), b = Patterns.random(512 << 10, seed: 12), c = Patterns.random(5000, seed: 13)
        // On the image: 2 MiB of data, a 1 MiB hole, 512 KiB of data, 1 MiB preallocated (unwritten).
        var fs = try Images.openWritable(image)
        let f = try fs.create(path: "/f", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(f, at: 0, a)
        try fs.write(f, at: 3 << 20, b)
        try fs.fallocate(f, offset: (3 << 20) + (512 << 10), length: 1 << 20, mode: .allocate)
        try fs.close()
        // A fresh open: nothing cached; then 5,000 bytes overwritten, dirty in the cache only (no
        // flusher: they stay dirty while the reads run, so only the cache can give them).
        var quiet = OpenOptions(memoryBudget: 16 << 20, writable: true)
        quiet.flusher = false
        fs = try Filesystem.open(path: image, options: quiet)
        try fs.write(f, at: 100_000, c)
        var expected = a + [UInt8](repeating: 0, count: 1 << 20) + b + [UInt8](repeating: 0, count: 1 << 20)
        expected.replaceSubrange(100_000..<105_000, with: c)
        let node = try fs.inode(f)
        #expect(node.size == UInt64(expected.count))
        // Pages held, whatever state the flusher moves them to meanwhile.
        let held = { () -> Int in let st = fs.pageCache!.statistics; return st.cleanPages + st.dirtyPages + st.writebackPages }
        let before = held()
        for (offset, count) in [(0, expected.count), (4095, 10_000), (99_000, 8000), ((2 << 20) - 10, 20), ((3 << 20) + (512 << 10) - 3, 4100),
                                (expected.count - 7, 100)] {
            var out = [UInt8](repeating: 0xAA, count: count)
            let n = try out.withUnsafeMutableBytes { try fs.read(node, offset: UInt64(offset), into: $0, caching: false) }
            let want = Array(expected[offset..<min(expected.count, offset + count)])
            #expect(n == want.count && Array(out[..<n]) == want, "bytes \(offset)..<\(offset + count)")
        }
        #expect(held() == before, "no page was kept")
        // The cached read agrees, and keeps pages.
        #expect(try fs.read(node, offset: 0, count: expected.count) == expected)
        #expect(held() > before)
        try fs.close()
        try Images.expectClean(image)
    }

    @Test("writeback out of memory is retried and never reported: exact data, the retries counted", arguments: [1, 2, 3])
    func writebackOutOfMemory(seed: Int) throws {
        let scratch = try Scratch()
        let image = scratch.path("m.img")
        try Images.make(image, blockSize: 4096, megabytes: 128)
        let plan = try FaultPlan(parsing: "category=writeback,probability=0.3,seed=\(seed)")
        let fs = try Images.openWritable(image, memory: 2 << 20, faults: plan)
        var expected: [String: [UInt8]] = [:]
        for i in 0..<4 {
            let data = Patterns.random(3 << 20 + i * 4097, seed: UInt64(seed * 10 + i))
            let f = try fs.create(path: "/f\(i)", kind: .regular, owner: Ownership(permissions: 0o644))
            try fs.write(f, at: 0, data)
            expected["/f\(i)"] = data
        }
        for i in 0..<40 {
            let data = Patterns.random(100 + i * 300, seed: UInt64(1000 + i))
            let f = try fs.create(path: "/s\(i)", kind: .regular, owner: Ownership(permissions: 0o644))
            try fs.write(f, at: 0, data)
            expected["/s\(i)"] = data
        }
        try fs.close()
        let vector = fs.budget.statistics(.writebackVector)
        #expect(vector.injected > 0, "the plan must have failed writeback allocations")
        let stats = fs.pageCache!.statistics
        #expect(stats.writebackRetries + stats.reserveRuns + stats.poolRuns > 0, "failed allocations are retried, or written on the reserve or page by page")
        #expect(stats.writeErrors == 0)
        try Images.expectClean(image)
        for (path, data) in expected { #expect(Bytes(try Images.dumped(image, path, scratch)) == Bytes(data), "\(path)") }
    }

    /// An image with /f written and synced, opened on a device that can fail its blocks' writes.
    static func failingSetup(_ scratch: Scratch, errors: ErrorsPolicy = .continue) throws -> (Filesystem, FailingWritesDevice, UInt32, Range<UInt64>) {
        let image = scratch.path("e.img")
        try Images.make(image, blockSize: 4096, megabytes: 64)
        do {
            let fs = try Images.openWritable(image)
            let f = try fs.create(path: "/f", kind: .regular, owner: Ownership(permissions: 0o644))
            try fs.write(f, at: 0, Patterns.random(64 << 10, seed: 1))
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
        let newer = Patterns.random(64 << 10, seed: 2)
        try fs.write(f, at: 0, newer)
        device.fail(blocks)
        #expect(throws: HoldfastError.self) { try a.sync() }
        #expect(device.failedWrites > 0)
        #expect(fs.pageCache!.statistics.dirtyPages >= 16, "a failed write leaves its pages dirty")
        #expect(Bytes(try fs.read(try fs.inode(f), offset: 0, count: 64 << 10)) == Bytes(newer), "the data is still there to read")
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
        #expect(try Images.dumped(scratch.path("e.img"), "/f", scratch) == newer)
        try Images.expectClean(scratch.path("e.img"))
    }

    @Test("a timer commit that fails leaves nothing due: the timer waits for the next change instead of firing again at once")
    func failedTimerCommitDisarms() throws {
        let scratch = try Scratch()
        let (fs, device, f, _) = try Self.failingSetup(scratch)
        try fs.write(f, at: 64 << 10, Patterns.random(64 << 10, seed: 4))  // delayed pages: mapping arms the timer
        device.fail(0..<UInt64.max)
        fs.commitDue()
        #expect(!fs.commitIsDue, "the failed commit left the timer due, so it would fire again at once")
        #expect(throws: HoldfastError.self, "the failure is kept for the next sync") { try fs.sync() }
        device.heal()
        // The journal was aborted: the next open recovers what it committed, and the image is clean.
        _ = try? fs.close()
        let again = try Images.openWritable(scratch.path("e.img"))
        try again.close()
        try Images.expectClean(scratch.path("e.img"))
    }

    @Test("the anonymous fsync hears of an error once too (generic/441 at the API)")
    func anonymousFsync() throws {
        let scratch = try Scratch()
        let (fs, device, f, blocks) = try Self.failingSetup(scratch)
        try fs.write(f, at: 4096, Patterns.random(8192, seed: 3))
        device.fail(blocks)
        #expect(throws: HoldfastError.self) { try fs.fsync(f) }
        device.heal()
        try fs.fsync(f)  // written now, and the error was told already
        try fs.close()
        try Images.expectClean(scratch.path("e.img"))
    }

    @Test("close with data the device refuses fails, names the file and leaves the image marked for e2fsck")
    func closeNamesUnwrittenFiles() throws {
        let scratch = try Scratch()
        let (fs, device, f, blocks) = try Self.failingSetup(scratch)
        try fs.write(f, at: 0, Patterns.random(64 << 10, seed: 4))
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
        let newer = Patterns.random(64 << 10, seed: 6)
        try fs.write(f, at: 0, newer)
        device.fail(blocks)
        #expect(throws: HoldfastError.self) { try fs.sync() }
        let e = #expect(throws: HoldfastError.self, "a write accepted after remount-ro") { try fs.write(f, at: 0, [1, 2, 3]) }
        if case .readOnly = e {} else { Issue.record("wrong error: \(String(describing: e))") }
        device.heal()
        try fs.close()
        #expect(try Images.dumped(scratch.path("e.img"), "/f", scratch) == newer)
    }

    @Test("delayed allocation: files written in small interleaved pieces get their blocks at writeback, in a few extents", arguments: [1024, 4096])
    func delayedAllocationKeepsFilesContiguous(blockSize: Int) throws {
        let scratch = try Scratch()
        let image = scratch.path("d.img")
        try Images.make(image, blockSize: blockSize, megabytes: 64)
        var options = OpenOptions(memoryBudget: 16 << 20, writable: true)
        options.flusher = false
        let fs = try Filesystem.open(path: image, options: options)
        let owner = Ownership(permissions: 0o644)
        let a = try fs.create(path: "/a", kind: .regular, owner: owner), b = try fs.create(path: "/b", kind: .regular, owner: owner)
        let piece = Patterns.random(12 << 10, seed: 21)
        for i in 0..<64 {
            try fs.write(a, at: UInt64(i * piece.count), piece)
            try fs.write(b, at: UInt64(i * piece.count), piece)
        }
        #expect(fs.pageCache!.statistics.delayedPages == 2 * 64 * (12 << 10) / blockSize, "no block yet for any of it")
        let free = try fs.spaceUsage().freeBlocks
        #expect(Bytes(try #require(fs.read(try fs.inode(b), offset: 0, count: 24 << 10))) == Bytes(piece + piece), "delayed data reads back")
        try fs.sync()
        #expect(fs.pageCache!.statistics.delayedPages == 0)
        #expect(try Images.extentCount(fs, "/a") <= 2 && Images.extentCount(fs, "/b") <= 2,
                "each file's blocks come in one run at writeback, not interleaved")
        #expect(try fs.spaceUsage().freeBlocks == free, "statfs counted the reservation as used")
        try fs.close()
        try Images.expectClean(image)
        let whole = [UInt8]((0..<64).flatMap { _ in piece })
        #expect(try Images.dumped(image, "/a", scratch) == whole)
        #expect(try Images.dumped(image, "/b", scratch) == whole)
    }

    @Test("delayed allocation: no space is the write's error, never writeback's; what was accepted is written")
    func delayedAllocationReportsNoSpaceAtWrite() throws {
        let scratch = try Scratch()
        let image = scratch.path("full.img")
        try Images.make(image, blockSize: 4096, megabytes: 16)
        var options = OpenOptions(memoryBudget: 64 << 20, writable: true)
        options.flusher = false  // nothing allocated before close: the reservation alone must hold
        let fs = try Filesystem.open(path: image, options: options)
        let piece = Patterns.random(256 << 10, seed: 22)
        var accepted: [String] = []
        var refused = false
        for i in 0..<200 {
            let path = "/f\(i)"
            let n = try fs.create(path: path, kind: .regular, owner: Ownership(permissions: 0o644))
            do {
                try fs.write(n, at: 0, piece)
                accepted.append(path)
            } catch {
                if case HoldfastError.noSpace = error { refused = true } else { Issue.record("wrong error: \(error)") }
                break
            }
        }
        #expect(refused, "a 16 MiB image cannot take 50 MiB")
        #expect(accepted.count > 20)
        try fs.close()
        try Images.expectClean(image)
        for path in accepted.prefix(3) + accepted.suffix(2) { #expect(try Images.dumped(image, path, scratch) == piece, "\(path)") }
    }
}

extension PageCacheTests {
    @Test("pages a write finds it needs under the lock come noWait (the cache's own clean pages first), or it fails holding nothing",
          arguments: [false, true])
    func lockedTopUp(failing: Bool) throws {
        let scratch = try Scratch()
        let image = scratch.path("l.img")
        try Images.make(image, blockSize: 4096, megabytes: 8)
        let budget = MemoryBudget(limit: 1 << 20, faultPlan: failing ? FaultPlan(site: "pagecache.page-locked", persistent: true) : nil)
        let cache = PageCache(device: try ImageFile(path: image, writable: true), budget: budget)
        let baseline = budget.used
        var spare: [Page] = []
        var ready: [UInt64: Page] = [:]
        if failing {
            #expect(throws: OutOfMemoryError.self) { _ = try cache.hold(7, first: 0, count: 4, physical: 100, spare: &spare, ready: &ready) }
            #expect(!cache.hasPages(7), "nothing held after the failure")
        } else {
            let held = try cache.hold(7, first: 0, count: 4, physical: 100, spare: &spare, ready: &ready)
            #expect(held.count == 4 && held.allSatisfy(\.isNew))
            #expect(budget.statistics(.pageCacheLocked).hits == 4)
            cache.discard(7, held.map { ($0.index, $0.isNew) })
        }
        #expect(budget.used == baseline)
    }

    @Test("a filled page whose block was cached meanwhile serves as a blank one: no page is taken under the lock")
    func filledPageOvertaken() throws {
        let scratch = try Scratch()
        let image = scratch.path("o.img")
        try Images.make(image, blockSize: 4096, megabytes: 8)
        // Pages under the lock always fail: the hold can only use what it was given.
        let budget = MemoryBudget(limit: 1 << 20, faultPlan: FaultPlan(site: "pagecache.page-locked", persistent: true))
        let cache = PageCache(device: try ImageFile(path: image, writable: true), budget: budget)
        let baseline = budget.used
        // Block 0 was filled for a write; then another write cached block 0 first.
        let filled = try #require(budget.allocatePage(at: .pageCachePage))
        var spare = [try #require(budget.allocatePage(at: .pageCachePage))]
        var none: [UInt64: Page] = [:]
        let other = try cache.hold(7, first: 0, count: 1, physical: 100, spare: &spare, ready: &none)
        cache.publish(7, other.map(\.index))
        // Blocks 0 (cached now) and 1 (absent): the filled page goes to block 1 as a blank page.
        var ready: [UInt64: Page] = [0: filled]
        let held = try cache.hold(7, first: 0, count: 2, physical: 100, spare: &spare, ready: &ready)
        #expect(held.map(\.isNew) == [false, true] && held.allSatisfy { !$0.prefilled })
        #expect(ready.isEmpty && spare.isEmpty)
        #expect(budget.statistics(.pageCacheLocked).hits == 0)
        cache.publish(7, held.map(\.index))
        cache.flushAll()
        cache.dropAllClean()
        #expect(budget.used == baseline)
    }

    @Test("writeback that finds the budget full and may not back off writes its run in one call on the reserve")
    func writebackOnTheReserve() throws {
        let scratch = try Scratch()
        let image = scratch.path("r.img")
        try Images.make(image, blockSize: 4096, megabytes: 64)
        // Every page list from the budget fails: the flusher backs off, sync may not and uses the reserve.
        let fs = try Images.openWritable(image, memory: 4 << 20, faults: FaultPlan(site: "writeback.vector", persistent: true))
        let data = Patterns.random(3 << 20, seed: 31)
        let f = try fs.create(path: "/r", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(f, at: 0, data)
        try fs.sync()
        let s = fs.pageCache!.statistics
        #expect(s.poolRuns > 0 && s.reserveRuns == 0, "\(s.line)")
        #expect(s.writeErrors == 0)
        try fs.close()
        #expect(fs.budget.used == 0, "the reserve goes back at close")
        #expect(Bytes(try Images.dumped(image, "/r", scratch)) == Bytes(data))
    }

    @Test("an eviction with every byte of the budget held elsewhere runs on the reserve set aside for it")
    func evictionOnTheReserve() throws {
        let scratch = try Scratch()
        let image = scratch.path("v.img")
        try Images.make(image, blockSize: 4096, megabytes: 32)
        let fs = try Images.openWritable(image, memory: 4 << 20)
        let before = try fs.spaceUsage().freeBlocks
        let n = try fs.create(path: "/v", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(n, at: 0, Patterns.random(2 << 20, seed: 41))
        try fs.sync()
        let d = try fs.openFile(n)
        try fs.unlink(path: "/v")
        // Reclaim takes what it can, then every free byte is held: only the reserve is left.
        var held: [Page] = []
        while let p = fs.budget.allocatePage(at: .pageCachePage) { held.append(p) }
        try d.close()
        for p in held { fs.budget.freePage(p, for: .pageCachePage) }
        #expect(fs.evictionsOnReserve == 1 && fs.evictionsDeferred == 0)
        try fs.sync()
        #expect(try fs.spaceUsage().freeBlocks == before, "the file's blocks are free at once")
        try fs.close()
        #expect(fs.budget.used == 0)
        try Images.expectClean(image)
    }

    @Test("the last close of an unlinked file never fails for want of memory: the orphan waits on the list, nothing leaks")
    func evictionCannotFail() throws {
        let scratch = try Scratch()
        let pristine = scratch.path("e.img")
        try Images.make(pristine, blockSize: 4096, megabytes: 32)
        /// An unlinked file still open, its last close still to come.
        func prepare(_ image: String, _ plan: FaultPlan?) throws -> (Filesystem, OpenFile) {
            try Support.sh(["cp", pristine, image])
            var options = OpenOptions(memoryBudget: 4 << 20, writable: true)
            options.faultPlan = plan
            options.flusher = false  // the same hits in the same order each run
            let fs = try Filesystem.open(path: image, options: options)
            let n = try fs.create(path: "/u", kind: .regular, owner: Ownership(permissions: 0o644))
            try fs.write(n, at: 0, Patterns.random(3 << 20, seed: 21))
            try fs.sync()
            let d = try fs.openFile(n)
            try fs.unlink(path: "/u")
            return (fs, d)
        }
        let (dry, dd) = try prepare(scratch.path("dry.img"), nil)
        let hits = dry.budget.hitSites.first { $0.site.name == "handle.undo" }?.hits ?? 0
        try dd.close()
        try dry.close()
        #expect(hits > 0)
        // Every handle from the last close on fails for memory.
        let image = scratch.path("e.run.img")
        let (fs, d) = try prepare(image, FaultPlan(nth: hits + 1, site: "handle.undo", persistent: true))
        try d.close()  // must not throw
        #expect(fs.evictionsDeferred == 1)
        #expect(throws: HoldfastError.self, "the image's close cannot finish the orphan either, and says so") { try fs.close() }
        // The next open finishes it: the blocks come back and e2fsck is clean.
        let again = try Images.openWritable(image)
        let free = try again.spaceUsage().freeBlocks
        try again.close()
        let base = try Images.openWritable(scratch.path("dry.img"))
        #expect(free == (try base.spaceUsage().freeBlocks), "the unlinked file's blocks are free again")
        try base.close()
        try Images.expectClean(image)
    }
}

/// The torture run of the page cache (DESIGN.md, fault injection): a mixed workload of writes,
/// overwrites, truncates, fallocate, fsync and unlink while open, with each allocation site it
/// reaches failing in turn (its first, middle and last hit; once, and from then on). Every run:
/// no crash, each call succeeds or fails with a clean error, the budget is back to zero, every
/// byte an fsync acknowledged is there, and e2fsck -fn passes.
@Suite("page cache torture", .serialized)
struct PageCacheTortureTests {
    final class Outcome {
        var acknowledged: [String: [UInt8]] = [:]
        var cleanFailures = 0
    }

    /// Runs the workload; `step` catches a clean failure (out of memory, or a name a failed step
    /// left missing or taken) and records anything else.
    static func workload(_ fs: Filesystem, _ label: String) -> Outcome {
        let out = Outcome()
        func step(_ body: () throws -> Void) -> Bool {
            do { try body(); return true } catch let e as HoldfastError {
                switch e {
                // dataNotWritten: an fsync whose pages could not get blocks (memory) says so.
                case .outOfMemory, .notFound, .exists, .dataNotWritten: out.cleanFailures += 1
                case .partialWrite(_, _, .outOfMemory): out.cleanFailures += 1  // the first steps stay
                default: Issue.record("\(label): \(e)")
                }
            } catch { Issue.record("\(label): untyped \(error)") }
            return false
        }
        let owner = Ownership(permissions: 0o644)
        // A: written, then fsync'ed through a description.
        let a = Patterns.random(200 << 10, seed: 11)
        _ = step {
            let n = try fs.create(path: "/a", kind: .regular, owner: owner)
            let d = try fs.openFile(n)
            defer { try? d.close() }
            try fs.write(n, at: 0, a)
            try d.sync()
            out.acknowledged["/a"] = a
            // Read back in order through the description (readahead), after the clean pages went.
            fs.pageCache?.dropAllClean()
            var back: [UInt8] = []
            for offset in stride(from: 0, to: a.count, by: 16 << 10) { back += try d.read(at: UInt64(offset), count: 16 << 10) }
            if back != a { Issue.record("\(label): /a read back wrong") }
        }
        // B: overwrite, truncate, fallocate, punch, then fsync: the expected bytes follow each step.
        _ = step {
            let n = try fs.create(path: "/b", kind: .regular, owner: owner)
            let d = try fs.openFile(n)
            defer { try? d.close() }
            var b = Patterns.random(100 << 10, seed: 12)
            try fs.write(n, at: 0, b)
            let patch = Patterns.random(10 << 10, seed: 13)
            try fs.write(n, at: 50 << 10, patch)
            b.replaceSubrange((50 << 10)..<(60 << 10), with: patch)
            try fs.truncate(n, to: 70 << 10)
            b.removeLast(b.count - (70 << 10))
            try fs.fallocate(n, offset: 0, length: 1 << 20, mode: .keepSize)
            try fs.fallocate(n, offset: 8 << 10, length: 8 << 10, mode: .punchHole)
            b.replaceSubrange((8 << 10)..<(16 << 10), with: [UInt8](repeating: 0, count: 8 << 10))
            try d.sync()
            out.acknowledged["/b"] = b
            if try fs.read(try fs.inode(n), offset: 0, count: 1 << 20) != b { Issue.record("\(label): /b read back wrong") }
        }
        // C: unlinked while open, written after, closed (the orphan goes at the last close).
        _ = step {
            let n = try fs.create(path: "/c", kind: .regular, owner: owner)
            let d = try fs.openFile(n)
            defer { try? d.close() }
            try fs.write(n, at: 0, Patterns.random(64 << 10, seed: 14))
            try fs.unlink(path: "/c")
            try fs.write(n, at: 64 << 10, Patterns.random(32 << 10, seed: 15))
            try d.sync()
        }
        // P: an overwrite of cached pages while the budget is full of memory held elsewhere. The
        // write counts no page missing, then its metadata reads under the lock reclaim those very
        // pages: the page cache tops up under its lock (`pagecache.page-locked`, noWait). (A write
        // reads its inode before the lock, so that is cached here; its extent tree's leaf it reads
        // under the lock: five pieces apart give the file more extents than the inode holds.)
        _ = step {
            try fs.sync()
            fs.pageCache?.dropAllClean()  // the file's pages will be the only clean ones
            let n = try fs.create(path: "/p", kind: .regular, owner: owner)
            try fs.write(n, at: 0, Patterns.random(16 << 10, seed: 16))
            var whole = [UInt8](repeating: 0, count: (5 << 16) + 4096)
            for k in 1...5 {
                let piece = Patterns.random(4096, seed: 30 + UInt64(k))
                try fs.write(n, at: UInt64(k) << 16, piece)
                whole.replaceSubrange((k << 16)..<((k << 16) + 4096), with: piece)
            }
            try fs.sync()
            // Newer clean pages, of another file: what the top-up frees once the file's own are gone.
            let q = try fs.create(path: "/q", kind: .regular, owner: owner)
            try fs.write(q, at: 0, Patterns.random(32 << 10, seed: 20))
            try fs.sync()
            fs.cache.drain()  // nothing dirty after a sync: the write must read its metadata again
            _ = try fs.inode(n)  // but not its inode, which a write reads before the lock
            let p = Patterns.random(16 << 10, seed: 17)
            try withBallast(fs.budget, leaving: fs.blockSize / 2) { try fs.write(n, at: 0, p) }
            try fs.fsync(n)
            whole.replaceSubrange(0..<p.count, with: p)
            out.acknowledged["/p"] = whole
        }
        // R: an fsync with no memory left for the write's page list: it writes from the writeback
        // reserve (`writeback.reserve`).
        _ = step {
            let n = try fs.create(path: "/r", kind: .regular, owner: owner)
            try fs.write(n, at: 0, Patterns.random(32 << 10, seed: 18))
            try fs.sync()
            let r = Patterns.random(32 << 10, seed: 19)
            try fs.write(n, at: 0, r)  // mapped blocks: writeback needs no allocation
            // fsync looks the inode up: from the inode cache (which keeps a file with dirty pages)
            // once everything reclaim can free is gone.
            _ = try fs.inode(n)
            _ = fs.budget.reclaim(1 << 40)
            try withBallast(fs.budget, leaving: 0) { try fs.fsync(n) }
            out.acknowledged["/r"] = r
        }
        // Small files, then one sync for all of them.
        let small = Outcome()
        for i in 0..<12 {
            _ = step {
                let data = Patterns.random(1000 + i * 700, seed: UInt64(100 + i))
                let n = try fs.create(path: "/s\(i)", kind: .regular, owner: owner)
                try fs.write(n, at: 0, data)
                small.acknowledged["/s\(i)"] = data
            }
        }
        if step({ try fs.sync() }) { out.acknowledged.merge(small.acknowledged) { $1 } }
        return out
    }

    static let ballastSite = AllocationSite("torture.ballast", .mayFail, .test, "memory the torture holds to leave the engine a full budget")

    /// Runs `body` with all of the budget but `leaving` bytes charged here (another user's memory).
    static func withBallast(_ budget: MemoryBudget, leaving: Int, _ body: () throws -> Void) throws {
        let bytes = max(0, budget.limit - budget.used - leaving)
        guard budget.charge(bytes, at: ballastSite) else { throw HoldfastError.outOfMemory(OutOfMemoryError(site: ballastSite, bytes: bytes, limit: budget.limit)) }
        defer { budget.uncharge(bytes, for: ballastSite) }
        try body()
    }

    static func run(_ pristine: String, plan: FaultPlan?, label: String) throws -> (Outcome, MemoryBudget) {
        let image = pristine + ".run"
        try Support.sh(["cp", pristine, image])
        var options = OpenOptions(memoryBudget: 1 << 20, writable: true)
        options.faultPlan = plan
        options.flusher = false  // every hit on this thread, in order: the Nth hit is the same each run
        let opened = Locked<MemoryBudget?>(nil)
        options.onBudget = { b in opened.withLock { $0 = b } }
        var fs: Filesystem?
        do { fs = try Filesystem.open(path: image, options: options) } catch {
            // Opening may take the fault itself (the journal's staging blocks): a clean, typed
            // refusal that changed nothing and gave back what it took.
            if case HoldfastError.outOfMemory = error {} else { Issue.record("\(label): open: \(error)") }
            try Images.expectClean(image)
            let budget = opened.withLock { $0 } ?? MemoryBudget(limit: 1 << 20)
            #expect(budget.used == 0, "\(label): \(budget.used) bytes still charged after a failed open")
            return (Outcome(), budget)
        }
        let budget = fs!.budget
        let outcome = workload(fs!, label)
        do { try fs!.close() } catch {
            // Only memory may run out here (orphan work at close); the image stays for the next open.
            switch error {
            case HoldfastError.outOfMemory, HoldfastError.dataNotWritten: break
            default: Issue.record("\(label): close: \(error)")
            }
        }
        fs = nil
        #expect(budget.used == 0, "\(label): \(budget.used) bytes still charged after close")
        // A clean open finishes what the faulted one could not (orphans), then the judges.
        let check = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 16 << 20, writable: true))
        for (path, data) in outcome.acknowledged {
            let node = try check.resolve(path)
            #expect(Bytes(try check.read(node, offset: 0, count: Int(node.size) + 1)) == Bytes(data), "\(label): \(path) lost fsync-acknowledged bytes")
        }
        try check.close()
        try Images.expectClean(image)
        return (outcome, budget)
    }

    @Test("every allocation site the mixed workload reaches fails in turn, once and from then on")
    func eachSiteInTurn() throws {
        let scratch = try Scratch()
        let pristine = scratch.path("t.img")
        try Images.make(pristine, blockSize: 4096, megabytes: 32)
        let (dry, budget) = try Self.run(pristine, plan: nil, label: "dry run")
        #expect(dry.cleanFailures == 0)
        #expect(dry.acknowledged.count == 16)
        let sites = budget.hitSites.filter { $0.site.category != .io && $0.site.category != .test && $0.hits > 0 }
        for name in ["pagecache.page", "pagecache.page-locked", "writeback.vector", "writeback.reserve", "handle.undo", "buffer.block",
                     "pagecache.read", "pagecache.readahead", "extent-status.entry", "inode-cache.entry"] {
            #expect(sites.contains { $0.site.name == name }, "the workload never reaches \(name)")
        }
        var report: [String] = []
        for s in sites {
            var fired = 0, clean = 0
            for k in Set([1, (s.hits + 1) / 2, s.hits]).sorted() {
                for persistent in [false, true] {
                    let plan = FaultPlan(nth: k, site: s.site.name, persistent: persistent)
                    let (o, b) = try Self.run(pristine, plan: plan, label: "\(plan)")
                    fired += b.faultsFired
                    clean += o.cleanFailures
                }
            }
            #expect(fired > 0, "\(s.site.name): the plan never fired")
            report.append("\(s.site.name): hits=\(s.hits) fired=\(fired) clean-failures=\(clean)")
        }
        let reached = Set(sites.map(\.site.name))
        let never = Filesystem.allocationSites.filter { $0.category != .io && !reached.contains($0.name) }.map(\.name)
        print("torture coverage:\n  " + report.joined(separator: "\n  ") + "\n  never reached: " + never.joined(separator: ", "))
    }
}

/// A device whose reads of one byte range take 600 ms: a disk slow there.
final class SlowReadsDevice: BlockDevice, @unchecked Sendable {
    let underlying: ImageFile
    private let slow = Locked<Range<UInt64>>(0..<0)

    init(path: String) throws { underlying = try ImageFile(path: path, writable: true) }

    func slowDown(_ bytes: Range<UInt64>) { slow.withLock { $0 = bytes } }

    var byteCount: UInt64 { underlying.byteCount }
    var path: String { underlying.path }
    var isWritable: Bool { true }

    private func pause(_ offset: UInt64, _ count: Int) {
        let range = slow.withLock { $0 }
        if offset < range.upperBound && offset + UInt64(count) > range.lowerBound { usleep(600_000) }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DeviceError) {
        pause(offset, buffer.count)
        try underlying.read(into: buffer, at: offset)
    }
    func read(scattering pieces: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        pause(offset, pieces.reduce(0) { $0 + $1.count })
        try underlying.read(scattering: pieces, at: offset)
    }
    func copy(from offset: UInt64, count: Int, to fd: Int32, at destination: UInt64) throws(DeviceError) {
        pause(offset, count)
        try underlying.copy(from: offset, count: count, to: fd, at: destination)
    }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DeviceError) { try underlying.write(bytes, at: offset) }
    func write(fromFile fd: Int32, at source: UInt64, count: Int, to offset: UInt64) throws(DeviceError) {
        try underlying.write(fromFile: fd, at: source, count: count, to: offset)
    }
    func write(gathering pieces: [UnsafeRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        try underlying.write(gathering: pieces, at: offset)
    }
    func flush() throws(DeviceError) { try underlying.flush() }
}

extension PageCacheTests {
    @Test("a write waiting for the disk holds up no write to another file: what it reads, it reads before the write lock",
          arguments: [10, 4000])
    func writeReadsBeforeTheLock(offset: Int) throws {
        let scratch = try Scratch()
        let image = scratch.path("slow.img")
        try Images.make(image, blockSize: 4096, megabytes: 64)
        let a0 = Patterns.random(64 << 10, seed: 41), b0 = Patterns.random(64 << 10, seed: 42)
        do {
            let fs = try Images.openWritable(image)
            let a = try fs.create(path: "/a", kind: .regular, owner: Ownership(permissions: 0o644))
            let b = try fs.create(path: "/b", kind: .regular, owner: Ownership(permissions: 0o644))
            try fs.write(a, at: 0, a0)
            try fs.write(b, at: 0, b0)
            try fs.close()
        }
        let first = try Self.physicalBlock(image, "/a")
        let device = try SlowReadsDevice(path: image)
        var options = OpenOptions(memoryBudget: 16 << 20, writable: true)
        options.flusher = false
        let fs = try Filesystem(device: device, options: options)
        let a = try fs.resolve("/a").number, b = try fs.resolve("/b").number
        // /a's blocks read slowly from now on; nothing of either file's data is cached.
        device.slowDown((first * 4096)..<((first + 16) * 4096))
        // 100 bytes inside /a's blocks (crossing a block edge at 4000): the write needs the
        // rest of each block it covers in part, a slow read.
        let piece = [UInt8](repeating: 7, count: 100)
        let aTook = Locked<Double?>(nil)
        let writer = Thread {
            let start = Date()
            try? fs.write(a, at: UInt64(offset), piece)
            aTook.withLock { $0 = Date().timeIntervalSince(start) }
        }
        writer.start()
        usleep(150_000)  // /a's write is in its slow read now
        let start = Date()
        try fs.write(b, at: UInt64(offset), piece)
        let bTook = Date().timeIntervalSince(start)
        while aTook.withLock({ $0 }) == nil { usleep(1000) }
        #expect(aTook.withLock { $0 }! >= 0.5, "the write to /a waited for its read")
        #expect(bTook < 0.3, "the write to /b waited \(bTook) s for /a's read (it held the write lock)")
        device.slowDown(0..<0)
        var a1 = a0, b1 = b0
        a1.replaceSubrange(offset..<(offset + 100), with: piece)
        b1.replaceSubrange(offset..<(offset + 100), with: piece)
        #expect(Bytes(try fs.read(try fs.inode(a), offset: 0, count: a1.count)) == Bytes(a1))
        #expect(Bytes(try fs.read(try fs.inode(b), offset: 0, count: b1.count)) == Bytes(b1))
        try fs.close()
        try Images.expectClean(image)
    }
}
