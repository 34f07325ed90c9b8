import Foundation
import Holdfast
import HoldfastFormat
import HoldfastMemory
import HoldfastHost
import HoldfastTestSupport
import Testing

/// The write path, judged from outside: `e2fsck -fn` after every workload and the kernel's ext4
/// (loop mount) for what the tree must look like.
@Suite("write path", .serialized)
struct WritePathTests {
    @Test("put copies the small tree as the kernel shows it", arguments: [1024, 2048, 4096])
    func putTree(blockSize: Int) throws {
        try Support.requireLoopMount("the kernel comparison")
        let scratch = try Scratch()
        let image = scratch.path("w.img")
        try Images.make(image, blockSize: blockSize, megabytes: 64)
        // A private copy: other suites read the shared tree and move its access times.
        let tree = scratch.path("tree")
        try Support.sh(["cp", "-a", Trees.small, tree])
        let fs = try Images.openWritable(image)
        let summary = try fs.importHost(tree, into: Filesystem.rootInode, name: Array("tree".utf8))
        #expect(summary.files > 3000)
        try fs.close()
        #expect(fs.budget.peak <= 16 << 20)
        try Images.expectClean(image)
        try Support.withLoopMount(image) { mnt in
            let diff = try Support.treeDifferences(tree, mnt + "/tree", extra: ["--ignore-root-times"])
            #expect(diff == nil, "\(diff ?? "")")
        }
    }

