import Foundation
import Holdfast
import HoldfastFormat
import HoldfastMemory
import HoldfastTestSupport
import Testing

/// Model-based randomized testing: seeded sequences of operations run against Holdfast and against
/// an in-memory model of the tree; the two are compared after every batch (the files a batch
/// touched) and completely at the end, then `e2fsck -fn` and the kernel's view of the image judge.
/// A failure names its seed; `HOLDFAST_MODEL_SEED=N` reruns one seed.
@Suite("model-based randomized operations", .serialized)
struct ModelTests {
    /// A file's contents by 4 KiB chunk (absent: zeros), shared by its hard links.
    final class FileNode {
        var chunks: [Int: [UInt8]] = [:]
        var size = 0
        var permissions: UInt16 = 0o644
        var xattrs: [String: [UInt8]] = [:]
        var links = 1

        func write(_ data: [UInt8], at offset: Int) {
            var i = 0
            while i < data.count {
                let c = (offset + i) / 4096, o = (offset + i) % 4096
                let n = min(4096 - o, data.count - i)
                var chunk = chunks[c] ?? [UInt8](repeating: 0, count: 4096)
                chunk.replaceSubrange(o..<(o + n), with: data[i..<(i + n)])
                chunks[c] = chunk
                i += n
            }
            size = max(size, offset + data.count)
        }

        func truncate(_ newSize: Int) {
            if newSize < size {
                for c in chunks.keys where c * 4096 >= newSize { chunks[c] = nil }
                if newSize % 4096 != 0, var chunk = chunks[newSize / 4096] {
                    for k in (newSize % 4096)..<4096 { chunk[k] = 0 }
                    chunks[newSize / 4096] = chunk
                }
            }
            size = newSize
        }

        /// Bytes [from, to) read as zeros afterwards (within the size).
        func zero(_ from: Int, _ to: Int) {
            let end = min(to, size)
            guard from < end else { return }
            write([UInt8](repeating: 0, count: end - from), at: from)
        }

        /// fallocate(2) as the model sees it: only the size and zeroed ranges show.
        func fallocate(_ offset: Int, _ length: Int, _ mode: FallocateMode) {
            switch mode {
            case .allocate: size = max(size, offset + length)
            case .keepSize: break
            case .punchHole: zero(offset, offset + length)
            case .zeroRange(let keepSize):
                zero(offset, offset + length)
                if !keepSize { size = max(size, offset + length) }
            }
        }

        var bytes: [UInt8] {
            var out = [UInt8](repeating: 0, count: size)
            for (c, chunk) in chunks {
                let start = c * 4096
                guard start < size else { continue }
                let n = min(4096, size - start)
                out.withUnsafeMutableBytes { o in chunk.withUnsafeBytes { c in (o.baseAddress! + start).copyMemory(from: c.baseAddress!, byteCount: n) } }
            }
            return out
        }
    }

    enum Node {
        case file(FileNode)
        case directory
        case symlink(String)
    }

    /// The model: every path and what it is.
    struct Model {
        var nodes: [String: Node] = ["/": .directory]

        func children(_ dir: String) -> [String] {
            let prefix = dir == "/" ? "/" : dir + "/"
            return nodes.keys.filter { $0 != "/" && $0.hasPrefix(prefix) && !$0.dropFirst(prefix.count).contains("/") }
        }

        func parent(_ path: String) -> String {
            let p = path.split(separator: "/").dropLast().joined(separator: "/")
            return "/" + p
        }

        var directories: [String] { nodes.compactMap { if case .directory = $0.value { return $0.key } else { return nil } } }
        var files: [String] { nodes.compactMap { if case .file = $0.value { return $0.key } else { return nil } } }

        mutating func removeSubtree(_ path: String) {
            for k in nodes.keys where k == path || k.hasPrefix(path + "/") { nodes[k] = nil }
        }
    }

