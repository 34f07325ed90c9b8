import Foundation
import Holdfast
import HoldfastFormat
import HoldfastMemory
import HoldfastTestSupport
import Testing

/// The journal writer judged from outside: what a writable open leaves in the journal superblock,
/// images copied from a live session (a crash) replayed by e2fsck, the kernel and Holdfast with
/// nothing to repair, revoke records, a log that fills, and journals that cannot be trusted.
@Suite("journal writer", .serialized)
struct JournalWriterTests {
    struct Layout: CustomStringConvertible, Sendable {
        let name: String
        let mkfs: [String]
        /// Journal features the writer is expected to set.
        let features: [String]
        /// The journal is given checksum v2 before the open (as an older kernel's journal_checksum
        /// mount left it): the writer keeps it.
        var v2 = false
        var description: String { name }
    }

    static let layouts = [
        Layout(name: "ext4 1 KiB, csum v3, 64-bit", mkfs: ["mkfs.ext4", "-q", "-F", "-b", "1024"],
               features: ["journal_64bit", "journal_checksum_v3"]),
        Layout(name: "ext4 4 KiB, no metadata_csum, 32-bit", mkfs: ["mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^metadata_csum,^64bit"],
               features: []),
        Layout(name: "ext3 1 KiB", mkfs: ["mkfs.ext3", "-q", "-F", "-b", "1024"], features: []),
        Layout(name: "ext4 4 KiB, journal checksum v2", mkfs: ["mkfs.ext4", "-q", "-F", "-b", "4096", "-O", "^metadata_csum"],
               features: ["journal_checksum_v2"], v2: true),
    ]

    /// Turns on checksum v2 (crc32c) in the journal superblock of `image`, sealed.
    static func giveJournalChecksumV2(_ image: String, blockSize: Int) throws {
        let start = UInt64(try Support.sh(["debugfs", "-R", "bmap <8> 0", image]).trimmingCharacters(in: .whitespacesAndNewlines))!
        let h = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        defer { try? h.close() }
        try h.seek(toOffset: start * UInt64(blockSize))
        var record = Jbd2.SuperblockRecord(raw: [UInt8](try h.read(upToCount: blockSize)!))
        record.featureIncompat |= Jbd2.incompatCsumV2
        record.checksumType = 4
        record.seal()
        try h.seek(toOffset: start * UInt64(blockSize))
        try h.write(contentsOf: Data(record.raw))
    }

    static func dumpe2fs(_ image: String) throws -> String { try Support.sh(["dumpe2fs", "-h", image]) }

    static func field(_ header: String, _ name: String) -> String {
        header.split(separator: "\n").first { $0.hasPrefix(name) }.map { String($0.dropFirst(name.count)).trimmingCharacters(in: .whitespaces) } ?? ""
    }

    /// Writes a few files, each step synced: returns what each file should hold.
    static func workload(_ fs: Filesystem, steps: Int) throws -> [String: [UInt8]] {
        var expected: [String: [UInt8]] = [:]
        let owner = Ownership(permissions: 0o644)
        _ = try fs.makeDirectories(path: "/d/e", owner: Ownership(permissions: 0o755))
        for i in 0..<steps {
            let data = Patterns.random(5000 + i * 3001, seed: UInt64(i + 1))
            let n = try fs.create(path: "/d/e/f\(i)", kind: .regular, owner: owner)
            try fs.write(n, at: 0, data)
            try fs.setXattr(n, name: Array("user.step".utf8), value: Array("\(i)".utf8))
            if i > 0 { try fs.rename(path: "/d/e/f\(i - 1)", to: "/d/g\(i - 1)") }
            try fs.sync()
            expected["/d/e/f\(i)"] = data
            if i > 0 { expected["/d/g\(i - 1)"] = expected.removeValue(forKey: "/d/e/f\(i - 1)") }
        }
        return expected
    }

