import HoldfastFormat
import HoldfastMemory

/// Credits for directory operations: inode and bitmap blocks, descriptors, the directory's leaf,
/// index path and split blocks, and extent tree blocks on the way.
let directoryCredits = 32

/// Changing the image, by inode number. Every call is one operation: it completes, or it fails with
/// a typed error and leaves the image as it was. Changes reach the disk at `sync` or `close`, or
/// earlier when the running transaction grows past a quarter of the memory budget.
extension Filesystem {
    /// Creates a file, directory, symlink, device node, FIFO or socket named `name` in `parent`.
    /// The new inode's permissions follow the kernel's ext4: a default ACL of `parent` decides
    /// them (and the inode inherits ACLs), else `umask` clears bits of `owner.permissions`.
    @discardableResult
    public func create(_ name: [UInt8], in parent: UInt32, kind: NodeKind, owner: Ownership,
                       times: (access: Timestamp, modification: Timestamp)? = nil, umask: UInt16 = 0) throws(HoldfastError) -> UInt32 {
        try guarded {
            // A slow symlink's target is file data: its page is taken before the lock.
            var pages: [Page] = []
            if case .symlink(let target) = kind, target.count >= 60, pageCache != nil {
                pages.append(try budget.allocatePageOrThrow(at: .pageCachePage))
            }
            return try mutate(credits: directoryCredits, pages: pages) { ctx in
                try ctx.createNode(in: parent, name: name, kind: kind, owner: owner, subject: .entry(directory: parent, name: name),
                                   times: times, umask: umask)
            }
        }
    }

    /// Adds the hard link `name` in `parent` to the non-directory `inode`.
    public func link(_ inode: UInt32, in parent: UInt32, name: [UInt8]) throws(HoldfastError) {
        try guarded {
            try mutate(credits: directoryCredits) { ctx in
                try ctx.link(inode, in: parent, name: name, subject: .entry(directory: parent, name: name))
            }
        }
    }

    /// Removes a non-directory's name (unlink(2)); the last link frees the inode.
    public func unlink(_ name: [UInt8], in parent: UInt32) throws(HoldfastError) {
        try guarded {
            try mutate(credits: directoryCredits) { ctx in
                try ctx.remove(name, from: parent, directory: false, subject: .entry(directory: parent, name: name))
            }
        }
    }

    /// Removes an empty directory (rmdir(2)).
    public func removeDirectory(_ name: [UInt8], in parent: UInt32) throws(HoldfastError) {
        try guarded {
            try mutate(credits: directoryCredits) { ctx in
                try ctx.remove(name, from: parent, directory: true, subject: .entry(directory: parent, name: name))
            }
        }
    }

    /// Moves `oldName` in `oldParent` to `newName` in `newParent` (renameat2 semantics by `mode`).
    public func rename(_ oldName: [UInt8], in oldParent: UInt32, to newName: [UInt8], in newParent: UInt32, mode: RenameMode = .replace) throws(HoldfastError) {
        try guarded {
            try mutate(credits: directoryCredits * 2) { ctx in
                try ctx.rename(from: oldParent, oldName, to: newParent, newName, mode: mode)
            }
        }
    }
}

/// The same operations by path inside the image (`/dir/name`).
extension Filesystem {
    /// The directory that holds the last component of `path`, and that component.
    public func parentAndName(_ path: String) throws(HoldfastError) -> (parent: UInt32, name: [UInt8]) {
        let parts = path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map(Array.init)
        guard let name = parts.last else { throw HoldfastError.invalidArgument("\(path): the root has no parent") }
        let parentPath = "/" + parts.dropLast().map { String(decoding: $0, as: UTF8.self) }.joined(separator: "/")
        let parent = try resolve(parentPath, followFinal: true)
        guard parent.fileType == .directory else { throw HoldfastError.notADirectory(.path(parentPath)) }
        if name.count > 255 { throw HoldfastError.nameTooLong(.path(path)) }
        return (parent.number, name)
    }

