import Foundation
import HoldfastTestSupport
import Testing

/// The read path on the memory layer, failed at every allocation hit in turn through the CLI.
@Suite("Fault injection through the CLI")
struct FaultInjectionTests {
    /// A tree small enough to sweep every hit, with something of each kind: a multi-block
    /// directory, hard links, symlinks (fast and slow), xattrs, a sparse file, a FIFO.
    static func makeTinyImage(_ s: Scratch) throws -> String {
        let tree = s.path("tree")
        try Support.sh(["bash", "-c", """
            set -e
            mkdir -p \(tree)/dir/sub \(tree)/many
            printf 'hello\\n' > \(tree)/a.txt
            head -c 70000 /dev/urandom > \(tree)/dir/big.bin
            truncate -s 3M \(tree)/dir/sparse; printf 'tail' >> \(tree)/dir/sparse
            ln \(tree)/a.txt \(tree)/dir/sub/hardlink
            ln -s a.txt \(tree)/fast-link
            ln -s $(printf 'x%.0s' $(seq 1 200)) \(tree)/slow-link
            mkfifo \(tree)/dir/fifo
            setfattr -n user.note -v 'kept' \(tree)/a.txt
            for i in $(seq 1 60); do printf "$i" > \(tree)/many/entry-with-a-long-name-$i; done
            """])
        let img = s.path("tiny.img")
        try Support.sh(["mkfs.ext4", "-q", "-b", "1024", "-d", tree, img, "8M"])
        return img
    }

    /// Whatever did come out of a failed run must be right: a file whose data could not be read
    /// is not left behind, so no file in the output differs from the reference in size or content.
    static func expectNoWrongFiles(_ reference: String, _ out: String, _ label: String) throws {
        let diff = try Support.treeDifferences(reference, out) ?? ""
        let wrong = diff.split(separator: "\n").filter { $0.contains(": content:") || $0.contains(": size:") }
        #expect(wrong.isEmpty, "\(label): files with wrong contents: \(wrong.prefix(3))")
    }

    static func injectFired(_ stderr: String) -> Int? {
        guard let line = stderr.split(separator: "\n").first(where: { $0.hasPrefix("inject ") }),
              let field = line.split(separator: " ").first(where: { $0.hasPrefix("fired=") }) else { return nil }
        return Int(field.dropFirst(6))
    }

    @Test("extract with the Nth hit failing, one-off and persistent: the right tree, or a clean out-of-memory or named I/O error")
    func extractUnderEveryInjectedFailure() throws {
        let s = try Scratch()
        let img = try Self.makeTinyImage(s)
        let reference = s.path("reference")
        try Support.sh([Support.holdfast, "extract", img, reference])
        if Support.canLoopMount {
            try Support.withLoopMount(img) { mnt in
                let diff = try Support.treeDifferences(reference, mnt, extra: ["--ignore-root-times"])
                #expect(diff == nil, "reference extraction differs from the kernel: \(diff ?? "")")
            }
        } else {
            print("note: loop mounts not permitted; the reference extraction is not judged by the kernel here")
        }

        var failedAt: [String: Int] = [:]
        for mode in ["", ",persistent"] {
            var n = 1
            while true {
                let out = s.path("out")
                let r = try Support.run([Support.holdfast, "extract", img, out, "--memory", "2M", "--stats",
                                         "--inject", "nth=\(n)\(mode)"], timeout: 120)
                let label = "nth=\(n)\(mode)"
                #expect(!r.signaled, "\(label): killed by a signal")
                let fired = Self.injectFired(r.stderr)
                #expect(fired != nil, "\(label): no inject line in --stats: \(r.stderr.suffix(500))")
                if r.status == 0 {
                    let diff = try Support.treeDifferences(reference, out)
                    #expect(diff == nil, "\(label): exit 0 with a wrong tree: \(diff ?? "")")
                } else if r.status == 5 {
                    #expect(r.stderr.contains("out of memory at") && r.stderr.contains("fault plan"), "\(label): \(r.stderr.suffix(500))")
                } else {
                    // Device calls are hits too: the Nth may be a read, failed with a named EIO.
                    #expect(r.status == 1 && r.stderr.contains("injected at device."), "\(label): exit \(r.status): \(r.stderr.suffix(500))")
                    try Self.expectNoWrongFiles(reference, out, label)
                }
                // Nothing may stay charged once the filesystem is closed, whatever failed.
                #expect(r.stderr.contains("budget used=0 "), "\(label): budget not back to zero: \(r.stderr.suffix(800))")
                for line in r.stderr.split(separator: "\n") where line.hasPrefix("site ") {
                    let f = line.split(separator: " ")
                    if let failed = f.first(where: { $0.hasPrefix("failed=") }).flatMap({ Int($0.dropFirst(7)) }), failed > 0 {
                        failedAt[String(f[1]), default: 0] += failed
                    }
                }
                try Support.sh(["rm", "-rf", out])
                if fired == 0 || fired == nil {
                    #expect(r.status == 0, "\(label): no fault fired, yet exit \(r.status)")
                    break
                }
                n += 1
                if n > 5_000 { Issue.record("\(label): the sweep does not converge"); break }
            }
            print("fault sweep\(mode.isEmpty ? " one-off" : " persistent"): \(n) runs")
        }
        print("injected failures by site: \(failedAt.sorted { $0.key < $1.key })")
        for site in ["device.read", "buffer.block", "buffer.index", "directory.listing", "extract.hard-link"] {
            #expect(failedAt[site, default: 0] > 0, "\(site) was never failed by the sweep")
        }
    }