    static func expectContents(_ image: String, _ expected: [String: [UInt8]], _ label: String) throws {
        let fs = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 16 << 20))
        for (path, data) in expected {
            let node = try fs.resolve(path)
            #expect(Bytes(try fs.read(node, offset: 0, count: Int(node.size) + 1)) == Bytes(data), "\(label): \(path)")
        }
    }

    /// e2fsck -fy replays the log and must find nothing else to repair; e2fsck -fn then agrees.
    static func expectReplayNeedsNoRepair(_ image: String, _ label: String) throws {
        let fix = try Support.run(["e2fsck", "-fy", image])
        let repairs = fix.out.split(separator: "\n").filter { $0.contains("?") || $0.contains("FIXED") || $0.contains("Fix") }
        #expect(repairs.isEmpty, "\(label): e2fsck -fy repaired:\n\(fix.out)")
        #expect(fix.status <= 1, "\(label): e2fsck -fy exit \(fix.status):\n\(fix.out)")
        try Images.expectClean(image)
    }

    @Test("a writable open sets the journal's features and needs_recovery; close empties the log and clears it", arguments: layouts)
    func superblockLifecycle(layout: Layout) throws {
        let s = try Scratch()
        let image = s.path("j.img"), copy = s.path("copy.img")
        try Support.sh(["truncate", "-s", "32M", image])
        try Support.sh(layout.mkfs + [image])
        if layout.v2 { try Self.giveJournalChecksumV2(image, blockSize: 4096) }
        let before = UInt32(Self.field(try Self.dumpe2fs(image), "Journal sequence:").dropFirst(2), radix: 16) ?? 0
        let fs = try Images.openWritable(image)
        let expected = try Self.workload(fs, steps: 3)
        // A copy taken now is what a crash would leave.
        try Support.sh(["cp", "--sparse=always", image, copy])
        let open = try Self.dumpe2fs(copy)
        #expect(Self.field(open, "Filesystem features:").contains("needs_recovery"), "\(layout): \(open)")
        #expect(Self.field(open, "Filesystem state:") == "clean", "the kernel keeps VALID_FS on a journalled mount: \(open)")
        let features = Self.field(open, "Journal features:")
        for f in layout.features { #expect(features.contains(f), "\(layout): \(features)") }
        #expect(Self.field(open, "Journal start:") != "0", "the live log is not empty: \(open)")
        let stats = try #require(fs.journalStatistics)
        #expect(stats.transactions >= 3 && stats.blocksLogged > 3 && stats.oversized == 0, "\(stats)")
        try fs.close()
        let closed = try Self.dumpe2fs(image)
        #expect(!Self.field(closed, "Filesystem features:").contains("needs_recovery"), "\(closed)")
        #expect(Self.field(closed, "Journal start:") == "0")
        let after = UInt32(Self.field(closed, "Journal sequence:").dropFirst(2), radix: 16) ?? 0
        #expect(after > before + 2, "s_sequence only grows: \(before) -> \(after)")
        try Images.expectClean(image)
        try Self.expectContents(image, expected, "closed")

        // The crash copy: e2fsck replays it with nothing to repair; the kernel replays another
        // copy and reads the same files; Holdfast reads a third through its in-memory replay.
        let kernelCopy = s.path("kernel.img")
        try Support.sh(["cp", "--sparse=always", copy, kernelCopy])
        try Self.expectContents(copy, expected, "in-memory replay")
        try Self.expectReplayNeedsNoRepair(copy, "\(layout)")
        try Self.expectContents(copy, expected, "after e2fsck's replay")
        if Support.canLoopMount(skipping: "the kernel's replay of a live session's image") {
            try Support.withLoopMount(kernelCopy, options: "loop,noatime") { mnt in
                for (path, data) in expected {
                    let seen = Array(try Data(contentsOf: URL(fileURLWithPath: mnt + path)))
                    #expect(Bytes(seen) == Bytes(data), "kernel: \(path)")
                }
            }
            try Images.expectClean(kernelCopy)
        }
    }

    @Test("a directory block freed while the log holds it is revoked: a replay keeps the data written over it")
    func revokes() throws {
        let s = try Scratch()
        let image = s.path("r.img"), copy = s.path("copy.img")
        try Images.make(image, blockSize: 1024, megabytes: 16)
        var options = OpenOptions(memoryBudget: 16 << 20, writable: true)
        options.flusher = false  // the same allocations every run
        let fs = try Filesystem.open(path: image, options: options)
        let owner = Ownership(permissions: 0o644)
        let d = try fs.makeDirectories(path: "/dir", owner: Ownership(permissions: 0o755))
        for i in 0..<300 { _ = try fs.create(Array("entry-with-a-long-name-\(i)".utf8), in: d, kind: .regular, owner: owner) }
        try fs.sync()
        var directoryBlocks: Set<UInt64> = []
        try fs.blockRuns(try fs.resolve("/dir")) { run in
            if let p = run.physical { for b in p..<(p + run.length) { directoryBlocks.insert(b) } }
        }
        try fs.removeTree(path: "/dir")
        try fs.sync()
        // Nearly all the free space, so the freed directory blocks are among those it takes.
        let data = Patterns.random(Int(try fs.spaceUsage().availableBlocks - 200) * 1024, seed: 5)
        let n = try fs.create(path: "/new", kind: .regular, owner: owner)
        try fs.write(n, at: 0, data)
        try fs.fsync(n)
        var reused = 0
        try fs.blockRuns(try fs.resolve("/new")) { run in
            if let p = run.physical { reused += (p..<(p + run.length)).filter { directoryBlocks.contains($0) }.count }
        }
        #expect(reused > 0, "the new file took none of the directory's blocks: the test proves nothing")
        let stats = try #require(fs.journalStatistics)
        #expect(stats.revokes >= directoryBlocks.count, "\(stats), \(directoryBlocks.count) directory blocks")
        try Support.sh(["cp", "--sparse=always", image, copy])
        let kernelCopy = s.path("kernel.img")
        try Support.sh(["cp", "--sparse=always", copy, kernelCopy])
        try Self.expectContents(copy, ["/new": data], "in-memory replay")
        try Self.expectReplayNeedsNoRepair(copy, "revokes")
        try Self.expectContents(copy, ["/new": data], "after e2fsck's replay")
        if Support.canLoopMount(skipping: "the kernel's replay of revoke records") {
            try Support.withLoopMount(kernelCopy, options: "loop,noatime") { mnt in
                let seen = Array(try Data(contentsOf: URL(fileURLWithPath: mnt + "/new")))
                #expect(Bytes(seen) == Bytes(data))
            }
            try Images.expectClean(kernelCopy)
        }
        try fs.close()
        try Images.expectClean(image)
    }

    @Test("transactions are bounded by the log, and a full log forces a checkpoint, never an error")
    func fullLog() throws {
        let s = try Scratch()
        let image = s.path("f.img"), copy = s.path("copy.img")
        // The smallest journal mkfs makes: 1024 blocks, bound 255 blocks a transaction.
        try Images.make(image, blockSize: 1024, megabytes: 64, extra: ["-J", "size=1"])
        let fs = try Images.openWritable(image)
        let owner = Ownership(permissions: 0o644)
        var expected: [String: [UInt8]] = [:]
        // About 1,400 blocks of inode tables, directories and bitmaps: more than the log holds.
        for d in 0..<10 {
            let dir = try fs.makeDirectories(path: "/d\(d)", owner: Ownership(permissions: 0o755))
            for i in 0..<1000 {
                let data = Patterns.random(100 + i % 300, seed: UInt64(d * 1000 + i))
                let n = try fs.create(Array("file-\(i)".utf8), in: dir, kind: .regular, owner: owner)
                try fs.write(n, at: 0, data)
                if i % 100 == 0 { expected["/d\(d)/file-\(i)"] = data }
            }
        }
        try fs.sync()
        let stats = try #require(fs.journalStatistics)
        #expect(stats.transactions >= 5, "\(stats)")
        #expect(stats.forcedCheckpoints > 0 && stats.oversized == 0, "\(stats)")
        try Support.sh(["cp", "--sparse=always", image, copy])
        try Self.expectReplayNeedsNoRepair(copy, "full log")
        try Self.expectContents(copy, expected, "after a full log")
        try fs.close()
        try Images.expectClean(image)
    }

    @Test("no space is reported while blocks freed since the last commit wait for it: the commit comes first", arguments: [false, true])
    func spaceAfterFrees(delayed: Bool) throws {
        let s = try Scratch()
        let image = s.path("n.img")
        try Images.make(image, blockSize: 1024, megabytes: 8)
        let fs = try Images.openWritable(image, delayedAllocation: delayed)
        let owner = Ownership(permissions: 0o644)
        let free = try fs.spaceUsage().availableBlocks
        let size = Int(free - free / 10) * 1024
        let a = try fs.create(path: "/a", kind: .regular, owner: owner)
        try fs.write(a, at: 0, Patterns.random(size, seed: 1))
        try fs.sync()
        try fs.unlink(path: "/a")
        // No sync: the blocks of /a are free in the bitmap, kept from reuse until a commit.
        let data = Patterns.random(size, seed: 2)
        let b = try fs.create(path: "/b", kind: .regular, owner: owner)
        try fs.write(b, at: 0, data)
        try fs.sync()
        try fs.close()
        try Images.expectClean(image)
        try Self.expectContents(image, ["/b": data], "refilled")
    }

    @Test("a transaction nobody syncs is committed about five seconds after its first change")
    func periodicCommit() throws {
        let s = try Scratch()
        let image = s.path("p.img"), copy = s.path("copy.img")
        try Images.make(image, blockSize: 4096, megabytes: 32)
        let fs = try Images.openWritable(image)  // the flusher and the commit timer run
        let before = try #require(fs.journalStatistics).transactions
        let data = Patterns.random(50_000, seed: 3)
        let n = try fs.create(path: "/unsynced", kind: .regular, owner: Ownership(permissions: 0o644))
        try fs.write(n, at: 0, data)
        usleep(2_000_000)
        #expect(try #require(fs.journalStatistics).transactions == before, "committed before its time")
        var waited = 0
        while try #require(fs.journalStatistics).transactions == before && waited < 100 {
            usleep(100_000)
            waited += 1
        }
        #expect(try #require(fs.journalStatistics).transactions > before, "no commit within 12 seconds")
        // A crash now keeps the file, data and all (data=ordered).
        try Support.sh(["cp", "--sparse=always", image, copy])
        try Self.expectReplayNeedsNoRepair(copy, "periodic commit")
        try Self.expectContents(copy, ["/unsynced": data], "after the periodic commit")
        try fs.close()
    }

    @Test("a write or flush failing anywhere in a session: what sync acknowledged survives, the image recovers clean", arguments: ["device.write", "device.flush", "device.write from then on", "device.flush from then on"])
    func ioFailureSweep(plan: String) throws {
        let site = String(plan.split(separator: " ")[0]), persistent = plan.hasSuffix("from then on")
        let s = try Scratch()
        let pristine = s.path("pristine.img"), image = s.path("io.img")
        try Images.make(pristine, blockSize: 1024, megabytes: 16)
        var k = 1, aborted = 0, runs = 0
        while k < 400 {
            try Support.sh(["cp", pristine, image])
            var options = OpenOptions(memoryBudget: 16 << 20, writable: true)
            options.faultPlan = FaultPlan(nth: k, site: site, persistent: persistent)
            options.flusher = false
            let opened = Locked<MemoryBudget?>(nil)
            options.onBudget = { b in opened.withLock { $0 = b } }
            var acknowledged: [String: [UInt8]] = [:]
            do {
                let fs = try Filesystem.open(path: image, options: options)
                do {
                    for round in 0..<3 {
                        var pending: [String: [UInt8]] = [:]
                        for i in 0..<4 {
                            let data = Patterns.random(3000 + i * 1500, seed: UInt64(round * 10 + i))
                            let n = try fs.create(path: "/r\(round)-\(i)", kind: .regular, owner: Ownership(permissions: 0o644))
                            try fs.write(n, at: 0, data)
                            pending["/r\(round)-\(i)"] = data
                        }
                        try fs.rename(path: "/r\(round)-0", to: "/moved\(round)")
                        pending["/moved\(round)"] = pending.removeValue(forKey: "/r\(round)-0")
                        try fs.sync()
                        acknowledged.merge(pending) { $1 }
                    }
                } catch {
                    // A failed log write aborts the journal: changes are refused from then on.
                    do { _ = try fs.create(path: "/after", kind: .regular, owner: Ownership(permissions: 0o644)) } catch {
                        if case HoldfastError.readOnly(let why) = error, why.joined().contains("journal was aborted") { aborted += 1 }
                    }
                }
                try? fs.close()
            } catch {
                // The open itself took the failure: nothing was acknowledged.
            }
            runs += 1
            let fired = opened.withLock { $0 }?.faultsFired ?? 0
            // The next writable open recovers the log; then the judges.
            let check = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 16 << 20, writable: true))
            for (path, data) in acknowledged {
                guard let node = try? check.resolve(path) else {
                    Issue.record("\(plan) nth=\(k): \(path), acknowledged by sync, is gone")
                    continue
                }
                #expect(Bytes(try check.read(node, offset: 0, count: Int(node.size) + 1)) == Bytes(data), "\(plan) nth=\(k): \(path)")
            }
            try check.close()
            try Images.expectClean(image)
            if fired == 0 { break }
            k += 1
        }
        print("I/O failure sweep at \(plan): \(runs) runs, \(aborted) aborted the journal")
        #expect(runs > 10 && aborted > 0, "\(plan): \(runs) runs, \(aborted) aborted")
    }

    enum Damage: String, CaseIterable, CustomStringConvertible, Sendable {
        case magic, checksum, blockSize = "block size", shortLog = "short log"
        var description: String { rawValue }
    }

    @Test("a journal that cannot be trusted refuses a writable open by name and is never written", arguments: Damage.allCases)
    func untrusted(damage: Damage) throws {
        let s = try Scratch()
        let image = s.path("u.img")
        try Images.make(image, blockSize: 1024, megabytes: 16)
        let start = UInt64(try Support.sh(["debugfs", "-R", "bmap <8> 0", image]).trimmingCharacters(in: .whitespacesAndNewlines))!
        let h = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        try h.seek(toOffset: start * 1024)
        var jsb = [UInt8](try h.read(upToCount: 1024)!)
        func put32(_ o: Int, _ v: UInt32) { for k in 0..<4 { jsb[o + k] = UInt8(truncatingIfNeeded: v >> (24 - 8 * k)) } }
        switch damage {
        case .magic: put32(0, 0xDEAD_BEEF)
        case .checksum:
            put32(0x28, 0x10)  // checksum v3, with a checksum that cannot match
            put32(0xFC, 0x1234_5678)
        case .blockSize: put32(0xC, 2048)
        case .shortLog: put32(0x10, 512)
        }
        try h.seek(toOffset: start * 1024)
        try h.write(contentsOf: Data(jsb))
        try h.close()
        try Self.expectRefused(image, naming: "journal", "\(damage)")
        // Reading still works: the journal has nothing to replay.
        _ = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 16 << 20)).resolve("/lost+found")
    }

    @Test("a journal whose blocks lie over the inode table refuses a writable open by name")
    func overlappingJournal() throws {
        let s = try Scratch()
        let image = s.path("o.img")
        try Images.make(image, blockSize: 1024, megabytes: 16)
        // The journal inode's one extent moved onto the end of group 0's inode table (unused
        // inodes there), its superblock copied along so that it reads as a journal.
        let table = Self.field(try Support.sh(["dumpe2fs", image]).split(separator: "\n").first { $0.contains("Inode table at") }.map(String.init) ?? "", "  Inode table at")
        let end = try #require(UInt64(table.split(separator: "-")[1].split(separator: " ")[0]))
        let moved = end - 10
        let start = UInt64(try Support.sh(["debugfs", "-R", "bmap <8> 0", image]).trimmingCharacters(in: .whitespacesAndNewlines))!
        try Support.sh(["dd", "if=\(image)", "of=\(image)", "bs=1024", "skip=\(start)", "seek=\(moved)", "count=1", "conv=notrunc", "status=none"])
        try Support.sh(["debugfs", "-w", "-R", "sif <8> block[5] \(moved)", image])
        try Self.expectRefused(image, naming: "overlap group 0's inode table", "overlap")
    }

    /// A writable open of `image` is refused as read-only with a reason containing `naming`, and
    /// the image is not written.
    static func expectRefused(_ image: String, naming: String, _ label: String) throws {
        let before = try Support.sha256(image)
        do {
            _ = try Images.openWritable(image)
            Issue.record("\(label): a writable open of an untrusted journal succeeded")
        } catch HoldfastError.readOnly(let why) {
            #expect(why.joined().contains(naming), "\(label): \(why)")
        }
        #expect(try Support.sha256(image) == before, "\(label): the image was written")
    }
}
