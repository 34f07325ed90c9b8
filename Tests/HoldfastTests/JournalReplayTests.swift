import Foundation
import Holdfast
import HoldfastFormat
import HoldfastMemory
import HoldfastTestSupport
import Testing

/// An image copied from under a live kernel mount after a journal commit and before the checkpoint:
/// the new metadata exists only in the journal. Holdfast must show what the kernel shows after its own
/// replay, and leave the file untouched.
@Suite("journal replay in memory", .serialized)
struct JournalReplayTests {
    @Test("a crash image reads as the kernel replays it", arguments: [1024, 4096])
    func crashImage(blockSize: Int) throws {
        try Support.requireLoopMount("journal replay against the kernel")
        let scratch = try Scratch()
        let live = scratch.path("live.img")
        try Support.sh(["truncate", "-s", "128M", live])
        try Support.sh(["mkfs.ext4", "-q", "-b", String(blockSize), live])
        let crash = scratch.path("crash.img")
        try Support.withLoopMount(live, options: "loop,commit=1") { mnt in
            // Metadata of every kind: a large directory, xattrs, renames, a deletion, a symlink.
            try Support.sh(["bash", "-c", """
                set -e; cd \(mnt); mkdir -p new/sub; for i in $(seq 1 600); do echo "entry $i" > new/f$i; done
                setfattr -n user.note -v journaled new/f1; ln -s f1 new/link; mv new/f2 new/sub/moved; rm new/f3
                head -c 300000 /dev/urandom > new/data; sync -f new/data; sleep 2.5
                """])
            try Support.sh(["cp", "--sparse=always", live, crash])
        }
        // The copy must really need recovery, or this test proves nothing.
        let header = try Support.sh(["dumpe2fs", "-h", crash])
        try #require(header.contains("needs_recovery"), "the copy was checkpointed already: \(header)")
        let before = try Support.sha256(crash)

        let fs = try Filesystem.open(path: crash)
        let replay = try #require(fs.journalReplay)
        #expect(replay.transactions >= 1)
        #expect(replay.blocksReplayed >= 1)
        // The kernel replays a second copy on mount (which needs a writable mount; noatime keeps atimes).
        let judged = scratch.path("judged.img")
        try Support.sh(["cp", "--sparse=always", crash, judged])
        try Support.expectExtractMatchesKernel(fs, into: scratch.path("out"), judge: judged, mountOptions: "loop,noatime")
        #expect(try Support.sha256(crash) == before, "the image file was modified")
    }

    @Test("a writable open recovers a kernel crash image: written home as the kernel replays it, clean, and writable after")
    func writableRecovery() throws {
        try Support.requireLoopMount("journal recovery against the kernel")
        let scratch = try Scratch()
        let live = scratch.path("live.img")
        try Support.sh(["truncate", "-s", "64M", live])
        try Support.sh(["mkfs.ext4", "-q", "-b", "4096", live])
        let crash = scratch.path("crash.img")
        try Support.withLoopMount(live, options: "loop,commit=1") { mnt in
            try Support.sh(["bash", "-c", """
                set -e; cd \(mnt); mkdir -p new; for i in $(seq 1 300); do echo "entry $i" > new/f$i; done
                setfattr -n user.note -v journaled new/f1; mv new/f2 new/moved; rm new/f3
                head -c 200000 /dev/urandom > new/data; sync -f new/data; sleep 2.5
                """])
            try Support.sh(["cp", "--sparse=always", live, crash])
        }
        try #require(try Support.sh(["dumpe2fs", "-h", crash]).contains("needs_recovery"), "the copy was checkpointed already")
        let judged = scratch.path("judged.img")
        try Support.sh(["cp", "--sparse=always", crash, judged])
        do {
            let fs = try Images.openWritable(crash)
            let recovery = try #require(fs.journalRecovery)
            #expect(recovery.transactions >= 1 && recovery.blocksWritten >= 1)
            try fs.close()
        }
        #expect(!(try Support.sh(["dumpe2fs", "-h", crash])).contains("needs_recovery"))
        try Images.expectClean(crash)
        // What the kernel shows after its own replay of the same image.
        let fs = try Filesystem.open(path: crash)
        #expect(fs.journalReplay == nil, "nothing left to replay")
        try Support.expectExtractMatchesKernel(fs, into: scratch.path("out"), judge: judged, mountOptions: "loop,noatime")
        // And it takes writes like any image.
        let writable = try Images.openWritable(crash)
        let f = try writable.create(path: "/new/after", kind: .regular, owner: Ownership(permissions: 0o644))
        try writable.write(f, at: 0, Array("after recovery".utf8))
        try writable.close()
        try Images.expectClean(crash)
        #expect(try Support.sh(["debugfs", "-R", "cat /new/after", crash]) == "after recovery")
    }

    @Test("revoked blocks are not replayed (debugfs-written transactions)")
    func revoke() throws {
        let scratch = try Scratch()
        let image = scratch.path("j.img")
        try Support.sh(["truncate", "-s", "32M", image])
        try Support.sh(["mkfs.ext4", "-q", "-b", "1024", image])
        try "original".write(toFile: scratch.path("orig"), atomically: true, encoding: .utf8)
        try Support.sh(["debugfs", "-w", "-R", "write \(scratch.path("orig")) /victim", image])
        let block = try Support.sh(["debugfs", "-R", "bmap /victim 0", image]).trimmingCharacters(in: .whitespacesAndNewlines)
        // Transaction 1 logs new contents for the file's block; transaction 2 revokes it.
        var logged = [UInt8](repeating: 0x41, count: 1024)
        logged.replaceSubrange(0..<8, with: Array("REPLAYED".utf8))
        try Data(logged).write(to: URL(fileURLWithPath: scratch.path("new")))
        try Support.sh(["bash", "-c", "printf 'jo\\njw -b \(block) \(scratch.path("new"))\\njc\\n' | debugfs -w -f - \(image)"])
        var fs = try Filesystem.open(path: image)
        #expect(fs.journalReplay?.blocksReplayed == 1)
        #expect(fs.budget.used(.journal) > 0)  // the redirect table is charged while the image is open
        // Failing the redirect table's charge fails the open cleanly, with nothing left charged.
        let captured = Locked<MemoryBudget?>(nil)
        var options = OpenOptions(faultPlan: FaultPlan(site: "journal.redirects"))
        options.onBudget = { b in captured.withLock { $0 = b } }
        do {
            _ = try Filesystem.open(path: image, options: options)
            Issue.record("open succeeded with journal.redirects failing")
        } catch {
            guard case .outOfMemory(let e) = error else { Issue.record("wrong error: \(error)"); return }
            #expect(e.site == "journal.redirects" && e.injected)
        }
        let failedBudget = try #require(captured.withLock { $0 })
        #expect(failedBudget.used == 0)
        #expect(failedBudget.faultsFired == 1)
        #expect(try fs.read(try fs.resolve("/victim"), offset: 0, count: 8) == Array("REPLAYED".utf8))

        try Support.sh(["bash", "-c", "printf 'jo\\njw -r \(block)\\njc\\n' | debugfs -w -f - \(image)"])
        fs = try Filesystem.open(path: image)
        #expect(fs.journalReplay?.blocksRevoked == 1)
        #expect(try fs.read(try fs.resolve("/victim"), offset: 0, count: 8) == Array("original".utf8))
        // e2fsck replaying the same journal is the judge of what the data should be.
        try Support.sh(["e2fsck", "-fy", image])
        let afterFsck = try Support.sh(["debugfs", "-R", "cat /victim", image])
        #expect(afterFsck.hasPrefix("original"))
    }
}
