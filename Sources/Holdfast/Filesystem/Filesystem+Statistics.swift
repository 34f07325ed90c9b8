import HoldfastCache
import HoldfastMemory
import HoldfastJournal

/// What the engine did with its memory: the lines `holdfast --stats` prints, one per allocation
/// site that was hit, then the budget, its categories, reclaim, each cache and the fault plan.
/// A front end reads them here and needs no cache type (docs/cli.md explains every field).
public struct Statistics: Sendable, CustomStringConvertible {
    /// `site NAME policy= category= hits= failed= retries= waits=`, for every site the run touched.
    public var sites: [String]
    /// The budget's used, peak and limit; each category's; reclaim passes, long waits, stalls.
    public var budget: [String]
    /// One line each for the page cache, the extent-status cache and the inode cache.
    public var caches: [String]
    /// The fault plan and how many faults it fired, when one was given.
    public var faults: String?

    public var lines: [String] { sites + budget + caches + (faults.map { [$0] } ?? []) }
    public var description: String { lines.joined(separator: "\n") }

    init(budget b: MemoryBudget, caches: [String]) {
        sites = b.hitSites.map(\.line)
        var lines = ["budget used=\(b.used) peak=\(b.peak) limit=\(b.limit)"]
        for c in MemoryCategory.allCases where b.peak(c) > 0 {
            lines.append("category \(c) used=\(b.used(c)) peak=\(b.peak(c))")
        }
        lines.append("reclaim passes=\(b.reclaimPasses) freed=\(b.reclaimedBytes) long-waits=\(b.longWaits) stalls=\(b.stalls)")
        budget = lines
        self.caches = caches
        faults = b.faultPlan.map { "inject plan=\($0) fired=\(b.faultsFired)" }
    }
}

extension Filesystem {
    /// The memory report as of now.
    public var statistics: Statistics { StatisticsReport.Sources(self).statistics }

    /// What the journal did since the open: nil for a read-only open or an image without one.
    public var journalStatistics: JournalStatistics? { journalCounters?.statistics }
}

/// Keeps what `--stats` reports on for as long as a front end needs it: the budget from the
/// moment it exists (an open that fails still has a report), and the caches' counters after the
/// filesystem has gone (the report is printed after close). Holds the budget and the cache
/// objects (and so, through the page cache, the device), not the filesystem.
public final class StatisticsReport: Sendable {
    struct Sources: Sendable {
        let budget: MemoryBudget
        let pageCache: PageCache?
        let extentStatus: ExtentStatusCache?
        let inodeCache: InodeCache?
        var journal: JournalCounters? = nil
        var writeLock: WriteLockCounters? = nil
        var splicedReads: SplicedReads? = nil

        init(_ fs: Filesystem) {
            budget = fs.budget
            pageCache = fs.pageCache
            extentStatus = fs.extentStatus
            inodeCache = fs.inodeCache
            journal = fs.journalCounters
            writeLock = fs.writer == nil ? nil : fs.writeLockCounters
            splicedReads = fs.splicedReads
        }

        init(budget: MemoryBudget) {
            self.budget = budget
            pageCache = nil
            extentStatus = nil
            inodeCache = nil
        }

        var statistics: Statistics {
            var caches: [String] = []
            if let pageCache { caches.append(pageCache.statistics.line) }
            if let extentStatus { caches.append(extentStatus.statistics.line) }
            if let inodeCache { caches.append(inodeCache.statistics.line) }
            if let journal { caches.append(journal.statistics.line) }
            if let writeLock { caches.append(writeLock.line) }
            if let splicedReads { caches.append(splicedReads.line) }
            return Statistics(budget: budget, caches: caches)
        }
    }

    private let sources = Locked<Sources?>(nil)

    public init() {}

    /// Reports on `budget` alone (give this to `OpenOptions.onBudget`).
    public func watch(_ budget: MemoryBudget) { sources.withLock { $0 = Sources(budget: budget) } }

    /// Reports on the filesystem's budget and caches.
    public func watch(_ fs: Filesystem) { sources.withLock { $0 = Sources(fs) } }

    /// The report, or nothing when no budget was ever made.
    public var statistics: Statistics? { sources.withLock { $0 }?.statistics }
}

/// Free space and inodes (statfs).
public struct SpaceUsage: Sendable, Equatable {
    public var blockSize: Int
    public var blocks: UInt64
    public var freeBlocks: UInt64
    public var availableBlocks: UInt64
    public var inodes: UInt64
    public var freeInodes: UInt64
    public var maxNameLength: Int
}

extension Filesystem {
    /// statfs, uncommitted changes included. A writable filesystem keeps the free counts exact as
    /// operations end (one look under the write lock, however many groups); a read-only one sums
    /// the group descriptors.
    public func spaceUsage() throws(HoldfastError) -> SpaceUsage {
        try guarded {
            var freeBlocks: UInt64 = 0, freeInodes: UInt64 = 0
            if let writer {
                (freeBlocks, freeInodes) = writer.withLock { state in
                    // Blocks promised to delayed pages are as good as used.
                    let space = state.space
                    return (space.freeBlocks - min(space.freeBlocks, space.reservedBlocks), space.freeInodes)
                }
            } else {
                for g in 0..<UInt32(superblock.groupCount) {
                    let gd = try descriptor(g)
                    freeBlocks += UInt64(gd.freeBlocksCount)
                    freeInodes += UInt64(gd.freeInodesCount)
                }
                // bigalloc (read-only): the descriptors count free clusters.
                freeBlocks *= geometry.blocksPerCluster
            }
            // As the kernel's ext4 reports it (`df`): the size leaves out the filesystem's own
            // structures, and what is available leaves out root's reserve and, with extents, the
            // kernel's pool for metadata (2% of the blocks, at most 4096).
            let cluster = geometry.blocksPerCluster
            let pool = superblock.featureIncompat.contains(.extents) ? min(superblock.blocksCount / cluster / 50, 4096) * cluster : 0
            let reserved = superblock.reservedBlocksCount + pool
            return SpaceUsage(
                blockSize: blockSize, blocks: superblock.blocksCount - min(overheadBlocks, superblock.blocksCount), freeBlocks: freeBlocks,
                availableBlocks: freeBlocks > reserved ? freeBlocks - reserved : 0,
                inodes: UInt64(superblock.inodesCount), freeInodes: freeInodes, maxNameLength: 255)
        }
    }
}
