import Foundation
import Holdfast
import HoldfastFormat
import HoldfastMemory
import HoldfastTestSupport
import Testing

/// Bytes flipped in every kind of structure: a typed error naming the structure, never a crash,
/// a hang or silently wrong data. The CLI runs as a child process so a crash shows as a signal.
@Suite("corrupt images", .serialized)
struct CorruptionTests {
    /// A metadata_csum image with an htree directory, an extent index block, an xattr block and a slow symlink.
    final class Fixture: @unchecked Sendable {
        let scratch: Scratch
        let image: String
        let pristine: String
        let blockSize = 1024

        init() throws {
            scratch = try Scratch()
            let tree = scratch.path("tree")
            try Support.sh(["mkdir", "-p", tree + "/big", tree + "/dir"])
            try Support.sh(["bash", "-c", """
                cd \(tree) && for i in $(seq 1 400); do echo $i > big/name_$i; done
                echo hello > dir/file; setfattr -n user.a -v "$(head -c 700 /dev/zero | tr '\\0' a)" dir/file
                ln -s "$(printf 'x%.0s' $(seq 1 120))" dir/slowlink
                python3 -c "
                f=open('frag','wb')
                for i in range(12): f.seek(i*8192); f.write(bytes([65+i])*1024)
                f.truncate(12*8192)"
                """])
            image = scratch.path("c.img")
            try Support.sh(["mkfs.ext4", "-q", "-b", "1024", "-d", tree, image, "16M"])
            // mkfs -d writes linear directories; e2fsck -D builds the htree index.
            _ = try Support.run(["e2fsck", "-fyD", image])
            try Support.sh(["e2fsck", "-fn", image])
            pristine = scratch.path("pristine")
            try Support.sh([Support.holdfast, "extract", image, pristine])
        }

        func debugfs(_ request: String) throws -> String { try Support.sh(["debugfs", "-R", request, image]) }

        func number(after label: String, in text: String) -> Int? {
            guard let r = text.range(of: label) else { return nil }
            return Int(text[r.upperBound...].prefix { $0.isNumber })
        }

        /// Byte offsets (in the image) of one structure of each kind.
        func targets() throws -> [(String, Int, String)] {
            let bs = blockSize
            var t: [(String, Int, String)] = []
            t.append(("superblock", 1024 + 0x4, "superblock"))
            t.append(("group descriptor", 2 * bs + 0x8, "group descriptor"))
            let imap = try debugfs("imap /dir/file")
            let ib = number(after: "located at block ", in: imap)!
            let io = Int(imap.components(separatedBy: "offset 0x").last!.prefix { $0.isHexDigit }, radix: 16)!
            t.append(("inode", ib * bs + io + 0x4, "inode"))
            let frag = try debugfs("stat /frag")
            t.append(("extent tree", number(after: "(ETB0):", in: frag)! * bs + 20, "extent tree"))
            let big = Int(try debugfs("bmap /big 0").trimmingCharacters(in: .whitespacesAndNewlines))!
            t.append(("htree root", big * bs + 0x28, "htree"))
            let leaf = Int(try debugfs("bmap /big 1").trimmingCharacters(in: .whitespacesAndNewlines))!
            t.append(("directory leaf", leaf * bs + 30, "directory block"))
            let acl = number(after: "File ACL: ", in: try debugfs("stat /dir/file"))!
            t.append(("xattr block", acl * bs + 40, "xattr block"))
            let jsb = Int(try debugfs("bmap <8> 0").trimmingCharacters(in: .whitespacesAndNewlines))!
            t.append(("journal superblock", jsb * bs + 0x1, "journal"))
            return t
        }
    }

    static let fixture = Result { try Fixture() }

    func flipped(_ fx: Fixture, at offset: Int, xor: UInt8 = 0x5A) throws -> String {
        let copy = fx.scratch.path("bad-\(offset)-\(xor).img")
        try Support.sh(["cp", "--sparse=always", fx.image, copy])
        let h = try FileHandle(forUpdating: URL(fileURLWithPath: copy))
        try h.seek(toOffset: UInt64(offset))
        var byte = try h.read(upToCount: 1)!
        byte[0] ^= xor
        try h.seek(toOffset: UInt64(offset))
        try h.write(contentsOf: byte)
        try h.close()
        return copy
    }

    @Test("a flipped byte in each structure is named in the error")
    func eachStructure() throws {
        let fx = try Self.fixture.get()
        for (label, offset, expected) in try fx.targets() {
            let bad = try flipped(fx, at: offset)
            let dest = fx.scratch.path("out-\(offset)")
            let r = try Support.run([Support.holdfast, "extract", bad, dest], timeout: 60)
            #expect(!r.signaled, "\(label): crashed or hung")
            // A damaged journal with nothing to replay is a warning; everything else fails.
            #expect(r.status == 1 || r.status == 3 || r.status == 4 || label == "journal superblock", "\(label): exit \(r.status)")
            #expect(r.stderr.contains("corrupt \(expected)") || r.stderr.contains("journal"), "\(label): \(r.stderr)")
        }
    }

