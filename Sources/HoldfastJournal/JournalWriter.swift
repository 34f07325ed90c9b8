#if canImport(Glibc)
import Glibc
#endif
import HoldfastDevice
import HoldfastFormat
import HoldfastMemory

extension AllocationSite {
    public static let journalCommit = AllocationSite("journal.commit", .mayFail, .journal,
        "the staging blocks commit copies logged blocks and descriptors through, taken at a writable open so commit never allocates")
}

/// What the journal did since the image was opened (`holdfast --stats`).
public struct JournalStatistics: Sendable {
    /// Transactions committed to the log.
    public var transactions = 0
    /// Filesystem blocks copied into the log (descriptors, revoke and commit blocks not counted).
    public var blocksLogged = 0
    /// Blocks recorded as revoked: metadata freed while an older copy was still in the log.
    public var revokes = 0
    /// Times the log was emptied after its transactions were written home and flushed.
    public var checkpoints = 0
    /// Of those, the ones a commit forced because the log had no room left.
    public var forcedCheckpoints = 0
    /// Transactions larger than the whole log, written in place instead (not atomic).
    public var oversized = 0
    public init() {}

    /// The line `holdfast --stats` prints.
    public var line: String {
        "journal transactions=\(transactions) blocks-logged=\(blocksLogged) revokes=\(revokes) "
            + "checkpoints=\(checkpoints) forced-checkpoints=\(forcedCheckpoints) oversized=\(oversized)"
    }
}

/// The journal's counters, readable from any thread and after the filesystem closed.
public final class JournalCounters: Sendable {
    private let value = Locked(JournalStatistics())
    public init() {}
    public var statistics: JournalStatistics { value.withLock { $0 } }
    func update(_ body: (inout JournalStatistics) -> Void) { value.withLock { body(&$0) } }
}

/// Writes transactions into an internal jbd2 journal (journal.rst) and moves its tail, following
/// the rules of DESIGN.md ("The journal"):
/// - the first transaction after the log was empty also writes the journal superblock with
///   `s_start` pointing at it; descriptors, logged blocks and revoke blocks go first, then a
///   flush, then the commit block and a flush: a transaction counts once its commit is durable;
/// - transactions follow each other in the log without wrapping; when the next one does not fit,
///   the caller flushes the checkpoint writes and `reset` empties the log (`s_start` 0,
///   `s_sequence` the next transaction, which only ever grows);
/// - blocks are staged through buffers taken at open, so a commit allocates nothing it could
///   fail to get.
/// Not thread-safe: the filesystem's write lock serializes every use.
public final class JournalWriter {
    /// A stretch of the journal inode: `count` log blocks from `logical` lie at `physical`.
    public struct Run: Sendable, Equatable {
        public let logical: UInt64
        public let physical: UInt64
        public let count: UInt64
        public init(logical: UInt64, physical: UInt64, count: UInt64) {
            self.logical = logical
            self.physical = physical
            self.count = count
        }
    }

    public let device: any BlockDevice
    public let blockSize: Int
    private let runs: [Run]
    private var record: Jbd2.SuperblockRecord
    /// The journal superblock as the writer keeps it (features set on first use).
    public private(set) var journal: Jbd2.Superblock
    /// The sequence number the next transaction gets.
    public private(set) var sequence: UInt32
    /// The log block the next transaction starts at.
    public private(set) var head: UInt32
    /// `s_start` as written: the first live transaction's block, 0 when the log holds nothing live.
    private var tail: UInt32 = 0
    /// Filesystem blocks with a copy in the live log: freeing one of them needs a revoke record.
    private var live: Set<UInt64> = []
    /// The most blocks `live` holds (its capacity, reserved at open).
    public let liveLimit: Int
    /// Bytes the budget is charged for a `live` entry (the set's slot and its share of metadata).
    static let liveEntryBytes = 32
    private let reservedBytes: Int
    private var lastCommit: (seconds: UInt64, nanoseconds: UInt32) = (0, 0)
    /// What the journal did since the open (`holdfast --stats`).
    public let counters = JournalCounters()

    private let budget: MemoryBudget
    private let staging: UnsafeMutableRawBufferPointer
    /// Blocks the staging area holds: one descriptor and the blocks it tags are written in one call.
    let stagingBlocks: Int
    private var released = false

