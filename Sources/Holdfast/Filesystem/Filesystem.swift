import HoldfastCache
import HoldfastDevice
import HoldfastFormat
import Synchronization
import HoldfastJournal
import HoldfastMemory
import Logging

/// How to open an image.
public struct OpenOptions: Sendable {
    /// The memory budget in bytes for everything the engine caches.
    public var memoryBudget: Int = 64 << 20
    /// Allocation hits to fail on purpose (`--inject`), for fault-injection testing.
    public var faultPlan: FaultPlan?
    /// Where the engine's warnings go: long noFail waits and stalls of the budget, failed
    /// writebacks and the errors policy's verdict, damage found at open, a journal replayed in
    /// memory, changes that could not be written when a filesystem was dropped without `close`.
    /// The library prints nothing itself; by default the warnings are dropped (and still
    /// counted in `statistics`). The `holdfast` tool prints them on standard error.
    public var logger = Logger(label: "holdfast", factory: { _ in SwiftLogNoOpLogHandler() })
    /// Called with the budget as soon as it exists, before anything is charged, so a front end
    /// can report its statistics even when opening fails.
    public var onBudget: (@Sendable (MemoryBudget) -> Void)?

    /// Open for changes: the image file is opened read-write and the write path is enabled.
    public var writable = false
    /// What a failed write of file data does to the filesystem (ext4's errors=).
    public var errors: ErrorsPolicy = .continue
    /// Run the background flusher thread (off: writers and commits write back themselves).
    public var flusher = true
    /// Allocate the blocks of data written into holes at writeback, not at the write.
    public var delayedAllocation = true
    /// Log every write and flush of a writable open to this file (`RecordingDevice`), for crash
    /// testing: `RecordedLog` rebuilds the image at any cut point. The CLI reads HOLDFAST_RECORD.
    public var recordingLog: String?

    public init(memoryBudget: Int = 64 << 20, faultPlan: FaultPlan? = nil, writable: Bool = false) {
        self.memoryBudget = memoryBudget
        self.faultPlan = faultPlan
        self.writable = writable
    }
}

/// An open ext4 image; safe to share between threads. Opened writable, every change runs under one
/// write lock, inside a handle of the running transaction (see `Operation/WriteState.swift`).
public final class Filesystem: Sendable {
    // The image and what was found at open.
    public let device: any BlockDevice
    public let superblock: Superblock
    public let geometry: Geometry
    /// Blocks the filesystem's own structures take (statfs leaves them out of the size).
    let overheadBlocks: UInt64
    /// Why the image is open read-only (features read but not maintained, recovery done in memory).
    public let readOnlyReasons: [String]
    /// Set when the journal needed recovery and was replayed in memory.
    public let journalReplay: ReplaySummary?
    /// What a writable open's journal recovery wrote to the image (nil: none was needed).
    public let journalRecovery: RecoverySummary?
    /// The journal superblock, when the image has an internal journal that decodes.
    public let journalSuperblock: Jbd2.Superblock?
    /// The journal writer's counters (writable opens of images with a journal).
    let journalCounters: JournalCounters?
    /// Commits a transaction five seconds old (started with the flusher, on journalled images).
    let commitTimer = CommitTimer()
    /// Damage found at open that does not stop reading (also sent to the logger).
    public let warnings: [String]

    // Memory and diagnostics.
    public let budget: MemoryBudget
    /// Bytes charged at `.journalRedirects` for the replay's redirect table, given back at close.
    private let redirectBytes: Int
    /// Where warnings go (`OpenOptions.logger`).
    let logger: Logger

    // The caches (HoldfastCache), each charged to the budget, each with its shrinker.
    /// Metadata blocks.
    package let cache: BufferCache
    /// File data: written and not yet on the image, and read (with readahead). Read-only opens
    /// have one too: reads go through it.
    package let pageCache: PageCache?
    /// What reads learnt of files' extent trees (and the delayed extents writes made).
    package let extentStatus: ExtentStatusCache
    /// Decoded inodes, and the open file descriptions that keep theirs in memory.
    package let inodeCache: InodeCache
    /// Hashed lookups and the directory blocks they read (tests check lookups never scan).
    package let lookupCounters = LookupCounters()

