import HoldfastDevice
import HoldfastFormat
import HoldfastJournal
import Logging

extension Filesystem {
    /// What a writable open's recovery did: transactions and blocks written home.
    public struct RecoverySummary: Sendable {
        public let transactions: Int
        public let blocksWritten: Int
        public let nextSequence: UInt32
        /// Logged blocks that failed their checksum and were not written (as the kernel skips them).
        public let blocksSkipped: Int
        /// The damaged block that ended the log early, if one did (see `ReplaySummary.damage`).
        public let damage: String?
    }

    /// Recovers the journal of the image on `device` before a writable open, as the kernel does
    /// at mount: every block the committed transactions logged is written home, then the journal
    /// is emptied (`s_start` 0, `s_sequence` past the last transaction and any torn one after
    /// it), then the superblock's needs_recovery flag goes, each step flushed before the next.
    /// A crash anywhere in it leaves an image the next open (or the kernel, or e2fsck) recovers
    /// again: the writes home are idempotent. Returns nil when the image needs no recovery.
    static func recoverJournal(_ device: any BlockDevice, options: OpenOptions) throws -> RecoverySummary? {
        let sbBytes = try device.read(count: Superblock.size, at: UInt64(Superblock.byteOffset))
        let sb = try Superblock(sbBytes, imageBytes: device.byteCount)
        guard sb.needsRecovery else { return nil }
        // Only an image this open may change at all is written: otherwise the open is refused
        // later with its reasons, and the image is left as it was.
        let assessment = FeatureAssessment(sb)
        guard assessment.refused.isEmpty, assessment.readOnlyBecause.isEmpty, writeRefusals(sb).isEmpty,
              sb.featureCompat.contains(.hasJournal), sb.journalInode != 0 else { return nil }
        // The in-memory replay of a read-only open finds the blocks and their newest copies.
        var readOnly = options
        readOnly.writable = false
        readOnly.recordingLog = nil
        readOnly.faultPlan = nil
        readOnly.logger = Logger(label: "holdfast", factory: { _ in SwiftLogNoOpLogHandler() })
        let view = try Filesystem(device: device, options: readOnly)
        guard let replay = view.journalReplay, let journal = view.journalSuperblock else {
            throw HoldfastError.journal("the image needs recovery but its journal could not be read")
        }
        let bs = UInt64(sb.blockSize)
        // A log naming a block past the filesystem's end is damaged: nothing is written then.
        if let stray = view.cache.redirects.entries.first(where: { $0.target >= sb.blocksCount }) {
            throw HoldfastError.journal("the journal logs block \(stray.target), past the end of the filesystem (\(sb.blocksCount) blocks); run e2fsck")
        }
        var written = 0
        for entry in view.cache.redirects.entries {
            // Read through the redirect: the logged copy, its escaped magic put back.
            let block = try view.cache.readBlock(entry.target)
            try block.withUnsafeBytes { try device.write($0, at: entry.target * bs) }
            written += 1
        }
        try device.flush()

        // The journal, emptied. The sequence skips one past the next expected transaction, as
        // the kernel's recovery does, so a torn transaction left in the log can never match.
        let journalInode = try view.inode(sb.journalInode)
        guard let journalBlock0 = try view.physicalBlock(of: journalInode, logical: 0) else {
            throw CorruptionError(.journalSuperblock, inode: sb.journalInode, .impossible("journal inode has no block 0"))
        }
        var record = Jbd2.SuperblockRecord(raw: try device.read(count: sb.blockSize, at: journalBlock0 * bs))
        let next = replay.transactions > 0 ? replay.lastSequence &+ 1 : journal.sequence
        record.start = 0
        record.sequence = next &+ 1
        if journal.hasChecksumV2orV3 { record.seal() }
        try record.raw.withUnsafeBytes { try device.write($0, at: journalBlock0 * bs) }
        try device.flush()

        // The superblock as the replay left it, without needs_recovery.
        var home = SuperblockRecord(raw: try device.read(count: Superblock.size, at: UInt64(Superblock.byteOffset)))
        home.featureIncompat.remove(.recover)
        home.seal()
        try home.raw.withUnsafeBytes { try device.write($0, at: UInt64(Superblock.byteOffset)) }
        try device.flush()
        return RecoverySummary(transactions: replay.transactions, blocksWritten: written, nextSequence: next &+ 1,
                               blocksSkipped: replay.dataChecksumFailures, damage: replay.damage)
    }
}
