import ArgumentParser
import Holdfast

struct TreeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tree",
        abstract: "Show a directory tree of the image, like tree(1).",
        discussion: """
            Example:
              holdfast tree disk.img /etc
            """
    )

    @OptionGroup var options: ImageOptions
    @Argument(help: "Directory inside the image.") var path: String = "/"
    @Flag(name: .short, help: "Show entries whose names start with '.'.") var a = false

    func run() throws {
        try reportingErrors {
            let fs = try options.open()
            let top = try fs.resolve(path, followFinal: true)
            let out = StdoutWriter()
            out.line(path)
            var dirs = 0, files = 0
            // The directories on the current path: a corrupt image can list a directory inside
            // itself, which would otherwise be walked without end.
            var ancestors: Set<UInt32> = [top.number]
            func walk(_ dir: Inode, _ prefix: String, _ depth: Int) throws {
                guard depth < 2048 else { throw HoldfastError.invalidArgument("directories nested deeper than 2048 levels") }
                var entries = try fs.directoryEntries(dir).filter { !$0.isDotOrDotDot && (a || $0.name.first != UInt8(ascii: ".")) }
                entries.sort { $0.name.lexicographicallyPrecedes($1.name) }
                for (i, e) in entries.enumerated() {
                    let last = i == entries.count - 1
                    let inode = try fs.inode(e.inode)
                    var line = prefix + (last ? "└── " : "├── ") + printableName(e.name)
                    if inode.fileType == .symlink { line += " -> " + printableName(try fs.readLink(inode)) }
                    out.line(line)
                    if inode.fileType == .directory {
                        dirs += 1
                        guard ancestors.insert(inode.number).inserted else {
                            throw HoldfastError.corrupt(CorruptionError(.directoryBlock, inode: dir.number, .loop("directory inode \(inode.number) is listed inside itself")))
                        }
                        try walk(inode, prefix + (last ? "    " : "│   "), depth + 1)
                        ancestors.remove(inode.number)
                    } else {
                        files += 1
                    }
                }
            }
            if top.fileType == .directory { try walk(top, "", 0) }
            out.line("\n\(dirs) directories, \(files) files")
        }
    }
}
