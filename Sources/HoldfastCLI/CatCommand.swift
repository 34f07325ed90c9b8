import ArgumentParser
import Holdfast

struct CatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cat",
        abstract: "Write a file's contents to standard output.",
        discussion: """
            Symlinks are followed inside the image (never onto the host). Holes read as zeros.

            Without --offset or --length the whole file is streamed through one bounded buffer. \
            With either, the bytes are read as pread(2) would, in --chunk sized reads through the \
            page cache: sequential reads read ahead (--stats shows read-hits, readahead and the \
            reads that went around the cache for want of memory).

            Examples:
              holdfast cat disk.img /etc/hostname
              holdfast cat disk.img /var/log/big.log --offset 1M --length 64K
            """
    )

    @OptionGroup var options: ImageOptions
    @Argument(help: "File inside the image.") var path: String
    @Option(help: "Start at this byte (K, M, G suffixes); reads through the page cache.") var offset: String?
    @Option(help: "At most this many bytes (K, M, G suffixes); reads through the page cache.") var length: String?
    @Option(help: "The size of each read with --offset or --length.") var chunk: String = "128K"

    func run() throws {
        try reportingErrors {
            let fs = try options.open()
            let inode = try fs.resolve(path, followFinal: true)
            guard inode.fileType != .directory else { throw HoldfastError.isADirectory(.path(path)) }
            guard inode.fileType == .regular else { throw HoldfastError.invalidArgument("\(path): not a regular file (\(inode.fileType))") }
            let out = StdoutWriter()
            if offset != nil || length != nil {
                let count: Int? = length.map { parseSize($0) } ?? Int.max
                guard let start = parseSize(offset ?? "0"), let count, let step = parseSize(chunk), step > 0 else {
                    throw HoldfastError.invalidArgument("--offset, --length and --chunk take sizes such as 4096, 64K or 1M")
                }
                var at = UInt64(start)
                let end = min(inode.size, count == Int.max ? .max : UInt64(start) + UInt64(count))
                while at < end {
                    let bytes = try fs.read(inode, offset: at, count: Int(min(UInt64(step), end - at)))
                    guard !bytes.isEmpty else { break }
                    try bytes.withUnsafeBytes { try out.write(bytes: $0) }
                    at += UInt64(bytes.count)
                }
                return
            }
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
