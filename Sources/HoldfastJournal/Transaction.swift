import HoldfastCache
import HoldfastMemory

extension AllocationSite {
    public static let handleUndo = AllocationSite("handle.undo", .mayFail, .journal, "a block's contents before a handle changed it, kept until the handle ends")
    public static let journalSites: [AllocationSite] = [.handleUndo, .journalCommit]
}

/// The running transaction: every metadata block changed since the last commit, pinned dirty in
/// the buffer cache. Handles join it one operation at a time. With a journal, `commit` logs the
/// blocks and the superblock (data was written before the handles ended), makes the commit
/// durable, then writes the blocks home (the checkpoint); the log is emptied when it fills and at
/// close. Without one, `commit` writes the blocks in place and flushes.
/// Not thread-safe: the filesystem's write lock serializes every use.
public final class Transaction {
    public let cache: BufferCache
    /// The journal commits go through; nil for an image without one.
    public let journal: JournalWriter?
    private(set) var blocks: Set<UInt64> = []
    /// Metadata blocks this transaction's handles freed: those with a copy in the live log get a
    /// revoke record, so a replay never writes the old copy over the block's next owner.
    private var freed: Set<UInt64> = []
    /// Committed blocks whose write home failed: written again before the log is emptied.
    private var unwrittenHome: Set<UInt64> = []
    /// The superblock as last committed, written home again before the log is emptied.
    private var committedSuperblock: [UInt8]?
    public private(set) var sequence: UInt64 = 1
    public private(set) var creditOverruns = 0
    /// When the running transaction took its first block (monotonic ns).
    public private(set) var startedAt: UInt64 = 0

    public init(cache: BufferCache, journal: JournalWriter? = nil) {
        self.cache = cache
        self.journal = journal
    }

    /// Starts an operation that may change up to `credits` metadata blocks.
    public func begin(credits: Int) -> Handle { Handle(self, credits: credits) }

    /// Blocks waiting for the next commit.
    public var dirtyBlocks: Int { blocks.count }
    public var dirtyBytes: Int { blocks.count * cache.blockSize }

    /// The most blocks a transaction should gather before it commits: a quarter of the log, as the
    /// kernel bounds its transactions (no bound without a journal).
    public var bound: Int { journal.map { max(1, min($0.capacity, $0.blockCapacity) / 4) } ?? Int.max }

    /// Commits every changed block and the superblock, and makes them durable.
    /// - `superblock` gives the superblock's 1024 bytes, sealed, as this commit leaves it;
    ///   `writeSuperblock` writes them home.
    /// - Without a journal the blocks are written in place, then the superblock, then a flush
    ///   (skipped without `flush`: a commit made to free memory, where a flush would order nothing
    ///   and only wait for file data). A failure leaves the blocks dirty and pinned, so a later
    ///   commit retries them.
    /// - With a journal the commit is durable in the log before anything is written home, and
    ///   always flushed. A failure before the commit block leaves the transaction as it was; a
    ///   failure writing home after it is retried before the log is emptied, and still thrown.
    public func commit(flush: Bool = true, superblock: () -> [UInt8], writeSuperblock: ([UInt8]) throws -> Void) throws {
        guard let journal else {
            try cache.writeBack(Array(blocks))
            try writeSuperblock(superblock())
            if flush { try cache.device.flush() }
            finish()
            return
        }
        let raw = superblock()
        let sbBlock = journal.superblockBlock
        var targets = blocks.filter { $0 != sbBlock }.sorted()
        targets.append(sbBlock)
        let revoked = freed.filter { journal.isLive($0) }.sorted()
        let length = journal.length(blocks: targets.count, revokes: revoked.count)
        if let why = journal.abortReason { throw Jbd2Error("the journal was aborted after a failed write (\(why))") }
        if length > journal.capacity || targets.count > journal.blockCapacity {
            // Larger than the whole log: written in place after the log is emptied, so nothing
            // older replays over it. Not atomic; the filesystem counts and reports it.
            try checkpoint(forced: true, writeSuperblock: writeSuperblock)
            do {
                try journal.withStaging { try cache.writeBack(Array(blocks), through: $0) }
                try writeSuperblock(raw)
                try cache.device.flush()
            } catch {
                journal.abort("\(error)")
                throw error
            }
            journal.countOversized()
            finish()
            return
        }
        if !journal.fits(length, blocks: targets.count) { try checkpoint(forced: true, writeSuperblock: writeSuperblock) }
        let image = journal.superblockBlock(with: raw)
        try journal.commit(targets, revoked: revoked) { target, buffer in
            if target == sbBlock {
                image.withUnsafeBytes { buffer.copyMemory(from: $0) }
            } else {
                let cached = cache.copy(target, into: buffer)
                precondition(cached, "block \(target) of the transaction left the cache")
            }
        }
        // Committed: from here the log has it, and the writes home may go in any order.
        targets.removeLast()
        unwrittenHome.formUnion(targets)
        committedSuperblock = raw
        finish()
        try writeHome(writeSuperblock: writeSuperblock)
    }

