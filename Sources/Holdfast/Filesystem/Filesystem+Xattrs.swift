import HoldfastFormat

extension Filesystem {
    /// Sets one extended attribute (`user.x`, `trusted.x`, `security.x`, POSIX ACLs in their xattr form).
    public func setXattr(_ inode: UInt32, name: [UInt8], value: [UInt8], mode: XattrSetMode = .createOrReplace) throws(HoldfastError) {
        try guarded {
            try mutate(credits: 8) { ctx in try ctx.changeXattr(inode, name: name, value: value, mode: mode) }
        }
    }

    /// Removes one extended attribute; `noSuchAttribute` when it is not there.
    public func removeXattr(_ inode: UInt32, name: [UInt8]) throws(HoldfastError) {
        try guarded {
            try mutate(credits: 8) { ctx in try ctx.changeXattr(inode, name: name, value: nil, mode: .createOrReplace) }
        }
    }

    /// Replaces an inode's whole attribute set in one operation (an import).
    public func replaceXattrs(_ inode: UInt32, _ values: [XattrValue]) throws(HoldfastError) {
        try guarded {
            try mutate(credits: 8) { ctx in
                var records: [XattrRecord] = []
                for v in values {
                    var value = v.value
                    if v.name == Array("system.posix_acl_access".utf8) || v.name == Array("system.posix_acl_default".utf8) {
                        guard let d = PosixACL.toDisk(v.value) else { throw HoldfastError.invalidArgument("malformed POSIX ACL \(v.nameString)") }
                        value = d
                    }
                    guard let r = XattrRecord(fullName: v.name, value: value), !r.isUnhandledSystemName else {
                        throw HoldfastError.unsupported("xattr namespace of \(v.nameString)")
                    }
                    records.append(r)
                }
                var rec = try ctx.inode(inode)
                // An inline inode's data is not an attribute of the caller's: it stays.
                records += try ctx.xattrRecords(rec).filter { InlineData.isDataXattr(index: $0.index, name: $0.name) }
                try ctx.storeXattrs(records, in: &rec)
                try ctx.store(rec)
            }
        }
    }
}