    // The write path; nil or idle when opened read-only.
    /// The write path's state (the running transaction, free counts, the orphan list), behind
    /// the write lock.
    let writer: Locked<WriteState>?
    /// Waits for the write lock, time held, commits under it (`--stats`).
    let writeLockCounters = WriteLockCounters()
    /// Spliced reads under way, which a release of freed blocks waits out (SplicedRead.swift).
    let splicedReads = SplicedReads()
    /// The inode table of the group read last, as its descriptor gave it (checksum verified):
    /// a listing reads inodes of one group after another without decoding the descriptor each time.
    /// Inode tables never move while an image is open.
    let lastInodeTable = Locked<InodeTableSpan?>(nil)
    /// The block groups' buddy bitmaps, for the allocator.
    let buddies: BuddyCache?
    /// Memory set aside for the orphan work of last closes (`Eviction.swift`).
    let evictionReserve: EvictionReserve
    /// Failed writebacks and what the errors policy made of them.
    let writeFailures: WriteFailures
    /// Writes into holes wait to allocate (see `DelayedAllocation.swift`).
    let delayedAllocation: Bool

    public static let rootInode: UInt32 = 2
    static let defaultJournalInode: UInt32 = 8

    /// Opens the image at `path`: validates the superblock, refuses unreadable features by name,
    /// and replays a journal that needs recovery: into memory for a read-only open (the file is
    /// never written), onto the image for a writable one.
    public static func open(path: String, options: OpenOptions = OpenOptions()) throws(HoldfastError) -> Filesystem {
        try guarded {
            var device: any BlockDevice = try ImageFile(path: path, writable: options.writable)
            if options.writable, let log = options.recordingLog { device = try RecordingDevice(device, logPath: log) }
            return try Filesystem(device: device, options: options)
        }
    }

