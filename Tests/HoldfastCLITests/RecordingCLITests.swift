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
}