    @Test("extract with the Nth device read failing: the right tree, or the I/O error named and never a wrong file passed off as right")
    func extractUnderEveryInjectedReadError() throws {
        let s = try Scratch()
        let img = try Self.makeTinyImage(s)
        let reference = s.path("reference")
        try Support.sh([Support.holdfast, "extract", img, reference])
        var n = 1
        var failedRuns = 0
        while true {
            let out = s.path("out")
            let r = try Support.run([Support.holdfast, "extract", img, out, "--stats", "--inject", "category=io,nth=\(n)"], timeout: 120)
            let label = "category=io,nth=\(n)"
            #expect(!r.signaled, "\(label): killed by a signal")
            let fired = Self.injectFired(r.stderr) ?? -1
            if r.status == 0 {
                // A fault may fire in inode-table readahead, which (as the kernel's) is only a
                // hint: the block is read again when needed. Exit 0 then still means every byte
                // is right.
                let diff = try Support.treeDifferences(reference, out)
                #expect(diff == nil, "\(label): \(diff ?? "")")
            } else {
                failedRuns += 1
                #expect(r.status == 1, "\(label): exit \(r.status)")
                #expect(r.stderr.contains("injected at device.read"), "\(label): \(r.stderr.suffix(500))")
                try Self.expectNoWrongFiles(reference, out, label)
            }
            #expect(r.stderr.contains("budget used=0 "), "\(label): \(r.stderr.suffix(500))")
            try Support.sh(["rm", "-rf", out])
            if fired == 0 { break }
            n += 1
            if n > 2_000 { Issue.record("the I/O sweep does not converge"); break }
        }
        print("I/O fault sweep: \(n) runs, \(failedRuns) failed with the injected EIO")
        #expect(failedRuns >= 10)
    }

    @Test("HOLDFAST_INJECT works like --inject; a bad spec is refused by name")
    func environmentAndBadSpecs() throws {
        let s = try Scratch()
        let img = try Self.makeTinyImage(s)
        let r = try Support.run([Support.holdfast, "ls", img, "/", "--stats"], environment: ["HOLDFAST_INJECT": "site=directory.listing"])
        #expect(r.status == 5)
        #expect(r.stderr.contains("out of memory at directory.listing"))
        #expect(r.stderr.contains("site directory.listing policy=mayFail category=directory hits=1 failed=1"))
        let bad = try Support.run([Support.holdfast, "ls", img, "/", "--inject", "nth=0"])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("--inject nth=0: nth=0: give a hit number from 1"))
        let huge = try Support.run([Support.holdfast, "ls", img, "/", "--memory", "4T"])
        #expect(huge.status == 1 && huge.stderr.contains("more than the arena can index"), "\(huge.stderr)")
        let sites = try Support.sh([Support.holdfast, "sites"])
        // Every site the engine has, each with its policy.
        for name in ["buffer.block", "buffer.index", "device.read", "device.write", "device.flush", "handle.undo", "read.buffer",
                     "directory.listing", "journal.redirects", "extract.hard-link", "allocator.buddy",
                     "pagecache.page", "pagecache.page-locked", "writeback.vector", "writeback.map"] {
            #expect(sites.contains(name), "holdfast sites does not list \(name)")
        }
        #expect(sites.contains("mayFail"))
    }
}
