import Foundation
import Holdfast
import HoldfastTestSupport
import Testing

/// What chown, write, truncate and fallocate take away (set-id bits, file capabilities), judged by
/// the kernel: the same changes run through the library on one image and through a kernel loop
/// mount on its twin, then both images are read back and compared file by file.
@Suite("privilege rules (setuid, setgid, capabilities)", .serialized)
struct PrivilegeRulesTests {
    /// A valid VFS_CAP_REVISION_2 value (the kernel checks the format on set): CAP_NET_RAW permitted.
    static let capability = "0x0100000200200000000000000000000000000000"

    enum Change { case chown(String), write, truncate, fallocate }

    struct Case {
        let name: String
        let mode: String
        let directory: Bool
        let capability: Bool
        let change: Change
    }

    static let cases: [Case] = [
        Case(name: "chown-6755-cap", mode: "6755", directory: false, capability: true, change: .chown("1000:1000")),
        Case(name: "chown-uid-6775", mode: "6775", directory: false, capability: false, change: .chown("1000")),
        Case(name: "chown-2644", mode: "2644", directory: false, capability: false, change: .chown("1001:1001")),
        Case(name: "chown-same-owner-4711", mode: "4711", directory: false, capability: false, change: .chown("0:0")),
        Case(name: "chown-dir-6755", mode: "6755", directory: true, capability: false, change: .chown("1000:1000")),
        Case(name: "write-6755-cap", mode: "6755", directory: false, capability: true, change: .write),
        Case(name: "truncate-4755-cap", mode: "4755", directory: false, capability: true, change: .truncate),
        Case(name: "fallocate-2775-cap", mode: "2775", directory: false, capability: true, change: .fallocate),
    ]

    @Test("the library's chown, write, truncate and fallocate drop what the kernel's do")
    func matchesKernel() throws {
        try Support.requireLoopMount("the kernel side of the privilege rules")
        let s = try Scratch()
        let image = s.path("h.img"), twin = s.path("k.img")
        try Images.make(image, blockSize: 4096, megabytes: 32)
        try Support.sh(["cp", image, twin])

        let fs = try Images.openWritable(image)
        for c in Self.cases {
            let path = "/" + c.name
            let number = try fs.create(path: path, kind: c.directory ? .directory : .regular, owner: Ownership(permissions: 0o644))
            if !c.directory { try fs.write(number, at: 0, Array(repeating: 0x61, count: 10_000)) }
            try fs.setAttributes(number, AttributeChanges(permissions: UInt16(c.mode, radix: 8)!))
            if c.capability { try fs.setXattr(number, name: Array("security.capability".utf8), value: Self.hex(Self.capability)) }
            switch c.change {
            case .chown(let owner):
                let ids = owner.split(separator: ":").map { UInt32($0)! }
                try fs.setAttributes(number, AttributeChanges(uid: ids[0], gid: ids.count > 1 ? ids[1] : nil))
            case .write: try fs.write(number, at: 3, Array("x".utf8))
            case .truncate: try fs.truncate(number, to: 5000)
            case .fallocate: try fs.fallocate(number, offset: 0, length: 65536, mode: .keepSize)
            }
        }
        try fs.close()

        try Support.withLoopMount(twin, options: "loop") { mnt in
            for c in Self.cases {
                let path = mnt + "/" + c.name
                if c.directory { try Support.sh(["mkdir", path]) } else { try Support.sh(["sh", "-c", "head -c 10000 /dev/zero | tr '\\0' a > \(path)"]) }
                try Support.sh(["chmod", c.mode, path])
                if c.capability { try Support.sh(["setfattr", "-n", "security.capability", "-v", Self.capability, path]) }
                switch c.change {
                case .chown(let owner): try Support.sh(["chown", owner, path])
                case .write: try Support.sh(["sh", "-c", "printf x | dd of=\(path) bs=1 seek=3 conv=notrunc status=none"])
                case .truncate: try Support.sh(["truncate", "-s", "5000", path])
                case .fallocate: try Support.sh(["fallocate", "--keep-size", "-l", "65536", path])
                }
            }
            try Support.sh(["sync"])
        }

        let mine = try Filesystem.open(path: image), kernels = try Filesystem.open(path: twin)
        for c in Self.cases {
            let a = try mine.resolve("/" + c.name), b = try kernels.resolve("/" + c.name)
            #expect(String(a.permissions, radix: 8) == String(b.permissions, radix: 8), "\(c.name): the mode")
            #expect(a.uid == b.uid && a.gid == b.gid, "\(c.name): the owner")
            let names = { (fs: Filesystem, node: Inode) in try fs.xattrs(node).map { String(decoding: $0.name, as: UTF8.self) }.sorted() }
            #expect(try names(mine, a) == names(kernels, b), "\(c.name): the xattrs")
        }
        // The cases would pass on an engine that drops nothing, were the kernel to drop nothing.
        #expect(try kernels.resolve("/chown-6755-cap").permissions == 0o755)
        #expect(try kernels.xattrs(kernels.resolve("/write-6755-cap")).isEmpty)
        #expect(try kernels.resolve("/chown-2644").permissions == 0o2644)
        try Images.expectClean(image)
    }

    @Test("a mode given with the owner is kept: the mount's kernel decides the set-id bits itself")
    func modeWithOwnerIsKept() throws {
        let s = try Scratch()
        let image = s.path("m.img")
        try Images.make(image, blockSize: 4096, megabytes: 16)
        let fs = try Images.openWritable(image)
        let f = try fs.create(path: "/f", kind: .regular, owner: Ownership(permissions: 0o6755))
        try fs.setAttributes(f, AttributeChanges(permissions: 0o4755, uid: 1000, gid: 1000))
        #expect(try fs.inode(f).permissions == 0o4755)
        try fs.setAttributes(f, AttributeChanges(uid: 1000))
        #expect(try fs.inode(f).permissions == 0o755)
        try fs.close()
        try Images.expectClean(image)
    }

    /// An import restores a file's capabilities along with its data: they must survive the write.
    @Test("put keeps a host file's capabilities")
    func importKeepsCapabilities() throws {
        let s = try Scratch()
        let image = s.path("i.img"), host = s.path("tool")
        try Images.make(image, blockSize: 4096, megabytes: 16)
        try Support.sh(["sh", "-c", "head -c 50000 /dev/urandom > \(host) && chmod 4755 \(host)"])
        guard (try? Support.sh(["setfattr", "-n", "security.capability", "-v", Self.capability, host])) != nil else {
            return try Support.skip("the scratch filesystem takes no security.capability")
        }
        let fs = try Images.openWritable(image)
        _ = try fs.importHost(host, into: Filesystem.rootInode, name: Array("tool".utf8))
        let node = try fs.resolve("/tool")
        #expect(node.permissions == 0o4755)
        #expect(try fs.xattrs(node).map(\.name) == [Array("security.capability".utf8)])
        try fs.close()
    }

    static func hex(_ text: String) -> [UInt8] {
        let digits = Array(text.utf8.dropFirst(2))
        return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
    }
}
