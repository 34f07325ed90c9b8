import FuzzSupport
import Holdfast

/// Target (b): the image opened writable (recovery first) and changed: mkdir, create and write,
/// rename, unlink, truncate, an xattr, then a commit and a close. Each step ends in success or a
/// typed error; after an error the next step still runs, on whatever state the engine kept.
func fuzzWrite(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard Fuzz.writeImage(data, size) else { return 0 }
    let options = OpenOptions(memoryBudget: Fuzz.memoryBudget, writable: true)
    guard let fs = try? Filesystem.open(path: Fuzz.imagePath, options: options) else { return 0 }
    let root = Filesystem.rootInode
    let me = Ownership(uid: 1000, gid: 1000, permissions: 0o644)
    let dir = try? fs.create(Array("fuzz-dir".utf8), in: root, kind: .directory, owner: Ownership(permissions: 0o755))
    if let file = try? fs.create(Array("fuzz-file".utf8), in: dir ?? root, kind: .regular, owner: me) {
        _ = try? fs.write(file, at: 0, Array(repeating: 0x5A, count: 9000))
        _ = try? fs.write(file, at: 70_000, Array("tail".utf8))
        _ = try? fs.setXattr(file, name: Array("user.fuzz".utf8), value: Array("1".utf8))
        _ = try? fs.truncate(file, to: 5000)
        _ = try? fs.fsync(file)
    }
    // Changes to what the image already holds: the first entries of the root.
    if let rootNode = try? fs.inode(root), let entries = try? fs.directoryEntries(rootNode) {
        for entry in entries.prefix(6) where entry.name != [0x2E] && entry.name != [0x2E, 0x2E] {
            guard let node = try? fs.inode(entry.inode, linkedFrom: root) else { continue }
            switch node.fileType {
            case .regular:
                _ = try? fs.write(node.number, at: node.size / 2, Array("fuzz".utf8))
                _ = try? fs.truncate(node.number, to: node.size / 3)
                _ = try? fs.unlink(entry.name, in: root)
            case .directory:
                _ = try? fs.rename(entry.name, in: root, to: Array("moved".utf8), in: dir ?? root)
            default:
                _ = try? fs.setAttributes(node.number, AttributeChanges(uid: 7))
            }
        }
    }
    _ = try? fs.sync()
    Fuzz.walk(fs)
    try? fs.close()
    return 0
}
