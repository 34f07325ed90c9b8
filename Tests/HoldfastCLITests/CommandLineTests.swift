import Foundation
import Holdfast
import HoldfastTestSupport
import Testing

/// The `holdfast` tool as a user meets it: output, errors, exit codes, extraction safety, memory.
@Suite("holdfast command line", .serialized)
struct CommandLineTests {
    static func image(_ scratch: Scratch, _ setup: String, mkfs: [String] = [], size: String = "16M") throws -> String {
        let tree = scratch.path("tree")
        try Support.sh(["mkdir", "-p", tree])
        try Support.sh(["bash", "-c", "cd \(tree) && " + setup])
        let img = scratch.path("img")
        try Support.sh(["mkfs.ext4", "-q", "-F", "-d", tree] + mkfs + [img, size])
        return img
    }

    @Test("rm -r removes a tree on an image without the filetype feature (its entries name no type: the inode says)")
    func removeTreeWithoutFileTypes() throws {
        let s = try Scratch()
        let img = try Self.image(s, "mkdir -p a/b/c && echo x > a/b/c/f && echo y > a/g && ln -s g a/l", mkfs: ["-O", "^filetype"])
        try Support.sh([Support.holdfast, "rm", img, "/a", "-r"])
        #expect(try Support.run([Support.holdfast, "stat", img, "/a"]).status == 1, "/a is still there")
        let fsck = try Support.run(["e2fsck", "-fn", img])
        #expect(fsck.status == 0, "e2fsck -fn:\n\(fsck.out)")
    }

    @Test("info says whether the image can be changed, and names why not")
    func infoSaysWhetherWritable() throws {
        let s = try Scratch()
        let plain = try Self.image(s, "echo x > f")
        #expect(try Support.sh([Support.holdfast, "info", plain]).contains("Access:                 read-write: Holdfast can change this image"))
        let t = try Scratch()
        let quota = try Self.image(t, "echo x > f", mkfs: ["-O", "quota"])
        let access = try Support.sh([Support.holdfast, "info", quota]).split(separator: "\n").first { $0.hasPrefix("Access:") } ?? ""
        #expect(access.contains("read-only: ") && access.contains("quota"), "\(access)")
    }

    @Test("an image whose journal needs recovery is changeable: a changing command recovers it first, as the kernel's mount does")
    func changingCommandRecovers() throws {
        let s = try Scratch()
        let image = try Self.image(s, "echo original > victim")
        let block = try Support.sh(["debugfs", "-R", "bmap /victim 0", image]).trimmingCharacters(in: .whitespacesAndNewlines)
        let logged = s.path("logged")
        try Data(Array("logged!\n".utf8) + [UInt8](repeating: 0, count: 4088)).write(to: URL(fileURLWithPath: logged))
        let bs = try Support.sh(["dumpe2fs", "-h", image]).split(separator: "\n").first { $0.hasPrefix("Block size:") }
            .flatMap { Int($0.split(separator: " ").last ?? "") } ?? 4096
        try Support.sh(["truncate", "-s", String(bs), logged])
        try Support.sh(["bash", "-c", "printf 'jo\\njw -b \(block) \(logged)\\njc\\n' | debugfs -w -f - \(image)"])
        let info = try Support.sh([Support.holdfast, "info", image])
        #expect(info.contains("needs recovery from block") && info.contains("a changing command first recovers its journal"), "\(info)")
        let before = try Support.sha256(image)
        #expect(try Support.sh([Support.holdfast, "cat", image, "/victim"]).hasPrefix("logged!"), "reads see the replay")
        #expect(try Support.sha256(image) == before, "reading commands never write")
        try Support.sh([Support.holdfast, "mkdir", image, "/after"])
        let recovered = try Support.sh([Support.holdfast, "info", image])
        #expect(recovered.contains("Journal state:          empty") && !recovered.contains("needs_recovery"), "\(recovered)")
        #expect(try Support.sh(["debugfs", "-R", "cat /victim", image]).hasPrefix("logged!"), "written home")
        try Images.expectClean(image)
    }

