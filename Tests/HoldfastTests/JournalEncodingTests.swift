import Foundation
import Holdfast
import HoldfastFormat
import HoldfastTestSupport
import Logging
import Testing

/// The jbd2 encoders (`Jbd2.encodeTransaction`) judged from outside: transactions Holdfast writes
/// into a real image's journal must be what e2fsck and the kernel replay, and what Holdfast's own
/// replay reads. Escaping, revokes and an uncommitted tail are in every log.
@Suite("journal encoding", .serialized)
struct JournalEncodingTests {
    struct Layout: CustomStringConvertible, Sendable {
        let blockSize: Int
        /// mkfs features: the default (metadata_csum and 64bit: checksum v3, 64-bit tags), or
        /// neither (no checksums, 32-bit tags).
        let checksummed: Bool
        var description: String { "\(blockSize) B, \(checksummed ? "csum v3 64-bit" : "no csum 32-bit")" }
    }

    static let layouts = [Layout(blockSize: 1024, checksummed: true), Layout(blockSize: 4096, checksummed: true),
                          Layout(blockSize: 1024, checksummed: false), Layout(blockSize: 4096, checksummed: false)]

    /// Reads or writes one filesystem block of the image file.
    static func block(_ image: String, _ number: UInt64, size: Int) throws -> [UInt8] {
        let h = try FileHandle(forReadingFrom: URL(fileURLWithPath: image))
        defer { try? h.close() }
        try h.seek(toOffset: number * UInt64(size))
        return [UInt8](try h.read(upToCount: size) ?? Data())
    }

    static func write(_ image: String, _ number: UInt64, _ bytes: [UInt8]) throws {
        let h = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        defer { try? h.close() }
        try h.seek(toOffset: number * UInt64(bytes.count))
        try h.write(contentsOf: Data(bytes))
    }

    static func bmap(_ image: String, _ what: String, _ logical: Int) throws -> UInt64 {
        let out = try Support.sh(["debugfs", "-R", "bmap \(what) \(logical)", image])
        return try #require(UInt64(out.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "\n").last ?? ""), "bmap \(what): \(out)")
    }

    /// A fresh image's journal as a writer turns it on at first use (REVOKE; CSUM_V3 with crc32c
    /// and 64BIT when `checksummed`), its log starting at s_first: not written yet.
    struct Log {
        let block0: UInt64
        let record: Jbd2.SuperblockRecord
        let journal: Jbd2.Superblock
        var sequence: UInt32 { record.sequence }
    }

    static func openLog(_ image: String, blockSize bs: Int, checksummed: Bool = true) throws -> Log {
        let block0 = try bmap(image, "<8>", 0)
        var record = Jbd2.SuperblockRecord(raw: try block(image, block0, size: bs))
        record.featureIncompat |= Jbd2.incompatRevoke
        if checksummed {
            record.featureIncompat |= Jbd2.incompatCsumV3 | Jbd2.incompat64Bit
            record.checksumType = 4
        }
        record.start = record.first
        if checksummed { record.seal() }
        return Log(block0: block0, record: record, journal: try Jbd2.Superblock(record.raw, fsBlockSize: bs))
    }

    /// Writes `blocks` into the log from s_first, then the journal superblock, and sets the
    /// image's needs_recovery flag: what a crash after these writes leaves.
    static func writeLog(_ image: String, _ log: Log, _ blocks: [[UInt8]]) throws {
        for (k, logBlock) in blocks.enumerated() {
            try write(image, try bmap(image, "<8>", Int(log.journal.first) + k), logBlock)
        }
        try write(image, log.block0, log.record.raw)
        try Support.sh(["debugfs", "-w", "-R", "feature needs_recovery", image])
    }