    @Test("operations through the library API", arguments: [1024, 4096])
    func operations(blockSize: Int) throws {
        try Support.requireLoopMount("the kernel comparison")
        let scratch = try Scratch()
        let image = scratch.path("ops.img")
        try Images.make(image, blockSize: blockSize, megabytes: 128)
        let fs = try Images.openWritable(image)
        let me = Ownership(uid: 1000, gid: 100, permissions: 0o640)
        try fs.makeDirectories(path: "/a/b/c", owner: Ownership(permissions: 0o755))
        let f = try fs.create(path: "/a/file", kind: .regular, owner: me)
        // A hole, then data across a block boundary, then data far out.
        try fs.write(f, at: 5000, Array(repeating: 0x41, count: 3000))
        try fs.write(f, at: 10 << 20, Array("tail".utf8))
        try fs.create(path: "/a/b/fast", kind: .symlink(target: Array("../file".utf8)), owner: Ownership(permissions: 0o777))
        try fs.create(path: "/a/b/slow", kind: .symlink(target: Array(repeating: 0x78, count: 300)), owner: Ownership(permissions: 0o777))
        try fs.create(path: "/a/dev", kind: .characterDevice(major: 1, minor: 3), owner: Ownership(permissions: 0o666))
        try fs.link(existing: "/a/file", newPath: "/a/b/c/hard")
        // Moving a directory rewrites its '..' and both parents' link counts.
        try fs.rename(path: "/a/b/c", to: "/c-moved")
        #expect(throws: HoldfastError.self) { try fs.rename(path: "/a/b", to: "/a/file", mode: .noReplace) }
        #expect(throws: HoldfastError.self) { try fs.removeDirectory(path: "/a") }
        #expect(throws: HoldfastError.self) { try fs.create(path: "/a/" + String(repeating: "n", count: 256), kind: .regular, owner: me) }
        #expect(throws: HoldfastError.self) { try fs.rename(path: "/a", to: "/a/b/inside") }
        let g = try fs.create(path: "/a/shrink", kind: .regular, owner: me)
        try fs.write(g, at: 0, Array(repeating: 0x42, count: 200_000))
        try fs.truncate(g, to: 1234)
        try fs.truncate(g, to: 50_000)
        try fs.write(g, at: 49_000, Array("end".utf8))
        try fs.setAttributes(g, AttributeChanges(permissions: 0o4755, uid: 7, gid: 8,
                                                 modificationTime: Timestamp(seconds: 1_000_000_000, nanoseconds: 123_456_789)))
        let x = try fs.create(path: "/a/x", kind: .regular, owner: me)
        let y = try fs.create(path: "/a/y", kind: .regular, owner: me)
        try fs.write(x, at: 0, Array("x".utf8))
        try fs.write(y, at: 0, Array("y".utf8))
        try fs.rename(path: "/a/x", to: "/a/y", mode: .exchange)
        try fs.unlink(path: "/a/b/slow")
        // A big directory: an htree with a second level at 1 KiB blocks, then half of it removed.
        let big = try fs.makeDirectories(path: "/big", owner: Ownership(permissions: 0o755))
        for i in 0..<6000 { try fs.create(Array("entry-\(i)-with-some-length".utf8), in: big, kind: .regular, owner: me) }
        for i in stride(from: 0, to: 6000, by: 2) { try fs.unlink(Array("entry-\(i)-with-some-length".utf8), in: big) }
        let bigInode = try fs.resolve("/big")
        #expect(bigInode.isHashIndexed)
        // '..' of an indexed directory is in its root block, where no hash leads: a rename of an
        // ancestor into a directory below it must still find the loop.
        #expect(try fs.lookup([0x2E, 0x2E], in: bigInode) == Filesystem.rootInode)
        #expect(try fs.lookup([0x2E], in: bigInode) == bigInode.number)
        try fs.makeDirectories(path: "/outer", owner: Ownership(permissions: 0o755))
        try fs.rename(path: "/big", to: "/outer/big")
        #expect(throws: HoldfastError.self) { try fs.rename(path: "/outer", to: "/outer/big/loop") }
        try fs.rename(path: "/outer/big", to: "/big")
        try fs.removeDirectory(path: "/outer")
        for i in 0..<6000 {
            #expect((try fs.lookup(Array("entry-\(i)-with-some-length".utf8), in: bigInode) != nil) == (i % 2 == 1))
        }
        // xattrs: in-inode, spilling into a block, replaced, removed; the create/replace flags.
        try fs.setXattr(f, name: Array("user.small".utf8), value: Array("v".utf8))
        try fs.setXattr(f, name: Array("user.large".utf8), value: Array(repeating: 0x61, count: 600))
        try fs.setXattr(f, name: Array("trusted.t".utf8), value: [0, 1, 2])
        try fs.setXattr(f, name: Array("user.small".utf8), value: Array("w".utf8), mode: .replace)
        #expect(throws: HoldfastError.self) { try fs.setXattr(f, name: Array("user.small".utf8), value: [1], mode: .create) }
        #expect(throws: HoldfastError.self) { try fs.removeXattr(f, name: Array("user.none".utf8)) }
        try fs.setXattr(g, name: Array("user.gone".utf8), value: Array(repeating: 0x62, count: 700))
        try fs.removeXattr(g, name: Array("user.gone".utf8))
        let stats = try fs.spaceUsage()
        try fs.close()
        try Images.expectClean(image)

        try Support.withLoopMount(image) { mnt in
            let fm = FileManager.default
            let data = try #require(fm.contents(atPath: mnt + "/a/file"))
            #expect(data.count == (10 << 20) + 4)
            #expect(data[4999] == 0 && data[5000] == 0x41 && data[7999] == 0x41 && data[8000] == 0)
            #expect(String(decoding: data.suffix(4), as: UTF8.self) == "tail")
            #expect(try fm.destinationOfSymbolicLink(atPath: mnt + "/a/b/fast") == "../file")
            #expect(!fm.fileExists(atPath: mnt + "/a/b/slow"))
            let hard = try fm.attributesOfItem(atPath: mnt + "/c-moved/hard")
            #expect((hard[.referenceCount] as? Int) == 2)
            #expect((hard[.ownerAccountID] as? Int) == 1000)
            let shrink = try #require(fm.contents(atPath: mnt + "/a/shrink"))
            #expect(shrink.count == 50_000)
            #expect(shrink.prefix(1234).allSatisfy { $0 == 0x42 })
            #expect(shrink[1234..<49_000].allSatisfy { $0 == 0 }, "truncate must zero the rest of the last block")
            var st = stat()
            #expect(lstat(mnt + "/a/shrink", &st) == 0)
            #expect(st.st_mode & 0o7777 == 0o4755 && st.st_uid == 7 && st.st_gid == 8)
            #expect(st.st_mtim.tv_sec == 1_000_000_000 && st.st_mtim.tv_nsec == 123_456_789)
            #expect(lstat(mnt + "/a/dev", &st) == 0 && st.st_mode & S_IFMT == S_IFCHR && st.st_rdev == 0x103)
            #expect(String(decoding: try #require(fm.contents(atPath: mnt + "/a/x")), as: UTF8.self) == "y")
            #expect(String(decoding: try #require(fm.contents(atPath: mnt + "/a/y")), as: UTF8.self) == "x")
            #expect(try fm.contentsOfDirectory(atPath: mnt + "/big").count == 3000)
            let xattrs = try Support.sh(["getfattr", "-d", "-m", "-", "-e", "text", mnt + "/a/file"])
            #expect(xattrs.contains("user.small=\"w\"") && xattrs.contains("user.large=\"" + String(repeating: "a", count: 600)))
            #expect(xattrs.contains("trusted.t="))
            #expect(try Support.sh(["getfattr", "-d", "-m", "-", mnt + "/a/shrink"]).isEmpty)
            // '..' of the moved directory and the link counts the kernel reports.
            #expect(lstat(mnt + "/c-moved/..", &st) == 0 && st.st_ino == 2)
            var root = stat()
            #expect(lstat(mnt, &root) == 0 && root.st_nlink == 6)  // ., .., lost+found, a, c-moved, big
            var fsStats = statvfs()
            #expect(statvfs(mnt, &fsStats) == 0)
            #expect(UInt64(fsStats.f_bfree) == stats.freeBlocks && UInt64(fsStats.f_ffree) == stats.freeInodes)
        }
    }

