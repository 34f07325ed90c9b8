import HoldfastFormat

/// Paths inside the image, written `/etc/passwd`.
extension Filesystem {
    static let maxSymlinkHops = 40

    /// Resolves `path` from the root. Symlinks in the middle are followed (relative to the image root,
    /// never the host's); the last component is followed only when `followFinal` is set.
    public func resolve(_ path: String, followFinal: Bool = false) throws(HoldfastError) -> Inode {
        try guarded { try walk(Array(path.utf8), followFinal: followFinal, hops: 0, display: path) }
    }

    private func walk(_ path: [UInt8], followFinal: Bool, hops: Int, display: String, from start: Inode? = nil) throws -> Inode {
        let slash = UInt8(ascii: "/")
        var current = path.first == slash || start == nil ? try readInode(Self.rootInode) : start!
        let parts = path.split(separator: slash, omittingEmptySubsequences: true).map(Array.init)
        var hopsUsed = hops
        for (i, part) in parts.enumerated() {
            let isLast = i == parts.count - 1
            guard current.fileType == .directory else { throw HoldfastError.notADirectory(.path(display)) }
            if part == [UInt8(ascii: ".")] { continue }
            guard part.count <= 255, let number = try find(part, in: current) else { throw HoldfastError.notFound(.path(display)) }
            let next = try linkedInode(number, from: current.number)
            if next.fileType == .symlink && (!isLast || followFinal) {
                hopsUsed += 1
                guard hopsUsed <= Self.maxSymlinkHops else { throw HoldfastError.tooManySymlinks(.path(display)) }
                let target = try readLink(next)
                let rest = parts[(i + 1)...].flatMap { [slash] + $0 }
                current = try walk(target + rest, followFinal: followFinal, hops: hopsUsed, display: display, from: current)
                return current
            }
            current = next
        }
        return current
    }
}
