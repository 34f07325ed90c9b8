import HoldfastFormat

/// How rename treats an existing destination (renameat2 flags).
public enum RenameMode: Sendable {
    /// Replace the destination if it exists (rename(2)).
    case replace
    /// Fail with `exists` if the destination exists (RENAME_NOREPLACE).
    case noReplace
    /// Swap the two names, which must both exist (RENAME_EXCHANGE).
    case exchange
}

extension Operation {
    /// Is `ancestor` the directory `dir` or one of its parents?
    private func isAncestor(_ ancestor: UInt32, of dir: UInt32) throws -> Bool {
        var current = dir
        var hops = 0
        while true {
            if current == ancestor { return true }
            if current == Filesystem.rootInode { return false }
            guard let parent = try lookup([0x2E, 0x2E], in: try inode(current)) else { return false }
            current = parent
            hops += 1
            if hops > Int(sb.inodesCount) {
                throw CorruptionError(.directoryBlock, inode: dir, .loop("'..' chain does not reach the root"))
            }
        }
    }

    func rename(from oldParent: UInt32, _ oldName: [UInt8], to newParent: UInt32, _ newName: [UInt8], mode: RenameMode) throws {
        let from = ErrorSubject.entry(directory: oldParent, name: oldName)
        let subject = ErrorSubject.entry(directory: newParent, name: newName)
        try Self.checkName(oldName, subject: from)
        try Self.checkName(newName, subject: subject)
        var source = try inode(oldParent)
        guard FileType(mode: source.mode) == .directory else { throw HoldfastError.notADirectory(.inode(oldParent)) }
        guard let moving = try lookup(oldName, in: source) else { throw HoldfastError.notFound(from) }
        var destination = try inode(newParent)
        guard FileType(mode: destination.mode) == .directory else { throw HoldfastError.notADirectory(.inode(newParent)) }
        let existing = try lookup(newName, in: destination)
        // RENAME_NOREPLACE refuses any existing name, the same inode's too (as the kernel's VFS).
        if existing != nil && mode == .noReplace { throw HoldfastError.exists(subject) }
        if existing == moving && mode != .exchange { return }  // the same link: rename does nothing
        let movingRec = try inode(moving)
        let movingType = FileType(mode: movingRec.mode)
        let movingIsDir = movingType == .directory
        if movingIsDir, oldParent != newParent, try isAncestor(moving, of: newParent) {
            throw HoldfastError.wouldLoop(subject)
        }
        // A directory moving in adds a link to its new parent: EMLINK at the limit without
        // dir_nlink, as ext4_rename (a directory replacing one, or an exchange of two, adds none).
        let victimIsDirectory = try existing.map { FileType(mode: try inode($0).mode) == .directory } ?? false
        if movingIsDir, oldParent != newParent, !victimIsDirectory, destination.linksCount >= linkMax,
           !sb.featureROCompat.contains(.dirNlink) {
            throw HoldfastError.tooManyLinks(subject)
        }
        let now = Self.now()
        switch mode {
        case .exchange:
            guard let other = existing else { throw HoldfastError.notFound(subject) }
            let otherRec = try inode(other)
            let otherType = FileType(mode: otherRec.mode)
            if otherType == .directory, newParent != oldParent, try isAncestor(other, of: oldParent) {
                throw HoldfastError.wouldLoop(subject)
            }
            // Each edit reads the record fresh: an inline directory changes in its inode.
            _ = try retargetEntry(&source, name: oldName, to: other, type: otherType)
            var target = try inode(newParent)
            _ = try retargetEntry(&target, name: newName, to: moving, type: movingType)
            if oldParent != newParent {
                if movingIsDir { var m = try inode(moving); try setParent(&m, to: newParent) }
                if otherType == .directory { var o = try inode(other); try setParent(&o, to: oldParent) }
                if movingIsDir != (otherType == .directory) {
                    var a = try inode(oldParent), b = try inode(newParent)
                    if movingIsDir { decrementDirectoryLinks(&a); incrementLinks(&b) } else { incrementLinks(&a); decrementDirectoryLinks(&b) }
                    try store(a)
                    try store(b)
                }
            }
            for n in [moving, other] { var r = try inode(n); r.changeTime = now; try store(r) }
        case .replace, .noReplace:
            if let victim = existing {
                guard mode == .replace else { throw HoldfastError.exists(subject) }
                let victimRec = try inode(victim)
                let victimIsDir = FileType(mode: victimRec.mode) == .directory
                if movingIsDir && !victimIsDir { throw HoldfastError.notADirectory(subject) }
                if !movingIsDir && victimIsDir { throw HoldfastError.isADirectory(subject) }
                if victimIsDir {
                    let count = try fs.withDirectory(try decoded(victimRec)) { $0.count }
                    guard count <= 2 else { throw HoldfastError.notEmpty(subject) }
                }
                _ = try retargetEntry(&destination, name: newName, to: moving, type: movingType)
                if victimIsDir {
                    var d = try inode(newParent)
                    decrementDirectoryLinks(&d)
                    try store(d)
                }
                try dropLink(victim)
            } else {
                var d = try inode(newParent)
                try addEntry(&d, name: newName, inode: moving, type: movingType)
                try store(d)
            }
            var origin = try inode(oldParent)
            guard try removeEntry(&origin, name: oldName) == moving else {
                throw CorruptionError(.directoryBlock, inode: oldParent, .impossible("entry \(from) vanished during rename"))
            }
            if movingIsDir && oldParent != newParent {
                var m = try inode(moving)
                try setParent(&m, to: newParent)
                var a = try inode(oldParent)
                decrementDirectoryLinks(&a)
                try store(a)
                var b = try inode(newParent)
                incrementLinks(&b)
                try store(b)
            }
            var r = try inode(moving)
            r.changeTime = now
            try store(r)
        }
        for p in Set([oldParent, newParent]) {
            var d = try inode(p)
            d.modificationTime = now
            d.changeTime = now
            try store(d)
        }
    }
}