    @Test("info checks every bitmap checksum", arguments: ["Block bitmap at ", "Inode bitmap at "])
    func bitmaps(label: String) throws {
        let fx = try Self.fixture.get()
        let groups = try Support.sh(["dumpe2fs", fx.image])
        let r = try #require(groups.range(of: label))
        let block = Int(groups[r.upperBound...].prefix { $0.isNumber })!
        let bad = try flipped(fx, at: block * fx.blockSize + 1)
        let out = try Support.run([Support.holdfast, "info", bad], timeout: 60)
        #expect(!out.signaled)
        #expect(out.status == 3)
        #expect(out.stderr.contains(label.hasPrefix("Block") ? "corrupt block bitmap" : "corrupt inode bitmap"), "\(out.stderr)")
    }

    @Test("a truncated image is named as truncated")
    func truncated() throws {
        let fx = try Self.fixture.get()
        let copy = fx.scratch.path("short.img")
        try Support.sh(["cp", fx.image, copy])
        try Support.sh(["truncate", "-s", "6M", copy])
        let r = try Support.run([Support.holdfast, "extract", copy, fx.scratch.path("out-short")], timeout: 60)
        #expect(!r.signaled)
        #expect(r.status == 3)
        #expect(r.stderr.contains("truncated"), "\(r.stderr)")
    }

    @Test("loops and impossible values in unchecked images are caught")
    func structuralDamage() throws {
        let scratch = try Scratch()
        let image = scratch.path("n.img")
        try Support.sh(["bash", "-c", """
            mkdir -p \(scratch.path("t")) && cd \(scratch.path("t")) && python3 -c "
            f=open('frag','wb')
            for i in range(12): f.seek(i*8192); f.write(b'x'*1024)"
            """])
        try Support.sh(["mkfs.ext4", "-q", "-b", "1024", "-O", "^metadata_csum", "-d", scratch.path("t"), image, "8M"])
        let stat = try Support.sh(["debugfs", "-R", "stat /frag", image])
        let r = try #require(stat.range(of: "(ETB0):"))
        let etb = Int(stat[r.upperBound...].prefix { $0.isNumber })!
        // The index block's first leaf entry pointed back at the index block itself: a loop.
        let h = try FileHandle(forUpdating: URL(fileURLWithPath: image))
        try h.seek(toOffset: UInt64(etb * 1024 + 6))
        try h.write(contentsOf: Data([1, 0]))  // eh_depth 1: the node now claims to be an index again
        try h.seek(toOffset: UInt64(etb * 1024 + 12 + 4))
        try h.write(contentsOf: withUnsafeBytes(of: UInt32(etb).littleEndian) { Data($0) })
        try h.close()
        let out = try Support.run([Support.holdfast, "cat", image, "/frag"], timeout: 60)
        #expect(!out.signaled)
        #expect(out.status == 3)
        #expect(out.stderr.contains("extent tree"), "\(out.stderr)")
    }

    @Test("random flips in metadata: clean errors, and a clean exit means the right tree", arguments: [1, 2])
    func randomFlips(seed: UInt64) throws {
        let fx = try Self.fixture.get()
        var rng = SplitMix64(seed: seed)
        let targets = try fx.targets().map(\.1)
        for i in 0..<25 {
            // Somewhere inside one of the structures' blocks.
            let base = targets[Int(rng.next() % UInt64(targets.count))] / fx.blockSize * fx.blockSize
            let offset = base + Int(rng.next() % UInt64(fx.blockSize))
            let bad = try flipped(fx, at: offset, xor: UInt8(truncatingIfNeeded: rng.next() | 1))
            let dest = fx.scratch.path("rand-\(seed)-\(i)")
            let r = try Support.run([Support.holdfast, "extract", bad, dest], timeout: 60)
            #expect(!r.signaled, "flip at \(offset): crashed or hung")
            #expect([0, 1, 3, 4].contains(r.status), "flip at \(offset): exit \(r.status) \(r.stderr)")
            if r.status == 0 {
                // Checksums cover every structure here: success must mean the flip touched nothing used.
                let diff = try Support.treeDifferences(dest, fx.pristine, extra: ["--ignore-root-times"])
                #expect(diff == nil, "flip at \(offset) went unnoticed: \(diff ?? "")")
            }
            try? FileManager.default.removeItem(atPath: bad)
        }
    }
}
