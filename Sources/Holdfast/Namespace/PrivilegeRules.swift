import HoldfastFormat

/// The kernel's rules for what a change takes away from a file: its set-user-ID and set-group-ID
/// bits and its file capabilities (the `security.capability` attribute). They live here only;
/// `setAttributes`, `write`, `truncate` and `fallocate` apply them, for the CLI and the mount alike.
///
/// - A change of owner or group of anything but a directory (the VFS's chown_common) drops
///   setuid, setgid where group-execute is set, and the capabilities, whoever the caller is. A
///   setgid bit without group-execute marks mandatory locking and stays.
/// - A write, truncate or fallocate (file_remove_privs) drops the capabilities for every caller.
///   It drops the set-id bits only for a caller without CAP_FSETID (`dropSetID`). Holdfast's own
///   callers (the CLI) act with every capability. The mount's callers may not have it; the kernel,
///   which knows them, says so in each write and truncate (FUSE's HANDLE_KILLPRIV_V2).
extension Operation {
    /// chown's rule; does nothing to a directory.
    func dropPrivilegesForOwnerChange(_ rec: inout InodeRecord) throws {
        guard FileType(mode: rec.mode) != .directory else { return }
        dropSetIDBits(&rec)
        try dropFileCapabilities(&rec)
    }

    /// The set-id part: setuid goes, and setgid where group-execute is set.
    func dropSetIDBits(_ rec: inout InodeRecord) {
        rec.mode &= ~0o4000
        if rec.mode & 0o2010 == 0o2010 { rec.mode &= ~0o2000 }
    }

    /// The part of file_remove_privs that holds for every caller: the file's capabilities go.
    func dropFileCapabilities(_ rec: inout InodeRecord) throws {
        guard rec.mayHaveXattrs else { return }
        var records = try xattrRecords(rec)
        guard let i = records.firstIndex(where: { $0.index == Self.securityIndex && $0.name == Self.capabilityName }) else { return }
        records.remove(at: i)
        try storeXattrs(records, in: &rec)
    }

    private static let securityIndex: UInt8 = 6
    private static let capabilityName = Array("capability".utf8)
}
