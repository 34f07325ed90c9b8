import Foundation
import Holdfast
import HoldfastDevice
import HoldfastTestSupport
import Testing

/// The crash campaign (DESIGN.md, "Crash consistency"; issue 14): each workload is a sequence of
/// CLI commands recorded through HOLDFAST_RECORD; every crash state its log allows (a prefix per
/// write, and for each flush epoch the states with one write lost and shuffled subsets) is
/// rebuilt and judged:
/// - Holdfast must open it for writing (recovering its journal) and close it, and then
///   `e2fsck -fn` must find nothing to repair;
/// - every file a completed command left (the command returned, so its work is acknowledged)
///   must be there with its bytes and xattrs, except what the command running at the cut may
///   change;
/// - on a sample, the kernel must mount it (replaying its journal) and leave it e2fsck-clean.
///
/// `make test` runs it with the kernel judging every 20th state; `make crash` asks the kernel
/// about every state and takes more shuffled subsets (HOLDFAST_CRASH_KERNEL_EVERY,
/// HOLDFAST_CRASH_SUBSETS, HOLDFAST_CRASH_STATES set the sample).
@Suite("crash campaign", .serialized)
struct CrashCampaignTests {
    struct Step {
        let args: [String]
        var stdin: [UInt8]? = nil
        /// Paths (and everything under them) this command may change: a cut inside it may leave
        /// them either way.
        let touches: [String]
        /// One operation (rename, xattr change, truncate, a small write): a cut inside it leaves
        /// its paths all as before or all as after, never half (a renamed file under neither name).
        var atomic = false
    }

    struct Workload: Sendable, CustomStringConvertible {
        let name: String
        var description: String { name }
    }

    static let workloads = ["import", "import past the log", "rm -r", "renames", "links and unlinks", "htree", "appends", "truncate and punch", "xattrs"]
        .map(Workload.init)