    public convenience init(device: any BlockDevice, options: OpenOptions = OpenOptions()) throws {
        guard device.byteCount >= UInt64(Superblock.byteOffset + Superblock.size) else {
            throw CorruptionError(.superblock, .truncated(needed: UInt64(Superblock.byteOffset + Superblock.size), available: device.byteCount))
        }
        // A writable open recovers the journal first, as the kernel's mount does.
        let recovery = options.writable && device.isWritable ? try Self.recoverJournal(device, options: options) : nil
        let sbBytes = try device.read(count: Superblock.size, at: UInt64(Superblock.byteOffset))
        let sb = try Superblock(sbBytes, imageBytes: device.byteCount)
        let assessment = FeatureAssessment(sb)
        guard assessment.refused.isEmpty else { throw HoldfastError.unsupportedFeatures(assessment.refused) }
        guard options.memoryBudget >= 16 * sb.blockSize else {
            throw HoldfastError.invalidArgument("a memory budget of \(options.memoryBudget) bytes is too small: give at least 16 blocks (\(16 * sb.blockSize) bytes)")
        }
        var configuration = MemoryBudget.Configuration()
        let logger = options.logger
        configuration.events = { event in logger.warning("\(event)") }
        let budget: MemoryBudget
        do {
            budget = try MemoryBudget.create(limit: options.memoryBudget, pageSize: sb.blockSize, faultPlan: options.faultPlan, configuration: configuration)
        } catch {
            throw HoldfastError.invalidArgument("\(error)")
        }
        options.onBudget?(budget)
        // Every read from here on is a hit at an I/O site, which a fault plan may fail.
        let io = FaultInjectingDevice(device, budget: budget)

        // A first view straight from the image, to find and read the journal.
        let raw = Filesystem(device: io, superblock: sb, budget: budget, redirects: BlockRedirects(),
                             readOnlyReasons: [], replay: nil, journalSuperblock: nil, warnings: [])
        var reasons = assessment.readOnlyBecause.map { "feature \($0) is read but not maintained" }
        reasons += Self.writeRefusals(sb)
        var journalSB: Jbd2.Superblock?
        var journalProblem: String?
        var warnings: [String] = []
        var replay: ReplaySummary?
        var redirects = BlockRedirects()
        // The redirect table's charge passes to the filesystem at the end; until then a failure gives it back.
        var redirectBytes = 0
        var handedOver = false
        defer { if !handedOver && redirectBytes > 0 { budget.uncharge(redirectBytes, for: .journalRedirects) } }
        if sb.featureCompat.contains(.hasJournal) && sb.journalInode != 0 {
            do {
                let journalInode = try raw.inode(sb.journalInode)
                let first = try raw.physicalBlock(of: journalInode, logical: 0)
                guard let first else { throw CorruptionError(.journalSuperblock, inode: sb.journalInode, .impossible("journal inode has no block 0")) }
                journalSB = try Jbd2.Superblock(try raw.cache.readBlock(first), fsBlockSize: sb.blockSize)
                if sb.needsRecovery, let jsb = journalSB {
                    (redirects, replay) = try JournalReplay.replay(
                        journal: jsb,
                        physical: { logical in
                            guard let p = try raw.physicalBlock(of: journalInode, logical: logical) else {
                                throw CorruptionError(.journal, inode: sb.journalInode, .impossible("journal block \(logical) is a hole"))
                            }
                            return p
                        },
                        read: { try raw.cache.readBlock($0) })
                    let bytes = redirects.count * MemoryLayout<BlockRedirects.Entry>.stride
                    try budget.chargeOrThrow(bytes, at: .journalRedirects)
                    redirectBytes = bytes
                }
            } catch let e as CorruptionError where !sb.needsRecovery {
                // A damaged journal matters only when it has something to replay; warn and read on.
                warnings.append("the journal is unreadable (\(e)); the kernel would refuse to mount this image")
                journalProblem = "\(e)"
                journalSB = nil
            }
        } else if sb.needsRecovery {
            throw HoldfastError.journal("the image needs recovery but has no internal journal to replay")
        }
        // A writable open commits through the journal: one it cannot trust refuses the open.
        var journalWriter: JournalWriter?
        if options.writable && reasons.isEmpty && io.isWritable && !sb.needsRecovery
            && sb.featureCompat.contains(.hasJournal) && sb.journalInode != 0 {
            guard let jsb = journalSB else {
                throw HoldfastError.readOnly(["the journal cannot be written: \(journalProblem ?? "its superblock is unreadable")"])
            }
            journalWriter = try Self.journalWriter(raw, journal: jsb, device: io)
        }
        raw.cache.drain()

        // The superblock itself may have been logged: read it again through the replay.
        var finalSB = sb
        if !redirects.isEmpty {
            let bs = UInt64(sb.blockSize)
            let sbBlock = UInt64(Superblock.byteOffset) / bs
            if redirects.lookup(sbBlock) != nil {
                let probe = BufferCache(device: io, blockSize: sb.blockSize, budget: budget, redirects: redirects)
                let block = try probe.readBlock(sbBlock)
                let start = Superblock.byteOffset % Int(bs)
                finalSB = try Superblock(Array(block[start..<(start + Superblock.size)]), imageBytes: io.byteCount)
            }
        }
        if options.writable {
            if !reasons.isEmpty { throw HoldfastError.readOnly(reasons) }
            if !io.isWritable { throw HoldfastError.readOnly(["the device was opened read-only"]) }
        }
        self.init(device: io, superblock: finalSB, budget: budget, redirects: redirects,
                  readOnlyReasons: options.writable ? [] : reasons, replay: replay, journalSuperblock: journalSB, warnings: warnings,
                  redirectBytes: redirectBytes, writable: options.writable, errors: options.errors,
                  delayedAllocation: options.delayedAllocation, logger: logger, recovery: recovery, journal: journalWriter)
        handedOver = true
        for w in warnings { logger.warning("\(w)", metadata: ["image": "\(device.path)"]) }
        if let replay {
            logger.notice("the journal needed recovery: \(replay.transactions) transactions replayed in memory, the image was not written",
                          metadata: ["image": "\(device.path)"])
        }
        if let recovery {
            logger.notice("the journal needed recovery: \(recovery.transactions) transactions replayed, \(recovery.blocksWritten) blocks written to the image",
                          metadata: ["image": "\(device.path)"])
        }
        // A damaged journal is replayed up to its last good transaction, as the kernel does: say so.
        let damage = replay?.damage ?? recovery?.damage
        if let damage {
            logger.warning("the journal's replay stopped early: \(damage); the transactions after it were not replayed",
                           metadata: ["image": "\(device.path)"])
        }
        let skipped = replay?.dataChecksumFailures ?? recovery?.blocksSkipped ?? 0
        if skipped > 0 {
            logger.warning("\(skipped) logged blocks failed their checksum and were not replayed", metadata: ["image": "\(device.path)"])
        }
        if options.writable {
            pageCache?.setDelayedMapper(self)
            pageCache?.setUpWritebackReserve()
            refillEvictionReserve()
            try startWriting()
            if options.flusher {
                pageCache?.startFlusher()
                if journalCounters != nil { commitTimer.start(self) }
            }
        }
    }

