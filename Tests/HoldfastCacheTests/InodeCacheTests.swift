import Foundation
import Holdfast
import HoldfastCache
import HoldfastMemory
import HoldfastTestSupport
import Testing

/// The inode cache: a lookup after the first comes from memory, a change is seen at once (a
/// rollback too), reclaim passes over inodes that are open, preallocated or have dirty pages, and
/// without memory for entries lookups read the table and nothing fails (DESIGN.md rules 1 and 4).
@Suite("inode cache", .serialized)
struct InodeCacheTests {
    static let owner = Ownership(permissions: 0o644)

    /// A writable filesystem without the flusher: pages stay dirty until the test writes them back.
    static func open(_ image: String, memory: Int = 16 << 20, faults: FaultPlan? = nil) throws -> Filesystem {
        var options = OpenOptions(memoryBudget: memory, writable: true)
        options.flusher = false
        options.faultPlan = faults
        return try Filesystem.open(path: image, options: options)
    }

    /// What the inode's slot holds now, bypassing the cache.
    static func fromTable(_ fs: Filesystem, _ n: UInt32) throws -> [UInt8] {
        fs.inodeCache.invalidate(n)
        return try fs.inode(n).raw
    }

    @Test("a second lookup comes from memory, and every change to a slot is seen at once")
    func hitsAndChanges() throws {
        let scratch = try Scratch()
        let image = scratch.path("c.img")
        try Images.make(image, blockSize: 4096, megabytes: 32)
        let fs = try Self.open(image)
        let files = try (0..<200).map { try fs.create(path: "/f\($0)", kind: .regular, owner: Self.owner) }
        try fs.sync()
        fs.inodeCache.dropAll()
        let before = fs.inodeCache.statistics
        for n in files { _ = try fs.inode(n) }
        for n in files { _ = try fs.inode(n) }
        let after = fs.inodeCache.statistics
        #expect(after.misses - before.misses == 200, "\(after.line)")
        #expect(after.hits - before.hits >= 200, "\(after.line)")
        #expect(after.entries >= 200)
        #expect(fs.budget.used(.inode) >= 200 * fs.inodeCache.entryBytes)

        // Each change shows in the next lookup (a cache that kept the old copy would not).
        let f = files[0]
        _ = try fs.inode(f)
        try fs.setAttributes(f, AttributeChanges(permissions: 0o600, uid: 42))
        #expect(try fs.inode(f).permissions == 0o600)
        #expect(try fs.inode(f).uid == 42)
        try fs.write(f, at: 0, Patterns.random(10_000, seed: 1))
        #expect(try fs.inode(f).size == 10_000)
        try fs.truncate(f, to: 3)
        #expect(try fs.inode(f).size == 3)
        try fs.link(f, in: Filesystem.rootInode, name: Array("again".utf8))
        #expect(try fs.inode(f).linksCount == 2)
        // Freed, then the same number given to a directory.
        let g = files[1]
        _ = try fs.inode(g)
        try fs.unlink(path: "/f1")
        #expect(try fs.inode(g).linksCount == 0)
        let d = try fs.create(path: "/dir", kind: .directory, owner: Self.owner)
        #expect(d == g, "the freed number is reused")
        #expect(try fs.inode(d).fileType == .directory)
        for n in files + [d] {
            let cached = try fs.inode(n).raw
            #expect(cached == (try Self.fromTable(fs, n)), "inode \(n)")
        }
        // A lookup that read the slot before a change inserts nothing after it.
        let old = try fs.inode(f)
        fs.inodeCache.invalidate(f)
        let token = try #require(fs.inodeCache.beginLoad(f))
        fs.inodeCache.invalidate(f)  // the slot changed while the lookup read it
        fs.inodeCache.finishLoad(f, token, old)
        #expect(!fs.inodeCache.isCached(f))
        try fs.close()
        #expect(fs.budget.used == 0)
        try Images.expectClean(image)
    }