    @Test("the layer check fails and names the file when the CLI imports a cache or writes a raw on-disk offset")
    func layerCheckCatchesViolations() throws {
        let s = try Scratch()
        let copy = s.path("repo")
        try Support.sh(["mkdir", "-p", copy + "/scripts"])
        try Support.sh(["cp", "-r", Support.root + "/Sources", Support.root + "/Tests", Support.root + "/Fuzz", copy])
        try Support.sh(["cp", Support.scripts + "/check_layers.sh", copy + "/scripts/"])
        let clean = try Support.run([copy + "/scripts/check_layers.sh"])
        #expect(clean.status == 0, "\(clean.stderr)")
        let victim = copy + "/Sources/HoldfastCLI/InfoCommand.swift"
        let text = try String(contentsOfFile: victim, encoding: .utf8)
        let planted = text.replacingOccurrences(of: "import Holdfast\n", with: "import Holdfast\nimport HoldfastCache\n")
            + "\nlet planted = [UInt8](repeating: 0, count: 2).le16(0)\n"
        try planted.write(toFile: victim, atomically: true, encoding: .utf8)
        let r = try Support.run([copy + "/scripts/check_layers.sh"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("InfoCommand.swift:3 imports HoldfastCache, which HoldfastCLI may not"), "\(r.stderr)")
        #expect(r.stderr.contains("raw on-disk offset"), "\(r.stderr)")
    }

    @Test("every command explains itself with an example")
    func help() throws {
        for command in ["info", "ls", "stat", "cat", "tree", "extract", "sites", "mkfs", "put", "write", "mkdir", "rm", "mv",
                        "ln", "chmod", "chown", "truncate", "fallocate", "xattr"] {
            let r = try Support.run([Support.holdfast, command, "--help"])
            #expect(r.status == 0)
            #expect(r.out.contains("Example"), "\(command) --help lacks an example")
        }
    }

    @Test("fallocate preallocates, punches and zeroes; debugfs sees unwritten extents and e2fsck is clean")
    func fallocateVerb() throws {
        let s = try Scratch()
        let img = try Self.image(s, "head -c 65536 /dev/zero | tr '\\0' 'x' > data")
        try Support.sh([Support.holdfast, "fallocate", img, "/data", "--offset", "64K", "--length", "1M"])
        let stat = try Support.sh(["debugfs", "-R", "stat /data", img])
        #expect(stat.contains("Size: 1114112"), "the size grows to the end of the range")
        #expect(try Support.sh(["debugfs", "-R", "ex /data", img]).contains("Uninit"), "the new range is unwritten")
        try Support.sh([Support.holdfast, "fallocate", img, "/data", "--offset", "1024", "--length", "8K", "--punch-hole"])
        try Support.sh([Support.holdfast, "fallocate", img, "/data", "--offset", "20000", "--length", "100", "--zero-range", "--keep-size"])
        var expected = [UInt8](repeating: UInt8(ascii: "x"), count: 65536) + [UInt8](repeating: 0, count: 1 << 20)
        for i in 1024..<(1024 + 8192) { expected[i] = 0 }
        for i in 20000..<20100 { expected[i] = 0 }
        #expect(Array(try Support.run([Support.holdfast, "cat", img, "/data"]).stdout) == expected)
        #expect(try Support.run(["e2fsck", "-fn", img]).status == 0)
        let both = try Support.run([Support.holdfast, "fallocate", img, "/data", "--length", "1", "--punch-hole", "--zero-range"])
        #expect(both.status == 2, "exclusive modes are a usage error")
    }

    /// Found by replaying the fuzz corpus through the release binary (Fuzz/replay.py); each image
    /// is made here with debugfs. Before the fixes: a stack overflow (SIGSEGV) in extract and an
    /// endless tree for a directory listed inside itself, and traps (SIGILL) on an i_size past
    /// Int64.max and on more free blocks than blocks.
    @Test("hostile images found by fuzzing: a directory inside itself, a negative i_size, impossible free counts, a huge directory size")
    func fuzzFindings() throws {
        let s = try Scratch()
        let img = s.path("h.img")
        try Support.sh(["mkfs.ext4", "-q", "-F", "-b", "1024", img, "8M"])
        try Data("data\n".utf8).write(to: URL(fileURLWithPath: s.path("f")))
        for command in ["mkdir /a", "mkdir /a/b", "ln /a /a/b/loop", "write \(s.path("f")) /f", "sif /f size 0x8000000000000000",
                        "ssv free_blocks_count 999999999"] {
            try Support.sh(["debugfs", "-w", "-R", command, img])
        }
        let tree = try Support.run([Support.holdfast, "tree", img, "/"])
        #expect(tree.status == 3 && tree.stderr.contains("directory inode 12 is listed inside itself"), "\(tree.status) \(tree.stderr)")
        let extract = try Support.run([Support.holdfast, "extract", img, s.path("out")])
        #expect(extract.status == 1, "\(extract.status) \(extract.stderr)")
        #expect(extract.stderr.contains("/a/b/loop: corrupt directory block") && extract.stderr.contains("i_size 9223372036854775808"), "\(extract.stderr)")
        #expect(FileManager.default.fileExists(atPath: s.path("out/a/b")), "what is sound is extracted")
        let cat = try Support.run([Support.holdfast, "cat", img, "/f"])
        #expect(cat.status == 3, "\(cat.stderr)")
        // A directory whose i_size claims 2^30 blocks: removing an entry listed every block number
        // up front (8 GiB) before the fix (fuzz-write, an allocation of 192 MiB at 1 KiB blocks).
        let big = s.path("big.img")
        try Support.sh(["mkfs.ext4", "-q", "-F", "-b", "1024", big, "8M"])
        for command in ["mkdir /big", "write \(s.path("f")) /big/x", "sif /big size 0x10000000000"] {
            try Support.sh(["debugfs", "-w", "-R", command, big])
        }
        let rm = try Support.run([Support.holdfast, "rm", big, "/big/x", "--memory", "16M"])
        #expect(!rm.signaled && rm.status == 0, "\(rm.status) \(rm.stderr)")
        // A directory link count at 65,535 (fuzz-write, on an inline_data image): a new
        // subdirectory overflowed it. With dir_nlink it becomes "many" (1); without, EMLINK.
        for (features, expectStatus) in [("dir_nlink", Int32(0)), ("^dir_nlink", Int32(1))] {
            let full = s.path("links-\(features).img")
            try Support.sh(["mkfs.ext4", "-q", "-F", "-b", "1024", "-O", features, full, "8M"])
            for command in ["mkdir /d", "mkdir /e", "sif /d links_count 65535"] { try Support.sh(["debugfs", "-w", "-R", command, full]) }
            for args in [["mkdir", full, "/d/sub"], ["mv", full, "/e", "/d/e"]] {
                let r = try Support.run([Support.holdfast] + args)
                #expect(!r.signaled && r.status == expectStatus, "\(features) \(args): \(r.status) \(r.stderr)")
            }
        }
    }

    @Test("chown follows a symbolic link unless --no-dereference; a punch that starts past the end frees nothing")
    func followAndPunch() throws {
        let s = try Scratch()
        let img = try Self.image(s, "printf 'x%.0s' $(seq 1 1000) > f && ln -s f l", mkfs: ["-b", "1024"])
        try Support.sh([Support.holdfast, "chown", img, "7:8", "/l"])
        try Support.sh([Support.holdfast, "chown", "--no-dereference", img, "9:10", "/l"])
        let link = try Support.sh(["debugfs", "-R", "stat /l", img]), file = try Support.sh(["debugfs", "-R", "stat /f", img])
        #expect(link.contains("User:     9   Group:    10"), "\(link)")
        #expect(file.contains("User:     7   Group:     8"), "\(file)")
        // 1 KiB blocks, i_size 1000, blocks 0-3 preallocated: ext4_punch_hole leaves a range that
        // starts at or past i_size alone.
        try Support.sh([Support.holdfast, "fallocate", img, "/f", "--length", "4K", "--keep-size"])
        let before = try Support.sh(["debugfs", "-R", "stat /f", img]).split(separator: "\n").first { $0.contains("Blockcount") }
        try Support.sh([Support.holdfast, "fallocate", img, "/f", "--offset", "2K", "--length", "2K", "--punch-hole"])
        let after = try Support.sh(["debugfs", "-R", "stat /f", img]).split(separator: "\n").first { $0.contains("Blockcount") }
        #expect(before == after && before?.contains("Blockcount: 8") == true, "\(String(describing: before)) then \(String(describing: after))")
        try Images.expectClean(img)
    }

    @Test("one writer per image: a changing command is refused while another process holds the image's lock")
    func oneWriter() throws {
        let s = try Scratch()
        let img = s.path("lock.img")
        try Support.sh(["mkfs.ext4", "-q", "-F", img, "16M"])
        // This test process holds the lock, as a mount would.
        let fd = open(img, O_RDONLY)
        try #require(fd >= 0 && flock(fd, LOCK_EX) == 0)
        let refused = try Support.run([Support.holdfast, "mkdir", img, "/x"])
        #expect(refused.status == 1 && refused.stderr.contains("in use by another holdfast process"), "\(refused.stderr)")
        #expect(try Support.run([Support.holdfast, "ls", img, "/"]).status == 0, "reading needs no lock")
        close(fd)
        try Support.sh([Support.holdfast, "mkdir", img, "/x"])
        try Images.expectClean(img)
    }

    @Test("ls, stat, cat and tree show the image's contents")
    func reading() throws {
        let s = try Scratch()
        let img = try Self.image(s, "mkdir -p etc/deep && printf 'root:x:0:0\\n' > etc/passwd && ln -s passwd etc/pw && mkfifo etc/fifo && chmod 4755 etc/passwd && head -c 200000 /dev/urandom > etc/deep/blob && mknod etc/null c 1 3 && chmod 1777 etc/deep && touch -d '2024-05-01 12:34:56Z' etc/passwd")
        #expect(try Support.sh([Support.holdfast, "ls", img, "/etc"]) == "deep\nfifo\nnull\npasswd\npw\n")
        let long = try Support.sh([Support.holdfast, "ls", "-l", img, "/etc"])
        #expect(long.contains("\n-rwsr-xr-x   1     0     0         11 2024-05-01 12:34 passwd\n"), "\(long)")
        #expect(long.contains("pw -> passwd"))
        #expect(long.contains("prw-"))
        #expect(long.contains("drwxrwxrwt"))
        #expect(long.contains("crw-r--r--   1     0     0       1, 3 "), "\(long)")
        #expect(try Support.sh([Support.holdfast, "cat", img, "/etc/pw"]) == "root:x:0:0\n")
        let blob = try Support.run([Support.holdfast, "cat", img, "/etc/deep/blob"]).stdout
        #expect(Bytes(blob) == Bytes((try Data(contentsOf: URL(fileURLWithPath: s.path("tree/etc/deep/blob"))))))
        // Ranges read through the page cache, in small reads: the same bytes, and readahead at work.
        let whole = try Data(contentsOf: URL(fileURLWithPath: s.path("tree/etc/deep/blob")))
        let part = try Support.run([Support.holdfast, "cat", img, "/etc/deep/blob", "--offset", "5000", "--length", "150000", "--chunk", "16K", "--stats"])
        #expect(part.status == 0 && part.stdout == whole[5000..<155_000])
        #expect(part.stderr.contains("read-misses=") && !part.stderr.contains("readahead=0 "), "\(part.stderr)")
        let tail = try Support.run([Support.holdfast, "cat", img, "/etc/deep/blob", "--offset", "199990"])
        #expect(tail.stdout == whole[199_990...], "--offset alone reads to the end")
        let bad = try Support.run([Support.holdfast, "cat", img, "/etc/deep/blob", "--offset", "lots"])
        #expect(bad.status != 0 && bad.stderr.contains("--offset"), "\(bad.stderr)")
        let stat = try Support.sh([Support.holdfast, "stat", img, "/etc/passwd"])
        #expect(stat.contains("Mode:       04755"))
        #expect(stat.contains("Size:       11"))
        let tree = try Support.sh([Support.holdfast, "tree", img, "/etc"])
        #expect(tree.contains("└── deep") || tree.contains("├── deep"))
        #expect(tree.contains("1 directories, 5 files"))
        let info = try Support.sh([Support.holdfast, "info", img])
        #expect(info.contains("metadata_csum"))
        #expect(info.contains("State:                  clean"))
    }

    @Test("errors are named, on stderr, with distinct exit codes")
    func errors() throws {
        let s = try Scratch()
        let img = try Self.image(s, "echo hi > f")
        var r = try Support.run([Support.holdfast, "cat", img, "/nope"])
        #expect(r.status == 1 && r.stderr.contains("/nope: no such file or directory in the image"))
        r = try Support.run([Support.holdfast, "cat", img, "/"])
        #expect(r.status == 1 && r.stderr.contains("is a directory"))
        r = try Support.run([Support.holdfast, "ls", img, "/f/x"])
        #expect(r.status == 1 && r.stderr.contains("not a directory"))
        r = try Support.run([Support.holdfast, "info", s.path("missing.img")])
        #expect(r.status == 1 && r.stderr.contains("No such file"))
        try Support.sh(["bash", "-c", "head -c 1048576 /dev/urandom > \(s.path("noise"))"])
        r = try Support.run([Support.holdfast, "info", s.path("noise")])
        #expect(r.status == 3 && r.stderr.contains("corrupt superblock: bad magic"))
        r = try Support.run([Support.holdfast, "info", "--memory", "lots", img])
        #expect(r.status == 1 && r.stderr.contains("--memory lots"))
        r = try Support.run([Support.holdfast, "frobnicate"])
        #expect(r.status == 2, "a usage error exits 2")
    }

    @Test("features Holdfast cannot read are refused by name", arguments: ["encrypt", "casefold"])
    func unsupported(feature: String) throws {
        let s = try Scratch()
        let img = try Self.image(s, "echo hi > f", mkfs: ["-O", feature])
        let r = try Support.run([Support.holdfast, "ls", img])
        #expect(r.status == 4)
        #expect(r.stderr.contains("unsupported ext4 feature: \(feature)"), "\(r.stderr)")
    }

    @Test("extract refuses a non-empty destination unless --force")
    func nonEmptyDestination() throws {
        let s = try Scratch()
        let img = try Self.image(s, "echo hi > f")
        let dest = s.path("dest")
        try Support.sh(["mkdir", "-p", dest])
        try "keep".write(toFile: dest + "/mine", atomically: true, encoding: .utf8)
        let r = try Support.run([Support.holdfast, "extract", img, dest])
        #expect(r.status == 1 && r.stderr.contains("not empty"))
        #expect(!FileManager.default.fileExists(atPath: dest + "/f"))
        try Support.sh([Support.holdfast, "extract", "--force", img, dest])
        #expect(try String(contentsOfFile: dest + "/f", encoding: .utf8) == "hi\n")
        #expect(try String(contentsOfFile: dest + "/mine", encoding: .utf8) == "keep")
    }

    @Test("extract never writes outside DEST: planted symlinks and hostile names")
    func staysInside() throws {
        let s = try Scratch()
        let outside = s.path("outside")
        try Support.sh(["mkdir", "-p", outside])
        // A destination prepared by someone else, with a symlink where the image has a directory.
        let img = try Self.image(s, "mkdir -p sub && echo secret > sub/file && mkdir d && echo x > d/ab && echo y > d/cd",
                                 mkfs: ["-O", "^metadata_csum", "-b", "1024"])
        let dest = s.path("dest")
        try Support.sh(["mkdir", "-p", dest])
        try Support.sh(["ln", "-s", outside, dest + "/sub"])
        var r = try Support.run([Support.holdfast, "extract", "--force", img, dest])
        // --force replaces the symlink with a real directory; nothing lands where it pointed.
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty)
        var isDir: ObjCBool = false
        #expect(FileManager.default.fileExists(atPath: dest + "/sub/file", isDirectory: &isDir))
        #expect((try FileManager.default.attributesOfItem(atPath: dest + "/sub")[.type] as? FileAttributeType) == .typeDirectory)

        // Names rewritten in the image to '..' and 'c/': refused, nothing outside.
        let block = Int(try Support.sh(["debugfs", "-R", "bmap /d 0", img]).trimmingCharacters(in: .whitespacesAndNewlines))!
        var bytes = try Data(contentsOf: URL(fileURLWithPath: img))
        let start = block * 1024
        let dir = bytes[start..<(start + 1024)]
        let ab = try #require(dir.firstRange(of: Data("ab".utf8)))
        bytes.replaceSubrange(ab, with: Data("..".utf8))
        let cd = try #require(bytes[start..<(start + 1024)].firstRange(of: Data("cd".utf8)))
        bytes.replaceSubrange(cd, with: Data("c/".utf8))
        try bytes.write(to: URL(fileURLWithPath: img))
        let dest2 = s.path("dest2/inner")
        r = try Support.run([Support.holdfast, "extract", img, dest2])
        #expect(r.status == 1)
        #expect(r.stderr.contains("refusing unsafe name"), "\(r.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: s.path("dest2")) == ["inner"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: outside).isEmpty)
    }

