import Foundation
import Holdfast
import HoldfastDevice
import HoldfastTestSupport
import Testing

/// HOLDFAST_RECORD: a sequence of commands logged to one file, which rebuilds the image as each
/// command left it. The crash runner of the journal issue builds on this.
@Suite("recording through the CLI", .serialized)
struct RecordingCLITests {
    @Test("each command's writes and flushes are logged; the log rebuilds the image each command left, e2fsck-clean")
    func commandSequence() throws {
        let s = try Scratch()
        let image = s.path("r.img"), base = s.path("base.img"), log = s.path("r.log")
        try Images.make(image, blockSize: 4096, megabytes: 64)
        try Support.sh(["cp", "--sparse=always", image, base])
        let tree = s.path("tree")
        try FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
        for i in 0..<20 { try Data(Patterns.random(1000 + i * 700, seed: UInt64(i))).write(to: URL(fileURLWithPath: "\(tree)/sub/f\(i)")) }
        try Data(Patterns.random(3 << 20, seed: 99)).write(to: URL(fileURLWithPath: "\(tree)/big"))
        let commands: [[String]] = [
            ["put", image, tree, "/t"],
            ["mkdir", image, "/d"],
            ["mv", image, "/t/sub/f3", "/d/moved"],
            ["xattr", image, "/d/moved", "--set", "user.k=v"],
            ["truncate", image, "/t/big", "100000"],
            ["rm", image, "/t/sub", "-r"],
        ]
        var ends: [(events: Int, sha: String)] = []
        for command in commands {
            let r = try Support.run([Support.holdfast] + command, environment: ["HOLDFAST_RECORD": log])
            try #require(r.status == 0, "\(command): \(r.stderr)")
            ends.append((try RecordedLog(path: log).events.count, try Support.sha256(image)))
        }
        let recorded = try RecordedLog(path: log)
        #expect(recorded.imageBytes == 64 << 20)
        #expect(recorded.flushCount >= commands.count, "every command ends with a flush")
        // Every command's end is a state the log rebuilds exactly: the image as the command left it.
        let states = recorded.crashStates(subsets: 0)
        let rebuilt = s.path("state.img")
        for (k, end) in ends.enumerated() {
            guard case .flush = recorded.events[end.events - 1] else {
                Issue.record("\(commands[k]) did not end with a flush")
                continue
            }
            let state = try #require(states.last { $0.kind == .prefix && $0.cut <= end.events })
            try recorded.materialize(state, base: base, into: rebuilt)
            #expect(try Support.sha256(rebuilt) == end.sha, "after \(commands[k])")
            try Images.expectClean(rebuilt)
        }
        #expect(states.count > recorded.writeCount, "a prefix per write, and states for the writes between flushes")
    }

    @Test("a put killed with SIGKILL leaves an image the kernel, e2fsck -fy and Holdfast replay with nothing to repair")
    func killedPut() throws {
        let s = try Scratch()
        let image = s.path("k.img"), pristine = s.path("pristine.img")
        // 1 KiB blocks and the smallest journal: the put takes several transactions, and the log
        // holds them until close.
        try Images.make(pristine, blockSize: 1024, megabytes: 128, extra: ["-J", "size=1"])
        let tree = s.path("tree")
        for d in 0..<30 {
            try FileManager.default.createDirectory(atPath: "\(tree)/d\(d)", withIntermediateDirectories: true)
            for i in 0..<100 {
                try Data(Patterns.random(2000 + (i * 977) % 30_000, seed: UInt64(d * 100 + i))).write(to: URL(fileURLWithPath: "\(tree)/d\(d)/f\(i)"))
            }
        }
        var recovering = 0
        // Kills spread over the put's own length on this machine.
        try Support.sh(["cp", "--sparse=always", pristine, image])
        let started = Date()
        let whole = try Support.run([Support.holdfast, "put", image, tree, "/t", "--memory", "8M", "--stats"])
        try #require(whole.status == 0, "\(whole.stderr)")
        // --stats reports the journal: several transactions, none too large for the log.
        let line = try #require(whole.stderr.split(separator: "\n").first { $0.hasPrefix("journal transactions=") })
        let transactions = Int(line.split(separator: " ")[1].dropFirst("transactions=".count)) ?? 0
        #expect(transactions > 2 && line.contains("oversized=0"), "\(line)")
        // And the write lock: an operation or more per file of the 3,000, each commit under it.
        let lock = try #require(whole.stderr.split(separator: "\n").first { $0.hasPrefix("write-lock operations=") })
        let fields = Dictionary(uniqueKeysWithValues: lock.split(separator: " ").dropFirst().map { field in
            let pair = field.split(separator: "=")
            return (String(pair[0]), Int(pair[1]) ?? -1)
        })
        #expect((fields["operations"] ?? 0) >= 3000 && (fields["commits"] ?? 0) >= transactions, "\(lock)")
        let length = Date().timeIntervalSince(started)
        let delays = [0.2, 0.4, 0.6, 0.75, 0.9].map { UInt32($0 * length * 1_000_000) }
        for delay in delays {
            try Support.sh(["cp", "--sparse=always", pristine, image])
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Support.holdfast)
            p.arguments = ["put", image, tree, "/t", "--memory", "8M"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            usleep(delay)
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            let header = try Support.sh(["dumpe2fs", "-h", image])
            let start = header.split(separator: "\n").first { $0.hasPrefix("Journal start:") }?.split(separator: " ").last
            if header.contains("needs_recovery") && start != "0" { recovering += 1 }
            let label = "killed after \(delay / 1000) ms"
            for judge in ["e2fsck", "kernel", "holdfast"] {
                let copy = s.path("\(judge).img")
                try Support.sh(["cp", "--sparse=always", image, copy])
                switch judge {
                case "e2fsck":
                    let fix = try Support.run(["e2fsck", "-fy", copy])
                    let repairs = fix.out.split(separator: "\n").filter { $0.contains("?") || $0.contains("Fix") || $0.contains("FIXED") }
                    #expect(repairs.isEmpty && fix.status <= 1, "\(label): e2fsck -fy:\n\(fix.out)")
                case "kernel":
                    guard Support.canLoopMount(skipping: "the kernel's replay of a killed put") else { continue }
                    try Support.withLoopMount(copy, options: "loop,noatime") { _ in }
                default:
                    let fs = try Filesystem.open(path: copy, options: OpenOptions(memoryBudget: 16 << 20, writable: true))
                    try fs.close()
                }
                try Images.expectClean(copy)
            }
        }
        #expect(recovering > 0, "no kill landed while the log held transactions: the test proves nothing")
        print("killed put: \(recovering) of \(delays.count) kills left a log to replay")
    }
}