    @Test("operations failing part way while a reader looks up the inodes they touch leave no stale copy")
    func rollbackRacingReader() throws {
        let scratch = try Scratch()
        let image = scratch.path("r.img")
        try Images.make(image, blockSize: 4096, megabytes: 32)
        // Some undo copies fail: operations fail part way, some after writing inode slots.
        let fs = try Self.open(image, faults: try FaultPlan(parsing: "site=handle.undo,probability=0.08,seed=7"))
        let numbers = UInt32(12)...UInt32(140)
        let stop = Locked(false)
        let reader = Thread {
            while !stop.withLock({ $0 }) {
                for n in numbers { _ = try? fs.inode(n) }
            }
        }
        reader.start()
        var failed = 0, done = 0
        func attempt(_ body: () throws -> Void) {
            do { try body(); done += 1 } catch { failed += 1 }
        }
        for i in 0..<400 {
            attempt {
                let n = try fs.create(path: "/f\(i % 100)", kind: .regular, owner: Self.owner)
                attempt { try fs.write(n, at: 0, Patterns.random(5000, seed: UInt64(i))) }
                attempt { try fs.setAttributes(n, AttributeChanges(permissions: UInt16(0o600 + i % 64))) }
            }
            attempt { try fs.unlink(path: "/f\((i + 50) % 100)") }
        }
        stop.withLock { $0 = true }
        while !reader.isFinished { usleep(1000) }
        #expect(failed > 0 && done > 0, "failed=\(failed) done=\(done)")
        var stale: [UInt32] = []
        for n in numbers where fs.inodeCache.isCached(n) {
            let cached = try fs.inode(n).raw
            if cached != (try Self.fromTable(fs, n)) { stale.append(n) }
        }
        #expect(stale.isEmpty, "stale cached inodes: \(stale) (\(fs.inodeCache.statistics.line))")
        try fs.close()
        try Images.expectClean(image)
    }

