import HoldfastFormat
import HoldfastMemory

/// Attribute changes for `setAttributes` (chmod, chown, utimens); nil leaves a field alone.
public struct AttributeChanges: Sendable {
    public var permissions: UInt16?
    public var uid: UInt32?
    public var gid: UInt32?
    public var accessTime: Timestamp?
    public var modificationTime: Timestamp?
    /// The change time to store; nil stores now (the usual case: every change sets it).
    public var changeTime: Timestamp?
    /// Drop what chown drops (setuid, setgid with group-execute, file capabilities) with no new
    /// owner: chown(f, -1, -1), and the kernel's own clearing that a FUSE mount passes on.
    public var dropPrivileges = false

    public init(permissions: UInt16? = nil, uid: UInt32? = nil, gid: UInt32? = nil,
                accessTime: Timestamp? = nil, modificationTime: Timestamp? = nil, changeTime: Timestamp? = nil) {
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.accessTime = accessTime
        self.modificationTime = modificationTime
        self.changeTime = changeTime
    }
}

extension Filesystem {
    /// chmod, chown and utimens in one; the change time is always set (to now, unless given).
    /// A new owner or group (even the same one) drops what the kernel's chown drops: setuid,
    /// setgid with group-execute and file capabilities, from anything but a directory.
    public func setAttributes(_ inode: UInt32, _ changes: AttributeChanges) throws(HoldfastError) {
        try guarded {
            try mutate(credits: 4) { ctx in
                var rec = try ctx.inode(inode)
                if let p = changes.permissions {
                    // A link's own mode cannot change (lchmod: EOPNOTSUPP on Linux).
                    guard FileType(mode: rec.mode) != .symlink else {
                        throw HoldfastError.unsupported("changing the mode of a symbolic link (inode \(inode))")
                    }
                    rec.mode = rec.mode & 0xF000 | p & 0o7777
                    try ctx.chmodAccessACL(&rec)
                }
                if changes.uid != nil || changes.gid != nil || changes.dropPrivileges {
                    // chown's rule (PrivilegeRules.swift). A mode given with the owner is the
                    // caller's decision (the mount's kernel sends both): the set-id bits stay as given.
                    let given = rec.mode
                    try ctx.dropPrivilegesForOwnerChange(&rec)
                    if changes.permissions != nil { rec.mode = given }
                }
                if let u = changes.uid { rec.uid = u }
                if let g = changes.gid { rec.gid = g }
                if let a = changes.accessTime { rec.accessTime = a }
                if let m = changes.modificationTime { rec.modificationTime = m }
                rec.changeTime = changes.changeTime ?? Operation.now()
                try ctx.store(rec)
            }
        }
    }
}

extension Filesystem {
    /// Records a read of `inode` as the kernel's relatime does: the access time moves to now when
    /// it is not after the modification or change time, or is a day old; nothing else changes.
    /// Does nothing on a read-only image.
    public func noteAccess(_ inode: UInt32) throws(HoldfastError) {
        guard isWritable else { return }
        try noteAccess(try self.inode(inode))
    }

    /// `noteAccess` with the inode as the caller read it (no second read when nothing is stale).
    public func noteAccess(_ node: Inode) throws(HoldfastError) {
        guard isWritable else { return }
        let inode = node.number
        let now = Operation.now()
        let stale = node.accessTime <= node.modificationTime || node.accessTime <= node.changeTime
            || now.seconds - node.accessTime.seconds >= 24 * 3600
        guard stale else { return }
        try guarded {
            try mutate(credits: 4) { ctx in
                var rec = try ctx.inode(inode)
                rec.accessTime = now
                try ctx.store(rec)
            }
        }
    }
}