    @discardableResult
    public func create(path: String, kind: NodeKind, owner: Ownership) throws(HoldfastError) -> UInt32 {
        let (parent, name) = try parentAndName(path)
        do { return try create(name, in: parent, kind: kind, owner: owner) } catch { throw error.naming(path) }
    }

    /// mkdir -p: creates every missing directory along `path`; existing directories are fine.
    @discardableResult
    public func makeDirectories(path: String, owner: Ownership) throws(HoldfastError) -> UInt32 {
        var current = Filesystem.rootInode
        var shown = ""
        for part in path.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true).map(Array.init) {
            shown += "/" + String(decoding: part, as: UTF8.self)
            let dir = try inode(current)
            if let existing = try lookup(part, in: dir) {
                let node = try inode(existing)
                guard node.fileType == .directory else { throw HoldfastError.notADirectory(.path(shown)) }
                current = existing
            } else {
                do { current = try create(part, in: current, kind: .directory, owner: owner) } catch { throw error.naming(shown) }
            }
        }
        return current
    }

    public func unlink(path: String) throws(HoldfastError) {
        let (parent, name) = try parentAndName(path)
        do { try unlink(name, in: parent) } catch { throw error.naming(path) }
    }

    /// Removes `path` and, when it is a directory, everything under it (`rm -r`), depth first.
    /// Each removal is an operation of its own: a failure part way leaves what was not reached.
    public func removeTree(path: String) throws(HoldfastError) {
        let node = try resolve(path)
        guard node.fileType == .directory else { return try unlink(path: path) }
        try removeContents(of: node, shown: path)
        try removeDirectory(path: path)
    }

    private func removeContents(of dir: Inode, shown: String) throws(HoldfastError) {
        for e in try directoryEntries(dir) where !e.isDotOrDotDot {
            let child = shown.hasSuffix("/") ? shown + e.nameString : shown + "/" + e.nameString
            var kind = e.kind
            if kind == .unknown { kind = try inode(e.inode, linkedFrom: dir.number).fileType }
            if kind == .directory {
                let sub = try inode(e.inode, linkedFrom: dir.number)
                try removeContents(of: sub, shown: child)
                do { try removeDirectory(e.name, in: dir.number) } catch { throw error.naming(child) }
            } else {
                do { try unlink(e.name, in: dir.number) } catch { throw error.naming(child) }
            }
        }
    }

    public func removeDirectory(path: String) throws(HoldfastError) {
        let (parent, name) = try parentAndName(path)
        do { try removeDirectory(name, in: parent) } catch { throw error.naming(path) }
    }

    public func rename(path: String, to newPath: String, mode: RenameMode = .replace) throws(HoldfastError) {
        let (a, an) = try parentAndName(path)
        let (b, bn) = try parentAndName(newPath)
        do { try rename(an, in: a, to: bn, in: b, mode: mode) } catch { throw error.naming(newPath) }
    }

    public func link(existing: String, newPath: String) throws(HoldfastError) {
        let target = try resolve(existing)
        let (parent, name) = try parentAndName(newPath)
        do { try link(target.number, in: parent, name: name) } catch { throw error.naming(newPath) }
    }
}

extension HoldfastError {
    /// Puts the user's path in place of the bare name an inode-level call reported.
    public func naming(_ path: String) -> HoldfastError {
        let named = ErrorSubject.path(path)
        return switch self {
        case .exists: .exists(named)
        case .notEmpty: .notEmpty(named)
        case .nameTooLong: .nameTooLong(named)
        case .notFound: .notFound(named)
        case .notADirectory: .notADirectory(named)
        case .isADirectory: .isADirectory(named)
        case .tooManyLinks: .tooManyLinks(named)
        case .wouldLoop: .wouldLoop(named)
        case .fileTooLarge: .fileTooLarge(named)
        default: self
        }
    }
}