    /// The commands of a workload, given the image path and a scratch folder with its host files.
    static func steps(_ workload: Workload, _ image: String, _ s: Scratch) throws -> (setup: [Step], steps: [Step]) {
        func tree(_ name: String, files: Int, bytes: Int) throws -> String {
            let root = s.path(name)
            try FileManager.default.createDirectory(atPath: root + "/sub/deeper", withIntermediateDirectories: true)
            for i in 0..<files {
                let dir = i % 3 == 0 ? root : (i % 3 == 1 ? root + "/sub" : root + "/sub/deeper")
                try Data(Patterns.random(bytes + i * 611, seed: UInt64(i + 1))).write(to: URL(fileURLWithPath: "\(dir)/f\(i)"))
            }
            return root
        }
        /// Where `tree` puts file i.
        func file(_ i: Int) -> String { ["/t", "/t/sub", "/t/sub/deeper"][i % 3] + "/f\(i)" }
        switch workload.name {
        case "import":
            let t = try tree("t", files: 24, bytes: 3000)
            return ([], [Step(args: ["put", image, t, "/t"], touches: ["/t"])])
        case "import past the log":
            // About 1,200 blocks of inode tables, directories and bitmaps in one command: more
            // than the 1,024-block log holds, so the put commits several times and forces a
            // checkpoint part way.
            let root = s.path("many")
            for d in 0..<4 {
                try FileManager.default.createDirectory(atPath: "\(root)/d\(d)", withIntermediateDirectories: true)
                for i in 0..<1000 { try Data(Patterns.random(100, seed: UInt64(d * 1000 + i))).write(to: URL(fileURLWithPath: "\(root)/d\(d)/f\(i)")) }
            }
            return ([], [Step(args: ["put", image, root, "/many", "--stats"], touches: ["/many"])])
        case "rm -r":
            let t = try tree("t", files: 24, bytes: 3000)
            return ([Step(args: ["put", image, t, "/t"], touches: ["/t"])], [Step(args: ["rm", image, "/t", "-r"], touches: ["/t"])])
        case "renames":
            let t = try tree("t", files: 9, bytes: 2000)
            return ([Step(args: ["put", image, t, "/t"], touches: ["/t"]), Step(args: ["mkdir", image, "/other"], touches: ["/other"])], [
                Step(args: ["mv", image, "/t/f0", "/other/a"], touches: ["/t/f0", "/other/a"], atomic: true),
                Step(args: ["mv", image, "/t/sub", "/other/sub"], touches: ["/t/sub", "/other/sub"], atomic: true),
                Step(args: ["mv", image, "/other/a", "/t/f3"], touches: ["/other/a", "/t/f3"], atomic: true),
                Step(args: ["mv", image, "/t/f6", "/other/sub/f1", "--exchange"], touches: ["/t/f6", "/other/sub/f1"], atomic: true),
            ])
        case "links and unlinks":
            let t = try tree("t", files: 6, bytes: 4000)
            return ([Step(args: ["put", image, t, "/t"], touches: ["/t"])], [
                Step(args: ["ln", image, file(0), "/t/hard"], touches: ["/t/hard"], atomic: true),
                Step(args: ["ln", image, "/t/sub/f1", "/t/soft", "-s"], touches: ["/t/soft"], atomic: true),
                Step(args: ["rm", image, file(0)], touches: [file(0)], atomic: true),
                Step(args: ["rm", image, "/t/hard"], touches: ["/t/hard"], atomic: true),
                Step(args: ["rm", image, file(3)], touches: [file(3)], atomic: true),
            ])
        case "htree":
            // Enough names in one directory for an index of two levels at 1 KiB blocks.
            let root = s.path("big")
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            for i in 0..<1500 { FileManager.default.createFile(atPath: "\(root)/entry-with-a-long-name-\(i)", contents: nil) }
            return ([], [Step(args: ["put", image, root, "/big"], touches: ["/big"])])
        case "appends":
            return ([Step(args: ["write", image, "/log"], stdin: [], touches: ["/log"])], (0..<8).map { i in
                Step(args: ["write", image, "/log", "--offset", String(i * 5000)], stdin: Patterns.random(5000, seed: UInt64(100 + i)), touches: ["/log"], atomic: true)
            })
        case "truncate and punch":
            let t = try tree("t", files: 3, bytes: 200_000)
            return ([Step(args: ["put", image, t, "/t"], touches: ["/t"])], [
                // Not atomic for the bytes of the partial block: in data=ordered the zeroed tail is
                // written before the commit, as the kernel does; the sizes are checked by e2fsck.
                Step(args: ["truncate", image, file(0), "70000"], touches: [file(0)]),
                Step(args: ["fallocate", image, file(1), "--offset", "4096", "--length", "100000", "--punch-hole"], touches: [file(1)]),
                Step(args: ["truncate", image, file(2), "500000"], touches: [file(2)], atomic: true),
            ])
        case "xattrs":
            let t = try tree("t", files: 6, bytes: 500)
            var steps: [Step] = []
            for i in 0..<4 {
                let value = "0x" + Patterns.random(300 + i * 200, seed: UInt64(7 + i)).map { String(format: "%02x", $0) }.joined()
                steps.append(Step(args: ["xattr", image, file(i), "--set", "user.k\(i)=\(value)", "--set", "user.small=\(i)"], touches: [file(i)], atomic: true))
            }
            steps.append(Step(args: ["xattr", image, file(0), "--remove", "user.k0"], touches: [file(0)], atomic: true))
            return ([Step(args: ["put", image, t, "/t"], touches: ["/t"])], steps)
        default:
            throw Support.Failure("no workload \(workload.name)")
        }
    }