    @Test("reclaim frees unused inodes with their clean pages and extent entries, and passes over open, preallocated and dirty ones")
    func reclaimSkipsBusy() throws {
        let scratch = try Scratch()
        let image = scratch.path("k.img")
        try Images.make(image, blockSize: 4096, megabytes: 64)
        let fs = try Self.open(image)
        let data = Patterns.random(256 << 10, seed: 3)
        // clean: written and synced, then read (clean pages, extent entries); plain: only looked
        // up; opened: written and synced, then opened (clean pages, no preallocation).
        let clean = try fs.create(path: "/clean", kind: .regular, owner: Self.owner)
        try fs.write(clean, at: 0, data)
        let plain = try fs.create(path: "/plain", kind: .regular, owner: Self.owner)
        let marked = try fs.create(path: "/marked", kind: .regular, owner: Self.owner)
        let opened = try fs.create(path: "/opened", kind: .regular, owner: Self.owner)
        try fs.write(opened, at: 0, data)
        try fs.sync()
        for n in [clean, opened] { _ = try fs.read(try fs.inode(n), offset: 0, count: data.count) }
        let description = try fs.openFile(opened)
        // dirty: written, not synced (delayed pages).
        let dirty = try fs.create(path: "/dirty", kind: .regular, owner: Self.owner)
        try fs.write(dirty, at: 0, data)
        // A preallocation keeps an inode too (the allocator says so while it holds one).
        fs.inodeCache.setPreallocated(marked, true)
        for n in [clean, plain, marked, dirty, opened] { _ = try fs.inode(n) }
        #expect(fs.pageCache!.hasPages(clean) && fs.pageCache!.hasPages(opened))
        #expect(!fs.extentStatus.extents(clean).isEmpty)
        #expect(fs.pageCache!.statistics.dirtyPages > 0)

        // The inode cache's own shrinker, alone: what goes with an inode is its doing.
        _ = fs.inodeCache.reclaim(bytes: 1 << 40)
        let s = fs.inodeCache.statistics
        #expect(!fs.inodeCache.isCached(clean), "\(s.line)")
        #expect(!fs.inodeCache.isCached(plain), "\(s.line)")
        #expect(!fs.pageCache!.hasPages(clean), "a reclaimed inode's clean pages go with it")
        #expect(fs.extentStatus.extents(clean).isEmpty, "and its extent entries")
        #expect(fs.inodeCache.isCached(dirty), "an inode with dirty pages stays: \(s.line)")
        #expect(fs.inodeCache.isCached(opened), "an open inode stays")
        #expect(fs.pageCache!.hasPages(opened), "and so do its clean pages")
        #expect(fs.inodeCache.isCached(marked), "an inode holding a preallocation stays")
        #expect(s.skippedBusy > 0 && s.reclaimed >= 2, "\(s.line)")
        #expect(fs.pageCache!.statistics.dirtyPages > 0, "reclaim wrote nothing back and dropped nothing dirty")

        // Once written back and closed, they are ordinary unused inodes.
        try fs.sync()
        try description.close()
        fs.inodeCache.setPreallocated(marked, false)
        _ = fs.inodeCache.reclaim(bytes: 1 << 40)
        #expect(!fs.inodeCache.isCached(dirty))
        #expect(!fs.inodeCache.isCached(opened))
        #expect(!fs.inodeCache.isCached(marked))
        for n in [clean, dirty, opened] {
            #expect(Bytes(try fs.read(try fs.inode(n), offset: 0, count: data.count + 1)) == Bytes(data), "inode \(n)")
        }
        try fs.close()
        #expect(fs.budget.used == 0)
        try Images.expectClean(image)
        for path in ["/clean", "/dirty", "/opened"] { #expect(Bytes(try Images.dumped(image, path, scratch)) == Bytes(data), "\(path)") }
    }

    @Test("the allocator tells the inode cache while a file holds a preallocation window")
    func preallocationMarksInode() throws {
        let scratch = try Scratch()
        let image = scratch.path("a.img")
        try Images.make(image, blockSize: 4096, megabytes: 64)
        var options = OpenOptions(memoryBudget: 16 << 20, writable: true)
        options.flusher = false
        options.delayedAllocation = false  // blocks at the write: the window opens then
        let fs = try Filesystem.open(path: image, options: options)
        let n = try fs.create(path: "/log", kind: .regular, owner: Self.owner)
        let d = try fs.openFile(n)
        try fs.write(n, at: 0, Patterns.random(64 << 10, seed: 4))
        #expect(fs.preallocationUsage.windows == 1)
        #expect(fs.inodeCache.isPreallocated(n))
        try d.close()
        #expect(fs.preallocationUsage.windows == 0, "the last close gives the window back")
        #expect(!fs.inodeCache.isPreallocated(n))
        try fs.sync()
        _ = try fs.inode(n)
        _ = fs.inodeCache.reclaim(bytes: 1 << 40)
        #expect(!fs.inodeCache.isCached(n), "no window, not open, clean: reclaimed")
        try fs.close()
        try Images.expectClean(image)
    }

    @Test("without memory for entries, lookups read the table each time, opens fail cleanly, and nothing else does")
    func noMemoryForEntries() throws {
        let scratch = try Scratch()
        let image = scratch.path("n.img")
        try Images.make(image, blockSize: 4096, megabytes: 32)
        do {
            let fs = try Self.open(image)
            for i in 0..<20 {
                let n = try fs.create(path: "/f\(i)", kind: .regular, owner: Self.owner)
                try fs.write(n, at: 0, Patterns.random(3000 + i, seed: UInt64(i)))
            }
            try fs.close()
        }
        let fs = try Self.open(image, faults: try FaultPlan(parsing: "site=inode-cache.entry,persistent"))
        for i in 0..<20 {
            let node = try fs.resolve("/f\(i)")
            #expect(Bytes(try fs.read(node, offset: 0, count: 1 << 20)) == Bytes(Patterns.random(3000 + i, seed: UInt64(i))))
            try fs.setAttributes(node.number, AttributeChanges(permissions: 0o640))
            #expect(try fs.inode(node.number).permissions == 0o640)
        }
        let s = fs.inodeCache.statistics
        #expect(s.entries == 0 && s.uncached > 0 && s.hits == 0, "\(s.line)")
        var openError: HoldfastError?
        do { _ = try fs.openFile(try fs.resolve("/f0").number) } catch { openError = error }
        if case .outOfMemory(let e) = openError { #expect(e.site == "inode-cache.entry") } else {
            Issue.record("an open without memory for its inode: \(String(describing: openError))")
        }
        try fs.close()
        #expect(fs.budget.used == 0)
        try Images.expectClean(image)
    }
}