    /// Empties the log: committed blocks not yet home are written, the superblock too, a flush
    /// makes them durable, then the log's tail moves to empty and is flushed. At close, and when
    /// the log has no room for the next transaction (`forced`).
    public func checkpoint(forced: Bool = false, writeSuperblock: ([UInt8]) throws -> Void) throws {
        guard let journal, !journal.isEmpty else { return }
        do {
            try writeHome(writeSuperblock: writeSuperblock)
            try cache.device.flush()
            try journal.reset(forced: forced)
            try cache.device.flush()
        } catch {
            journal.abort("\(error)")
            throw error
        }
    }

    /// Writes committed blocks home. A failure aborts the journal: a block whose committed
    /// contents did not reach home may be changed again before the next commit, and the log,
    /// which holds the committed copy, must then never be emptied.
    private func writeHome(writeSuperblock: ([UInt8]) throws -> Void) throws {
        let due = unwrittenHome.subtracting(blocks)
        do {
            if let journal {
                try journal.withStaging { try cache.writeBack(Array(due), through: $0) }
            } else {
                try cache.writeBack(Array(due))
            }
            unwrittenHome.subtract(due)
            if let committedSuperblock { try writeSuperblock(committedSuperblock) }
        } catch {
            unwrittenHome = unwrittenHome.filter { cache.isDirty($0) }
            journal?.abort("\(error)")
            throw error
        }
    }

    private func finish() {
        blocks.removeAll(keepingCapacity: true)
        freed.removeAll(keepingCapacity: true)
        sequence += 1
    }

    func joined(_ block: UInt64) {
        if blocks.isEmpty { startedAt = MonotonicClock.nanoseconds }
        blocks.insert(block)
        freed.remove(block)
    }
    func forgot(_ block: UInt64) { blocks.remove(block) }
    func released(_ block: UInt64) {
        blocks.remove(block)
        unwrittenHome.remove(block)
        freed.insert(block)
    }
    func overran() { creditOverruns += 1 }
}

/// One operation's part of the transaction: the blocks it changes, with their earlier contents, so a
/// failure part-way (no space, no memory, an I/O error) puts every block back as it was and the
/// image never sees half an operation.
public final class Handle {
    private enum Before {
        case contents([UInt8])
        case absent
    }

    public let transaction: Transaction
    public let credits: Int
    private var before: [UInt64: Before] = [:]
    private var order: [UInt64] = []
    private var freed: [UInt64] = []
    private var charged = 0
    private var finished = false

    init(_ transaction: Transaction, credits: Int) {
        self.transaction = transaction
        self.credits = credits
    }

    deinit { precondition(finished, "a handle was dropped without stop() or abort()") }

    private var cache: BufferCache { transaction.cache }

    /// The current contents of a metadata block (this transaction's changes included).
    public func read(_ block: UInt64) throws -> [UInt8] { try cache.block(block) }

    /// Part of a metadata block (this transaction's changes included).
    public func read(_ block: UInt64, at offset: Int, count: Int) throws -> [UInt8] {
        try cache.bytes(of: block, at: offset, count: count)
    }

    /// Replaces a block's contents.
    public func write(_ block: UInt64, _ bytes: [UInt8]) throws {
        try remember(block, fresh: false)
        try cache.storeDirty(block, bytes)
        transaction.joined(block)
    }

    /// Reads, changes and writes back one block.
    @discardableResult
    public func modify<R>(_ block: UInt64, _ body: (inout [UInt8]) throws -> R) throws -> R {
        var bytes = try read(block)
        let result = try body(&bytes)
        try write(block, bytes)
        return result
    }

    /// A newly allocated metadata block: its old contents are not read and do not matter.
    public func create(_ block: UInt64, _ bytes: [UInt8]) throws {
        freed.removeAll { $0 == block }
        try remember(block, fresh: true)
        try cache.storeDirty(block, bytes)
        transaction.joined(block)
    }

    /// A metadata block given back to the allocator: if the handle ends well, its cached copy is
    /// dropped so that stale contents are never written over the block's next owner.
    public func release(_ block: UInt64) { freed.append(block) }

    private func remember(_ block: UInt64, fresh: Bool) throws {
        guard before[block] == nil else { return }
        if before.count >= credits { transaction.overran() }
        if fresh {
            before[block] = .absent
        } else {
            let old = try cache.block(block)
            try cache.budget.chargeOrThrow(old.count, at: .handleUndo)
            charged += old.count
            before[block] = .contents(old)
        }
        order.append(block)
    }

    /// The operation succeeded: its changes stay in the transaction.
    public func stop() {
        precondition(!finished)
        finished = true
        for b in freed {
            cache.discard(b)
            transaction.released(b)
        }
        dropUndo()
    }

    /// The operation failed: every block goes back to what it held when the handle began.
    public func abort() {
        precondition(!finished)
        finished = true
        for b in order.reversed() {
            switch before[b]! {
            case .contents(let bytes):
                // Back in as dirty even if it was clean: a block this handle freed may have been
                // reused for file data and written directly, so the disk no longer matches.
                cache.restore(b, bytes, dirty: true)
                transaction.joined(b)
            case .absent:
                cache.discard(b)
                transaction.forgot(b)
            }
        }
        dropUndo()
    }

    /// Blocks this handle changed.
    public var touched: Int { order.count }

    private func dropUndo() {
        before.removeAll()
        order.removeAll()
        if charged > 0 { cache.budget.uncharge(charged, for: .handleUndo) }
        charged = 0
    }
}
