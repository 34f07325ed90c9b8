import ArgumentParser
import Holdfast

struct CatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cat",
        abstract: "Write a file's contents to standard output.",
        discussion: """
            Symlinks are followed inside the image (never onto the host). Holes read as zeros.

            Example:
              holdfast cat disk.img /etc/hostname
            """
    )

    @OptionGroup var options: ImageOptions
    @Argument(help: "File inside the image.") var path: String

    func run() throws {
        try reportingErrors {
            let fs = try options.open()
            let inode = try fs.resolve(path, followFinal: true)
            guard inode.fileType != .directory else { throw HoldfastError.isADirectory(path) }
            guard inode.fileType == .regular else { throw HoldfastError.invalidArgument("\(path): not a regular file (\(inode.fileType))") }
            let out = StdoutWriter()
            let zeros = [UInt8](repeating: 0, count: 1 << 16)
            try fs.streamData(inode) { piece in
                switch piece {
                case .data(_, let bytes):
                    try out.write(bytes: bytes)
                case .hole(_, var length):
                    while length > 0 {
                        let n = Int(min(length, UInt64(zeros.count)))
                        try zeros.withUnsafeBytes { try out.write(bytes: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                        length -= UInt64(n)
                    }
                }
            }
        }
    }
}
