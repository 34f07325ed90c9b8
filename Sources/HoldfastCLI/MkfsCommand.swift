import ArgumentParser
import Holdfast
import HoldfastHost

#if canImport(Glibc)
import Glibc
#endif

struct MkfsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mkfs",
        abstract: "Create an ext4 image, optionally filled from a host directory.",
        discussion: """
            The image gets mkfs.ext4's default features (64bit, extents, flex_bg,
            metadata_csum, huge_file, dir_nlink, extra_isize, dir_index, a journal),
            without resize_inode. An existing file at IMAGE is replaced. With
            --no-journal the image has none (as mkfs.ext4 -O ^has_journal): smaller,
            but a crash while it is being changed later leaves it for e2fsck.

            With --from, the directory's contents become the image's root: every file
            type, owners, permission bits, nanosecond times, hard links, and sparse
            files with their holes (trailing holes included). Large directories get a
            hash index.

            Examples:
              holdfast mkfs disk.img 1G
              holdfast mkfs rootfs.img 512M --from ./rootfs --label rootfs
            """)

    @Argument(help: "Image file to create.") var image: String
    @Argument(help: "Size, e.g. 64M or 4G.") var size: String
    @Option(help: ArgumentHelp("Fill the image from this host directory.", valueName: "dir")) var from: String?
    @Option(name: .long, help: "Block size: 1024, 2048 or 4096 (default: 1024 below 512M, else 4096).") var blockSize: Int?
    @Option(help: "Number of inodes (default: one per 4 KiB below 512M, else one per 16 KiB).") var inodes: UInt32?
    @Option(help: "Volume label (up to 16 bytes).") var label: String = ""
    @Option(name: .long, help: ArgumentHelp("Memory budget while filling the image, e.g. 32M.", valueName: "size")) var memory: String = "64M"
    @Flag(name: .long, help: "Make the image without a journal.") var noJournal = false
    @Flag(name: .long, help: "Print the budget's statistics at exit on standard error.") var stats = false

    func run() throws {
        try reportingErrors {
            guard let bytes = parseSize(size), bytes > 0 else { throw HoldfastError.invalidArgument("\(size): not a size") }
            guard label.utf8.count <= 16 else { throw HoldfastError.invalidArgument("--label: at most 16 bytes") }
            var options = FormatOptions(size: UInt64(bytes), blockSize: blockSize, inodes: inodes, label: label)
            options.journalBlocks = noJournal ? 0 : nil
            try Formatter.format(path: image, options: options)
            guard let from else { return }
            guard let budget = parseSize(memory), budget >= 1 << 20 else {
                throw HoldfastError.invalidArgument("--memory \(memory): give a size of at least 1M")
            }
            let fs = try MemoryReport.open(image, OpenOptions(memoryBudget: budget, writable: true), stats: stats)
            let status = StatusLine(label: "mkfs")
            do {
                let summary = try fs.populateRoot(from: from) { s in
                    status.update("\(s.files + s.directories + s.symlinks + s.specialFiles) entries, \(s.bytes >> 20) MiB")
                }
                try fs.close()
                status.finish("\(summary.files) files, \(summary.directories) directories, \(summary.symlinks) symlinks, \(summary.specialFiles) special, \(summary.hardLinks) hard links, \(summary.bytes) bytes")
            } catch {
                try? fs.close()
                throw error
            }
        }
    }
}