    init(device: any BlockDevice, superblock: Superblock, budget: MemoryBudget, redirects: BlockRedirects,
         readOnlyReasons: [String], replay: ReplaySummary?, journalSuperblock: Jbd2.Superblock?, warnings: [String],
         redirectBytes: Int = 0, writable: Bool = false, errors: ErrorsPolicy = .continue, delayedAllocation: Bool = false,
         logger: Logger = Logger(label: "holdfast", factory: { _ in SwiftLogNoOpLogHandler() }),
         recovery: RecoverySummary? = nil, journal: JournalWriter? = nil) {
        self.journalRecovery = recovery
        self.journalCounters = journal?.counters
        self.redirectBytes = redirectBytes
        self.logger = logger
        self.delayedAllocation = delayedAllocation
        self.device = device
        self.superblock = superblock
        self.geometry = Geometry(superblock)
        self.budget = budget
        let cache = BufferCache(device: device, blockSize: superblock.blockSize, budget: budget, redirects: redirects)
        self.cache = cache
        self.writer = writable ? Locked(WriteState(transaction: Transaction(cache: cache, journal: journal), superblock: superblock)) : nil
        self.buddies = writable ? BuddyCache(budget: budget) : nil
        let failures = WriteFailures(policy: errors, logger: logger)
        self.writeFailures = failures
        // Read-only opens have one too: reads go through it.
        self.pageCache = PageCache(device: device, budget: budget, onWriteError: { failures.record($0) })
        self.extentStatus = ExtentStatusCache(budget: budget)
        self.inodeCache = InodeCache(budget: budget, inodeSize: Int(superblock.inodeSize), pages: pageCache, extents: extentStatus)
        self.evictionReserve = EvictionReserve(budget: budget, blockSize: superblock.blockSize)
        self.readOnlyReasons = readOnlyReasons
        self.journalReplay = replay
        self.journalSuperblock = journalSuperblock
        self.warnings = warnings
        let internalJournal = superblock.featureCompat.contains(.hasJournal) && superblock.journalInode != 0
        self.overheadBlocks = geometry.overheadBlocks(journalBlocks: internalJournal ? UInt64(journalSuperblock?.maxLength ?? 0) : 0)
    }


    // The cache gives its own pages back when it goes; only the redirect table is the filesystem's.
    deinit {
        if writer != nil { finishWriting() }
        commitTimer.stop()
        // The caches may outlive the filesystem (`--stats` keeps them for their counters): what
        // they hold goes back now. Dirty pages, if any are left, stay charged: they were never written.
        pageCache?.dropAllClean()
        pageCache?.releaseWritebackReserve()
        extentStatus.dropAll()
        inodeCache.dropAll()
        releaseEvictionReserve()
        if redirectBytes > 0 { budget.uncharge(redirectBytes, for: .journalRedirects) }
    }

    public var blockSize: Int { superblock.blockSize }

    /// Last closes of unlinked files whose orphan work waited on the list for want of memory
    /// (the image's close or its next open finishes it), and those the eviction reserve carried.
    public var evictionsDeferred: Int { evictionReserve.deferred.load(ordering: .relaxed) }
    public var evictionsOnReserve: Int { evictionReserve.carried.load(ordering: .relaxed) }

    /// Every allocation site the engine has, layer by layer (`holdfast sites`).
    public static var allocationSites: [AllocationSite] {
        AllocationSite.deviceSites + AllocationSite.cacheSites + AllocationSite.pageCacheSites + AllocationSite.extentStatusSites + AllocationSite.inodeCacheSites + AllocationSite.journalSites + AllocationSite.filesystemSites
    }

    /// Reads a metadata block through the cache, after checking it lies inside the filesystem.
    func metadataBlock(_ block: UInt64, for structure: Structure, inode: UInt32? = nil) throws -> [UInt8] {
        guard block >= UInt64(superblock.firstDataBlock), block < superblock.blocksCount else {
            throw CorruptionError(structure, inode: inode, block: block, .outOfRange(field: "block number", value: block, limit: superblock.blocksCount))
        }
        return try cache.block(block)
    }

    /// Part of a metadata block through the cache (only that part is copied), range-checked like `metadataBlock`.
    func metadataBytes(_ block: UInt64, at offset: Int, count: Int, for structure: Structure, inode: UInt32? = nil) throws -> [UInt8] {
        guard block >= UInt64(superblock.firstDataBlock), block < superblock.blocksCount else {
            throw CorruptionError(structure, inode: inode, block: block, .outOfRange(field: "block number", value: block, limit: superblock.blocksCount))
        }
        return try cache.bytes(of: block, at: offset, count: count)
    }

