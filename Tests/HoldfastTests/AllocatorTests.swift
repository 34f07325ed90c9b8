import Foundation
import Holdfast
import HoldfastMemory
import HoldfastTestSupport
import Testing

/// The block allocator's buddies and preallocation windows, judged by the extents that files end
/// up with (`blockRuns`, and debugfs for the image as written), e2fsck and the kernel's reading.
@Suite("block allocation", .serialized)
struct AllocatorTests {
    @Test("a big write skips small holes: the buddies find a free chunk that fits")
    func buddiesAvoidHoles() throws {
        let s = try Scratch()
        let image = s.path("b.img")
        try Images.make(image, blockSize: 1024, megabytes: 64)
        let fs = try Images.openWritable(image)
        // 3,000 one-block files, every other one removed: the first groups are full of 1 KiB holes.
        try fs.makeDirectories(path: "/small", owner: Ownership(permissions: 0o755))
        let dir = try fs.resolve("/small").number
        for i in 0..<3000 {
            let f = try fs.create(Array("f\(i)".utf8), in: dir, kind: .regular, owner: Ownership(permissions: 0o644))
            try fs.write(f, at: 0, [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 1000))
        }
        for i in stride(from: 0, to: 3000, by: 2) { try fs.unlink(Array("f\(i)".utf8), in: dir) }
        let big = try fs.create(path: "/big", kind: .regular, owner: Ownership(permissions: 0o644))
        let data = (0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 >> 9) }
        for chunk in stride(from: 0, to: data.count, by: 256 << 10) {
            try fs.write(big, at: UInt64(chunk), Array(data[chunk..<(chunk + (256 << 10))]))
        }
        let runs = try Images.extentCount(fs, "/big")
        #expect(runs <= 4, "2 MiB in \(runs) extents: the holes were used")
        #expect(fs.budget.hitSites.contains { $0.site.name == "allocator.buddy" })
        // A 1-block file still fills a hole near its directory.
        let tiny = try fs.create(path: "/small/tiny", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(tiny, at: 0, [7])
        try fs.close()
        try Images.expectClean(image)
        let reread = try Filesystem.open(path: image)
        #expect(Bytes(try reread.read(try reread.resolve("/big"), offset: 0, count: data.count)) == Bytes(data))
    }

