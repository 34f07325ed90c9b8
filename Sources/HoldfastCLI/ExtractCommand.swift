import ArgumentParser
import Holdfast
import HoldfastHost

#if canImport(Glibc)
import Glibc
#endif

struct ExtractCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "extract",
        abstract: "Copy the image's tree (or a subtree) out to a host directory.",
        discussion: """
            Keeps modes, nanosecond times, xattrs (ACLs included), symlinks, hard links,
            FIFOs and sockets, and keeps sparse files sparse. As root it also restores
            owners and creates device nodes. Nothing is ever written outside DEST,
            whatever names or symlinks the image holds. DEST is created if missing; a
            non-empty DEST is refused unless --force. A progress line is shown on a
            terminal. Problems with single entries are reported and counted, and the
            command then exits 1.

            Examples:
              holdfast extract disk.img ./rootfs
              holdfast extract disk.img ./etc --path /etc
            """
    )

    @OptionGroup var options: ImageOptions
    @Argument(help: "Host directory to extract into.") var dest: String
    @Option(name: .long, help: "Subtree (or single file) of the image to extract.") var path: String = "/"
    @Flag(name: .long, help: "Extract into a non-empty DEST, replacing entries of the same name.") var force = false

    func run() throws {
        try reportingErrors {
            let fs = try options.open()
            let bar = ProgressLine(total: usedBytesEstimate(fs), enabled: isatty(2) == 1 && path == "/")
            let extractor = Extractor(fs, options: ExtractOptions(force: force),
                                      onProgress: { bar.update($0) },
                                      onProblem: { bar.clear(); Output.error("holdfast: \($0)") })
            let result = try extractor.run(source: path, destination: dest)
            bar.finish(result)
            if result.errors > 0 {
                Output.error("holdfast: extracted with \(result.errors) error\(result.errors == 1 ? "" : "s")")
                throw ExitCode(1)
            }
        }
    }

    private func usedBytesEstimate(_ fs: Filesystem) -> UInt64 {
        let sb = fs.superblock
        // A corrupt superblock may count more free blocks than blocks.
        let used = sb.blocksCount > sb.freeBlocksCount ? sb.blocksCount - sb.freeBlocksCount : 0
        let (bytes, overflow) = used.multipliedReportingOverflow(by: UInt64(sb.blockSize))
        return overflow ? .max : bytes
    }
}

/// One self-overwriting line on stderr, redrawn at most ten times a second.
final class ProgressLine {
    let total: UInt64
    let enabled: Bool
    private var last: UInt64 = 0
    private var shown = false

    init(total: UInt64, enabled: Bool) {
        self.total = max(total, 1)
        self.enabled = enabled
    }

    private func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    func update(_ p: ExtractProgress) {
        guard enabled else { return }
        let t = now()
        guard t - last >= 100 else { return }
        last = t
        draw(p)
    }

    private func draw(_ p: ExtractProgress) {
        let fraction = min(1.0, Double(p.bytes) / Double(total))
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "=", count: filled) + (filled < width ? ">" : "") + String(repeating: " ", count: max(0, width - filled - 1))
        let line = "\r[\(bar)] \(Int(fraction * 100))%  \(p.files) files, \(p.directories) dirs, \(humanSize(p.bytes))\u{1B}[K"
        Output.raw(line)
        shown = true
    }

    func clear() {
        guard enabled, shown else { return }
        Output.raw("\r\u{1B}[K")
        shown = false
    }

    func finish(_ p: ExtractProgress) {
        guard enabled else { return }
        clear()
        Output.raw("extracted \(p.files) files, \(p.directories) directories, \(humanSize(p.bytes))\n")
    }
}