    @Test("the kernel and Holdfast take turns writing one image",
          arguments: [[], ["-O", "orphan_file,metadata_csum_seed"], ["-O", "inline_data"]])
    func roundTrip(features: [String]) throws {
        try Support.requireLoopMount("the round trip")
        let scratch = try Scratch()
        let image = scratch.path("rt.img")
        try Images.make(image, blockSize: 4096, megabytes: 128, extra: features)
        let tree = scratch.path("tree")
        try Support.sh(["cp", "-a", Trees.small, tree])
        var fs = try Images.openWritable(image)
        try fs.importHost(tree, into: Filesystem.rootInode, name: Array("one".utf8))
        try fs.close()
        try Images.expectClean(image)
        try Support.withLoopMount(image, options: "loop") { mnt in
            try Support.sh(["cp", "-a", mnt + "/one", mnt + "/two"])
            try Support.sh(["rm", "-rf", mnt + "/one/deep"])
            try Support.sh(["sh", "-c", "for i in $(seq 1 2000); do echo $i > \(mnt)/two/k$i; done"])
        }
        try Images.expectClean(image)
        fs = try Images.openWritable(image)
        for i in stride(from: 1, through: 2000, by: 3) { try fs.unlink(path: "/two/k\(i)") }
        try fs.rename(path: "/two", to: "/one/two")
        try fs.importHost(tree, into: Filesystem.rootInode, name: Array("three".utf8))
        try fs.close()
        try Images.expectClean(image)
        try Support.withLoopMount(image) { mnt in
            let diff = try Support.treeDifferences(tree, mnt + "/three", extra: ["--ignore-root-times"])
            #expect(diff == nil, "\(diff ?? "")")
            #expect(try FileManager.default.contentsOfDirectory(atPath: mnt + "/one/two").filter { $0.hasPrefix("k") }.count == 1333)
        }
    }

    @Test("fallocate: preallocation, writes into unwritten extents, punched holes, zeroed ranges", arguments: [1024, 4096])
    func fallocate(blockSize: Int) throws {
        let scratch = try Scratch()
        let image = scratch.path("fa.img")
        try Images.make(image, blockSize: blockSize, megabytes: 64)
        let fs = try Images.openWritable(image)
        let f = try fs.create(path: "/f", kind: .regular, owner: Ownership(permissions: 0o644))
        var model = [UInt8](repeating: 0, count: 0)
        func write(_ offset: Int, _ count: Int, _ byte: UInt8) throws {
            try fs.write(f, at: UInt64(offset), [UInt8](repeating: byte, count: count))
            if model.count < offset + count { model += [UInt8](repeating: 0, count: offset + count - model.count) }
            for i in offset..<(offset + count) { model[i] = byte }
        }
        try write(0, 10_000, 0x11)
        try fs.fallocate(f, offset: 0, length: 1 << 20, mode: .keepSize)        // unwritten past EOF
        #expect(try fs.inode(f).size == 10_000)
        try fs.fallocate(f, offset: 0, length: 300_000, mode: .allocate)       // grows the size
        model += [UInt8](repeating: 0, count: 300_000 - model.count)
        var unwritten = 0
        try fs.blockRuns(try fs.inode(f)) { if $0.unwritten { unwritten += 1 } }
        #expect(unwritten >= 1)
        try write(150_003, 5000, 0x22)                                          // into unwritten, partial blocks
        try write(20_000, 100, 0x33)
        try fs.fallocate(f, offset: 5000, length: 100_000, mode: .punchHole)     // partial edges zeroed
        for i in 5000..<105_000 { model[i] = 0 }
        try fs.fallocate(f, offset: 151_000, length: 2_500, mode: .zeroRange(keepSize: true))
        for i in 151_000..<153_500 { model[i] = 0 }
        try fs.fallocate(f, offset: 299_000, length: 10_000, mode: .zeroRange(keepSize: false))
        model += [UInt8](repeating: 0, count: 309_000 - model.count)
        #expect(try fs.read(try fs.inode(f), offset: 0, count: model.count) == model)
        try fs.close()
        try Images.expectClean(image)
        try Support.requireLoopMount("the kernel comparison")
        try Support.withLoopMount(image) { mnt in
            let data = try #require(FileManager.default.contents(atPath: mnt + "/f"))
            #expect(Array(data) == model, "the kernel reads the file differently")
        }
    }