    @Test("a commit block that fails its checksum ends replay at the transaction before, named in a warning; the kernel's replay stops there too")
    func damagedCommitEndsReplay() throws {
        let bs = 4096
        let scratch = try Scratch()
        let image = scratch.path("damaged.img")
        try Support.sh(["truncate", "-s", "32M", image])
        try Support.sh(["mkfs.ext4", "-q", "-b", String(bs), image])
        for name in ["a", "b"] {
            let original = scratch.path("orig-\(name)")
            try Data([UInt8](repeating: 0x2E, count: bs)).write(to: URL(fileURLWithPath: original))
            try Support.sh(["debugfs", "-w", "-R", "write \(original) /\(name)", image])
        }
        let a = try Self.bmap(image, "/a", 0), b = try Self.bmap(image, "/b", 0)
        let original = [UInt8](repeating: 0x2E, count: bs)
        let log = try Self.openLog(image, blockSize: bs)
        let journal = log.journal, s = log.sequence
        let newA = [UInt8](repeating: 0x41, count: bs), newB = [UInt8](repeating: 0x42, count: bs)
        let t1 = Jbd2.encodeTransaction([.init(target: a, bytes: newA)], revoked: [], sequence: s,
                                        commitSeconds: 100, commitNanoseconds: 0, journal: journal)
        var t2 = Jbd2.encodeTransaction([.init(target: b, bytes: newB)], revoked: [], sequence: s &+ 1,
                                        commitSeconds: 101, commitNanoseconds: 0, journal: journal)
        t2.commit[0x20] ^= 0xFF  // inside h_chksum[4], which the checksum covers
        #expect(!Jbd2.verifyCommit(t2.commit, journal: journal))
        try Self.writeLog(image, log, t1.body + [t1.commit] + t2.body + [t2.commit])

        // Holdfast, reading: T1 only, and a warning that names T2's commit block.
        let captured = CapturedLog()
        var options = OpenOptions()
        options.logger = Logger(label: "test", factory: { _ in captured })
        do {
            let fs = try Filesystem.open(path: image, options: options)
            let replay = try #require(fs.journalReplay)
            #expect(replay.transactions == 1)
            #expect(replay.damage?.contains("commit block") == true && replay.damage?.contains("transaction \(s &+ 1)") == true, "\(replay)")
            #expect(Bytes(try fs.read(try fs.resolve("/a"), offset: 0, count: bs)) == Bytes(newA))
            #expect(Bytes(try fs.read(try fs.resolve("/b"), offset: 0, count: bs)) == Bytes(original))
        }
        #expect(captured.events.contains { $0.level == .warning && $0.message.contains("stopped early") && $0.message.contains("transaction \(s &+ 1)") },
                "\(captured.events)")
        // Holdfast's recovery writes T1 home and not T2.
        let recovered = scratch.path("recovered.img")
        try Support.sh(["cp", "--sparse=always", image, recovered])
        do {
            let fs = try Images.openWritable(recovered)
            #expect(fs.journalRecovery?.transactions == 1 && fs.journalRecovery?.damage != nil)
            try fs.close()
        }
        #expect(Bytes(try Self.block(recovered, a, size: bs)) == Bytes(newA))
        #expect(Bytes(try Self.block(recovered, b, size: bs)) == Bytes(original))
        try Images.expectClean(recovered)
        // The kernel's replay ends at the same place: it writes T1 home, then refuses the mount
        // ("journal transaction N is corrupt"), where Holdfast warns and goes on.
        guard Support.canLoopMount(skipping: "the kernel's replay of a damaged commit") else { return }
        let kernel = scratch.path("kernel.img")
        try Support.sh(["cp", "--sparse=always", image, kernel])
        let mnt = scratch.path("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        let mount = try Support.run(["mount", "-o", "loop,noatime", kernel, mnt])
        if mount.status == 0 { _ = try Support.run(["umount", mnt]) }
        #expect(mount.status != 0, "the kernel refuses a journal with a corrupt commit block")
        #expect(Bytes(try Self.block(kernel, a, size: bs)) == Bytes(newA))
        #expect(Bytes(try Self.block(kernel, b, size: bs)) == Bytes(original))
    }

