import Foundation
import Holdfast
import HoldfastCache
import HoldfastMemory
import HoldfastTestSupport
import Testing

/// The extent-status cache: what it knows is the tree's, its memory is charged and taken before
/// its lock, and short of memory it forgets instead of failing or waiting (DESIGN.md rule 2).
@Suite("extent-status cache")
struct ExtentStatusTests {
    typealias E = ExtentStatusCache.Extent

    static func budget(_ bytes: Int = 1 << 20, faults: FaultPlan? = nil) -> MemoryBudget {
        MemoryBudget(limit: bytes, pageSize: 4096, faultPlan: faults)
    }

    @Test("a walk fills what is unknown, a lookup answers only what is covered, and the budget is charged per entry")
    func walkAndLookup() {
        let b = Self.budget()
        let es = ExtentStatusCache(budget: b)
        let t = es.beginWalk(12)
        es.insertWalk(12, token: t, [E(logical: 0, length: 10, physical: 500, status: .written),
                                     E(logical: 10, length: 5, status: .hole),
                                     E(logical: 15, length: 5, physical: 900, status: .unwritten)])
        #expect(es.lookup(12, from: 2, to: 18)?.map(\.status) == [.written, .hole, .unwritten])
        #expect(es.lookup(12, from: 18, to: 21) == nil, "block 20 is unknown")
        #expect(b.used == 3 * ExtentStatusCache.entryBytes)
        // A second walk over a wider range keeps the known entries and fills the rest only.
        let t2 = es.beginWalk(12)
        es.insertWalk(12, token: t2, [E(logical: 0, length: 20, physical: 0, status: .hole), E(logical: 20, length: 4, physical: 1000, status: .written)])
        #expect(es.extents(12) == [E(logical: 0, length: 10, physical: 500, status: .written), E(logical: 10, length: 5, status: .hole),
                                    E(logical: 15, length: 5, physical: 900, status: .unwritten), E(logical: 20, length: 4, physical: 1000, status: .written)])
        #expect(b.used == 4 * ExtentStatusCache.entryBytes)
        es.invalidate(12)
        #expect(es.lookup(12, from: 0, to: 1) == nil)
        #expect(b.used == 0)
    }

    @Test("a walk that an invalidation overtook inserts nothing")
    func staleWalk() {
        let b = Self.budget()
        let es = ExtentStatusCache(budget: b)
        let t = es.beginWalk(5)
        es.invalidate(5)  // the tree changed while the read walked it
        es.insertWalk(5, token: t, [E(logical: 0, length: 8, physical: 100, status: .written)])
        #expect(es.extents(5).isEmpty)
        #expect(b.used == 0)
    }

    @Test("a delayed range splits a hole in three and merges with delayed neighbours")
    func delayedSplitsHole() {
        let b = Self.budget()
        let es = ExtentStatusCache(budget: b)
        let t = es.beginWalk(7)
        es.insertWalk(7, token: t, [E(logical: 0, length: 100, status: .hole)])
        es.markDelayed(7, first: 40, count: 10)
        #expect(es.extents(7) == [E(logical: 0, length: 40, status: .hole), E(logical: 40, length: 10, status: .delayed), E(logical: 50, length: 50, status: .hole)])
        es.markDelayed(7, first: 50, count: 5)
        #expect(es.extents(7)[1] == E(logical: 40, length: 15, status: .delayed))
        #expect(b.used == 3 * ExtentStatusCache.entryBytes)
    }

    @Test("short of entries under the lock: the noWait top-up, else the lock let go to allocate, else forgetting; never an error",
          arguments: ["", "site=extent-status.locked,persistent", "category=extent-status,persistent"])
    func shortUnderTheLock(spec: String) throws {
        let b = Self.budget(faults: spec.isEmpty ? nil : try FaultPlan(parsing: spec))
        let es = ExtentStatusCache(budget: b)
        // Delayed data in four places of a file nobody has read yet...
        for k in 0..<4 { es.markDelayed(9, first: UInt64(10 + k * 20), count: 5) }
        // ...then a read walks the tree and finds one hole over all of it: the hole is cut in five
        // around the delayed extents, more entries than the walk charged before the lock.
        let t = es.beginWalk(9)
        es.insertWalk(9, token: t, [E(logical: 0, length: 100, status: .hole)])
        let s = es.statistics
        let statuses = es.extents(9).map(\.status)
        if spec.hasPrefix("category=") {
            // Nothing to be had: the entries go instead (the page cache still holds the data).
            #expect(statuses.isEmpty, "\(s.line)")
            #expect(s.dropped > 0)
        } else {
            #expect(statuses == [.hole, .delayed, .hole, .delayed, .hole, .delayed, .hole, .delayed, .hole], "\(s.line)")
            #expect(es.extents(9).map(\.length).reduce(0, +) == 100, "no block lost or doubled")
            // With the noWait site failing, the change let the lock go and looked again.
            #expect(s.relocks == (spec.isEmpty ? 0 : 1), "\(s.line)")
        }
        #expect(b.used == s.entries * ExtentStatusCache.entryBytes, "credits all given back")
    }

    @Test("reclaim frees clean inodes only: never one with delayed extents")
    func reclaimCleanOnly() {
        let b = Self.budget(64 << 10)
        let es = ExtentStatusCache(budget: b)
        for inode in UInt32(20)..<30 {
            let t = es.beginWalk(inode)
            es.insertWalk(inode, token: t, (0..<10).map { E(logical: UInt64($0 * 2), length: 1, physical: UInt64(5000 + $0), status: .written) })
        }
        es.markDelayed(25, first: 100, count: 4)
        // Ask the budget for everything: reclaim must leave inode 25 alone.
        var got: [Page] = []
        while let p = b.allocatePage(at: .pageCachePage) { got.append(p) }
        #expect(es.extents(25).contains { $0.status == .delayed })
        #expect(es.statistics.inodes == 1, "\(es.statistics.line)")
        for p in got { b.freePage(p, for: .pageCachePage) }
    }

    @Test("reads map through the cache: a second pass walks no tree, and a rewrite of the file is seen")
    func readsUseIt() throws {
        let scratch = try Scratch()
        let image = scratch.path("es.img")
        try Images.make(image, blockSize: 4096, megabytes: 64)
        let fs = try Images.openWritable(image, delayedAllocation: false)
        let f = try fs.create(path: "/frag", kind: .regular, owner: Ownership(permissions: 0o644))
        // Every other block first, then the rest: hundreds of extents, an extent tree with index blocks.
        let block = [UInt8](repeating: 0xAB, count: 4096)
        for k in stride(from: 0, to: 2000, by: 2) { try fs.write(f, at: UInt64(k) * 4096, block) }
        for k in stride(from: 1, to: 2000, by: 2) { try fs.write(f, at: UInt64(k) * 4096, [UInt8](repeating: 0xCD, count: 4096)) }
        try fs.sync()
        let inode = try fs.inode(f)
        _ = try fs.read(inode, offset: 0, count: 2000 * 4096)
        let first = fs.extentStatus.statistics
        #expect(first.entries > 100, "\(first.line)")
        fs.pageCache!.dropAllClean()
        let again = try fs.read(inode, offset: 0, count: 2000 * 4096)
        #expect(fs.extentStatus.statistics.hits > first.hits)
        #expect(again[4096] == 0xCD && again[0] == 0xAB)
        try fs.truncate(f, to: 0)
        #expect(fs.extentStatus.extents(f).isEmpty, "the tree changed: its entries went")
        try fs.write(f, at: 0, [UInt8](repeating: 0x11, count: 8192))
        #expect(try fs.read(try fs.inode(f), offset: 0, count: 8192) == [UInt8](repeating: 0x11, count: 8192))
        try fs.close()
        #expect(fs.budget.used == 0)
        try Images.expectClean(image)
    }
}
