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
            var listing = LongListing()
            defer { out.write(listing.bytes) }  // the lines before an error are shown too
            for e in entries {
                guard l else { out.line(printableName(e.name)); continue }
                let inode = try fs.inode(e.inode)
                listing.append(inode, name: e.name, target: inode.fileType == .symlink ? try fs.readLink(inode) : nil)
                if listing.bytes.count >= 1 << 16 { out.write(listing.bytes); listing.removeAll() }
            }
        }
    }
}