    struct Run {
        let fs: Filesystem
        var model = Model()
        var rng: SplitMix64
        var touched: Set<String> = []
        var counts: [String: Int] = [:]
        let seed: UInt64
        /// What happened to each file node, for the failure message.
        var history: [ObjectIdentifier: [String]] = [:]
        /// Open file descriptions, each with the node it keeps alive (perhaps unlinked since).
        var handles: [(file: OpenFile, node: FileNode)] = []

        mutating func log(_ node: FileNode, _ what: String) { history[ObjectIdentifier(node), default: []].append(what) }

        mutating func pick<T>(_ items: [T]) -> T? { items.isEmpty ? nil : items[Int(rng.next() % UInt64(items.count))] }
        mutating func chance(_ p: Double) -> Bool { Double(rng.next() % 10_000) / 10_000 < p }
        mutating func number(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }

        mutating func newName() -> String {
            let stems = ["a", "b", "c", "data", "x", "long-name-\(String(repeating: "z", count: 40))", "é", "n"]
            return (pick(stems) ?? "a") + String(number(60))
        }

        mutating func freshPath(in dir: String) -> String? {
            for _ in 0..<5 {
                let p = (dir == "/" ? "" : dir) + "/" + newName()
                if model.nodes[p] == nil { return p }
            }
            return nil
        }

        func fail(_ what: String) -> Support.Failure { Support.Failure("seed \(seed): \(what)") }