    @Test("reading 1 GiB from a 10 GiB image stays within the budget")
    func memoryBound() throws {
        let s = try Scratch()
        let img = try Self.image(s, "head -c 1G /dev/urandom > big && echo small > small", size: "10G")
        for budget in [8, 64] {
            let r = try Support.run(["/usr/bin/time", "-f", "%M", Support.holdfast, "cat", "--memory", "\(budget)M", img, "/big"], timeout: 300)
            #expect(r.status == 0)
            #expect(r.stdout.count == 1 << 30)
            let kib = Int(r.stderr.split(separator: "\n").last.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? "") ?? .max
            // The budget plus the Swift runtime, the binary and stdio: 24 MiB of fixed overhead at most.
            #expect(kib <= (budget + 24) * 1024, "peak RSS \(kib) KiB with --memory \(budget)M")
        }
    }

    @Test("extracting 20,000 entries and 200 MB with --memory 8M stays within the budget plus runtime overhead")
    func extractMemoryBound() throws {
        let s = try Scratch()
        let img = try Self.image(s, """
            mkdir many && for d in $(seq 1 40); do mkdir many/$d; for f in $(seq 1 500); do echo $d-$f > many/$d/file-$f; done; done
            head -c 200M /dev/urandom > big
            """, size: "400M")
        let out = s.path("out")
        let r = try Support.run(["/usr/bin/time", "-f", "%M", Support.holdfast, "extract", "--memory", "8M", "--stats", img, out], timeout: 600)
        #expect(r.status == 0, "\(r.stderr.suffix(1000))")
        let kib = Int(r.stderr.split(separator: "\n").last.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? "") ?? .max
        #expect(kib <= (8 + 24) * 1024, "peak RSS \(kib) KiB with --memory 8M")
        #expect(r.stderr.contains("limit=8388608"))
        #expect(r.stderr.contains("budget used=0 "))
        #expect(try FileManager.default.contentsOfDirectory(atPath: out + "/many").count == 40)
    }

