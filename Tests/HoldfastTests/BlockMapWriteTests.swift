import Foundation
import Holdfast
import HoldfastFormat
import HoldfastMemory
import HoldfastHost
import HoldfastTestSupport
import Testing

/// Writes to block-mapped (ext2/ext3, no extents feature) images, judged by `e2fsck -fn`, `debugfs`
/// and `dumpe2fs` for the metadata and the kernel's loop mount for the bytes.
@Suite("block-mapped writes", .serialized)
struct BlockMapWriteTests {
    struct Layout: Sendable, CustomTestStringConvertible {
        let type: String
        let blockSize: Int
        var testDescription: String { "\(type) \(blockSize / 1024) KiB" }
        /// Block numbers per indirect block.
        var p: Int { blockSize / 4 }
        /// First logical blocks of the single, double and triple indirect ranges.
        var single: Int { 12 }
        var double: Int { 12 + p }
        var triple: Int { 12 + p + p * p }
    }

    static let layouts = [Layout(type: "ext2", blockSize: 1024), Layout(type: "ext2", blockSize: 4096),
                          Layout(type: "ext3", blockSize: 1024), Layout(type: "ext3", blockSize: 4096)]

    /// Deterministic bytes, different per seed.
    static func pattern(_ count: Int, seed: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 7 &+ ($0 >> 10)) }
    }

    /// The size of /big.bin in the generated tree: into the double indirect range.
    static func bigBlocks(_ l: Layout) -> Int { l.double + 40 }

    /// An image made by mkfs.ext2/ext3 -d from a small generated tree.
    static func makeImage(_ scratch: Scratch, _ l: Layout, megabytes: Int = 64, extra: [String] = []) throws -> String {
        let tree = scratch.path("tree")
        let fm = FileManager.default
        try fm.createDirectory(atPath: tree + "/sub/deeper", withIntermediateDirectories: true)
        try Data("hello, block maps\n".utf8).write(to: URL(fileURLWithPath: tree + "/hello.txt"))
        try Data(pattern(bigBlocks(l) * l.blockSize, seed: 1)).write(to: URL(fileURLWithPath: tree + "/big.bin"))
        try Data(pattern(3000, seed: 2)).write(to: URL(fileURLWithPath: tree + "/sub/deeper/notes.txt"))
        try fm.createSymbolicLink(atPath: tree + "/link", withDestinationPath: "hello.txt")
        let image = scratch.path("\(l.type)-\(l.blockSize).img")
        try Support.sh(["mkfs.\(l.type)", "-q", "-F", "-b", String(l.blockSize)] + extra + ["-d", tree, image, "\(megabytes)M"])
        let features = try Support.sh(["dumpe2fs", "-h", image])
        #expect(!features.contains("extent"), "mkfs.\(l.type) made an image with extents")
        return image
    }

    /// i_blocks of a path as debugfs reports it (512-byte units).
    static func blockCount(_ image: String, _ path: String) throws -> Int {
        let out = try Support.sh(["debugfs", "-R", "stat \(path)", image])
        guard let r = out.range(of: #"Blockcount: (\d+)"#, options: .regularExpression) else {
            throw Support.Failure("no Blockcount in debugfs stat \(path): \(out)")
        }
        return Int(out[r].split(separator: " ")[1])!
    }

    /// A dumpe2fs -h count such as "Free blocks".
    static func superblockCount(_ image: String, _ field: String) throws -> Int {
        let out = try Support.sh(["dumpe2fs", "-h", image])
        for line in out.split(separator: "\n") where line.hasPrefix(field + ":") {
            return Int(line.split(separator: ":")[1].trimmingCharacters(in: .whitespaces))!
        }
        throw Support.Failure("dumpe2fs -h has no \(field)")
    }

    /// Indirect blocks a file of `n` blocks mapped from logical 0 needs.
    static func indirectBlocks(_ n: Int, _ l: Layout) -> Int {
        func up(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }
        var left = max(0, n - 12), blocks = 0
        if left > 0 { blocks += 1; left -= min(left, l.p) }
        if left > 0 { let m = min(left, l.p * l.p); blocks += 1 + up(m, l.p); left -= m }
        if left > 0 { blocks += 1 + up(left, l.p * l.p) + up(left, l.p) }
        return blocks
    }

    /// i_blocks of a file whose `n` blocks are mapped from logical 0.
    static func denseSectors(_ n: Int, _ l: Layout) -> Int { (n + indirectBlocks(n, l)) * l.blockSize / 512 }

    /// What a file must hold: its size and the bytes written; everything else reads as zeros.
    struct Expected {
        var size: Int = 0
        var writes: [(offset: Int, bytes: [UInt8])] = []

        mutating func write(_ offset: Int, _ bytes: [UInt8]) {
            writes.append((offset, bytes))
            size = max(size, offset + bytes.count)
        }

        mutating func truncate(_ to: Int) {
            writes = writes.compactMap { w in
                if w.offset >= to { return nil }
                return (w.offset, Array(w.bytes.prefix(to - w.offset)))
            }
            size = to
        }

        /// Bytes [from, from+count) as they must read.
        func bytes(_ from: Int, _ count: Int) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: count)
            for w in writes {
                let a = max(from, w.offset), b = min(from + count, w.offset + w.bytes.count)
                if a < b { out[(a - from)..<(b - from)] = w.bytes[(a - w.offset)..<(b - w.offset)] }
            }
            return out
        }

        /// Ranges to compare: the whole file when small, else each write with a margin of zeros.
        func ranges(margin: Int) -> [(Int, Int)] {
            if size <= 16 << 20 { return [(0, size)] }
            return writes.map { w in
                let a = max(0, w.offset - margin), b = min(size, w.offset + w.bytes.count + margin)
                return (a, b - a)
            } + [(max(0, size - margin), min(size, margin))]
        }
    }

    /// Checks every expected file as the kernel reads it (skipped visibly where loop mounts are not permitted).
    static func expectKernelReads(_ image: String, _ files: [String: Expected], blockSize: Int,
                                  sourceLocation: SourceLocation = #_sourceLocation) throws {
        try Support.requireLoopMount("the kernel's view of the bytes")
        try Support.withLoopMount(image) { mnt in
            for (path, want) in files.sorted(by: { $0.key < $1.key }) {
                let attrs = try FileManager.default.attributesOfItem(atPath: mnt + path)
                #expect((attrs[.size] as? Int) == want.size, "\(path): size", sourceLocation: sourceLocation)
                guard let h = FileHandle(forReadingAtPath: mnt + path) else {
                    Issue.record("\(path): cannot open through the kernel", sourceLocation: sourceLocation)
                    continue
                }
                defer { try? h.close() }
                for (from, count) in want.ranges(margin: 2 * blockSize) where count > 0 {
                    try h.seek(toOffset: UInt64(from))
                    let got = [UInt8](try h.read(upToCount: count) ?? Data())
                    #expect(got == want.bytes(from, count), "\(path): bytes [\(from), \(from + count)) differ", sourceLocation: sourceLocation)
                }
            }
        }
    }

    /// The same through Holdfast, from a fresh read-only open.
    static func expectHoldfastReads(_ image: String, _ files: [String: Expected], blockSize: Int,
                                    sourceLocation: SourceLocation = #_sourceLocation) throws {
        let fs = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 16 << 20))
        for (path, want) in files.sorted(by: { $0.key < $1.key }) {
            let node = try fs.resolve(path)
            #expect(node.size == UInt64(want.size), "\(path): size", sourceLocation: sourceLocation)
            #expect(!node.usesExtents, "\(path) has EXTENTS_FL on an image without extents", sourceLocation: sourceLocation)
            for (from, count) in want.ranges(margin: 2 * blockSize) where count > 0 {
                let got = try fs.read(node, offset: UInt64(from), count: count)
                #expect(got == want.bytes(from, count), "\(path): bytes [\(from), \(from + count)) differ", sourceLocation: sourceLocation)
            }
        }
    }

    static func runs(_ fs: Filesystem, _ path: String) throws -> [BlockRun] {
        var out: [BlockRun] = []
        try fs.blockRuns(try fs.resolve(path)) { out.append($0) }
        return out
    }

    @Test("overwrites in place, writes past the direct and indirect reach, writes into holes", arguments: layouts)
    func writes(l: Layout) throws {
        let scratch = try Scratch()
        let image = try Self.makeImage(scratch, l)
        let bs = l.blockSize
        var files: [String: Expected] = [:]
        var big = Expected()
        big.write(0, Self.pattern(Self.bigBlocks(l) * bs, seed: 1))
        var fs = try Images.openWritable(image)

        // Overwrites of blocks mke2fs mapped: direct, single and double indirect; nothing moves.
        let before = try Self.runs(fs, "/big.bin")
        let bigInode = try fs.resolve("/big.bin").number
        for (offset, seed) in [(3 * bs + 100, 10), ((l.single + 5) * bs - 10, 11), ((l.double + 3) * bs, 12)] {
            let bytes = Self.pattern(bs + 20, seed: seed)
            try fs.write(bigInode, at: UInt64(offset), bytes)
            big.write(offset, bytes)
        }
        #expect(try Self.runs(fs, "/big.bin") == before, "an overwrite moved blocks")
        files["/big.bin"] = big

        // One write from block 0 into the double indirect range, past several single indirect blocks under it.
        var grow = Expected()
        let growBytes = Self.pattern((l.double + 2 * l.p + 7) * bs + 123, seed: 3)
        let g = try fs.create(path: "/grow", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(g, at: 0, growBytes)
        grow.write(0, growBytes)
        files["/grow"] = grow

        // Sparse: block 0, a block in the double range, one in the triple range.
        var far = Expected()
        let f = try fs.create(path: "/far", kind: .regular, owner: Ownership(permissions: 0o644))
        for (offset, text) in [(0, "far-direct"), ((l.double + l.p + 1) * bs, "double"), (l.triple * bs + 5, "triple")] {
            try fs.write(f, at: UInt64(offset), Array(text.utf8))
            far.write(offset, Array(text.utf8))
        }
        files["/far"] = far

        // Holes, then writes into them (partial blocks of new blocks read as zeros).
        var holes = Expected()
        let h = try fs.create(path: "/holes", kind: .regular, owner: Ownership(permissions: 0o644))
        for (offset, count, seed) in [(2 * bs, bs, 20), ((l.double + 10) * bs, 50, 21), (15 * bs + 7, 2 * bs + 10, 22), (9 * bs + 1, 5 * bs, 23)] {
            let bytes = Self.pattern(count, seed: seed)
            try fs.write(h, at: UInt64(offset), bytes)
            holes.write(offset, bytes)
        }
        files["/holes"] = holes

        // Past what a block map reaches: a clean refusal.
        #expect(throws: HoldfastError.self) { try fs.write(f, at: UInt64(l.triple + l.p * l.p * l.p) * UInt64(bs), [1]) }
        try fs.close()
        try Images.expectClean(image)

        // i_blocks counts data and indirect blocks.
        #expect(try Self.blockCount(image, "/grow") == Self.denseSectors(l.double + 2 * l.p + 8, l))
        #expect(try Self.blockCount(image, "/far") == (1 + 3 + 4) * bs / 512)

        // A second session writes into the far file's existing indirect blocks.
        fs = try Images.openWritable(image)
        try fs.write(f, at: UInt64(l.triple + 1) * UInt64(bs), Array("next".utf8))
        far.write((l.triple + 1) * bs, Array("next".utf8))
        files["/far"] = far
        try fs.close()
        try Images.expectClean(image)
        #expect(try Self.blockCount(image, "/far") == (1 + 3 + 5) * bs / 512)

        try Self.expectHoldfastReads(image, files, blockSize: bs)
        try Self.expectKernelReads(image, files, blockSize: bs)
    }

    @Test("truncation across indirect boundaries frees exactly what it should", arguments: layouts)
    func truncation(l: Layout) throws {
        let scratch = try Scratch()
        let image = try Self.makeImage(scratch, l)
        let bs = l.blockSize
        var files: [String: Expected] = [:]
        var fs = try Images.openWritable(image)
        let t = try fs.create(path: "/t", kind: .regular, owner: Ownership(permissions: 0o644))
        var expected = Expected()
        let bytes = Self.pattern((l.double + 2 * l.p + 5) * bs, seed: 4)
        try fs.write(t, at: 0, bytes)
        expected.write(0, bytes)
        try fs.close()
        #expect(try Self.blockCount(image, "/t") == Self.denseSectors(l.double + 2 * l.p + 5, l))

        // Inside the double range, the end of the single range, one pointer in it, the direct blocks,
        // a partial block, nothing; each in its own session, checked by e2fsck and debugfs.
        let sizes = [(l.double + l.p + 3) * bs + 100, l.double * bs, l.single * bs + 1, l.single * bs, 3 * bs + 5, 0]
        for size in sizes {
            fs = try Images.openWritable(image)
            try fs.truncate(t, to: UInt64(size))
            expected.truncate(size)
            try fs.close()
            try Images.expectClean(image)
            #expect(try Self.blockCount(image, "/t") == Self.denseSectors((size + bs - 1) / bs, l), "after truncate to \(size)")
        }
        // Growing leaves a hole: no blocks.
        fs = try Images.openWritable(image)
        try fs.truncate(t, to: UInt64(10 * bs))
        expected.truncate(10 * bs)
        files["/t"] = expected

        // The blocks mke2fs mapped: down to the end of the single range frees the double chain.
        let bigInode = try fs.resolve("/big.bin").number
        try fs.truncate(bigInode, to: UInt64(l.double * bs - 1))
        var big = Expected()
        big.write(0, Self.pattern(Self.bigBlocks(l) * bs, seed: 1))
        big.truncate(l.double * bs - 1)
        files["/big.bin"] = big

        // A triple-indirect tail cut off: the triple, double and single indirect blocks go with it.
        let f = try fs.create(path: "/far", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(f, at: 0, Array("head".utf8))
        try fs.write(f, at: UInt64(l.triple) * UInt64(bs), Array("tail".utf8))
        try fs.truncate(f, to: UInt64(l.triple * bs))
        var far = Expected()
        far.write(0, Array("head".utf8))
        far.truncate(l.triple * bs)
        files["/far"] = far
        try fs.close()
        try Images.expectClean(image)
        #expect(try Self.blockCount(image, "/t") == 0)
        #expect(try Self.blockCount(image, "/big.bin") == Self.denseSectors(l.double, l))
        #expect(try Self.blockCount(image, "/far") == bs / 512)

        try Self.expectHoldfastReads(image, files, blockSize: bs)
        try Self.expectKernelReads(image, files, blockSize: bs)
    }

    @Test("unlinking big block-mapped files gives every block back", arguments: layouts)
    func unlink(l: Layout) throws {
        let scratch = try Scratch()
        let image = try Self.makeImage(scratch, l)
        let bs = l.blockSize
        let freeBefore = try Self.superblockCount(image, "Free blocks")
        let inodesBefore = try Self.superblockCount(image, "Free inodes")
        let fs = try Images.openWritable(image)
        // A file made and unlinked in one session, mapped into every range, then mke2fs's big file.
        let n = try fs.create(path: "/n", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(n, at: 0, Self.pattern((l.double + 3 * l.p) * bs, seed: 5))
        try fs.write(n, at: UInt64(l.triple + 2 * l.p * l.p) * UInt64(bs), Self.pattern(3 * bs, seed: 6))
        try fs.unlink(path: "/n")
        try fs.unlink(path: "/big.bin")
        // Truncating to 0 leaves an inode with no blocks.
        try fs.truncate(try fs.resolve("/sub/deeper/notes.txt").number, to: 0)
        try fs.close()
        try Images.expectClean(image)
        let big = Self.bigBlocks(l)
        let notes = (3000 + bs - 1) / bs
        let freeAfter = try Self.superblockCount(image, "Free blocks")
        #expect(freeAfter - freeBefore == big + Self.indirectBlocks(big, l) + notes)
        #expect(try Self.superblockCount(image, "Free inodes") - inodesBefore == 1)
        #expect(try Self.blockCount(image, "/sub/deeper/notes.txt") == 0)

        try Support.requireLoopMount("the kernel's statfs")
        try Support.withLoopMount(image) { mnt in
            var st = statvfs()
            #expect(statvfs(mnt, &st) == 0)
            #expect(Int(st.f_bfree) == freeAfter)
            #expect(!FileManager.default.fileExists(atPath: mnt + "/big.bin"))
            #expect(!FileManager.default.fileExists(atPath: mnt + "/n"))
            let notesSize = try FileManager.default.attributesOfItem(atPath: mnt + "/sub/deeper/notes.txt")[.size] as? Int
            #expect(notesSize == 0)
        }
    }

    @Test("directories grow past the direct blocks; symlinks; removal frees directory blocks", arguments: layouts)
    func directories(l: Layout) throws {
        let scratch = try Scratch()
        let image = try Self.makeImage(scratch, l)
        let bs = l.blockSize
        let freeBefore = try Self.superblockCount(image, "Free blocks")
        var fs = try Images.openWritable(image)
        try fs.makeDirectories(path: "/many", owner: Ownership(permissions: 0o755))
        let count = 1500
        var files: [String: Expected] = [:]
        var names = Set<String>()
        for i in 0..<count {
            let name = "entry-\(i)-with-a-longish-name"
            let node = try fs.create(path: "/many/" + name, kind: .regular, owner: Ownership(permissions: 0o644))
            names.insert(name)
            if i % 100 == 0 {
                var e = Expected()
                e.write(0, Self.pattern(100 + i, seed: i))
                try fs.write(node, at: 0, e.writes[0].bytes)
                files["/many/" + name] = e
            }
        }
        for i in stride(from: 1, to: count, by: 3) {
            try fs.unlink(path: "/many/entry-\(i)-with-a-longish-name")
            names.remove("entry-\(i)-with-a-longish-name")
            files.removeValue(forKey: "/many/entry-\(i)-with-a-longish-name")
        }
        // A directory filled and emptied within the session, then removed.
        try fs.makeDirectories(path: "/gone", owner: Ownership(permissions: 0o755))
        for i in 0..<400 { try fs.create(path: "/gone/name-\(i)-padding-padding-padding", kind: .regular, owner: Ownership(permissions: 0o644)) }
        for i in 0..<400 { try fs.unlink(path: "/gone/name-\(i)-padding-padding-padding") }
        try fs.removeDirectory(path: "/gone")
        let slowTarget = String(repeating: "long/", count: 40) + "target"
        try fs.create(path: "/slow", kind: .symlink(target: Array(slowTarget.utf8)), owner: Ownership(permissions: 0o777))
        try fs.create(path: "/fast", kind: .symlink(target: Array("hello.txt".utf8)), owner: Ownership(permissions: 0o777))
        try fs.close()
        try Images.expectClean(image)
        // The kernel judges this state at the end, from a copy.
        let snapshot = scratch.path("snapshot.img")
        try Support.sh(["cp", "--sparse=always", image, snapshot])

        do {
            let ro = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 16 << 20))
            let many = try ro.resolve("/many")
            #expect(!many.usesExtents)
            #expect(many.size > UInt64(12 * bs), "the directory should reach past the direct blocks")
            #expect(try ro.readLink(try ro.resolve("/slow")) == Array(slowTarget.utf8))
            #expect(!(try ro.resolve("/slow")).usesExtents)
            #expect(Set(try ro.directoryEntries(many).map(\.nameString)).subtracting([".", ".."]) == names)
        }
        try Self.expectHoldfastReads(image, files, blockSize: bs)

        // Removing everything again gives back every block the directory and files took.
        fs = try Images.openWritable(image)
        for name in names { try fs.unlink(path: "/many/" + name) }
        try fs.removeDirectory(path: "/many")
        try fs.unlink(path: "/slow")
        try fs.unlink(path: "/fast")
        try fs.close()
        try Images.expectClean(image)
        #expect(try Self.superblockCount(image, "Free blocks") == freeBefore)

        try Self.expectKernelReads(snapshot, files, blockSize: bs)
        try Support.withLoopMount(snapshot) { mnt in
            let listed = Set(try FileManager.default.contentsOfDirectory(atPath: mnt + "/many"))
            #expect(listed == names)
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: mnt + "/slow") == slowTarget)
            #expect(try FileManager.default.destinationOfSymbolicLink(atPath: mnt + "/fast") == "hello.txt")
            #expect(!FileManager.default.fileExists(atPath: mnt + "/gone"))
        }
    }

    @Test("put copies the small generated tree into block-mapped images as the kernel shows it", arguments: layouts)
    func put(l: Layout) throws {
        let scratch = try Scratch()
        let image = try Self.makeImage(scratch, l, megabytes: 128)
        // A private copy: other suites read the shared tree and move its access times.
        let tree = scratch.path("small")
        try Support.sh(["cp", "-a", Trees.small, tree])
        let fs = try Images.openWritable(image)
        let summary = try fs.importHost(tree, into: Filesystem.rootInode, name: Array("imported".utf8))
        #expect(summary.files > 3000)
        try fs.close()
        try Images.expectClean(image)
        try Support.requireLoopMount("the kernel comparison")
        try Support.withLoopMount(image) { mnt in
            let diff = try Support.treeDifferences(tree, mnt + "/imported", extra: ["--ignore-root-times"])
            #expect(diff == nil, "\(diff ?? "")")
        }
    }

    @Test("an old-style ext2 image (128-byte inodes, no filetype, no dir_index) takes a tree, a move and a removal")
    func oldStyle() throws {
        let scratch = try Scratch()
        let l = Layout(type: "ext2", blockSize: 2048)
        let image = try Self.makeImage(scratch, l, megabytes: 128, extra: ["-I", "128", "-O", "^filetype,^dir_index,^resize_inode"])
        let tree = scratch.path("small")
        try Support.sh(["cp", "-a", Trees.small, tree])
        let fs = try Images.openWritable(image)
        _ = try fs.importHost(tree, into: Filesystem.rootInode, name: Array("imported".utf8))
        try fs.makeDirectories(path: "/new/deeper", owner: Ownership(permissions: 0o755))
        try fs.rename(path: "/new/deeper", to: "/imported/moved")
        try fs.unlink(path: "/big.bin")
        try fs.close()
        try Images.expectClean(image)
        // Times have whole seconds in 128-byte inodes: the kernel is compared with Holdfast's own extract.
        try Support.requireLoopMount("the kernel comparison")
        let ro = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 16 << 20))
        try Support.expectExtractMatchesKernel(ro, into: scratch.path("out"), judge: image)
    }

    @Test("without large_file, files stay under 2 GiB (the kernel's EFBIG)")
    func noLargeFile() throws {
        let scratch = try Scratch()
        // At 4 KiB mke2fs turns large_file back on for the resize inode: 1 KiB blocks keep it off.
        let l = Layout(type: "ext2", blockSize: 1024)
        let image = try Self.makeImage(scratch, l, extra: ["-O", "^large_file"])
        #expect(!(try Support.sh(["dumpe2fs", "-h", image])).contains("large_file"))
        let fs = try Images.openWritable(image)
        let notes = try fs.resolve("/sub/deeper/notes.txt").number
        #expect(throws: HoldfastError.self) { try fs.write(notes, at: 3 << 30, [1]) }
        #expect(throws: HoldfastError.self) { try fs.truncate(notes, to: 2 << 30) }
        // The largest size there is: 2 GiB less one byte.
        try fs.write(notes, at: (2 << 30) - 11, Array("0123456789".utf8))
        try fs.close()
        try Images.expectClean(image)
        var notesExpected = Expected()
        notesExpected.write(0, Self.pattern(3000, seed: 2))
        notesExpected.write((2 << 30) - 11, Array("0123456789".utf8))
        let files = ["/sub/deeper/notes.txt": notesExpected]
        try Self.expectHoldfastReads(image, files, blockSize: l.blockSize)
        try Self.expectKernelReads(image, files, blockSize: l.blockSize)
    }

    @Test("an ext3 image converted to extents: old files stay block-mapped, new ones get extents")
    func converted() throws {
        let scratch = try Scratch()
        let l = Layout(type: "ext3", blockSize: 1024)
        let image = try Self.makeImage(scratch, l)
        try Support.sh(["tune2fs", "-O", "extents", image])
        let bs = l.blockSize
        var files: [String: Expected] = [:]
        var big = Expected()
        big.write(0, Self.pattern(Self.bigBlocks(l) * bs, seed: 1))
        let fs = try Images.openWritable(image)
        let bigInode = try fs.resolve("/big.bin").number
        let tail = Self.pattern(3 * l.p * bs, seed: 30)
        try fs.write(bigInode, at: UInt64(big.size), tail)
        big.write(big.size, tail)
        try fs.truncate(bigInode, to: UInt64(big.size - 5 * bs))
        big.truncate(big.size - 5 * bs)
        let n = try fs.create(path: "/new", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(n, at: 0, Array("extent-mapped".utf8))
        try fs.close()
        try Images.expectClean(image)
        #expect(try Self.blockCount(image, "/big.bin") == Self.denseSectors((big.size + bs - 1) / bs, l))
        let ro = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 16 << 20))
        #expect(!(try ro.resolve("/big.bin")).usesExtents)
        #expect(try ro.resolve("/new").usesExtents)
        files["/big.bin"] = big
        try Self.expectHoldfastReads(image, files, blockSize: bs)
        try Self.expectKernelReads(image, files, blockSize: bs)
    }

    @Test("a failure at any allocation of a block-mapped write rolls it back", arguments: ["buffer", "journal", "page"])
    func faultSweep(category: String) throws {
        let scratch = try Scratch()
        let l = Layout(type: "ext3", blockSize: 1024)
        let pristine = try Self.makeImage(scratch, l, megabytes: 16)
        let sweep = try FaultSweep.run(pristine: pristine, category: category, limit: 3000) { fs, attempt in
            attempt {
                let big = try fs.resolve("/big.bin").number
                try fs.write(big, at: 5000, Self.pattern(3000, seed: 9))
                try fs.write(big, at: UInt64(l.double + 100) * 1024, Self.pattern(70_000, seed: 8))
            }
            attempt {
                let f = try fs.create(path: "/w", kind: .regular, owner: Ownership(permissions: 0o644))
                try fs.write(f, at: 3000, Self.pattern(300_000, seed: 7))
                try fs.truncate(f, to: 20_000)
            }
            attempt { try fs.unlink(path: "/sub/deeper/notes.txt") }
        }
        #expect(sweep.failures > 0, "no operation ever failed")
        print("fault sweep \(category): \(sweep.runs) runs with a fault, \(sweep.failures) operations failed cleanly")
    }
}