    /// The block holding the ext4 superblock, and that block as read at open: the superblock is
    /// logged as the whole block (boot sector and padding as they are on disk).
    public let superblockBlock: UInt64
    private let superblockImage: [UInt8]

    /// - Parameters:
    ///   - runs: the journal inode's blocks, in logical order, covering 0..<s_maxlen without holes.
    ///   - superblockBlock: the filesystem block holding the superblock, and `superblockImage` its bytes.
    ///   - checksums: the filesystem has metadata_csum (the log then uses checksum v3).
    ///   - is64Bit: the filesystem has 64bit (tags then carry 64-bit block numbers).
    public init(device: any BlockDevice, budget: MemoryBudget, blockSize: Int, runs: [Run], superblock raw: [UInt8],
                superblockBlock: UInt64, superblockImage: [UInt8], checksums: Bool, is64Bit: Bool) throws {
        var record = Jbd2.SuperblockRecord(raw: raw)
        // As the kernel's mount does: checksum v3 (crc32c) with metadata_csum, 64-bit tags on a
        // 64-bit filesystem. Other features of a journal the kernel used stay as they are.
        var incompat = record.featureIncompat
        if checksums {
            incompat |= Jbd2.incompatCsumV3
            incompat &= ~Jbd2.incompatCsumV2
            record.featureCompat &= ~Jbd2.compatChecksum
            record.checksumType = 4
        }
        if is64Bit { incompat |= Jbd2.incompat64Bit }
        record.featureIncompat = incompat
        if record.featureIncompat & (Jbd2.incompatCsumV2 | Jbd2.incompatCsumV3) != 0 { record.seal() }
        let journal = try Jbd2.Superblock(record.raw, fsBlockSize: blockSize)
        guard journal.start == 0 else {
            throw Jbd2Error("the journal still holds transactions to recover (s_start \(journal.start))")
        }
        guard journal.featureIncompat & (Jbd2.incompatFastCommit | Jbd2.incompatAsyncCommit) == 0 else {
            throw Jbd2Error("the journal uses \(journal.featureNames.filter { $0.contains("fast") || $0.contains("async") }.joined(separator: ", ")), which Holdfast does not write")
        }
        guard journal.blockType == Jbd2.BlockType.superblockV2.rawValue else {
            throw Jbd2Error("the journal has a version 1 superblock, which Holdfast does not write")
        }
        let covered = runs.reduce(0) { $0 + $1.count }
        guard covered >= UInt64(journal.maxLength) else {
            throw Jbd2Error("the journal inode maps \(covered) blocks, fewer than the \(journal.maxLength) of its log")
        }
        guard Jbd2.tagsPerDescriptor(journal) > 0 else { throw Jbd2Error("journal blocks are too small for a descriptor") }

        // Enough staging for a descriptor and a full run of its tags, bounded by a small share
        // of the budget (at least one descriptor and one block).
        let pages = budget.limit / blockSize
        let blocks = max(2, min(Jbd2.tagsPerDescriptor(journal) + 1, min(256, pages / 32)))
        // The table of blocks in the live log is sized at open too, so a commit never grows it:
        // a log holding more than this is checkpointed early.
        let liveLimit = min(Int(journal.maxLength), max(128, budget.limit / 1024))
        let reserved = blocks * blockSize + liveLimit * Self.liveEntryBytes
        try budget.chargeOrThrow(reserved, at: .journalCommit)
        self.reservedBytes = reserved
        self.liveLimit = liveLimit
        self.staging = UnsafeMutableRawBufferPointer.allocate(byteCount: blocks * blockSize, alignment: 4096)
        self.stagingBlocks = blocks
        self.budget = budget
        self.device = device
        self.blockSize = blockSize
        self.runs = runs
        self.record = record
        self.journal = journal
        self.sequence = journal.sequence
        self.head = journal.first
        self.superblockBlock = superblockBlock
        self.superblockImage = superblockImage
        live.reserveCapacity(liveLimit)
    }

    deinit { release() }

    /// Gives the staging blocks back (at close; the writer is not used after).
    public func release() {
        guard !released else { return }
        released = true
        staging.deallocate()
        budget.uncharge(reservedBytes, for: .journalCommit)
    }

    /// Log blocks one transaction may take: the whole log but its superblock.
    public var capacity: Int { Int(journal.maxLength) - Int(journal.first) }