        /// One random operation, applied to both sides.
        mutating func step() throws {
            let r = number(112)
            let me = Ownership(uid: 0, gid: 0, permissions: 0o644)
            switch r {
            case 0..<14:  // create a file
                guard let dir = pick(model.directories), let path = freshPath(in: dir) else { return }
                try fs.create(path: path, kind: .regular, owner: me)
                model.nodes[path] = .file(FileNode())
                touched.insert(path)
                counts["create", default: 0] += 1
            case 14..<20:  // mkdir
                guard let dir = pick(model.directories), let path = freshPath(in: dir) else { return }
                try fs.create(path: path, kind: .directory, owner: Ownership(permissions: 0o755))
                model.nodes[path] = .directory
                counts["mkdir", default: 0] += 1
            case 20..<42:  // write at a random offset
                guard let path = pick(model.files), case .file(let node)? = model.nodes[path] else { return }
                // A fifth are small writes near the start: files that inline_data keeps in the inode.
                let small = chance(0.2)
                let offset = small ? number(min(node.size, 100) + 1) : chance(0.3) ? node.size : number(4 << 20)
                let length = small ? 1 + number(100) : chance(0.7) ? 1 + number(5000) : 1 + number(200_000)
                var data = [UInt8](repeating: 0, count: length)
                for i in 0..<length { data[i] = UInt8(truncatingIfNeeded: rng.next()) | 1 }
                try fs.write(try fs.resolve(path).number, at: UInt64(offset), data)
                node.write(data, at: offset)
                log(node, "write \(length) at \(offset)")
                touched.insert(path)
                counts["write", default: 0] += 1
            case 42..<48:  // truncate
                guard let path = pick(model.files), case .file(let node)? = model.nodes[path] else { return }
                let size = chance(0.5) ? number(max(1, node.size + 1)) : number(6 << 20)
                try fs.truncate(try fs.resolve(path).number, to: UInt64(size))
                log(node, "truncate from \(node.size) to \(size)")
                node.truncate(size)
                touched.insert(path)
                counts["truncate", default: 0] += 1
            case 48..<58:  // unlink
                let candidates = model.nodes.filter { if case .directory = $0.value { return false } else { return true } }.map(\.key)
                guard let path = pick(candidates) else { return }
                try fs.unlink(path: path)
                if case .file(let node)? = model.nodes[path] { node.links -= 1 }
                model.nodes[path] = nil
                counts["unlink", default: 0] += 1
            case 58..<62:  // rmdir (empty) or the right error
                guard let path = pick(model.directories.filter { $0 != "/" }) else { return }
                if model.children(path).isEmpty {
                    try fs.removeDirectory(path: path)
                    model.nodes[path] = nil
                    counts["rmdir", default: 0] += 1
                } else {
                    do { try fs.removeDirectory(path: path); throw fail("rmdir of non-empty \(path) succeeded") } catch let e as HoldfastError {
                        guard case .notEmpty = e else { throw fail("rmdir \(path): \(e)") }
                    }
                    counts["rmdir-error", default: 0] += 1
                }
            case 62..<72:  // rename, maybe over an existing file, maybe across directories
                guard let src = pick(model.nodes.keys.filter { $0 != "/" }), let dir = pick(model.directories) else { return }
                if dir == src || dir.hasPrefix(src + "/") {
                    // What the read path says before: the inodes and dir's '..' chain (a failure names them).
                    let before = try ModelTests.chain(fs, src: src, dir: dir)
                    do {
                        try fs.rename(path: src, to: dir + "/moved")
                        throw fail("rename \(src) into itself succeeded; before: \(before); after: \((try? ModelTests.chain(fs, src: src, dir: dir)) ?? "?")")
                    } catch let e as HoldfastError {
                        guard case .wouldLoop = e else { throw fail("rename \(src) into itself: \(e)") }
                    }
                    return
                }
                var dest: String
                if chance(0.3), case .file? = model.nodes[src], let victim = pick(model.children(dir).filter { if case .file? = model.nodes[$0] { return $0 != src } else { return false } }) {
                    dest = victim
                } else {
                    guard let p = freshPath(in: dir) else { return }
                    dest = p
                }
                try fs.rename(path: src, to: dest)
                if case .file(let victim)? = model.nodes[dest] { victim.links -= 1 }
                var moved: [String: Node] = [:]
                for (k, v) in model.nodes where k == src || k.hasPrefix(src + "/") { moved[dest + k.dropFirst(src.count)] = v }
                model.removeSubtree(src)
                for (k, v) in moved { model.nodes[k] = v }
                touched.insert(dest)
                counts["rename", default: 0] += 1
            case 72..<77:  // hard link
                guard let target = pick(model.files), let dir = pick(model.directories), let path = freshPath(in: dir),
                      case .file(let node)? = model.nodes[target] else { return }
                try fs.link(existing: target, newPath: path)
                node.links += 1
                model.nodes[path] = .file(node)
                touched.insert(path)
                counts["link", default: 0] += 1
            case 77..<82:  // symlink, fast or slow
                guard let dir = pick(model.directories), let path = freshPath(in: dir) else { return }
                let target = chance(0.5) ? "t\(number(1000))" : String(repeating: "long/", count: 20 + number(40))
                try fs.create(path: path, kind: .symlink(target: Array(target.utf8)), owner: Ownership(permissions: 0o777))
                model.nodes[path] = .symlink(target)
                counts["symlink", default: 0] += 1
            case 82..<87:  // chmod
                guard let path = pick(model.files), case .file(let node)? = model.nodes[path] else { return }
                let mode = UInt16(number(0o7777))
                try fs.setAttributes(try fs.resolve(path).number, AttributeChanges(permissions: mode))
                node.permissions = mode
                touched.insert(path)
                counts["chmod", default: 0] += 1
            case 87..<94:  // xattrs
                guard let path = pick(model.files), case .file(let node)? = model.nodes[path] else { return }
                let name = "user.k\(number(6))"
                let inode = try fs.resolve(path).number
                if chance(0.3), node.xattrs[name] != nil {
                    try fs.removeXattr(inode, name: Array(name.utf8))
                    node.xattrs[name] = nil
                } else {
                    let value = [UInt8](repeating: UInt8(number(200) + 1), count: number(180))
                    try fs.setXattr(inode, name: Array(name.utf8), value: value)
                    node.xattrs[name] = value
                }
                touched.insert(path)
                counts["xattr", default: 0] += 1
            case 100..<104:  // fallocate: preallocate, keep size, punch a hole, zero a range
                guard let path = pick(model.files), case .file(let node)? = model.nodes[path] else { return }
                let (offset, length, mode) = randomFallocate(node)
                try fs.fallocate(try fs.resolve(path).number, offset: UInt64(offset), length: UInt64(length), mode: mode)
                node.fallocate(offset, length, mode)
                log(node, "fallocate \(mode) \(length) at \(offset)")
                touched.insert(path)
                counts["fallocate", default: 0] += 1
            case 104..<108:  // open a file, or close a description (the last close frees an unlinked file)
                if chance(0.5) || handles.count > 12, !handles.isEmpty {
                    let h = handles.remove(at: number(handles.count))
                    try h.file.close()
                    counts["close", default: 0] += 1
                } else {
                    guard let path = pick(model.files), case .file(let node)? = model.nodes[path] else { return }
                    handles.append((try fs.openFile(try fs.resolve(path).number), node))
                    counts["open", default: 0] += 1
                }
            case 108..<112:  // through an open description: append (windows), write, truncate, fallocate
                guard !handles.isEmpty else { return }
                let h = handles[number(handles.count)]
                let inode = h.file.inode
                switch number(4) {
                case 0, 1:
                    let offset = chance(0.7) ? h.node.size : number(4 << 20)
                    let data = [UInt8](repeating: UInt8(number(255) + 1), count: 1 + number(chance(0.5) ? 70_000 : 3000))
                    try fs.write(inode, at: UInt64(offset), data)
                    h.node.write(data, at: offset)
                    log(h.node, "write \(data.count) at \(offset) through a description")
                    counts["handle-write", default: 0] += 1
                case 2:
                    let size = number(max(1, h.node.size + 1))
                    try fs.truncate(inode, to: UInt64(size))
                    h.node.truncate(size)
                    log(h.node, "truncate to \(size) through a description")
                    counts["handle-truncate", default: 0] += 1
                default:
                    let (offset, length, mode) = randomFallocate(h.node)
                    try fs.fallocate(inode, offset: UInt64(offset), length: UInt64(length), mode: mode)
                    h.node.fallocate(offset, length, mode)
                    log(h.node, "fallocate \(mode) \(length) at \(offset) through a description")
                    counts["handle-fallocate", default: 0] += 1
                }
            default:  // a name that exists: create must say so and change nothing
                guard let path = pick(model.nodes.keys.filter { $0 != "/" }) else { return }
                do { try fs.create(path: path, kind: .regular, owner: me); throw fail("create over \(path) succeeded") } catch let e as HoldfastError {
                    guard case .exists = e else { throw fail("create over \(path): \(e)") }
                }
                counts["exists-error", default: 0] += 1
            }
        }