    /// path -> what a reader sees there: type, mode, size, a hash of the bytes (or link target), the xattrs.
    static func view(_ image: String) throws -> [String: String] {
        let fs = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 16 << 20))
        var out: [String: String] = [:]
        func hash(_ bytes: [UInt8]) -> UInt64 { bytes.reduce(0xCBF2_9CE4_8422_2325 as UInt64) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 } }
        func walk(_ path: String, _ inode: Inode) throws {
            let xattrs = try fs.xattrs(inode).map { "\(String(decoding: $0.name, as: UTF8.self))=\(hash($0.value))" }.sorted().joined(separator: ",")
            // A directory's size is layout (an inline one grows with each entry), not content:
            // its entries are checked as paths of their own.
            let size = inode.fileType == .directory ? "" : " size=\(inode.size)"
            var what = "\(inode.fileType) mode=\(String(inode.mode & 0o7777, radix: 8))\(size) xattrs=[\(xattrs)]"
            switch inode.fileType {
            case .regular: what += " data=\(hash(try fs.read(inode, offset: 0, count: Int(inode.size))))"
            case .symlink: what += " target=\(String(decoding: try fs.readLink(inode), as: UTF8.self))"
            case .directory:
                for e in try fs.directoryEntries(inode) where e.name != [0x2E] && e.name != [0x2E, 0x2E] {
                    let name = String(decoding: e.name, as: UTF8.self)
                    if path == "/" && name == "lost+found" { continue }
                    try walk(path == "/" ? "/" + name : path + "/" + name, try fs.inode(e.inode))
                }
            default: break
            }
            out[path] = what
        }
        try walk("/", try fs.inode(Filesystem.rootInode))
        return out
    }

    static func under(_ path: String, _ prefixes: [String]) -> Bool {
        prefixes.contains { path == $0 || path.hasPrefix($0 + "/") }
    }

    struct Tally: CustomStringConvertible {
        var writes = 0, flushes = 0
        var states = 0, prefixes = 0, dropped = 0, subsets = 0
        var unclean = 0, unopenable = 0, lost = 0, torn = 0, kernelChecked = 0, kernelFailed = 0
        var examples: [String] = []
        var failures: Int { unclean + unopenable + lost + torn + kernelFailed }
        var description: String {
            "\(writes) writes, \(flushes) flushes; \(states) states (\(prefixes) prefixes, \(dropped) with a write lost, \(subsets) shuffled subsets): "
                + "e2fsck unclean \(unclean), Holdfast cannot open \(unopenable), acknowledged data lost \(lost), "
                + "an operation half done \(torn), "
                + "kernel \(kernelChecked) checked / \(kernelFailed) failed"
        }
    }

    static var maxStates: Int {
        Int(ProcessInfo.processInfo.environment["HOLDFAST_CRASH_STATES"] ?? "") ?? 600
    }
    static var kernelEvery: Int {
        Int(ProcessInfo.processInfo.environment["HOLDFAST_CRASH_KERNEL_EVERY"] ?? "") ?? 20
    }
    static var subsets: Int {
        Int(ProcessInfo.processInfo.environment["HOLDFAST_CRASH_SUBSETS"] ?? "") ?? 4
    }

    /// A 24 MiB image at 1 KiB blocks (its journal the smallest, 1,024 blocks), and where the
    /// pristine copy and the log go.
    static func freshImage(_ s: Scratch, features: [String] = []) throws -> (image: String, base: String, log: String) {
        let image = s.path("w.img")
        try Support.sh(["truncate", "-s", "24M", image])
        try Support.sh(["mkfs.ext4", "-q", "-b", "1024"] + features + [image])
        return (image, s.path("base.img"), s.path("w.log"))
    }

    @Test("every crash state of every workload is clean and keeps what was acknowledged", arguments: workloads)
    func campaign(workload: Workload) throws {
        let s = try Scratch()
        let (image, base, log) = try Self.freshImage(s)
        let (setup, steps) = try Self.steps(workload, image, s)
        func run(_ step: Step, record: Bool) throws {
            let r = try Support.run([Support.holdfast] + step.args, stdin: step.stdin.map { Data($0) },
                                    environment: record ? ["HOLDFAST_RECORD": log] : [:])
            try #require(r.status == 0, "\(step.args): \(r.stderr)")
        }
        for step in setup { try run(step, record: false) }
        try Support.sh(["cp", "--sparse=always", image, base])
        var views = [try Self.view(image)]
        var ends: [Int] = []
        for step in steps {
            try run(step, record: true)
            ends.append(try RecordedLog(path: log).events.count)
            views.append(try Self.view(image))
        }
        // The long import is sampled thinner in make test (make crash sets the states itself).
        let sample = workload.name == "import past the log" && ProcessInfo.processInfo.environment["HOLDFAST_CRASH_STATES"] == nil
            ? 150 : Self.maxStates
        let tally = try Self.judge(try RecordedLog(path: log), base: base, scratch: s, steps: steps, ends: ends, views: views,
                                   maxStates: sample)
        print("crash \(workload.name): \(tally)")
        for e in tally.examples { print("  \(e)") }
        #expect(tally.failures == 0, "\(workload.name): \(tally)")
    }

    /// Workloads run through the library in one open, for what a CLI command cannot do: a file
    /// unlinked while open and never closed (the orphan list at the crash), and blocks freed and
    /// taken again before a commit. Each step ends with an fsync or sync (acknowledged); the
    /// filesystem is never closed, so the last states are those of a killed process.
    struct LibraryStep {
        let touches: [String]
        var atomic = false
        let run: (Filesystem) throws -> Void
    }

    /// Files a library workload keeps open to the end (never closed: the crash comes first).
    final class Held { var files: [OpenFile] = [] }

    /// "orphans in an orphan file" runs the orphans steps on an image with orphan_file (and
    /// metadata_csum_seed): the slots and orphan_present must recover with the rest.
    /// "inline data" edits small files and directories inside their inodes on an inline_data
    /// image, and grows some past the inode into blocks.
    static let libraryWorkloads = ["orphans", "orphans in an orphan file", "free and reuse", "inline data"].map(Workload.init)

    static func librarySteps(_ workload: Workload, _ s: Scratch) throws -> (setup: [Step], steps: [LibraryStep]) {
        let owner = Ownership(permissions: 0o644)
        switch workload.name {
        case "orphans", "orphans in an orphan file":
            let t = s.path("t")
            try FileManager.default.createDirectory(atPath: t, withIntermediateDirectories: true)
            for i in 0..<4 { try Data(Patterns.random(30_000, seed: UInt64(i + 1))).write(to: URL(fileURLWithPath: "\(t)/f\(i)")) }
            let held = Held()
            return ([Step(args: ["put", "IMAGE", t, "/t"], touches: ["/t"])], [
                // Unlinked while open, then written and synced: it lives on the orphan list.
                LibraryStep(touches: ["/t/f0"]) { fs in
                    let file = try fs.openFile(try fs.resolve("/t/f0").number)
                    held.files.append(file)
                    try fs.unlink(path: "/t/f0")
                    try fs.write(file.inode, at: 40_000, Patterns.random(20_000, seed: 9))
                    try file.sync()
                },
                LibraryStep(touches: ["/t/f1", "/t/new"]) { fs in
                    let file = try fs.openFile(try fs.resolve("/t/f1").number)
                    held.files.append(file)
                    try fs.unlink(path: "/t/f1")
                    let n = try fs.create(path: "/t/new", kind: .regular, owner: owner)
                    try fs.write(n, at: 0, Patterns.random(12_000, seed: 10))
                    try fs.fsync(n)
                },
                // A truncate of an orphan: the list is rewritten while the file shrinks.
                LibraryStep(touches: []) { fs in
                    let file = held.files[0]
                    try fs.truncate(file.inode, to: 1000)
                    try fs.sync()
                },
            ])
        case "free and reuse":
            // A directory of many blocks and files of several extents, removed; new files then
            // take the freed blocks in the same transaction as the frees.
            let big = s.path("big")
            try FileManager.default.createDirectory(atPath: big, withIntermediateDirectories: true)
            for i in 0..<400 { FileManager.default.createFile(atPath: "\(big)/entry-with-a-long-name-\(i)", contents: i % 40 == 0 ? Data(Patterns.random(9000, seed: UInt64(i))) : nil) }
            return ([Step(args: ["put", "IMAGE", big, "/big"], touches: ["/big"])], [
                LibraryStep(touches: ["/big", "/new"]) { fs in
                    try fs.removeTree(path: "/big")
                    let n = try fs.create(path: "/new", kind: .regular, owner: owner)
                    try fs.write(n, at: 0, Patterns.random(200_000, seed: 11))
                    try fs.fsync(n)
                },
                LibraryStep(touches: ["/new", "/dir"]) { fs in
                    try fs.truncate(try fs.resolve("/new").number, to: 0)
                    let d = try fs.create(path: "/dir", kind: .directory, owner: Ownership(permissions: 0o755))
                    for i in 0..<60 {
                        let f = try fs.create(Array("a-longer-name-for-more-blocks-\(i)".utf8), in: d, kind: .regular, owner: owner)
                        try fs.write(f, at: 0, Patterns.random(3000, seed: UInt64(200 + i)))
                    }
                    try fs.sync()
                },
            ])
        case "inline data":
            let t = s.path("small")
            try FileManager.default.createDirectory(atPath: t + "/sub", withIntermediateDirectories: true)
            for i in 0..<6 { try Data(Patterns.random(20 * i, seed: UInt64(30 + i))).write(to: URL(fileURLWithPath: "\(t)/s\(i)")) }
            for i in 0..<3 { FileManager.default.createFile(atPath: "\(t)/sub/e\(i)", contents: nil) }
            let held = Held()
            return ([Step(args: ["put", "IMAGE", t, "/s"], touches: ["/s"])], [
                // In place, then past the inode: the file moves to a block.
                LibraryStep(touches: ["/s/s1", "/s/s2", "/s/s3"]) { fs in
                    try fs.write(try fs.resolve("/s/s1").number, at: 5, Patterns.random(50, seed: 40))
                    try fs.write(try fs.resolve("/s/s2").number, at: 40, Patterns.random(3000, seed: 41))
                    try fs.truncate(try fs.resolve("/s/s3").number, to: 7)
                    try fs.fsync(try fs.resolve("/s/s1").number)
                },
                // An inline directory fills i_block, then system.data, then takes a block.
                LibraryStep(touches: ["/s/d"]) { fs in
                    let d = try fs.create(path: "/s/d", kind: .directory, owner: Ownership(permissions: 0o755))
                    for i in 0..<14 {
                        let f = try fs.create(Array("n\(i)".utf8), in: d, kind: .regular, owner: owner)
                        try fs.write(f, at: 0, Patterns.random(10 + i, seed: UInt64(50 + i)))
                    }
                    try fs.sync()
                },
                // Entries move between inline directories; an inline file is unlinked while open.
                LibraryStep(touches: ["/s/sub", "/s/e9", "/s/s4", "/s/s5", "/s/moved"]) { fs in
                    try fs.rename(path: "/s/sub/e1", to: "/s/e9")
                    try fs.rename(path: "/s/sub", to: "/s/d/sub")
                    try fs.rename(path: "/s/d/sub", to: "/s/moved")
                    let file = try fs.openFile(try fs.resolve("/s/s4").number)
                    held.files.append(file)
                    try fs.unlink(path: "/s/s4")
                    try fs.truncate(try fs.resolve("/s/s5").number, to: 5000)
                    try fs.sync()
                },
            ])
        default:
            throw Support.Failure("no library workload \(workload.name)")
        }
    }

    @Test("every crash state of a library workload (orphans, freed blocks taken again) recovers clean", arguments: libraryWorkloads)
    func libraryCampaign(workload: Workload) throws {
        let s = try Scratch()
        let features = switch workload.name {
        case "orphans in an orphan file": ["-O", "orphan_file,metadata_csum_seed"]
        case "inline data": ["-I", "256", "-O", "inline_data"]
        default: [String]()
        }
        let (image, base, log) = try Self.freshImage(s, features: features)
        let (setup, steps) = try Self.librarySteps(workload, s)
        for step in setup {
            let r = try Support.run([Support.holdfast] + step.args.map { $0 == "IMAGE" ? image : $0 })
            try #require(r.status == 0, "\(step.args): \(r.stderr)")
        }
        try Support.sh(["cp", "--sparse=always", image, base])
        var views = [try Self.view(image)]
        var ends: [Int] = []
        var options = OpenOptions(memoryBudget: 16 << 20, writable: true)
        options.recordingLog = log
        options.flusher = false
        var fs: Filesystem? = try Filesystem.open(path: image, options: options)
        for step in steps {
            try step.run(fs!)
            ends.append(try RecordedLog(path: log).events.count)
            // A read-only open beside the writer sees what a crash now would leave (it replays
            // the log in memory).
            views.append(try Self.view(image))
        }
        // The process dies here: what close would write is not part of any state judged.
        let killed = try RecordedLog(path: log).events.count
        fs = nil
        let recorded = try RecordedLog(path: log)
        let tally = try Self.judge(recorded, base: base, scratch: s,
                                   steps: steps.map { Step(args: [], touches: $0.touches, atomic: $0.atomic) },
                                   ends: ends, views: views, lastCut: killed)
        print("crash \(workload.name) (library): \(tally)")
        for e in tally.examples { print("  \(e)") }
        #expect(tally.failures == 0, "\(workload.name): \(tally)")
    }

    /// Rebuilds and judges every crash state of `recorded` (at most `maxStates`, evenly sampled,
    /// the states at each step's end always kept; none after `lastCut`).
    static func judge(_ recorded: RecordedLog, base: String, scratch s: Scratch, steps: [Step], ends: [Int],
                      views: [[String: String]], lastCut: Int = .max, maxStates: Int = Self.maxStates) throws -> Tally {
        let kernelEvery = Self.kernelEvery
        var states = recorded.crashStates(subsets: Self.subsets, seed: 1).filter { $0.cut <= lastCut }
        if states.count > maxStates {
            // An even sample, always keeping the states at each command's end.
            let stride = Double(states.count) / Double(maxStates)
            let keep = Set((0..<maxStates).map { Int(Double($0) * stride) })
            states = states.enumerated().filter { keep.contains($0.offset) || ends.contains($0.element.cut) }.map(\.element)
        }
        var tally = Tally(writes: recorded.writeCount, flushes: recorded.flushCount)
        let state = s.path("state.img"), kernelState = s.path("kernel.img")
        let canMount = Support.canLoopMount
        try FileManager.default.createDirectory(atPath: s.path("mnt"), withIntermediateDirectories: true)
        for (n, crash) in states.enumerated() {
            tally.states += 1
            switch crash.kind {
            case .prefix: tally.prefixes += 1
            case .dropped: tally.dropped += 1
            case .subset: tally.subsets += 1
            }
            try recorded.materialize(crash, base: base, into: state)
            let checkKernel = canMount && n % kernelEvery == 0
            if checkKernel { try Support.sh(["cp", "--sparse=always", state, kernelState]) }
            // Holdfast recovers the journal (a writable open does, as the kernel's mount) and
            // closes; then e2fsck judges what it left.
            var recovered = true
            do {
                let fs = try Filesystem.open(path: state, options: OpenOptions(memoryBudget: 16 << 20, writable: true))
                try fs.close()
            } catch {
                recovered = false
                tally.unopenable += 1
                if tally.examples.count < 6 { tally.examples.append("\(crash): Holdfast recovery: \(error)") }
            }
            let fsck = try Support.run(["e2fsck", "-fn", state])
            if recovered && fsck.status != 0 {
                tally.unclean += 1
                if tally.examples.count < 3 {
                    let problems = fsck.out.split(separator: "\n").dropFirst().filter { !$0.hasPrefix("Pass ") }
                    tally.examples.append("\(crash): e2fsck: \(problems.prefix(2).joined(separator: " | "))")
                }
            }
            // What was acknowledged: the commands whose last flush is inside the cut.
            let done = ends.filter { $0 <= crash.cut }.count
            let running = done < steps.count ? steps[done].touches : []
            do {
                let seen = try Self.view(state)
                let missing = views[done].filter { !Self.under($0.key, running) && seen[$0.key] != $0.value }
                if !missing.isEmpty {
                    tally.lost += 1
                    if tally.examples.count < 6 { tally.examples.append("\(crash): lost \(missing.keys.sorted().prefix(3))") }
                }
                if done < steps.count, steps[done].atomic {
                    func part(_ v: [String: String]) -> [String: String] { v.filter { Self.under($0.key, running) } }
                    let now = part(seen)
                    if now != part(views[done]) && now != part(views[done + 1]) {
                        tally.torn += 1
                        if tally.examples.count < 6 { tally.examples.append("\(crash): \(steps[done].args.first ?? "") half done: \(now.keys.sorted())") }
                    }
                }
            } catch {
                tally.unopenable += 1
                if tally.examples.count < 6 { tally.examples.append("\(crash): Holdfast: \(error)") }
            }
            if checkKernel {
                tally.kernelChecked += 1
                let mounted = (try? Support.run(["mount", "-o", "loop,noatime", kernelState, s.path("mnt")]))
                    .map { $0.status == 0 } ?? false
                if mounted { _ = try? Support.run(["umount", s.path("mnt")]) }
                let clean = mounted ? try Support.run(["e2fsck", "-fn", kernelState]).status == 0 : false
                if !clean {
                    tally.kernelFailed += 1
                    if tally.examples.count < 6 { tally.examples.append("\(crash): the kernel \(mounted ? "left it unclean" : "refused to mount it")") }
                }
            }
        }
        if !canMount { print("loop mounts are not permitted here: the crash campaign skips the kernel's judgement") }
        return tally
    }
}