    /// Filesystem blocks one transaction may log: what the live table holds.
    public var blockCapacity: Int { liveLimit }

    /// Log blocks a transaction of `blocks` logged blocks and `revokes` revoked ones takes: its
    /// descriptors, the blocks, its revoke blocks and the commit block.
    public func length(blocks: Int, revokes: Int) -> Int {
        let perDescriptor = min(Jbd2.tagsPerDescriptor(journal), stagingBlocks - 1)
        let descriptors = (blocks + perDescriptor - 1) / perDescriptor
        let perRevoke = (blockSize - 16 - (journal.hasChecksumV2orV3 ? 4 : 0)) / (journal.is64Bit ? 8 : 4)
        return descriptors + blocks + (revokes + perRevoke - 1) / perRevoke + 1
    }

    /// Can a transaction of `length` log blocks, logging `blocks` filesystem blocks, go in after
    /// the live ones?
    public func fits(_ length: Int, blocks: Int) -> Bool {
        Int(head) + length <= Int(journal.maxLength) && live.count + blocks <= liveLimit
    }

    /// Does the live log hold a copy of `block`? (Freeing it then needs a revoke.)
    public func isLive(_ block: UInt64) -> Bool { live.contains(block) }

    /// Is anything in the log that recovery would replay?
    public var isEmpty: Bool { tail == 0 }

    /// Writes the journal superblock with the features this writer uses, the log empty. The
    /// caller flushes it together with the filesystem superblock's needs_recovery flag.
    public func start() throws {
        record.start = 0
        record.sequence = sequence
        try writeJournalSuperblock()
    }

    /// The superblock's block with `superblock` (its 1024 bytes, sealed) in place.
    public func superblockBlock(with superblock: [UInt8]) -> [UInt8] {
        var block = superblockImage
        let offset = Superblock.byteOffset % blockSize
        block.replaceSubrange(offset..<(offset + superblock.count), with: superblock)
        return block
    }

    /// Why the journal stopped taking commits: a write or flush of the log, or of a checkpoint,
    /// failed. As jbd2 aborts its journal: after a failure the log's state on disk is not known
    /// (a commit block may have landed; `s_start` may point at a transaction that is not whole),
    /// so nothing more is written into it, and the next open (or the kernel, or e2fsck) recovers
    /// what the log holds.
    public private(set) var abortReason: String?

    /// Stops all further commits (the first reason stays).
    public func abort(_ reason: String) { if abortReason == nil { abortReason = reason } }

    /// Commits one transaction: `targets` (their contents copied in by `contents`), revoke records
    /// for `revoked`, then the commit block, durable when this returns. A failure aborts the
    /// journal (`abortReason`). The caller checked `fits(length(...))` and checkpointed when it did not.
    public func commit(_ targets: [UInt64], revoked: [UInt64],
                       contents: (UInt64, UnsafeMutableRawBufferPointer) throws -> Void) throws {
        if let abortReason { throw Jbd2Error("the journal was aborted after a failed write (\(abortReason))") }
        do {
            try commitLogged(targets, revoked: revoked, contents: contents)
        } catch {
            abort("\(error)")
            throw error
        }
    }