    @Test("mkfs --from 20,000 entries, then writing 512 MB, with --memory 8M stays within the budget plus runtime overhead")
    func writeMemoryBound() throws {
        let s = try Scratch()
        try Support.sh(["sh", "-c", "mkdir -p \(s.path("tree")) && cd \(s.path("tree")) && for d in $(seq 1 40); do mkdir $d; for f in $(seq 1 500); do echo $d-$f > $d/file-$f; done; done"])
        let img = s.path("w.img")
        var r = try Support.run(["/usr/bin/time", "-f", "%M", Support.holdfast, "mkfs", img, "1G", "--from", s.path("tree"), "--memory", "8M", "--stats"], timeout: 600)
        #expect(r.status == 0, "\(r.stderr.suffix(1000))")
        var kib = Int(r.stderr.split(separator: "\n").last.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? "") ?? .max
        #expect(kib <= (8 + 24) * 1024, "mkfs: peak RSS \(kib) KiB with --memory 8M")
        #expect(r.stderr.contains("limit=8388608") && r.stderr.contains("budget used=0 "))
        r = try Support.run(["sh", "-c", "head -c 512M /dev/zero | /usr/bin/time -f %M \(Support.holdfast) write --memory 8M \(img) /big"], timeout: 600)
        #expect(r.status == 0, "\(r.stderr.suffix(1000))")
        kib = Int(r.stderr.split(separator: "\n").last.map(String.init)?.trimmingCharacters(in: .whitespaces) ?? "") ?? .max
        #expect(kib <= (8 + 24) * 1024, "write: peak RSS \(kib) KiB with --memory 8M")
        #expect(try Support.run(["e2fsck", "-fn", img]).status == 0)
        let fs = try Filesystem.open(path: img)
        #expect(try fs.resolve("/big").size == 512 << 20)
        #expect(try fs.directoryEntries(try fs.resolve("/40")).count == 502)
    }
}
