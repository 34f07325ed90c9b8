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
            func walk(_ dir: Inode, _ prefix: String, _ depth: Int) throws {
                guard depth < 4096 else { throw HoldfastError.corrupt(CorruptionError(.directoryBlock, inode: dir.number, .loop("directory nesting deeper than 4096"))) }
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
                        try walk(inode, prefix + (last ? "    " : "│   "), depth + 1)
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
