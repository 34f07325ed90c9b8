import ArgumentParser
import Holdfast

struct LsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ls",
        abstract: "List a directory in the image.",
        discussion: """
            Names are sorted; names starting with '.' are shown with -a.

            Examples:
              holdfast ls disk.img /etc
              holdfast ls -la disk.img /home/user
            """
    )

    @OptionGroup var options: ImageOptions
    @Argument(help: "Directory (or file) inside the image.") var path: String = "/"
    @Flag(name: .short, help: "Long listing: mode, links, owner, size, mtime, symlink target.") var l = false
    @Flag(name: .short, help: "Show entries whose names start with '.', including '.' and '..'.") var a = false

    func run() throws {
        try reportingErrors {
            let fs = try options.open()
            let target = try fs.resolve(path, followFinal: true)
            let out = StdoutWriter()
            var entries: [DirectoryEntry]
            if target.fileType == .directory {
                entries = try fs.directoryEntries(target)
                if !a { entries = entries.filter { $0.name.first != UInt8(ascii: ".") } }
                entries.sort { $0.name.lexicographicallyPrecedes($1.name) }
            } else {
                entries = [DirectoryEntry(inode: target.number, name: Array(path.utf8.split(separator: UInt8(ascii: "/")).last ?? []), fileType: 0)]
            }
            for e in entries {
                guard l else { out.line(printableName(e.name)); continue }
                let inode = try fs.inode(e.inode)
                out.line(try longLine(fs, inode, name: e.name))
            }
        }
    }
}

func longLine(_ fs: Filesystem, _ inode: Inode, name: [UInt8]) throws(HoldfastError) -> String {
    var sizeField = String(inode.size)
    if inode.fileType == .characterDevice || inode.fileType == .blockDevice {
        let d = inode.device
        sizeField = "\(d.major), \(d.minor)"
    }
    var line = "\(modeString(inode.mode)) \(pad(String(inode.linksCount), 3)) \(pad(String(inode.uid), 5)) \(pad(String(inode.gid), 5)) \(pad(sizeField, 10)) \(shortTime(inode.modificationTime)) \(printableName(name))"
    if inode.fileType == .symlink { line += " -> " + printableName(try fs.readLink(inode)) }
    return line
}

func pad(_ s: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - s.count)) + s }