    @Test("writes into a preallocated file turn its blocks written in place, through leaf splits and a deep tree")
    func writesIntoPreallocation() throws {
        let scratch = try Scratch()
        let image = scratch.path("pre.img")
        // 1 KiB blocks: 84 extents to a leaf, so a few thousand scattered writes need index levels.
        try Images.make(image, blockSize: 1024, megabytes: 64)
        let fs = try Images.openWritable(image)
        let f = try fs.create(path: "/f", kind: .regular, owner: Ownership(permissions: 0o644))
        let size = 16 << 20
        try fs.fallocate(f, offset: 0, length: UInt64(size), mode: .allocate)
        var model = [UInt8](repeating: 0, count: size)
        var rng = SplitMix64(seed: 7)
        for i in 0..<3000 {
            // Mostly one whole block, sometimes a few blocks or a part of one.
            let block = Int(rng.next() % UInt64(size / 1024 - 4))
            let (offset, count) = switch i % 10 {
            case 0: (block * 1024 + 100, 300)
            case 1: (block * 1024, 3 * 1024)
            default: (block * 1024, 1024)
            }
            let byte = UInt8(truncatingIfNeeded: i % 250 + 1)
            try fs.write(f, at: UInt64(offset), [UInt8](repeating: byte, count: count))
            for k in offset..<(offset + count) { model[k] = byte }
            if i % 1000 == 999 { try fs.sync() }
        }
        var runs = 0, unwritten = 0
        try fs.blockRuns(try fs.inode(f)) { runs += 1; if $0.unwritten { unwritten += 1 } }
        #expect(runs > 2 * 84 && unwritten > 0, "the writes should have split the extents over many leaves (\(runs) runs)")
        #expect(try fs.read(try fs.inode(f), offset: 0, count: size) == model)
        // Writes in order over a preallocated range join the written extent before them.
        let g = try fs.create(path: "/g", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.fallocate(g, offset: 0, length: 1 << 20, mode: .allocate)
        for k in 0..<200 { try fs.write(g, at: UInt64(k * 1024), [UInt8](repeating: 0x5A, count: 1024)) }
        var gRuns: [BlockRun] = []
        try fs.blockRuns(try fs.inode(g)) { gRuns.append($0) }
        #expect(gRuns.count == 2 && !gRuns[0].unwritten && gRuns[0].length == 200 && gRuns[1].unwritten,
                "expected one written extent of 200 blocks, then the unwritten rest: \(gRuns)")
        try fs.close()
        try Images.expectClean(image)
        try Support.requireLoopMount("the kernel's reading of the converted file")
        try Support.withLoopMount(image) { mnt in
            let data = try #require(FileManager.default.contents(atPath: mnt + "/f"))
            #expect(Array(data) == model, "the kernel reads the file differently")
        }
    }

    /// `prefilled=` of the page cache's statistics line: pages a write filled before the write lock.
    private func prefilled(_ fs: Filesystem) throws -> Int { try counter(fs, "pagecache", "prefilled") }

    /// One counter of a `--stats` line (`line` its first word).
    private func counter(_ fs: Filesystem, _ line: String, _ name: String) throws -> Int {
        let found = try #require(fs.statistics.caches.first { $0.hasPrefix(line + " ") })
        let field = try #require(found.split(separator: " ").first { $0.hasPrefix(name + "=") })
        return try #require(Int(field.dropFirst(name.count + 1)))
    }

