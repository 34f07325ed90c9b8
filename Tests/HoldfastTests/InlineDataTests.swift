import Foundation
import Holdfast
import HoldfastFormat
import HoldfastTestSupport
import Testing

/// inline_data written: small files and directories stay in their inodes while they fit and move
/// to blocks when they grow, as the kernel's ext4 does. Judged by `e2fsck -fn` and by the kernel,
/// which reads what Holdfast wrote and writes more for Holdfast to read back.
@Suite("inline data", .serialized)
struct InlineDataTests {
    /// What a file should hold, and whether it should still be inline.
    struct Expected {
        var bytes: [UInt8]
        var inline: Bool
    }

    /// An image that mkfs.ext4 -d filled with inline files and directories of every size.
    static func makeImage(_ scratch: Scratch, blockSize: Int) throws -> (image: String, files: [String: [UInt8]]) {
        let tree = scratch.path("tree")
        var files: [String: [UInt8]] = [:]
        try FileManager.default.createDirectory(atPath: tree + "/d3", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: tree + "/d0", withIntermediateDirectories: true)
        for (name, size) in [("f0", 0), ("f5", 5), ("f60", 60), ("f100", 100), ("f128", 128)] {
            files["/" + name] = Patterns.random(size, seed: UInt64(size) + 7)
        }
        for i in 1...3 { files["/d3/e\(i)"] = Array("entry \(i)\n".utf8) }
        for (path, bytes) in files { try Data(bytes).write(to: URL(fileURLWithPath: tree + path)) }
        let image = scratch.path("inline.img")
        try Support.sh(["mkfs.ext4", "-q", "-F", "-b", String(blockSize), "-I", "256", "-O", "inline_data", "-d", tree, image, "32M"])
        return (image, files)
    }

