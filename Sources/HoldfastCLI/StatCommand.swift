import ArgumentParser
import Holdfast

struct StatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stat",
        abstract: "Show everything about one inode: type, mode, owner, times, flags, xattrs, block map.",
        discussion: """
            The path's last component is not followed if it is a symlink. An inode
            number can be given as <N>, e.g. <2> for the root.

            Examples:
              holdfast stat disk.img /etc/passwd
              holdfast stat disk.img '<12>'
            """
    )

    @OptionGroup var options: ImageOptions
    @Argument(help: "Path inside the image, or <inode number>.") var path: String

    func run() throws {
        try reportingErrors {
            let fs = try options.open()
            let inode: Inode
            if path.hasPrefix("<"), path.hasSuffix(">"), let n = UInt32(path.dropFirst().dropLast()) {
                inode = try fs.inode(n)
            } else {
                inode = try fs.resolve(path, followFinal: false)
            }
            let out = StdoutWriter()
            func row(_ k: String, _ v: String) { out.line(padRight(k, 12) + v) }
            row("Inode:", "\(inode.number)   generation \(inode.generation)")
            row("Type:", "\(inode.fileType)")
            row("Mode:", "0\(String(inode.permissions, radix: 8)) (\(modeString(inode.mode)))")
            row("Owner:", "uid \(inode.uid), gid \(inode.gid)")
            row("Links:", "\(inode.linksCount)")
            row("Size:", "\(inode.size)")
            row("Blocks:", "\(inode.sectors(fs.superblock)) sectors of 512 bytes")
            row("Flags:", "0x\(String(inode.flags, radix: 16))" + flagNames(inode.flags))
            if inode.fileType == .characterDevice || inode.fileType == .blockDevice {
                row("Device:", "\(inode.device.major), \(inode.device.minor)")
            }
            if inode.fileType == .symlink { row("Target:", printableName(try fs.readLink(inode))) }
            row("Access:", timeString(inode.accessTime))
            row("Modify:", timeString(inode.modificationTime))
            row("Change:", timeString(inode.changeTime))
            if let c = inode.creationTime { row("Birth:", timeString(c)) }
            if inode.fileACL != 0 { row("Xattr block:", "\(inode.fileACL)") }
            for x in try fs.xattrs(inode) {
                let printable = x.value.allSatisfy { $0 >= 0x20 && $0 < 0x7F }
                let shown = printable ? "\"\(String(decoding: x.value, as: UTF8.self))\"" : "0x" + x.value.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
                row("Xattr:", "\(x.nameString) = \(shown.count > 200 ? String(shown.prefix(200)) + "..." : shown) (\(x.value.count) bytes)")
            }
            if inode.hasInlineData {
                row("Data:", "inline, \(inode.size) bytes")
            } else if inode.fileType == .regular || inode.fileType == .directory || (inode.fileType == .symlink && inode.sectors(fs.superblock) > 0) {
                var shown = 0
                var total = 0
                try fs.blockRuns(inode) { run in
                    total += 1
                    if shown < 50 {
                        shown += 1
                        let state = run.unwritten ? " (unwritten)" : ""
                        row(shown == 1 ? "Extents:" : "", "logical \(run.logical)-\(run.logical + run.length - 1) -> physical \(run.physical!)-\(run.physical! + run.length - 1)\(state)")
                    }
                }
                if total > shown { row("", "... \(total - shown) more runs (\(total) in all)") }
                if total == 0 { row("Extents:", "none (all holes)") }
            }
        }
    }
}

func flagNames(_ flags: UInt32) -> String {
    let names: [(UInt32, String)] = [(0x10, "immutable"), (0x20, "append"), (0x40, "nodump"), (0x80, "noatime"), (0x800, "encrypt"),
                                     (0x1000, "index"), (0x4000, "journal_data"), (0x40000, "huge_file"), (0x80000, "extents"),
                                     (0x100000, "verity"), (0x200000, "ea_inode"), (0x10000000, "inline_data"), (0x20000000, "projinherit"), (0x40000000, "casefold")]
    let set = names.filter { flags & $0.0 != 0 }.map(\.1)
    return set.isEmpty ? "" : " (" + set.joined(separator: ", ") + ")"
}