    @Test("interleaved appends to open files stay contiguous through their windows; nothing is held after close", arguments: [1024, 4096])
    func preallocationWindows(blockSize: Int) throws {
        let s = try Scratch()
        func run(open: Bool) throws -> (Int, Int, [UInt8], UInt64) {
            let image = s.path("p\(open).img")
            try Images.make(image, blockSize: blockSize, megabytes: 128)
            // Windows serve allocation at write time (delayed allocation has its own test).
            let fs = try Images.openWritable(image, delayedAllocation: false)
            let a = try fs.create(path: "/a", kind: .regular, owner: Ownership(permissions: 0o644))
            let b = try fs.create(path: "/b", kind: .regular, owner: Ownership(permissions: 0o644))
            let handles = open ? [try fs.openFile(a), try fs.openFile(b)] : []
            let piece = (0..<(16 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
            for i in 0..<400 {
                try fs.write(a, at: UInt64(i * piece.count), piece)
                try fs.write(b, at: UInt64(i * piece.count), piece)
            }
            if open {
                let usage = fs.preallocationUsage
                #expect(usage.windows == 2 && usage.blocks > 0, "both files hold a window")
                #expect(usage.pinnedBuddyBytes > 0, "their groups' buddies are pinned")
                _ = fs.budget.reclaim(1 << 30)
                #expect(fs.preallocationUsage.buddyBytes == fs.preallocationUsage.pinnedBuddyBytes, "reclaim drops every buddy but the pinned ones")
                #expect(fs.preallocationUsage.pinnedBuddyBytes > 0)
            }
            let free = try fs.spaceUsage().freeBlocks
            for h in handles { try h.close() }
            #expect(fs.preallocationUsage.windows == 0 && fs.preallocationUsage.pinnedBuddyBytes == 0, "the last close gives the windows back")
            let ra = try Images.extentCount(fs, "/a"), rb = try Images.extentCount(fs, "/b")
            try fs.close()
            try Images.expectClean(image)
            let fromDisk = try OrphanTests.freeBlocks(image)
            #expect(fromDisk == free, "windows are never on disk: the free count is exact")
            if Support.canLoopMount(skipping: "the kernel's reading of the interleaved files") {
                try Support.withLoopMount(image) { mnt in
                    let expected = [UInt8]((0..<400).flatMap { _ in piece })
                    let readA = try #require(FileManager.default.contents(atPath: mnt + "/a"))
                    let readB = try #require(FileManager.default.contents(atPath: mnt + "/b"))
                    #expect(Array(readA) == expected && Array(readB) == expected, "the kernel reads both files back")
                }
            }
            return (ra, rb, piece, fromDisk)
        }
        let (openA, openB, _, _) = try run(open: true)
        let (plainA, plainB, _, _) = try run(open: false)
        let windowBlocks = max(8, (8 << 20) / blockSize)
        let bound = (400 * (16 << 10) / blockSize) / windowBlocks + 2
        #expect(openA <= bound && openB <= bound, "with windows: \(openA) and \(openB) extents")
        #expect(plainA > 100 && plainB > 100, "without windows interleaving fragments both (\(plainA), \(plainB))")
    }

    @Test("space held by windows is given up before the disk is called full")
    func windowsYieldToNoSpace() throws {
        let s = try Scratch()
        let image = s.path("n.img")
        try Images.make(image, blockSize: 4096, megabytes: 32)
        let fs = try Images.openWritable(image, delayedAllocation: false)  // windows come with allocation at write
        let a = try fs.create(path: "/a", kind: .regular, owner: Ownership(permissions: 0o644))
        let held = try fs.openFile(a)
        try fs.write(a, at: 0, [UInt8](repeating: 1, count: 4096))
        #expect(fs.preallocationUsage.blocks > 0)
        // Fill everything else; the last writes need the window's blocks.
        let free = Int(try fs.spaceUsage().freeBlocks)
        let b = try fs.create(path: "/b", kind: .regular, owner: Ownership(permissions: 0o644))
        var written = 0
        do {
            while true {
                try fs.write(b, at: UInt64(written), [UInt8](repeating: 2, count: 64 << 10))
                written += 64 << 10
            }
        } catch HoldfastError.noSpace {}
        #expect(written / 4096 >= free - 64, "the window's blocks went to /b (wrote \(written / 4096) of \(free) free blocks)")
        #expect(fs.preallocationUsage.windows == 0)
        try held.close()
        try fs.close()
        try Images.expectClean(image)
    }

    @Test("without memory for buddies no window opens, and no file's blocks go to another")
    func noBuddyNoWindow() throws {
        let s = try Scratch()
        let image = s.path("nb.img")
        try Images.make(image, blockSize: 4096, megabytes: 64)
        let fs = try Images.openWritable(image, faults: try FaultPlan(parsing: "site=allocator.buddy,nth=1,persistent"))
        let a = try fs.create(path: "/a", kind: .regular, owner: Ownership(permissions: 0o644))
        let held = try fs.openFile(a)
        try fs.write(a, at: 0, [UInt8](repeating: 1, count: 4096))
        #expect(fs.preallocationUsage.windows == 0 && fs.preallocationUsage.buddyBytes == 0)
        let b = try fs.create(path: "/b", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(b, at: 0, [UInt8](repeating: 2, count: 1 << 20))
        try fs.write(a, at: 4096, [UInt8](repeating: 3, count: 8192))
        try held.close()
        #expect(try fs.read(try fs.resolve("/a"), offset: 0, count: 12288) == [UInt8](repeating: 1, count: 4096) + [UInt8](repeating: 3, count: 8192))
        #expect(try fs.read(try fs.resolve("/b"), offset: 0, count: 1 << 20) == [UInt8](repeating: 2, count: 1 << 20))
        try fs.close()
        #expect(fs.budget.used == 0)
        try Images.expectClean(image)
    }
}