    private func commitLogged(_ targets: [UInt64], revoked: [UInt64],
                              contents: (UInt64, UnsafeMutableRawBufferPointer) throws -> Void) throws {
        let total = length(blocks: targets.count, revokes: revoked.count)
        precondition(total <= capacity && fits(total, blocks: targets.count), "a transaction of \(total) log blocks does not fit")
        var superblockChanged = false
        if tail == 0 {
            record.start = head
            record.sequence = sequence
            superblockChanged = true
        }
        if !revoked.isEmpty && !journal.hasRevoke {
            record.featureIncompat |= Jbd2.incompatRevoke
            superblockChanged = true
        }
        if superblockChanged {
            if journal.hasChecksumV2orV3 { record.seal() }
            journal = try Jbd2.Superblock(record.raw, fsBlockSize: blockSize)
            try writeJournalSuperblock()
        }

        let perDescriptor = min(Jbd2.tagsPerDescriptor(journal), stagingBlocks - 1)
        var position = UInt64(head)
        var start = 0
        while start < targets.count {
            let group = targets[start..<min(targets.count, start + perDescriptor)]
            var escaped: [Bool] = []
            var sums: [UInt32] = []
            escaped.reserveCapacity(group.count)
            sums.reserveCapacity(group.count)
            for (k, target) in group.enumerated() {
                let slot = slotBuffer(k + 1)
                try contents(target, slot)
                escaped.append(Jbd2.escape(slot))
                sums.append(journal.hasChecksumV2orV3 ? Jbd2.dataChecksum(UnsafeRawBufferPointer(slot), sequence: sequence, journal: journal) : 0)
            }
            let descriptor = Jbd2.descriptorBlock(targets: Array(group), escaped: escaped, checksums: sums,
                                                  sequence: sequence, journal: journal)
            descriptor.withUnsafeBytes { slotBuffer(0).copyMemory(from: $0) }
            try writeLog(UnsafeRawBufferPointer(rebasing: staging[0..<((group.count + 1) * blockSize)]), at: position)
            position += UInt64(group.count + 1)
            start += group.count
        }
        for block in Jbd2.revokeBlocks(revoked, sequence: sequence, journal: journal) {
            try block.withUnsafeBytes { try writeLog($0, at: position) }
            position += 1
        }
        try device.flush()

        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var stamp = (seconds: UInt64(max(0, now.tv_sec)), nanoseconds: UInt32(now.tv_nsec))
        if stamp.seconds < lastCommit.seconds || (stamp.seconds == lastCommit.seconds && stamp.nanoseconds < lastCommit.nanoseconds) {
            stamp = lastCommit
        }
        let commit = Jbd2.commitBlock(sequence: sequence, seconds: stamp.seconds, nanoseconds: stamp.nanoseconds, journal: journal)
        try commit.withUnsafeBytes { try writeLog($0, at: position) }
        try device.flush()

        // Committed.
        lastCommit = stamp
        if tail == 0 { tail = head }
        head = UInt32(position + 1)
        live.formUnion(targets)
        sequence &+= 1
        counters.update { c in
            c.transactions += 1
            c.blocksLogged += targets.count
            c.revokes += revoked.count
        }
    }

    /// Empties the log: every live transaction's blocks are home and flushed (the caller made
    /// sure), so `s_start` goes to 0 with `s_sequence` the next transaction. The caller flushes
    /// this before the log space is used again. `forced`: the log was full.
    public func reset(forced: Bool) throws {
        guard tail != 0 else { return }
        if let abortReason { throw Jbd2Error("the journal was aborted after a failed write (\(abortReason))") }
        record.start = 0
        record.sequence = sequence
        do { try writeJournalSuperblock() } catch {
            abort("\(error)")
            throw error
        }
        tail = 0
        head = journal.first
        live.removeAll(keepingCapacity: true)
        counters.update { c in
            c.checkpoints += 1
            if forced { c.forcedCheckpoints += 1 }
        }
    }

    /// Counts a transaction that was too large for the log and was written in place.
    public func countOversized() { counters.update { $0.oversized += 1 } }

    /// The staging blocks, for a checkpoint to write runs home through (not during a commit).
    public func withStaging<R>(_ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        try body(staging)
    }

    private func slotBuffer(_ k: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: staging[(k * blockSize)..<((k + 1) * blockSize)])
    }

    private func writeJournalSuperblock() throws {
        if journal.hasChecksumV2orV3 { record.seal() }
        try record.raw.withUnsafeBytes { try writeLog($0, at: 0) }
    }

    /// Writes whole log blocks from log block `logical` on, split where the journal inode's
    /// blocks are not contiguous on disk.
    private func writeLog(_ bytes: UnsafeRawBufferPointer, at logical: UInt64) throws {
        var done = 0
        var at = logical
        while done < bytes.count {
            guard let run = runs.first(where: { $0.logical <= at && at < $0.logical + $0.count }) else {
                preconditionFailure("log block \(at) outside the journal inode's runs")
            }
            let n = min(UInt64((bytes.count - done) / blockSize), run.logical + run.count - at)
            let piece = UnsafeRawBufferPointer(rebasing: bytes[done..<(done + Int(n) * blockSize)])
            try device.write(piece, at: (run.physical + (at - run.logical)) * UInt64(blockSize))
            done += Int(n) * blockSize
            at += n
        }
    }
}

/// A journal this engine cannot write into, named.
public struct Jbd2Error: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
