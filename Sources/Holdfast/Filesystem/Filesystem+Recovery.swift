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

extension Filesystem {
    /// The kernel's smallest journal (JBD2_MIN_JOURNAL_BLOCKS): a log shorter than this cannot
    /// hold the transactions the write path bounds to a quarter of it.
    static let minimumJournalBlocks: UInt32 = 1024

    /// The writer for the internal journal of a writable open, after recovery emptied it. A
    /// journal this engine cannot trust (short, holes, blocks over the group metadata, features
    /// it does not write) refuses the writable open by name: nothing is written into it.
    static func journalWriter(_ view: Filesystem, journal jsb: Jbd2.Superblock, device: any BlockDevice) throws -> JournalWriter {
        let sb = view.superblock
        func refuse(_ why: String) -> HoldfastError { .readOnly(["the journal cannot be written: \(why)"]) }
        guard jsb.maxLength >= minimumJournalBlocks else {
            throw refuse("its log has \(jsb.maxLength) blocks, fewer than the \(minimumJournalBlocks) a journal needs")
        }
        let inode = try view.inode(sb.journalInode)
        var runs: [JournalWriter.Run] = []
        var next: UInt64 = 0
        try view.forEachRun(inode) { run in
            guard let physical = run.physical, run.logical == next, !run.unwritten else { return false }
            runs.append(JournalWriter.Run(logical: run.logical, physical: physical, count: run.length))
            next = run.logical + run.length
            return next < UInt64(jsb.maxLength)
        }
        guard next >= UInt64(jsb.maxLength) else {
            throw refuse("the journal inode maps only log blocks 0..<\(next) of \(jsb.maxLength) (a hole or an unwritten extent)")
        }
        // The log must not lie over group metadata: a commit would overwrite it.
        let bs = UInt64(sb.blockSize)
        let tableBlocks = (UInt64(sb.inodesPerGroup) * UInt64(sb.inodeSize) + bs - 1) / bs
        var metadata: [(UInt64, UInt64, String)] = [(0, UInt64(sb.firstDataBlock) + 1 + view.geometry.descriptorBlockCount, "the superblock and group descriptors")]
        for g in 0..<UInt32(sb.groupCount) {
            let gd = try view.descriptor(g)
            metadata.append((gd.blockBitmap, 1, "group \(g)'s block bitmap"))
            metadata.append((gd.inodeBitmap, 1, "group \(g)'s inode bitmap"))
            metadata.append((gd.inodeTable, tableBlocks, "group \(g)'s inode table"))
        }
        for run in runs {
            let end = run.physical + min(run.count, UInt64(jsb.maxLength) - run.logical)
            if end > sb.blocksCount { throw refuse("log blocks lie past the end of the filesystem") }
            if let clash = metadata.first(where: { run.physical < $0.0 + $0.1 && $0.0 < end }) {
                throw refuse("log blocks \(run.physical)..<\(end) overlap \(clash.2)")
            }
        }
        let sbBlock = UInt64(Superblock.byteOffset) / bs
        let image = try device.read(count: sb.blockSize, at: sbBlock * bs)
        let raw = try device.read(count: sb.blockSize, at: runs[0].physical * bs)
        do {
            return try JournalWriter(device: device, budget: view.budget, blockSize: sb.blockSize, runs: runs, superblock: raw,
                                     superblockBlock: sbBlock, superblockImage: image,
                                     checksums: sb.hasMetadataChecksums, is64Bit: sb.featureIncompat.contains(.bit64))
        } catch let e as Jbd2Error {
            throw refuse(e.description)
        } catch let e as CorruptionError {
            throw refuse("\(e)")
        }
    }
}