        mutating func randomFallocate(_ node: FileNode) -> (Int, Int, FallocateMode) {
            let offset = chance(0.5) ? number(max(1, node.size)) : number(4 << 20)
            let length = 1 + (chance(0.5) ? number(9000) : number(600_000))
            let modes: [FallocateMode] = [.allocate, .keepSize, .punchHole, .punchHole, .zeroRange(keepSize: true), .zeroRange(keepSize: false)]
            return (offset, length, modes[number(modes.count)])
        }

        /// Open descriptions read what their nodes hold, linked or not.
        func compareHandles() throws {
            for h in handles {
                let inode = try fs.inode(h.file.inode)
                guard inode.size == UInt64(h.node.size) else { throw fail("open inode \(h.file.inode): size \(inode.size), model \(h.node.size)") }
                guard ModelTests.sameBytes(try fs.read(inode, offset: 0, count: h.node.size), h.node.bytes) else {
                    throw fail("open inode \(h.file.inode): contents differ; history: \(history[ObjectIdentifier(h.node)] ?? [])")
                }
            }
        }

        /// Compares the given paths (nil: everything) with the image through the library.
        func compare(_ paths: Set<String>?) throws {
            for (path, node) in model.nodes where paths == nil || paths!.contains(path) {
                let inode: Inode
                do { inode = try fs.resolve(path) } catch { throw fail("\(path): \(error)") }
                switch node {
                case .directory:
                    guard inode.fileType == .directory else { throw fail("\(path) is not a directory") }
                    let names = Set(try fs.directoryEntries(inode).filter { !$0.isDotOrDotDot }.map(\.nameString))
                    var expected = Set(model.children(path).map { String($0.split(separator: "/").last!) })
                    if path == "/" { expected.insert("lost+found") }
                    guard names == expected else { throw fail("\(path) lists \(names.symmetricDifference(expected).sorted().prefix(5)) differently") }
                case .symlink(let target):
                    guard inode.fileType == .symlink else { throw fail("\(path): not a symlink") }
                    let got = try fs.readLink(inode)
                    guard got == Array(target.utf8) else { throw fail("\(path): symlink \(got.count) bytes \(String(decoding: got.prefix(40), as: UTF8.self)), model \(target.utf8.count) bytes") }
                case .file(let f):
                    guard inode.fileType == .regular, inode.size == UInt64(f.size) else { throw fail("\(path): size \(inode.size), model \(f.size)") }
                    guard inode.permissions == f.permissions, inode.linksCount == UInt16(f.links) else {
                        throw fail("\(path): mode \(String(inode.permissions, radix: 8)) links \(inode.linksCount), model \(String(f.permissions, radix: 8)) \(f.links)")
                    }
                    let got = try fs.read(inode, offset: 0, count: f.size), want = f.bytes
                    if !ModelTests.sameBytes(got, want) {
                        let at = (0..<min(got.count, want.count)).first { got[$0] != want[$0] } ?? min(got.count, want.count)
                        throw fail("\(path): contents differ at byte \(at) of \(f.size); history: \(history[ObjectIdentifier(f)] ?? [])")
                    }
                    let xattrs = Dictionary(uniqueKeysWithValues: try fs.xattrs(inode).map { ($0.nameString, $0.value) })
                    guard xattrs == f.xattrs else { throw fail("\(path): xattrs \(xattrs.keys.sorted()) != \(f.xattrs.keys.sorted())") }
                }
            }
        }
    }