    /// Group descriptor `group`, read through the cache and checksum-verified.
    public func groupDescriptor(_ group: UInt32) throws(HoldfastError) -> GroupDescriptor {
        try guarded { try descriptor(group) }
    }

    func descriptor(_ group: UInt32) throws -> GroupDescriptor {
        guard UInt64(group) < superblock.groupCount else {
            throw CorruptionError(.groupDescriptor, .outOfRange(field: "group", value: UInt64(group), limit: superblock.groupCount))
        }
        let (block, start) = geometry.descriptorLocation(group)
        let bytes = try metadataBytes(block, at: start, count: superblock.groupDescriptorSize, for: .groupDescriptor)
        return try GroupDescriptor(bytes, group: group, superblock: superblock)
    }

    /// Inode `number`, decoded and checksum-verified.
    public func inode(_ number: UInt32) throws(HoldfastError) -> Inode {
        try guarded { try readInode(number) }
    }

    /// Inode `number` from the inode cache, else from its table (and cached, memory permitting).
    func readInode(_ number: UInt32) throws -> Inode {
        guard number >= 1, number <= superblock.inodesCount else {
            throw CorruptionError(.inode, inode: number, .outOfRange(field: "inode number", value: UInt64(number), limit: UInt64(superblock.inodesCount)))
        }
        if let cached = inodeCache.lookup(number) { return cached }
        let load = inodeCache.beginLoad(number)
        do {
            let inode = try readInodeFromTable(number)
            if let load { inodeCache.finishLoad(number, load, inode) }
            return inode
        } catch {
            if let load { inodeCache.abandonLoad(number, load) }
            throw error
        }
    }

    /// Inode `number` (in range) decoded from its slot in the inode table.
    private func readInodeFromTable(_ number: UInt32) throws -> Inode {
        let table = try inodeTable(geometry.inodeSlot(number).group)
        let (block, offset) = geometry.inodeLocation(number, inodeTable: table.start)
        // A miss reads ahead through the used part of the table, up to 32 blocks (ext4's
        // inode_readahead_blks): a listing then costs one read per 32 blocks of inodes.
        if block < table.usedEnd, block < superblock.blocksCount, !cache.contains(block) {
            let count = min(Self.inodeReadaheadBlocks, table.usedEnd - block, superblock.blocksCount - block)
            if count > 1 { cache.readAhead(block, count: Int(count)) }
        }
        let bytes = try metadataBytes(block, at: offset, count: Int(superblock.inodeSize), for: .inode, inode: number)
        return try Inode(bytes, number: number, superblock: superblock)
    }

    static let inodeReadaheadBlocks: UInt64 = 32

    /// Where group `group`'s inode table lies, and the end of its used part (bg_itable_unused,
    /// where group checksums vouch for it).
    func inodeTable(_ group: UInt32) throws -> InodeTableSpan {
        if let last = lastInodeTable.withLock({ $0 }), last.group == group { return last }
        let gd = try descriptor(group)
        let perBlock = UInt64(superblock.blockSize / Int(superblock.inodeSize))
        let unused = superblock.hasGDTChecksums || superblock.hasMetadataChecksums ? min(gd.inodeTableUnused, superblock.inodesPerGroup) : 0
        let used = UInt64(superblock.inodesPerGroup - unused)
        let span = InodeTableSpan(group: group, start: gd.inodeTable, usedEnd: gd.inodeTable + (used + perBlock - 1) / perBlock)
        lastInodeTable.withLock { $0 = span }
        return span
    }

    /// Inode `number` as an entry of `directory` names it: a freed inode there is corruption.
    public func inode(_ number: UInt32, linkedFrom directory: UInt32) throws(HoldfastError) -> Inode {
        try guarded { try linkedInode(number, from: directory) }
    }

    /// Reads an inode that a directory entry names; a freed inode there is corruption.
    func linkedInode(_ number: UInt32, from directory: UInt32) throws -> Inode {
        let inode = try readInode(number)
        if inode.linksCount == 0 || inode.mode == 0 {
            throw CorruptionError(.directoryBlock, inode: directory, .impossible("entry refers to deleted inode \(number)"))
        }
        return inode
    }
}

/// A group's inode table: its first block and the end of its used part.
struct InodeTableSpan: Sendable {
    let group: UInt32
    let start: UInt64
    let usedEnd: UInt64
}