    @Test("inline files and directories change in place, move to a block when they grow, and the kernel agrees",
          arguments: [1024, 4096])
    func editedInPlace(blockSize: Int) throws {
        let scratch = try Scratch()
        let (image, files) = try Self.makeImage(scratch, blockSize: blockSize)
        var want = files.mapValues { Expected(bytes: $0, inline: true) }
        let fs = try Images.openWritable(image)
        let owner = Ownership(permissions: 0o644)
        for (path, e) in want { #expect(try fs.resolve(path).hasInlineData == e.inline, "\(path) as mkfs made it") }

        func write(_ path: String, at offset: Int, _ bytes: [UInt8], inline: Bool) throws {
            try fs.write(try fs.resolve(path).number, at: UInt64(offset), bytes)
            var old = want[path]?.bytes ?? []
            if old.count < offset + bytes.count { old += [UInt8](repeating: 0, count: offset + bytes.count - old.count) }
            old.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
            want[path] = Expected(bytes: old, inline: inline)
        }
        // In place: an overwrite, an append inside i_block, one into system.data, one to the brim.
        try write("/f60", at: 10, Array("middle".utf8), inline: true)
        try write("/f5", at: 5, Array(repeating: 0x41, count: 40), inline: true)
        try write("/f100", at: 100, Array(repeating: 0x42, count: 20), inline: true)
        try write("/f128", at: 0, Array("head".utf8), inline: true)
        // Past the inode's room: moved to a block, the old bytes with it.
        try write("/f128", at: 128, Array("over".utf8), inline: false)
        try write("/f0", at: 3000, Array("far".utf8), inline: false)
        // New files: empty ones stay extent-mapped, a small first write goes inline.
        let small = try fs.create(path: "/new-small", kind: .regular, owner: owner)
        try fs.create(path: "/new-empty", kind: .regular, owner: owner)
        want["/new-empty"] = Expected(bytes: [], inline: false)
        try write("/new-small", at: 0, Array("tiny".utf8), inline: true)
        try write("/new-small", at: 4, Array(" file".utf8), inline: true)
        #expect(try fs.resolve("/new-small").number == small)
        // Truncate: shrinking stays inline, growing moves to a block (ext4_setattr).
        try fs.truncate(try fs.resolve("/f100").number, to: 30)
        want["/f100"]!.bytes = Array(want["/f100"]!.bytes.prefix(30))
        let grown = try fs.create(path: "/grown", kind: .regular, owner: owner)
        try fs.write(grown, at: 0, Array("grow me".utf8))
        try fs.truncate(grown, to: 10_000)
        want["/grown"] = Expected(bytes: Array("grow me".utf8) + [UInt8](repeating: 0, count: 10_000 - 7), inline: false)
        // An inline file is not held to the block map's reach (16 GiB at 1 KiB blocks): it
        // leaves the inode extent-mapped.
        let far = try fs.create(path: "/far", kind: .regular, owner: owner)
        try fs.write(far, at: 0, Array("ten bytes!".utf8))
        try fs.truncate(far, to: 20 << 30)
        #expect(try fs.resolve("/far").size == 20 << 30)
        try fs.truncate(far, to: 10)
        want["/far"] = Expected(bytes: Array("ten bytes!".utf8), inline: false)
        // fallocate always converts first.
        let punched = try fs.create(path: "/punched", kind: .regular, owner: owner)
        try fs.write(punched, at: 0, Array(repeating: 0x43, count: 50))
        try fs.fallocate(punched, offset: 10, length: 20, mode: .punchHole)
        want["/punched"] = Expected(bytes: Array(repeating: 0x43, count: 10) + Array(repeating: 0, count: 20) + Array(repeating: 0x43, count: 20), inline: false)
        // A large xattr goes to a block; system.data stays in the inode and the file still grows inline.
        let tagged = try fs.resolve("/f5").number
        try fs.setXattr(tagged, name: Array("user.big".utf8), value: Array(repeating: 0x61, count: 300))
        try fs.setXattr(tagged, name: Array("user.small".utf8), value: Array("s".utf8))
        try write("/f5", at: 45, Array("+more".utf8), inline: true)
        #expect(throws: HoldfastError.self) { try fs.setXattr(tagged, name: Array("system.data".utf8), value: [1]) }
        #expect(try fs.xattrs(try fs.resolve("/f5")).map(\.nameString).sorted() == ["user.big", "user.small"])

        // Directories: a new one starts inline and fills i_block, then system.data, then a block.
        let grow = try fs.makeDirectories(path: "/grow", owner: Ownership(permissions: 0o755))
        #expect(try fs.resolve("/grow").hasInlineData)
        var names: [String] = []
        for i in 0..<12 {
            let name = "n\(i)"
            try fs.create(Array(name.utf8), in: grow, kind: .regular, owner: owner)
            names.append(name)
            want["/grow/" + name] = Expected(bytes: [], inline: false)
            if i == 3 { #expect(try fs.resolve("/grow").hasInlineData, "four short names fit in the inode") }
        }
        #expect(try !fs.resolve("/grow").hasInlineData)
        // Entries leave and move between inline directories; a directory moves and its '..' follows.
        try fs.makeDirectories(path: "/a/sub", owner: Ownership(permissions: 0o755))
        try fs.makeDirectories(path: "/b", owner: Ownership(permissions: 0o755))
        try fs.rename(path: "/d3/e1", to: "/a/e1")
        want["/a/e1"] = want.removeValue(forKey: "/d3/e1")
        try fs.unlink(path: "/d3/e2")
        want["/d3/e2"] = nil
        try fs.rename(path: "/a/sub", to: "/b/sub")
        try fs.rename(path: "/d3/e3", to: "/b/sub/e3")
        want["/b/sub/e3"] = want.removeValue(forKey: "/d3/e3")
        try fs.link(existing: "/f60", newPath: "/b/f60-link")
        try fs.rename(path: "/a", to: "/b/sub", mode: .exchange)  // /a (holds e1) <-> /b/sub (holds e3)
        want["/b/sub/e1"] = want.removeValue(forKey: "/a/e1")
        want["/a/e3"] = want.removeValue(forKey: "/b/sub/e3")
        try fs.removeDirectory(path: "/d0")
        // An inline file unlinked while open lives until its last close.
        let open = try fs.openFile(try fs.resolve("/f60").number)
        try fs.unlink(path: "/f60")
        try fs.unlink(path: "/b/f60-link")
        want["/f60"] = nil
        try open.close()
        for path in ["/a", "/b", "/b/sub", "/d3"] { #expect(try fs.resolve(path).hasInlineData, "\(path) stays inline") }
        #expect(try fs.lookup([0x2E, 0x2E], in: try fs.resolve("/b/sub")) == (try fs.resolve("/b").number))
        #expect(try fs.lookup([0x2E, 0x2E], in: try fs.resolve("/a")) == Filesystem.rootInode)

        for (path, e) in want {
            let inode = try fs.resolve(path)
            #expect(inode.hasInlineData == e.inline, "\(path) inline")
            #expect(Bytes(try fs.read(inode, offset: 0, count: e.bytes.count + 10)) == Bytes(e.bytes), "\(path)")
        }
        try fs.close()
        try Images.expectClean(image)

        guard Support.canLoopMount(skipping: "the kernel's reading of inline data Holdfast wrote") else { return }
        try Support.withLoopMount(image, options: "loop") { mnt in
            for (path, e) in want {
                #expect(Bytes(Array(try #require(FileManager.default.contents(atPath: mnt + path)))) == Bytes(e.bytes), "kernel: \(path)")
            }
            var st = stat()
            #expect(lstat(mnt + "/b/sub/..", &st) == 0 && st.st_ino == (try? FileManager.default.attributesOfItem(atPath: mnt + "/b")[.systemFileNumber] as? UInt64) ?? 0)
            #expect(try FileManager.default.contentsOfDirectory(atPath: mnt + "/grow").sorted() == names.sorted())
            // The kernel's turn: more entries into Holdfast's inline directories, an inline append.
            try Support.sh(["sh", "-c", "cd \(mnt) && echo k >> new-small && touch a/k1 b/sub/k2 && mkdir b/kd && mv a/e3 b/kd/"])
        }
        want["/new-small"]!.bytes += Array("k\n".utf8)
        want["/b/kd/e3"] = want.removeValue(forKey: "/a/e3")
        try Images.expectClean(image)
        let again = try Images.openWritable(image)
        for (path, e) in want {
            #expect(Bytes(try again.read(try again.resolve(path), offset: 0, count: e.bytes.count + 10)) == Bytes(e.bytes), "after the kernel: \(path)")
        }
        try again.unlink(path: "/a/k1")
        try again.rename(path: "/b/kd", to: "/a/kd")
        try again.close()
        try Images.expectClean(image)
    }
}