    /// The inode numbers of `src` and `dir` and the '..' chain from `dir` to the root, as the
    /// read path sees them.
    static func chain(_ fs: Filesystem, src: String, dir: String) throws -> String {
        var out = "src \(try fs.resolve(src).number) dir \(try fs.resolve(dir).number) chain"
        var current = try fs.resolve(dir)
        for _ in 0..<64 {
            guard current.number != Filesystem.rootInode, let up = try fs.lookup([0x2E, 0x2E], in: current) else { break }
            out += " \(up)"
            current = try fs.inode(up)
        }
        return out
    }

    /// memcmp: the generic == on byte arrays is slow in debug builds.
    static func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        a.count == b.count && a.withUnsafeBytes { x in b.withUnsafeBytes { y in memcmp(x.baseAddress!, y.baseAddress!, a.count) == 0 } }
    }

    static var seeds: [UInt64] {
        if let s = ProcessInfo.processInfo.environment["HOLDFAST_MODEL_SEED"], let n = UInt64(s) { return [n] }
        return [1, 2, 3]
    }

    @Test("10,000 random operations (fallocate and open descriptions among them) match the model", arguments: seeds)
    func randomized(seed: UInt64) throws {
        let scratch = try Scratch()
        let image = scratch.path("model.img")
        // Seeds 2, 5, 8...: 4 KiB blocks and the features mkfs has set by default since e2fsprogs
        // 1.47.0 (orphans go to the orphan file); 3, 6, 9...: 1 KiB blocks and inline_data (small
        // files and directories in their inodes); 1, 4, 7...: 1 KiB blocks and the s_last_orphan chain.
        let kind = switch seed % 3 {
        case 2: ["-b", "4096", "-O", "orphan_file,metadata_csum_seed"]
        case 0: ["-b", "1024", "-I", "256", "-O", "inline_data"]
        default: ["-b", "1024"]
        }
        try Support.sh(["mkfs.ext4", "-q", "-F"] + kind + ["-N", "120000", image, "512M"])
        let fs = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 16 << 20, writable: true))
        var run = Run(fs: fs, rng: SplitMix64(seed: seed), seed: seed)
        // A big directory (htree, more index levels at 1 KiB blocks) and a file of thousands of extents.
        let bigCount = Int(ProcessInfo.processInfo.environment["HOLDFAST_MODEL_BIG"] ?? "") ?? 50_000
        let big = try fs.makeDirectories(path: "/big", owner: Ownership(permissions: 0o755))
        run.model.nodes["/big"] = .directory
        for i in 0..<bigCount {
            try fs.create(Array("entry-\(i)-of-the-big-directory".utf8), in: big, kind: .regular, owner: Ownership(permissions: 0o600))
        }
        for i in 0..<bigCount { run.model.nodes["/big/entry-\(i)-of-the-big-directory"] = .file({ let n = FileNode(); n.permissions = 0o600; return n }()) }
        let fragmented = try fs.create(path: "/fragmented", kind: .regular, owner: Ownership(permissions: 0o644))
        let node = FileNode()
        for k in 0..<3000 {
            try fs.write(fragmented, at: UInt64(k * 2 * fs.blockSize), [UInt8(k & 0xFF) | 1])
            node.write([UInt8(k & 0xFF) | 1], at: k * 2 * fs.blockSize)
        }
        run.model.nodes["/fragmented"] = .file(node)
        try fs.sync()  // delayed pages get their blocks
        var extents = 0
        try fs.blockRuns(try fs.resolve("/fragmented")) { _ in extents += 1 }
        #expect(extents == 3000)
        // Half of the big directory goes again.
        for i in stride(from: 0, to: bigCount, by: 2) {
            try fs.unlink(Array("entry-\(i)-of-the-big-directory".utf8), in: big)
            run.model.nodes["/big/entry-\(i)-of-the-big-directory"] = nil
        }
        try run.compare(["/big", "/fragmented"])

        for batch in 0..<20 {
            for _ in 0..<500 { try run.step() }
            try run.compare(run.touched.filter { run.model.nodes[$0] != nil })
            try run.compareHandles()
            run.touched.removeAll()
            if batch % 5 == 4 { try fs.sync() }
        }
        try run.compare(nil)
        try run.compareHandles()
        if seed % 3 == 0 {
            // The inline_data seeds must have exercised it: small files and directories in inodes.
            var inline = (files: 0, directories: 0)
            for path in run.model.nodes.keys {
                guard let inode = try? fs.resolve(path), inode.hasInlineData else { continue }
                if inode.fileType == .directory { inline.directories += 1 } else { inline.files += 1 }
            }
            #expect(inline.files > 10 && inline.directories > 10, "seed \(seed): inline \(inline)")
            print("model test seed \(seed): \(inline.files) inline files, \(inline.directories) inline directories")
        }
        // Some descriptions stay open: close frees their unlinked files, as a last close would.
        try fs.close()
        let fsck = try Support.run(["e2fsck", "-fn", image])
        #expect(fsck.status == 0, "seed \(seed): e2fsck -fn:\n\(fsck.out.suffix(3000))")
        #expect(run.counts.count >= 18, "seed \(seed): operations run: \(run.counts)")
        print("model test seed \(seed): \(run.counts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))")

        guard Support.canLoopMount else {
            print("model test: loop mounts are not permitted here: skipping the kernel's view")
            return
        }
        try Support.withLoopMount(image) { mnt in
            for (path, node) in run.model.nodes {
                guard case .file(let f) = node else { continue }
                guard let data = FileManager.default.contents(atPath: mnt + path), ModelTests.sameBytes(Array(data), f.bytes) else {
                    Issue.record("seed \(seed): the kernel reads \(path) differently")
                    return
                }
            }
        }
    }
}