    @Test("a journal that logs a block past the filesystem's end is refused by name, and nothing is written")
    func strayTargetRefused() throws {
        let scratch = try Scratch()
        let image = scratch.path("stray.img")
        try Support.sh(["truncate", "-s", "16M", image])
        try Support.sh(["mkfs.ext4", "-q", "-b", "4096", image])
        let log = try Self.openLog(image, blockSize: 4096)
        let t = Jbd2.encodeTransaction([.init(target: 4096 + 7, bytes: [UInt8](repeating: 1, count: 4096))], revoked: [],
                                       sequence: log.sequence, commitSeconds: 1, commitNanoseconds: 0, journal: log.journal)
        try Self.writeLog(image, log, t.body + [t.commit])
        let before = try Support.sha256(image)
        do {
            _ = try Images.openWritable(image)
            Issue.record("a stray journal target was written")
        } catch let error as HoldfastError {
            guard case .journal(let why) = error else { Issue.record("wrong error: \(error)"); return }
            #expect(why.contains("past the end of the filesystem"), "\(why)")
        }
        #expect(try Support.sha256(image) == before, "nothing was written")
    }

    @Test("e2fsck, the kernel and Holdfast replay what the encoders wrote: escaped blocks, revokes, no uncommitted tail",
          arguments: layouts)
    func judgedReplay(layout: Layout) throws {
        let bs = layout.blockSize
        let scratch = try Scratch()
        let image = scratch.path("j.img")
        try Support.sh(["truncate", "-s", "32M", image])
        try Support.sh(["mkfs.ext4", "-q", "-b", String(bs)] + (layout.checksummed ? [] : ["-O", "^metadata_csum,^64bit"]) + [image])
        // Three one-block files whose blocks the transactions rewrite.
        for name in ["a", "b", "c"] {
            let original = scratch.path("orig-\(name)")
            try Data(Array("original \(name)".utf8) + [UInt8](repeating: 0x2E, count: bs - 10)).write(to: URL(fileURLWithPath: original))
            try Support.sh(["debugfs", "-w", "-R", "write \(original) /\(name)", image])
        }
        let a = try Self.bmap(image, "/a", 0), b = try Self.bmap(image, "/b", 0), c = try Self.bmap(image, "/c", 0)
        let originalC = try Self.block(image, c, size: bs)

        // The journal's superblock, with the features a writer turns on at first use.
        let journalLog = try Self.openLog(image, blockSize: bs, checksummed: layout.checksummed)
        let journal = journalLog.journal, sequence = journalLog.sequence, journalBlock0 = journalLog.block0
        #expect(journal.hasChecksumV3 == layout.checksummed && journal.is64Bit == layout.checksummed)

        // T1 logs new contents for all three blocks, /b's starting with the jbd2 magic (escaped);
        // T2 revokes /c's block; T3 logs a stale /a but never commits.
        var newA = Patterns.random(bs, seed: 7)
        newA.replaceSubrange(0..<5, with: Array("NEW-A".utf8))
        var newB = Patterns.random(bs, seed: 8)
        newB.replaceSubrange(0..<4, with: Jbd2.magic.bigEndianBytes)
        let newC = [UInt8](repeating: 0x43, count: bs)
        let t1 = Jbd2.encodeTransaction([.init(target: a, bytes: newA), .init(target: b, bytes: newB), .init(target: c, bytes: newC)],
                                        revoked: [], sequence: sequence, commitSeconds: 1_700_000_000, commitNanoseconds: 5, journal: journal)
        let t2 = Jbd2.encodeTransaction([], revoked: [c], sequence: sequence &+ 1, commitSeconds: 1_700_000_001, commitNanoseconds: 0, journal: journal)
        let t3 = Jbd2.encodeTransaction([.init(target: a, bytes: [UInt8](repeating: 0x53, count: bs))], revoked: [],
                                        sequence: sequence &+ 2, commitSeconds: 1_700_000_002, commitNanoseconds: 0, journal: journal)
        #expect(t1.body.count == 4 && t2.body.count == 1 && t3.body.count == 2)
        // The escaped copy is logged with its magic zeroed.
        #expect(Array(t1.body[2].prefix(4)) == [0, 0, 0, 0])
        try Self.writeLog(image, journalLog, t1.body + [t1.commit] + t2.body + [t2.commit] + t3.body)
        // What the decoders read back of the encoders' blocks.
        #expect(Jbd2.tags(t1.body[0], journal: journal).map(\.target) == [a, b, c])
        #expect(Jbd2.tags(t1.body[0], journal: journal).map { $0.flags & Jbd2.tagEscape != 0 } == [false, true, false])
        #expect(Jbd2.verifyBlockTail(t1.body[0], journal: journal) && Jbd2.verifyCommit(t1.commit, journal: journal))
        #expect(Jbd2.revoked(t2.body[0], journal: journal) == [c])

        // Holdfast's replay (in memory, read-only open) of a copy.
        let copy = scratch.path("holdfast.img")
        try Support.sh(["cp", "--sparse=always", image, copy])
        do {
            let fs = try Filesystem.open(path: copy)
            let replay = try #require(fs.journalReplay)
            #expect(replay.transactions == 2, "T3 has no commit block")
            #expect(replay.blocksReplayed == 2 && replay.blocksRevoked == 1 && replay.dataChecksumFailures == 0, "\(replay)")
            #expect(Bytes(try fs.read(try fs.resolve("/a"), offset: 0, count: bs)) == Bytes(newA))
            #expect(Bytes(try fs.read(try fs.resolve("/b"), offset: 0, count: bs)) == Bytes(newB), "the magic is put back")
            #expect(Bytes(try fs.read(try fs.resolve("/c"), offset: 0, count: bs)) == Bytes(originalC), "revoked in T2")
        }

        // Holdfast's recovery at a writable open: written home, the journal emptied, the flag gone.
        let recovered = scratch.path("recovered.img")
        try Support.sh(["cp", "--sparse=always", image, recovered])
        do {
            let fs = try Images.openWritable(recovered)
            let summary = try #require(fs.journalRecovery)
            #expect(summary.transactions == 2 && summary.blocksWritten == 2)
            #expect(summary.nextSequence == sequence &+ 3, "one past T3, the torn transaction")
            try fs.close()
        }
        #expect(Bytes(try Self.block(recovered, a, size: bs)) == Bytes(newA))
        #expect(Bytes(try Self.block(recovered, b, size: bs)) == Bytes(newB))
        #expect(Bytes(try Self.block(recovered, c, size: bs)) == Bytes(originalC))
        #expect(!(try Support.sh(["dumpe2fs", "-h", recovered])).contains("needs_recovery"))
        let emptied = try Jbd2.Superblock(try Self.block(recovered, journalBlock0, size: bs), fsBlockSize: bs)
        #expect(emptied.start == 0 && emptied.sequence == sequence &+ 3)
        try Images.expectClean(recovered)

        // e2fsck's replay.
        let fsck = scratch.path("e2fsck.img")
        try Support.sh(["cp", "--sparse=always", image, fsck])
        let replayed = try Support.run(["e2fsck", "-fy", fsck])
        #expect(replayed.status <= 1, "e2fsck -fy: \(replayed.out)\(replayed.stderr)")
        #expect(Bytes(try Self.block(fsck, a, size: bs)) == Bytes(newA))
        #expect(Bytes(try Self.block(fsck, b, size: bs)) == Bytes(newB))
        #expect(Bytes(try Self.block(fsck, c, size: bs)) == Bytes(originalC))
        try Images.expectClean(fsck)

        // The kernel's replay at mount.
        guard Support.canLoopMount(skipping: "the kernel's replay of encoded transactions") else { return }
        let kernel = scratch.path("kernel.img")
        try Support.sh(["cp", "--sparse=always", image, kernel])
        try Support.withLoopMount(kernel, options: "loop,noatime") { _ in }
        #expect(Bytes(try Self.block(kernel, a, size: bs)) == Bytes(newA))
        #expect(Bytes(try Self.block(kernel, b, size: bs)) == Bytes(newB))
        #expect(Bytes(try Self.block(kernel, c, size: bs)) == Bytes(originalC))
        try Images.expectClean(kernel)
    }
}
