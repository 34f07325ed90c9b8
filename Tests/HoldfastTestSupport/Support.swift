import Foundation
import Holdfast
import HoldfastHost
import HoldfastMemory
import Testing

/// Helpers shared by the tests: running commands, scratch folders, loop mounts.
public enum Support {
    /// The package root, found from this file's path.
    public static let root: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<3 { url.deleteLastPathComponent() }
        return url.path
    }()

    public static var scripts: String { root + "/scripts" }

    /// The CLI built alongside the tests.
    public static let holdfast: String = {
        let candidates = [".build/debug/holdfast", ".build/release/holdfast"].map { root + "/" + $0 }
        if let exe = ProcessInfo.processInfo.environment["HOLDFAST_BIN"] { return exe }
        let testBundle = Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("holdfast").path
        if FileManager.default.isExecutableFile(atPath: testBundle) { return testBundle }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? candidates[0]
    }()

    public struct Result {
        public let status: Int32
        public let signaled: Bool
        public let stdout: Data
        public let stderr: String
        public var out: String { String(decoding: stdout, as: UTF8.self) }
    }

    /// Runs a command to completion; `timeout` kills it (reported as signaled).
    @discardableResult
    public static func run(_ args: [String], timeout: TimeInterval = 600, stdin: Data? = nil,
                           environment: [String: String]? = nil) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: args[0].hasPrefix("/") ? args[0] : "/usr/bin/env")
        p.arguments = args[0].hasPrefix("/") ? Array(args.dropFirst()) : args
        if let environment { p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let outPipe = Pipe(), errPipe = Pipe()
        p.standardOutput = outPipe
        p.standardError = errPipe
        // Standard input from a file that goes away at once: the child keeps its descriptor.
        var input: FileHandle?
        if let stdin {
            let path = NSTemporaryDirectory() + "holdfast-stdin-\(UUID().uuidString)"
            try stdin.write(to: URL(fileURLWithPath: path))
            input = FileHandle(forReadingAtPath: path)
            unlink(path)
        }
        p.standardInput = input ?? FileHandle.nullDevice
        defer { try? input?.close() }
        try p.run()
        // Drain both pipes while waiting so a chatty command cannot block.
        nonisolated(unsafe) var outData = Data(), errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async { outData = outPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        group.enter()
        DispatchQueue.global().async { errData = errPipe.fileHandleForReading.readDataToEndOfFile(); group.leave() }
        let deadline = Date().addingTimeInterval(timeout)
        while p.isRunning && Date() < deadline { usleep(2000) }
        if p.isRunning { p.terminate(); usleep(100_000); if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        p.waitUntilExit()
        group.wait()
        return Result(status: p.terminationStatus, signaled: p.terminationReason == .uncaughtSignal,
                      stdout: outData, stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Runs a command that must succeed, returning its standard output.
    @discardableResult
    public static func sh(_ args: [String], timeout: TimeInterval = 600) throws -> String {
        let r = try run(args, timeout: timeout)
        guard r.status == 0 && !r.signaled else {
            throw Failure("\(args.joined(separator: " ")) exited \(r.status): \(r.stderr.suffix(2000))")
        }
        return r.out
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
        public init(_ d: String) { description = d }
    }

    /// Can this process loop-mount images? Tests that need it are skipped with a message when not.
    /// HOLDFAST_TEST_NO_LOOP=1 pretends mounting is not permitted, to check the skips.
    public static let canLoopMount: Bool = {
        guard ProcessInfo.processInfo.environment["HOLDFAST_TEST_NO_LOOP"] == nil else { return false }
        guard geteuid() == 0, let scratch = try? Scratch() else { return false }
        let img = scratch.path("probe.img")
        guard (try? sh(["truncate", "-s", "4M", img])) != nil, (try? sh(["mkfs.ext4", "-q", img])) != nil else { return false }
        let mnt = scratch.path("mnt")
        try? FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        guard (try? sh(["mount", "-o", "ro,loop", img, mnt])) != nil else { return false }
        _ = try? run(["umount", mnt])
        return true
    }()

    /// Ends the test as skipped, with the reason shown, where the kernel cannot loop-mount.
    public static func requireLoopMount(_ what: String) throws {
        guard canLoopMount else {
            // Printed too: Swift Testing reports a cancelled case of a parameterized test as passed.
            let test = Test.current?.name ?? "a test"
            print("SKIPPED (loop mounts are not permitted here): \(test): \(what)")
            try Test.cancel("loop mounts are not permitted here: skipping \(what)")
        }
    }

    /// Is `name` a command on PATH?
    public static func commandExists(_ name: String) -> Bool {
        (try? run(["sh", "-c", "command -v \(name)"]))?.status == 0
    }

    /// Ends the test as skipped, with the reason printed (a cancelled case shows as passed).
    public static func skip(_ reason: String) throws {
        print("SKIPPED: \(Test.current?.name ?? "a test"): \(reason)")
        try Test.cancel(Comment(rawValue: reason))
    }

    /// For a kernel check inside a longer test: true where loop mounts work, else says what is skipped.
    public static func canLoopMount(skipping what: String) -> Bool {
        if !canLoopMount { print("loop mounts are not permitted here: skipping \(what)") }
        return canLoopMount
    }

    /// Mounts `image` read-only through the kernel's ext4 for the duration of `body`.
    public static func withLoopMount<T>(_ image: String, options: String = "ro,loop,noatime", _ body: (String) throws -> T) throws -> T {
        let mnt = try Scratch()
        let point = mnt.path("mnt")
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        try sh(["mount", "-o", options, image, point])
        defer {
            for _ in 0..<20 {
                if (try? run(["umount", point]))?.status == 0 { break }
                usleep(200_000)
            }
        }
        return try body(point)
    }

    /// Compares two trees with scripts/treediff.py; returns its report when they differ.
    public static func treeDifferences(_ a: String, _ b: String, extra: [String] = []) throws -> String? {
        let r = try run(["python3", scripts + "/treediff.py", a, b] + extra)
        if r.status == 0 { return nil }
        return r.out + r.stderr
    }

    /// Extracts the whole of `fs` through the library into `dest`, expecting no problems and a tree equal to
    /// what the kernel's ext4 shows when it mounts `judge` (the same image, or a copy it may replay).
    public static func expectExtractMatchesKernel(_ fs: Filesystem, into dest: String, judge: String,
                                           mountOptions: String = "ro,loop,noatime",
                                           sourceLocation: SourceLocation = #_sourceLocation) throws {
        var problems: [String] = []
        _ = try Extractor(fs, onProblem: { problems.append($0) }).run(destination: dest)
        #expect(problems.isEmpty, "\(problems)", sourceLocation: sourceLocation)
        try withLoopMount(judge, options: mountOptions) { mnt in
            let diff = try treeDifferences(dest, mnt, extra: ["--ignore-root-times"])
            #expect(diff == nil, "\(diff ?? "")", sourceLocation: sourceLocation)
        }
    }

    public static func sha256(_ path: String) throws -> String {
        try sh(["sha256sum", path]).split(separator: " ").first.map(String.init) ?? ""
    }
}

/// A temporary directory removed when the value goes away.
public final class Scratch: @unchecked Sendable {
    public let root: String

    public init() throws {
        var template = Array((NSTemporaryDirectory() + "holdfast-test-XXXXXX").utf8CString)
        guard let p = mkdtemp(&template) else { throw Support.Failure("mkdtemp failed") }
        root = String(cString: p)
    }

    public func path(_ name: String) -> String { root + "/" + name }

    deinit { _ = try? Support.run(["rm", "-rf", root]) }
}

/// The generated test trees, built once per test run.
public enum Trees {
    /// scripts/make_tree.py --profile small, shared by the image tests.
    public static let small: String = {
        let dir = NSTemporaryDirectory() + "holdfast-tree-small-\(getpid())"
        _ = try? Support.run(["rm", "-rf", dir])
        do { try Support.sh(["python3", Support.scripts + "/make_tree.py", dir, "--profile", "small", "--seed", "7"]) } catch {
            Issue.record("make_tree.py failed: \(error)")
        }
        atexit { _ = try? Support.run(["rm", "-rf", NSTemporaryDirectory() + "holdfast-tree-small-\(getpid())"]) }
        return dir
    }()
}

/// Fail the Nth allocation of a category, for N = 1, 2, ... until a run fires no fault: each run
/// copies `pristine`, opens it writable with the plan, runs `workload` and closes it; every
/// operation must succeed or fail with a clean out-of-memory error (a step after a failed one may
/// find its name missing or taken), and the image must stay e2fsck-clean.
public struct FaultSweep {
    /// Runs that fired a fault, and operations that failed cleanly.
    public var runs = 0
    public var failures = 0

    /// Runs one operation of a workload, counting a clean out-of-memory failure.
    public struct Attempt {
        public let n: Int
        public fileprivate(set) var failures = 0

        public mutating func callAsFunction(_ body: () throws -> Void) {
            do { try body() } catch let e as HoldfastError {
                switch e {
                case .outOfMemory: failures += 1
                case .notFound, .exists: break
                default: Issue.record("n=\(n): \(e)")
                }
            } catch { Issue.record("n=\(n): untyped \(error)") }
        }
    }

    public static func run(pristine: String, category: String, limit: Int, memory: Int = 4 << 20,
                    _ workload: (Filesystem, inout Attempt) throws -> Void) throws -> FaultSweep {
        let image = pristine + ".sweep"
        var sweep = FaultSweep()
        var n = 1
        while n < limit {
            try Support.sh(["cp", pristine, image])
            let plan = try FaultPlan(parsing: "nth=\(n),category=\(category)")
            let fs: Filesystem
            do { fs = try Images.openWritable(image, memory: memory, faults: plan) } catch let error as HoldfastError {
                // Opening may take the fault itself: a clean, typed refusal.
                guard case .outOfMemory = error else { Issue.record("n=\(n): open: \(error)"); break }
                try Images.expectClean(image)
                n += 1
                continue
            }
            var attempt = Attempt(n: n)
            try workload(fs, &attempt)
            let fired = fs.budget.faultsFired
            try fs.close()
            try Images.expectClean(image)
            if fired == 0 { break }
            sweep.runs += 1
            sweep.failures += attempt.failures
            n += 1
        }
        #expect(n > 1, "no allocation of category \(category) was ever hit")
        #expect(n < limit, "the sweep did not end within \(limit) runs")
        return sweep
    }
}


/// File contents compared as one value. Swift Testing diffs two collections that differ, which
/// for megabytes of differing bytes runs for hours (a failing test would hang CI instead of
/// failing); this compares plainly and says where the two part.
public struct Bytes: Equatable, CustomStringConvertible {
    public let bytes: [UInt8]
    public init(_ source: some Sequence<UInt8>) { bytes = Array(source) }

    public var description: String {
        let head = bytes.prefix(16).map { String($0, radix: 16) }.joined(separator: " ")
        return "\(bytes.count) bytes [\(head)\(bytes.count > 16 ? " ..." : "")]"
    }

    public static func == (a: Bytes, b: Bytes) -> Bool {
        guard a.bytes != b.bytes else { return true }
        let at = (0..<min(a.bytes.count, b.bytes.count)).first { a.bytes[$0] != b.bytes[$0] } ?? min(a.bytes.count, b.bytes.count)
        print("bytes differ first at \(at) (\(a.bytes.count) vs \(b.bytes.count) bytes)")
        return false
    }
}
