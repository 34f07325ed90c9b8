import HoldfastFormat
import HoldfastMemory

/// Attribute changes for `setAttributes` (chmod, chown, utimens); nil leaves a field alone.
public struct AttributeChanges: Sendable {
    public var permissions: UInt16?
    public var uid: UInt32?
    public var gid: UInt32?
    public var accessTime: Timestamp?
    public var modificationTime: Timestamp?

    public init(permissions: UInt16? = nil, uid: UInt32? = nil, gid: UInt32? = nil,
                accessTime: Timestamp? = nil, modificationTime: Timestamp? = nil) {
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.accessTime = accessTime
        self.modificationTime = modificationTime
    }
}

extension Filesystem {
    /// chmod, chown and utimens in one: the change time is always set to now.
    public func setAttributes(_ inode: UInt32, _ changes: AttributeChanges) throws(HoldfastError) {
        try guarded {
            try mutate(credits: 4) { ctx in
                var rec = try ctx.inode(inode)
                if let p = changes.permissions { rec.mode = rec.mode & 0xF000 | p & 0o7777 }
                if let u = changes.uid { rec.uid = u }
                if let g = changes.gid { rec.gid = g }
                if let a = changes.accessTime { rec.accessTime = a }
                if let m = changes.modificationTime { rec.modificationTime = m }
                rec.changeTime = Operation.now()
                try ctx.store(rec)
            }
        }
    }
}
