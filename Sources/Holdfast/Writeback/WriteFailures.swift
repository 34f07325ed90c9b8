#if canImport(Glibc)
import Glibc
#endif
import HoldfastDevice
import HoldfastMemory
import Logging

/// What a failed write of file data does (ext4's `errors=` mount option). The data stays in
/// memory, dirty, whatever the policy: it is retried and reported, never dropped.
public enum ErrorsPolicy: String, Sendable, CaseIterable {
    /// Record the error (fsync and close report it) and go on.
    case `continue`
    /// Refuse every later change, as ext4 remounts read-only; what is dirty is still retried.
    case remountReadOnly = "remount-ro"
    /// Stop the process, as ext4 panics.
    case panic
}

/// Write errors seen by writeback, and the read-only state `remount-ro` puts the filesystem in.
/// Written from the flusher thread, which never takes the write lock: this has its own.
final class WriteFailures: Sendable {
    let policy: ErrorsPolicy
    private let first = Locked<DeviceError?>(nil)
    private let logger: Logger

    init(policy: ErrorsPolicy, logger: Logger) {
        self.policy = policy
        self.logger = logger
    }

    func record(_ error: DeviceError) {
        let isFirst = first.withLock { e -> Bool in
            defer { if e == nil { e = error } }
            return e == nil
        }
        switch policy {
        case .continue:
            if isFirst { logger.notice("writing file data failed (\(error)); the data stays dirty and is retried (errors=continue)") }
        case .remountReadOnly:
            if isFirst { logger.error("writing file data failed (\(error)); no further changes are accepted (errors=remount-ro)") }
        case .panic:
            logger.critical("writing file data failed (\(error)); stopping (errors=panic)")
            abort()
        }
    }

    var firstError: DeviceError? { first.withLock { $0 } }

    /// Inodes whose delayed data could not get blocks, already logged: each is logged once, not
    /// at every retry, until its data maps.
    private let unmapped = Locked<Set<UInt32>>([])

    /// Logs that the delayed data of `inode` got no blocks (the first time only).
    func mappingFailed(_ inode: UInt32, _ error: HoldfastError, image: String) {
        guard unmapped.withLock({ $0.insert(inode).inserted }) else { return }
        logger.error("the delayed data of inode \(inode) got no blocks: \(error); it stays in memory, dirty, and is retried",
                     metadata: ["inode": "\(inode)", "image": "\(image)"])
    }

    /// The delayed data of `inode` got its blocks: a later failure is news again.
    func mappingSucceeded(_ inode: UInt32) {
        unmapped.withLock { set in if !set.isEmpty { set.remove(inode) } }
    }

    /// Why changes are refused now, if `remount-ro` applies.
    var readOnlyReason: String? {
        guard policy == .remountReadOnly, let e = first.withLock({ $0 }) else { return nil }
        return "a write of file data failed (\(e)) and the errors policy is remount-ro"
    }
}
