import Foundation
import Holdfast
import HoldfastFormat
import HoldfastMemory
import HoldfastTestSupport
import Testing

/// The orphan list: an unlinked open file keeps its blocks until the last close, a long truncate
/// runs in steps, and an image left with orphans (a crash) is cleaned up by the kernel at mount and
/// by Holdfast at a writable open, with nothing leaked either way.
@Suite("orphan list", .serialized)
struct OrphanTests {
    static func freeBlocks(_ image: String) throws -> UInt64 {
        let out = try Support.sh(["dumpe2fs", "-h", image])
        let line = try #require(out.split(separator: "\n").first { $0.hasPrefix("Free blocks:") })
        return try #require(UInt64(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)))
    }

    static func firstOrphan(_ image: String) throws -> UInt32? {
        let out = try Support.sh(["dumpe2fs", "-h", image])
        guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("First orphan inode:") }) else { return nil }
        return UInt32(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces))
    }

    /// The image features the orphan suites run with: the old chain (bookworm's mkfs default) and
    /// the orphan file that mkfs has made by default since e2fsprogs 1.47.0.
    static let kinds: [[String]] = [[], ["-O", "orphan_file,metadata_csum_seed"]]

    /// Every orphan the image names, as debugfs reads it: the chain's head and the orphan file's
    /// slots (through its inode's data, 8-byte tail per block left out).
    static func orphans(_ image: String, _ scratch: Scratch) throws -> [UInt32] {
        var found: [UInt32] = []
        if let head = try firstOrphan(image) { found.append(head) }
        let header = try Support.sh(["dumpe2fs", "-h", image])
        guard let line = header.split(separator: "\n").first(where: { $0.hasPrefix("Orphan file inode:") }),
              let inode = UInt32(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)),
              let sizeLine = header.split(separator: "\n").first(where: { $0.hasPrefix("Block size:") }),
              let blockSize = Int(sizeLine.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) else { return found }
        let out = scratch.path("orphan-file-\(UUID().uuidString)")
        try Support.sh(["debugfs", "-R", "dump <\(inode)> \(out)", image])
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: out)))
        for start in stride(from: 0, to: bytes.count, by: blockSize) {
            for at in stride(from: start, to: start + blockSize - 8, by: 4) {
                let n = UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24
                if n != 0 { found.append(n) }
            }
        }
        return found
    }

    static func hasFeature(_ image: String, _ name: String) throws -> Bool {
        let header = try Support.sh(["dumpe2fs", "-h", image])
        let line = header.split(separator: "\n").first { $0.hasPrefix("Filesystem features:") } ?? ""
        return line.split(separator: " ").contains { $0 == name }
    }

    /// e2fsck -fn, and the free block count it agrees with.
    static func expectCleanWithFree(_ image: String, _ free: UInt64, sourceLocation: SourceLocation = #_sourceLocation) throws {
        try Images.expectClean(image, sourceLocation: sourceLocation)
        #expect(try freeBlocks(image) == free, "free blocks", sourceLocation: sourceLocation)
    }

    @Test("an unlinked open file keeps its data until the last close; a crash leaves it to the kernel or to Holdfast",
          arguments: [1024, 4096], kinds)
    func unlinkWhileOpen(blockSize: Int, features: [String]) throws {
        let s = try Scratch()
        let image = s.path("o.img")
        try Images.make(image, blockSize: blockSize, megabytes: 64, extra: features)
        let orphanFile = !features.isEmpty
        let baseline = try Self.freeBlocks(image)
        let fs = try Images.openWritable(image)
        let data = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 11) }
        let f = try fs.create(path: "/doomed", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(f, at: 0, data)
        let keep = try fs.create(path: "/kept", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(keep, at: 0, Array("still here\n".utf8))
        let held = try fs.spaceUsage().freeBlocks

        let first = try fs.openFile(f)
        let second = try fs.openFile(f)
        try fs.unlink(path: "/doomed")
        #expect(throws: HoldfastError.self) { try fs.resolve("/doomed") }
        #expect(try fs.spaceUsage().freeBlocks == held, "the blocks stay while the file is open")
        #expect(Bytes(try fs.read(try fs.inode(f), offset: 0, count: data.count)) == Bytes(data))
        try fs.write(f, at: UInt64(data.count), [1, 2, 3])       // an unlinked open file still takes writes
        try first.sync()
        let doomedBlocks = try fs.inode(f).blocksRaw * 512 / UInt64(blockSize)
        let heldNow = try fs.spaceUsage().freeBlocks
        try fs.sync()

        // A crash now: the image names the orphan; the kernel frees it at mount, Holdfast at open.
        let crashed = s.path("crash.img"), crashed2 = s.path("crash2.img")
        try Support.sh(["cp", "--sparse=always", image, crashed])
        try Support.sh(["cp", "--sparse=always", image, crashed2])
        // The orphan is where the kernel would put it: in the orphan file when there is one
        // (with orphan_present set), else at the head of the chain.
        #expect(try Self.orphans(crashed, s) == [f])
        #expect(try Self.firstOrphan(crashed) == (orphanFile ? nil : f))
        #expect(try Self.hasFeature(crashed, "orphan_present") == orphanFile)
        let dumped = try Support.sh(["debugfs", "-R", "stat <\(f)>", crashed])
        #expect(dumped.contains("Links: 0"))
        let reopened = try Images.openWritable(crashed2)
        #expect(try reopened.spaceUsage().freeBlocks > held, "Holdfast's open frees the orphan")
        try reopened.close()
        #expect(try Self.orphans(crashed2, s) == [])
        #expect(try !Self.hasFeature(crashed2, "orphan_present"), "a clean close clears orphan_present")
        let expectedFree = try Self.freeBlocks(crashed2)
        #expect(expectedFree == heldNow + doomedBlocks, "exactly the orphan's blocks come back")
        try Self.expectCleanWithFree(crashed2, expectedFree)
        #expect(try Support.sh(["debugfs", "-R", "cat /kept", crashed2]) == "still here\n")
        if Support.canLoopMount {
            try Support.withLoopMount(crashed, options: "rw,loop") { _ in }
            #expect(try Self.orphans(crashed, s) == [])
            try Self.expectCleanWithFree(crashed, expectedFree)
        } else {
            print("loop mounts are not permitted here: skipping the kernel's orphan clean-up of the crash image")
        }

        // Back on the live image: one close keeps it, the last frees it.
        try first.close()
        try first.close()
        #expect(try fs.spaceUsage().freeBlocks == heldNow)
        try second.close()
        #expect(try fs.spaceUsage().freeBlocks == expectedFree)
        try fs.close()
        #expect(try Self.orphans(image, s) == [])
        try Self.expectCleanWithFree(image, expectedFree)
        #expect(baseline > expectedFree, "/kept and the directories still hold blocks")
    }

    @Test("orphans the kernel left in its orphan file (a crash) are freed by Holdfast's writable open, as by the kernel's mount")
    func kernelOrphanFile() throws {
        try Support.requireLoopMount("the kernel's orphan file")
        let s = try Scratch()
        let image = s.path("k.img"), crashed = s.path("crash.img")
        try Images.make(image, blockSize: 1024, megabytes: 64, extra: ["-O", "orphan_file,metadata_csum_seed"])
        // Three files unlinked while open, committed (syncfs), and the image copied while they are
        // still open: a crash, with the orphan slots in the journal.
        try Support.withLoopMount(image, options: "rw,loop") { mnt in
            try Support.sh(["python3", "-c", """
                os, subprocess, sys = __import__("os"), __import__("subprocess"), __import__("sys")
                mnt, copy_from, copy_to = sys.argv[1:4]
                fds = []
                for i in range(3):
                    path = f"{mnt}/doomed{i}"
                    fd = os.open(path, os.O_CREAT | os.O_RDWR)
                    os.write(fd, bytes([i]) * 150_000)
                    os.fsync(fd)
                    os.unlink(path)
                    fds.append(fd)
                open(f"{mnt}/kept", "w").write("kept\\n")
                subprocess.run(["sync", "-f", mnt], check=True)
                subprocess.run(["cp", "--sparse=always", copy_from, copy_to], check=True)
                for fd in fds: os.close(fd)
                """, mnt, image, crashed])
        }
        // What the kernel's log holds, replayed by e2fsprogs: three slots and orphan_present.
        let replayed = s.path("replayed.img"), kernels = s.path("kernel.img")
        try Support.sh(["cp", "--sparse=always", crashed, replayed])
        try Support.sh(["cp", "--sparse=always", crashed, kernels])
        _ = try Support.run(["e2fsck", "-E", "journal_only", "-y", replayed])
        #expect(try Self.orphans(replayed, s).count == 3)
        #expect(try Self.hasFeature(replayed, "orphan_present"))

        let fs = try Images.openWritable(crashed)
        #expect(try fs.resolve("/kept").size == 5)
        try fs.close()
        #expect(try Self.orphans(crashed, s) == [])
        #expect(try !Self.hasFeature(crashed, "orphan_present"))
        // The kernel's own mount of the same crash frees exactly as much.
        try Support.withLoopMount(kernels, options: "rw,loop") { _ in }
        #expect(try Self.orphans(kernels, s) == [])
        try Self.expectCleanWithFree(crashed, try Self.freeBlocks(kernels))
        try Images.expectClean(kernels)
    }

    /// The kernel's ext4_orphan_get passes over a slot that names no inode in use; so must a
    /// writable open, emptying it rather than refusing the image or freeing an inode twice.
    @Test("an orphan-file slot naming a free inode is emptied at the writable open, nothing freed twice")
    func strayOrphanSlot() throws {
        let s = try Scratch()
        let image = s.path("stray.img")
        try Images.make(image, blockSize: 1024, megabytes: 16, extra: ["-O", "orphan_file,metadata_csum_seed"])
        let free = try Self.freeBlocks(image)
        // Slot 5 of the orphan file's first block names inode 40, which is free.
        let reader = try Filesystem.open(path: image)
        let orphanInode = try reader.inode(reader.superblock.orphanFileInode)
        var first: UInt64 = 0
        try reader.blockRuns(orphanInode) { run in if first == 0 { first = run.physical ?? 0 } }
        let seed = orphanInode.checksumSeed(reader.superblock)
        let handle = try #require(FileHandle(forUpdatingAtPath: image))
        try handle.seek(toOffset: first * 1024)
        var block = Array(try #require(try handle.read(upToCount: 1024)))
        OrphanBlock.setEntry(&block, 5, 40)
        OrphanBlock.seal(&block, seed: seed, physical: first)
        try handle.seek(toOffset: first * 1024)
        try handle.write(contentsOf: Data(block))
        try handle.close()
        try Support.sh(["debugfs", "-w", "-R", "feature orphan_present", image])
        #expect(try Self.orphans(image, s) == [40])

        let fs = try Images.openWritable(image)
        try fs.create(path: "/after", kind: .directory, owner: Ownership(permissions: 0o755))
        try fs.close()
        #expect(try Self.orphans(image, s) == [])
        #expect(try !Self.hasFeature(image, "orphan_present"))
        try Images.expectClean(image)
        #expect(try Self.freeBlocks(image) == free - 1, "only the new directory's block is taken")
    }

    @Test("files open at close are freed by close; several orphans unlink in any order", arguments: kinds)
    func orphansAtClose(features: [String]) throws {
        let s = try Scratch()
        let image = s.path("o.img")
        try Images.make(image, blockSize: 1024, megabytes: 32, extra: features)
        let baseline = try Self.freeBlocks(image)
        let fs = try Images.openWritable(image)
        var handles: [OpenFile] = []
        for i in 0..<5 {
            let f = try fs.create(path: "/f\(i)", kind: .regular, owner: Ownership(permissions: 0o600))
            try fs.write(f, at: 0, [UInt8](repeating: UInt8(i), count: 50_000 * (i + 1)))
            handles.append(try fs.openFile(f))
            try fs.unlink(path: "/f\(i)")
        }
        // Out of list order: the middle of the chain, its head, its tail.
        try handles[2].close()
        try handles[4].close()
        try handles[0].close()
        try fs.sync()
        if features.isEmpty {
            #expect(try Self.firstOrphan(image) != nil)
        } else {
            #expect(try Set(Self.orphans(image, s)) == [handles[1].inode, handles[3].inode], "f1 and f3 hold slots")
        }
        try fs.close()   // f1 and f3 are still open: close frees them
        try Self.expectCleanWithFree(image, baseline)
    }

    @Test("a truncate of many blocks runs in steps; cut short by a fault, the orphan list finishes it", arguments: [1024, 4096])
    func steppedTruncate(blockSize: Int) throws {
        let s = try Scratch()
        let image = s.path("t.img")
        try Images.make(image, blockSize: blockSize, megabytes: 160)
        let baseline = try Self.freeBlocks(image)
        // A file of 100 MiB in 1,000 extents (every other 100 KiB left as a hole).
        let pattern = [UInt8](repeating: 0x5A, count: 100 << 10)
        do {
            let fs = try Images.openWritable(image, memory: 8 << 20)
            let f = try fs.create(path: "/big", kind: .regular, owner: Ownership(permissions: 0o644))
            for i in stride(from: 0, to: 1000, by: 2) { try fs.write(f, at: UInt64(i) * UInt64(pattern.count), pattern) }
            try fs.write(f, at: 0, [UInt8](repeating: 1, count: 10))
            try fs.close()
        }
        try Images.expectClean(image)
        let cut: UInt64 = 4096 + 17
        // Fault sweep over the truncate: each hit fails once; the truncate either completes, or fails
        // with the file on the orphan list and the image e2fsck-clean after the close finishes it.
        let copy = s.path("sweep.img")
        // A dry run finds which buffer hits belong to the truncate (open and lookup come first).
        let (before, after) = try {
            try Support.sh(["cp", "--sparse=always", image, copy])
            let fs = try Images.openWritable(copy, memory: 8 << 20, faults: try FaultPlan(parsing: "category=buffer,nth=1000000000"))
            let f = try fs.resolve("/big").number
            let before = fs.budget.faultPlanHits
            try fs.truncate(f, to: cut)
            let after = fs.budget.faultPlanHits
            try fs.close()
            return (before, after)
        }()
        #expect(after - before > 4, "the truncate reads and changes metadata blocks")
        let originalSize: UInt64 = 1000 * UInt64(pattern.count) - UInt64(pattern.count)
        var cutShort = 0, untouched = 0
        for nth in stride(from: before + 1, through: after, by: max(1, (after - before) / 25)) {
            try Support.sh(["cp", "--sparse=always", image, copy])
            let fs = try Images.openWritable(copy, memory: 8 << 20, faults: try FaultPlan(parsing: "category=buffer,nth=\(nth)"))
            let f = try fs.resolve("/big").number
            var done = true
            do {
                try fs.truncate(f, to: cut)
            } catch {
                guard case .outOfMemory = error else { Issue.record("not a clean out-of-memory error: \(error)"); continue }
                try fs.sync()
                if try Self.firstOrphan(copy) == f {
                    // Cut short after the first step: as a crash would leave it, the size is cut
                    // already and the file is an orphan, which the kernel finishes at mount.
                    cutShort += 1
                    let crashed = s.path("cut.img")
                    try Support.sh(["cp", "--sparse=always", copy, crashed])
                    if Support.canLoopMount(skipping: "the kernel's clean-up of a cut-short truncate") {
                        try Support.withLoopMount(crashed, options: "rw,loop") { mnt in
                            let size = try FileManager.default.attributesOfItem(atPath: mnt + "/big")[.size] as? Int
                            #expect(size == Int(cut), "the kernel sees the cut size")
                        }
                        #expect(try Self.firstOrphan(crashed) == nil, "the kernel took the orphan off the list")
                        try Images.expectClean(crashed)
                    }
                } else {
                    // The first handle failed: nothing changed.
                    untouched += 1
                    done = false
                }
            }
            try fs.close()     // finishes a cut-short truncate
            try Images.expectClean(copy)
            let reread = try Filesystem.open(path: copy)
            let node = try reread.resolve("/big")
            let size = done ? cut : originalSize
            #expect(node.size == size)
            let head = Int(min(size, 8192))
            #expect(try reread.read(node, offset: 0, count: head) == [UInt8](repeating: 1, count: 10) + pattern[10..<head])
            var mapped: UInt64 = 0
            try reread.blockRuns(node) { mapped = max(mapped, $0.logical + $0.length) }
            #expect(mapped == (size + UInt64(blockSize) - 1) / UInt64(blockSize), "nothing stays mapped past the size")
        }
        #expect(cutShort > 0, "some faults hit the later steps")
        #expect(untouched > 0, "some faults hit the first step")

        // And the plain run, with the kernel reading the result.
        let fs = try Images.openWritable(image)
        try fs.truncate(try fs.resolve("/big").number, to: cut)
        try fs.close()
        #expect(try Self.firstOrphan(image) == nil)
        try Images.expectClean(image)
        #expect(try Self.freeBlocks(image) < baseline)
        if Support.canLoopMount(skipping: "the kernel's reading of the truncated file") {
            try Support.withLoopMount(image) { mnt in
                let bytes = try #require(FileManager.default.contents(atPath: mnt + "/big"))
                #expect(Array(bytes) == [UInt8](repeating: 1, count: 10) + pattern[10..<Int(cut)])
            }
        }
    }

    @Test("block-mapped files: an unlinked open file and a stepped truncate on ext2 and ext3", arguments: ["ext2", "ext3"])
    func blockMapped(type: String) throws {
        let s = try Scratch()
        let image = s.path("bm.img")
        try Support.sh(["mkfs.\(type)", "-q", "-F", "-b", "1024", image, "96M"])
        let baseline = try Self.freeBlocks(image)
        let fs = try Images.openWritable(image)
        let big = try fs.create(path: "/big", kind: .regular, owner: Ownership(permissions: 0o644))
        let data = (0..<(40 << 20)).map { UInt8(truncatingIfNeeded: $0 >> 10) }
        try fs.write(big, at: 0, data)
        let doomed = try fs.create(path: "/doomed", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(doomed, at: 0, Array(data[0..<(3 << 20)]))
        let open = try fs.openFile(doomed)
        try fs.unlink(path: "/doomed")
        try fs.truncate(big, to: 5000)       // 40,960 blocks: several steps
        try fs.sync()
        #expect(try Self.firstOrphan(image) == doomed)
        try open.close()
        try fs.close()
        try Images.expectClean(image)
        #expect(try Self.firstOrphan(image) == nil)
        let stat = try Support.sh(["debugfs", "-R", "stat /big", image])
        #expect(stat.contains("Blockcount: 10"), "five data blocks, in 1 KiB blocks' sectors:\n\(stat)")
        let reread = try Filesystem.open(path: image)
        #expect(Bytes(try reread.read(try reread.resolve("/big"), offset: 0, count: 5000)) == Bytes(Array(data[0..<5000])))
        #expect(try Self.freeBlocks(image) == baseline - 5, "only /big's five blocks stay taken")
    }
}