    @Test("statfs reports what the kernel's ext4 reports: size without the filesystem's own blocks, its reserves left out", arguments: [
        (["-b", "4096"], nil), (["-b", "1024"], 0), (["-b", "1024", "-O", "meta_bg,^resize_inode"], 0),
        (["-b", "2048", "-O", "^has_journal,^flex_bg,sparse_super2"], 0), (["-t", "ext3"], 0),
        (["-b", "4096"], 12345), (["-b", "4096", "-O", "bigalloc", "-C", "16384"], nil),
    ] as [([String], UInt32?)])
    func statfsAsTheKernel(options: [String], overhead: UInt32?) throws {
        try Support.requireLoopMount("the kernel's statfs")
        let scratch = try Scratch()
        let image = scratch.path("df.img")
        try Support.sh(["mkfs.ext4", "-q", "-F"] + options + [image, "300M"])
        // s_overhead_clusters as mke2fs left it, cleared (both count the structures themselves)
        // or wrong (the kernel counts them then too, bigalloc aside).
        if let overhead { try Support.sh(["debugfs", "-w", "-R", "ssv overhead_clusters \(overhead)", image]) }
        func kernel() throws -> [UInt64] {
            try Support.withLoopMount(image) { mnt in
                var st = statvfs()
                guard statvfs(mnt, &st) == 0 else { throw POSIXError(.EIO) }
                return [UInt64(st.f_blocks), UInt64(st.f_bfree), UInt64(st.f_bavail), UInt64(st.f_files), UInt64(st.f_ffree)]
            }
        }
        func ours(_ fs: Filesystem) throws -> [UInt64] {
            let u = try fs.spaceUsage()
            return [u.blocks, u.freeBlocks, u.availableBlocks, u.inodes, u.freeInodes]
        }
        let fresh = try kernel()
        let readOnly = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 16 << 20))
        if let overhead { #expect(readOnly.superblock.overheadClusters == overhead, "debugfs did not set s_overhead_clusters") }
        #expect(try ours(readOnly) == fresh, "read-only open")
        // meta_bg and bigalloc images open read-only (the features are read, not maintained).
        guard !options.contains(where: { $0.contains("meta_bg") || $0.contains("bigalloc") }) else { return }
        var fs = try Images.openWritable(image)
        #expect(try ours(fs) == fresh, "writable open")
        // Delayed pages count as used at once, as the kernel counts its dirty clusters.
        let f = try fs.create(path: "/f", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(f, at: 0, Patterns.random(1 << 20, seed: 9))
        let blocks = UInt64((1 << 20) / fs.blockSize)
        #expect(try ours(fs)[1] <= fresh[1] - blocks, "the delayed megabyte is still counted free")
        try fs.close()
        let written = try kernel()
        fs = try Images.openWritable(image)
        #expect(try ours(fs) == written, "after a 1 MiB file")
        try fs.close()
    }

    @Test("fsync, sync and the timer's commit write the data a commit needs before the write lock, and all of it reaches the image")
    func orderedDataBeforeTheLock() throws {
        let scratch = try Scratch()
        let image = scratch.path("ordered.img")
        try Images.make(image, blockSize: 4096, megabytes: 64)
        // No flusher and no timer thread: every page written is written by the calls below.
        var options = OpenOptions(memoryBudget: 16 << 20, writable: true)
        options.delayedAllocation = true
        options.flusher = false
        let fs = try Filesystem.open(path: image, options: options)
        func pattern(_ n: Int, _ seed: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ seed) } }
        let a = try fs.create(path: "/a", kind: .regular, owner: Ownership(permissions: 0o644))
        let b = try fs.create(path: "/b", kind: .regular, owner: Ownership(permissions: 0o644))
        // b: 1 MiB that gets its blocks (the flusher's way), so the running transaction needs its
        // data, then 256 KiB more in delayed pages; a: one block.
        var bData = pattern(1 << 20, 1)
        let aData = pattern(4096, 2)
        try fs.write(b, at: 0, bData)
        _ = fs.mapDelayedBlocks(of: b)
        let bTail = pattern(256 << 10, 4)
        try fs.write(b, at: UInt64(bData.count), bTail)
        bData += bTail
        try fs.write(a, at: 0, aData)
        try fs.fsync(a)
        #expect(try counter(fs, "write-lock", "commit-data-pages") == 0,
                "the fsync's commit wrote file data under the write lock")
        #expect(try counter(fs, "pagecache", "dirty") == 0, "b's data, which the commit needs, is still dirty")
        // More of both, in delayed pages, then sync.
        let bMore = pattern(512 << 10, 3)
        try fs.write(b, at: UInt64(bData.count), bMore)
        bData += bMore
        try fs.write(a, at: 4096, aData)
        try fs.sync()
        #expect(try counter(fs, "write-lock", "commit-data-pages") == 0,
                "sync's commit wrote file data under the write lock")
        // And the timer's commit.
        let commits = try counter(fs, "write-lock", "commits")
        let bLast = pattern(128 << 10, 5)
        try fs.write(b, at: UInt64(bData.count), bLast)
        bData += bLast
        fs.commitDue()
        #expect(try counter(fs, "write-lock", "commits") == commits + 1, "the timer's commit did not run")
        #expect(try counter(fs, "write-lock", "commit-data-pages") == 0,
                "the timer's commit wrote file data under the write lock")
        #expect(try counter(fs, "pagecache", "dirty") == 0, "the timer's commit left b's data dirty")
        try fs.close()
        try Images.expectClean(image)
        let reopened = try Images.openWritable(image)
        #expect(try reopened.read(try reopened.inode(b), offset: 0, count: bData.count) == bData)
        #expect(try reopened.read(try reopened.inode(a), offset: 0, count: 8192) == aData + aData)
        try reopened.close()
    }

    @Test("whole new blocks are filled before the write lock; cached, partial and inline blocks under it", arguments: [1024, 4096])
    func fillsBeforeTheLock(blockSize bs: Int) throws {
        let scratch = try Scratch()
        let image = scratch.path("fill.img")
        try Images.make(image, blockSize: bs, megabytes: 64, extra: ["-O", "inline_data"])
        var model: [UInt8] = []
        func apply(_ fs: Filesystem, _ f: UInt32, at offset: Int, _ bytes: [UInt8]) throws {
            try fs.write(f, at: UInt64(offset), bytes)
            if model.count < offset + bytes.count { model += [UInt8](repeating: 0, count: offset + bytes.count - model.count) }
            model.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        }
        func pattern(_ n: Int, _ seed: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed) } }
        var fs = try Images.openWritable(image)
        let f = try fs.create(path: "/f", kind: .regular, owner: Ownership(permissions: 0o644))
        // 16 new blocks, all whole: each filled before the lock.
        try apply(fs, f, at: 0, pattern(16 * bs, 1))
        #expect(try prefilled(fs) == 16)
        // Blocks 2 (in part) to 15 are cached, 16 to 39 new and whole, 40 new and in part: 24.
        try apply(fs, f, at: 2 * bs + 100, pattern(38 * bs - 93, 2))
        #expect(try prefilled(fs) == 40)
        // A write that starts inside one new block and ends inside the next fills none.
        try apply(fs, f, at: 60 * bs + 1, pattern(bs, 3))
        #expect(try prefilled(fs) == 40)
        // An inline file's first whole-block write converts it: its old bytes go to block 0 first.
        let g = try fs.create(path: "/g", kind: .regular, owner: Ownership(permissions: 0o644))
        let small = pattern(40, 4)
        try fs.write(g, at: 0, small)
        #expect(try fs.inode(g).hasInlineData, "the first 40 bytes should stay in the inode")
        let big = pattern(3 * bs, 5)
        try fs.write(g, at: 0, big)
        #expect(try prefilled(fs) == 40, "an inline file's blocks are not filled before the lock")
        #expect(try fs.read(try fs.inode(g), offset: 0, count: 3 * bs) == big)
        #expect(try fs.read(try fs.inode(f), offset: 0, count: model.count) == model)
        try fs.close()
        try Images.expectClean(image)

        // A write whose operation fails after its pages were filled gives them all back and
        // changes nothing; the next write of the same blocks lands.
        fs = try Images.openWritable(image, faults: try FaultPlan(parsing: "site=handle.undo,nth=1"))
        let before = try fs.read(try fs.inode(f), offset: 0, count: model.count)
        // Blocks 61 and 69 in part, 62 to 68 whole and filled: the operation fails at its first
        // undo copy (the inode's), after the pages were in place.
        #expect(throws: HoldfastError.self) { try fs.write(f, at: UInt64(model.count), pattern(8 * bs, 6)) }
        #expect(try prefilled(fs) == 7)
        #expect(try fs.inode(f).size == UInt64(model.count), "the failed write grew the file")
        #expect(try fs.read(try fs.inode(f), offset: 0, count: model.count) == before)
        try apply(fs, f, at: 64 * bs, pattern(8 * bs, 7))
        #expect(try prefilled(fs) == 15, "the failed write's pages should have gone with it")
        try fs.close()
        #expect(fs.budget.used == 0, "close gives back everything it charged (\(fs.budget.used) bytes left)")
        try Images.expectClean(image)
        try Support.requireLoopMount("the kernel's reading of the written files")
        try Support.withLoopMount(image) { mnt in
            let fData = try #require(FileManager.default.contents(atPath: mnt + "/f"))
            let gData = try #require(FileManager.default.contents(atPath: mnt + "/g"))
            #expect(Array(fData) == model, "the kernel reads /f differently")
            #expect(Array(gData) == big, "the kernel reads /g differently")
        }
    }

    @Test("a truncate, punch or zero range that fails leaves the data as it was; a failed extending write leaves nothing a later grow shows")
    func failedOperationsKeepData() throws {
        let scratch = try Scratch()
        let image = scratch.path("keep.img")
        try Images.make(image, blockSize: 4096, megabytes: 16)
        let original = (0..<3000).map { UInt8(truncatingIfNeeded: $0 % 251 + 1) }
        do {
            let fs = try Images.openWritable(image)
            try fs.write(try fs.create(path: "/f", kind: .regular, owner: Ownership(permissions: 0o644)), at: 0, original)
            try fs.close()
        }
        let attempts: [(String, (Filesystem, UInt32) throws -> Void)] = [
            ("truncate", { try $0.truncate($1, to: 100) }),
            ("punch", { try $0.fallocate($1, offset: 1000, length: 100, mode: .punchHole) }),
            ("zero range", { try $0.fallocate($1, offset: 1000, length: 100, mode: .zeroRange(keepSize: true)) }),
        ]
        for (name, attempt) in attempts {
            // The operation's first undo copy fails: after the device zeroing would have been queued.
            let fs = try Images.openWritable(image, faults: try FaultPlan(parsing: "site=handle.undo,nth=1"))
            let f = try fs.resolve("/f").number
            #expect(throws: HoldfastError.self, "\(name) should fail") { try attempt(fs, f) }
            #expect(Bytes(try fs.read(try fs.inode(f), offset: 0, count: 3000)) == Bytes(original), "a failed \(name) changed the data")
            try fs.close()
            try Images.expectClean(image)
        }
        let fs = try Images.openWritable(image, faults: try FaultPlan(parsing: "site=handle.undo,nth=1"))
        let f = try fs.resolve("/f").number
        #expect(throws: HoldfastError.self) { try fs.write(f, at: 3000, [UInt8](repeating: 0xEE, count: 500)) }
        try fs.truncate(f, to: 8000)
        let grown = try fs.read(try fs.inode(f), offset: 0, count: 8000)
        #expect(Array(grown[0..<3000]) == original)
        #expect(grown[3000...].allSatisfy { $0 == 0 }, "the failed write's bytes show past the old end")
        // Sizes that overflow are refused, not trapped on.
        #expect(throws: HoldfastError.self) { try fs.fallocate(f, offset: 1 << 20, length: UInt64.max - 10, mode: .allocate) }
        #expect(throws: HoldfastError.self) { try fs.write(f, at: UInt64.max - 5, [1, 2, 3]) }
        try fs.close()
        #expect(fs.budget.used == 0, "close gives back everything it charged (\(fs.budget.used) bytes left)")
        try Images.expectClean(image)
        try Support.requireLoopMount("the kernel's reading of the grown file")
        try Support.withLoopMount(image) { mnt in
            let data = try #require(FileManager.default.contents(atPath: mnt + "/f"))
            #expect(Array(data) == original + [UInt8](repeating: 0, count: 5000))
        }
    }

    @Test("running out of space fails cleanly and leaves nothing half-done")
    func noSpace() throws {
        let scratch = try Scratch()
        let image = scratch.path("full.img")
        try Images.make(image, blockSize: 1024, megabytes: 8, extra: ["-N", "128"])
        let fs = try Images.openWritable(image)
        let f = try fs.create(path: "/big", kind: .regular, owner: Ownership(permissions: 0o644))
        let chunk = [UInt8](repeating: 7, count: 1 << 20)
        var written: UInt64 = 0
        var failure: HoldfastError?
        do {
            while true { try fs.write(f, at: written, chunk); written += UInt64(chunk.count) }
        } catch { failure = error }
        guard case .noSpace = failure else { Issue.record("expected noSpace, got \(String(describing: failure))"); return }
        // The failed write left the file as the last successful one did.
        #expect(try fs.inode(f).size == written)
        var made = 0
        do {
            while true { try fs.create(path: "/n\(made)", kind: .directory, owner: Ownership(permissions: 0o755)); made += 1 }
        } catch {
            guard case .noSpace = error else { Issue.record("expected noSpace, got \(error)"); return }
        }
        #expect(fs.resolveOrNil("/n\(made)") == nil, "a failed mkdir left its name behind")
        try fs.close()
        try Images.expectClean(image)
    }

    @Test("a write that fails part way says how much of it is in the file, and that much is")
    func partialWrite() throws {
        let scratch = try Scratch()
        let image = scratch.path("p.img")
        try Images.make(image, blockSize: 4096, megabytes: 32)
        // A 1 MiB budget writes in steps of 128 KiB (32 pages): from the 33rd page on, none is had.
        var options = OpenOptions(memoryBudget: 1 << 20, faultPlan: FaultPlan(nth: 33, site: "pagecache.page", persistent: true), writable: true)
        options.flusher = false
        let fs = try Filesystem.open(path: image, options: options)
        let f = try fs.create(path: "/p", kind: .regular, owner: Ownership(permissions: 0o644))
        let data = Patterns.random(384 << 10, seed: 9)
        var failure: HoldfastError?
        do { try fs.write(f, at: 0, data) } catch { failure = error }
        guard case .partialWrite(let written, let requested, .outOfMemory) = failure else {
            Issue.record("expected a partial write out of memory, got \(String(describing: failure))")
            return
        }
        #expect(written == 128 << 10 && requested == data.count)
        #expect(try fs.inode(f).size == UInt64(written))
        #expect(Bytes(try fs.read(try fs.inode(f), offset: 0, count: data.count)) == Bytes(Array(data[..<written])))
        try fs.close()
        try Images.expectClean(image)
        #expect(Bytes(try Images.dumped(image, "/p", scratch)) == Bytes(Array(data[..<written])))
    }

    @Test("a failure at any allocation rolls the operation back (or, for buddies, falls back to the bitmap)",
          arguments: [("buffer", ""), ("journal", ""), ("page", ""), ("allocator", ""),
                      ("buffer", "orphan_file,metadata_csum_seed"), ("journal", "orphan_file,metadata_csum_seed"),
                      ("buffer", "inline_data"), ("journal", "inline_data")])
    func faultSweep(category: String, features: String) throws {
        let scratch = try Scratch()
        let pristine = scratch.path("pristine.img")
        try Images.make(pristine, blockSize: 1024, megabytes: 16, extra: features.isEmpty ? [] : ["-O", features])
        _ = try FaultSweep.run(pristine: pristine, category: category, limit: 2000) { fs, attempt in
            attempt { try fs.makeDirectories(path: "/d/e", owner: Ownership(permissions: 0o755)) }
            attempt {
                let f = try fs.create(path: "/d/f", kind: .regular, owner: Ownership(permissions: 0o644))
                try fs.write(f, at: 3000, Array(repeating: 1, count: 70_000))
            }
            attempt { for i in 0..<200 { try fs.create(path: "/d/e/name-\(i)-padding-padding", kind: .regular, owner: Ownership(permissions: 0o644)) } }
            attempt { try fs.rename(path: "/d/f", to: "/d/e/g") }
            attempt { try fs.unlink(path: "/d/e/name-7-padding-padding") }
            // Small files: inline on inline_data images, then grown past the inode into a block.
            attempt {
                let s = try fs.create(path: "/d/small", kind: .regular, owner: Ownership(permissions: 0o644))
                try fs.write(s, at: 0, Array(repeating: 2, count: 50))
                try fs.write(s, at: 50, Array(repeating: 3, count: 40))
            }
            attempt { try fs.write(try fs.resolve("/d/small").number, at: 90, Array(repeating: 4, count: 300)) }
            // An orphan: unlinked while open (the chain, or a slot of the orphan file), then freed.
            attempt {
                let open = try fs.openFile(try fs.resolve("/d/e/g").number)
                try fs.unlink(path: "/d/e/g")
                try open.close()
            }
        }
    }
}

extension Filesystem {
    /// Test helper: `resolve`, or nothing.
    func resolveOrNil(_ path: String) -> Inode? { try? resolve(path) }
}
