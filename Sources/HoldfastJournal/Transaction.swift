import HoldfastCache
import HoldfastMemory

extension AllocationSite {
    public static let handleUndo = AllocationSite("handle.undo", .mayFail, .journal, "a block's contents before a handle changed it, kept until the handle ends")
    public static let journalSites: [AllocationSite] = [.handleUndo]
}

/// The running transaction: every metadata block changed since the last commit, pinned dirty in
/// the buffer cache. Handles join it one operation at a time; `commit` writes the blocks in place
/// (data was written before the handles ended) and flushes. The jbd2 issue will put the journal
/// write in front of the in-place write without changing the callers.
/// Not thread-safe: the filesystem's write lock serializes every use.
public final class Transaction {
    public let cache: BufferCache
    private(set) var blocks: Set<UInt64> = []
    public private(set) var sequence: UInt64 = 1
    public private(set) var creditOverruns = 0

    public init(cache: BufferCache) { self.cache = cache }

    /// Starts an operation that may change up to `credits` metadata blocks.
    public func begin(credits: Int) -> Handle { Handle(self, credits: credits) }

    /// Blocks waiting for the next commit.
    public var dirtyBlocks: Int { blocks.count }
    public var dirtyBytes: Int { blocks.count * cache.blockSize }

    /// Writes every changed block in place, then makes it durable. A failure leaves the blocks
    /// dirty and pinned, so a later commit retries them.
    /// `afterBlocks` runs between the in-place writes and the flush (the superblock goes there).
    /// Without `flush` the writes are left to the host's page cache (a commit made to free memory:
    /// without a journal, a flush there would order nothing and only wait for file data).
    public func commit(flush: Bool = true, afterBlocks: () throws -> Void = {}) throws {
        try cache.writeBack(Array(blocks))
        try afterBlocks()
        if flush { try cache.device.flush() }
        blocks.removeAll(keepingCapacity: true)
        sequence += 1
    }

    func joined(_ block: UInt64) { blocks.insert(block) }
    func forgot(_ block: UInt64) { blocks.remove(block) }
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
            transaction.forgot(b)
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
