import HoldfastCache
import HoldfastFormat
import HoldfastMemory
import Logging

extension AllocationSite {
    static let writebackMap = AllocationSite("writeback.map", .mayFail, .writeback,
        "the list of a file's delayed pages while their blocks are allocated; without it they wait for a later pass")
}

/// Delayed allocation (ext4's delalloc): a write into a hole of an extent-mapped regular file
/// copies into pages that have no block yet and reserves the blocks, so "no space" is the write's
/// error. The blocks are allocated when the data is about to be written (flusher, commit, fsync,
/// fallocate), one contiguous run per stretch of pages, so a file written in small pieces, or
/// interleaved with others, still lands in a few extents.
extension Operation {
    /// Does a write into a hole of `rec` wait to allocate?
    func delaysAllocation(_ rec: InodeRecord) -> Bool {
        fs.delayedAllocation && rec.flags & Inode.flagExtents != 0 && FileType(mode: rec.mode) == .regular
    }

    /// Reserves `n` blocks for new delayed pages, or fails with no space now.
    func reserveDelayed(_ n: Int) throws {
        guard n > 0 else { return }
        let reserved = Int64(state.space.reservedBlocks) + allocation.reserved + Int64(n)
        let free = Int64(state.space.freeBlocks) + allocation.blocks
        guard free - reserved - Allocator.delayedMargin(reserved) >= 0 else {
            throw HoldfastError.noSpace("no free blocks for \(n) blocks of file data")
        }
        allocation.reserved += Int64(n)
    }

    /// Allocates blocks for every delayed page of `rec` and maps them, in runs as long as the
    /// allocator gives; the pages learn their blocks when the operation succeeds.
    func mapDelayed(_ rec: inout InodeRecord) throws {
        guard let cache = fs.pageCache, delaysAllocation(rec) else { return }
        let indices = cache.delayedIndices(rec.number)
        guard !indices.isEmpty else { return }
        let listBytes = indices.count * MemoryLayout<UInt64>.stride
        try fs.budget.chargeOrThrow(listBytes, at: .writebackMap)
        defer { fs.budget.uncharge(listBytes, for: .writebackMap) }
        allocation.mappingDelayed = true
        defer { allocation.mappingDelayed = false }
        var i = 0
        var goal: UInt64?
        while i < indices.count {
            var j = i + 1
            while j < indices.count && indices[j] == indices[j - 1] + 1 { j += 1 }
            var logical = indices[i]
            let end = indices[j - 1] + 1
            while logical < end {
                let want = min(end - logical, UInt64(ExtentNodeEncoding.maxLength(unwritten: false)))
                let g = try goal ?? dataGoal(rec, logical: logical)
                let (start, got) = try allocateBlocks(goal: g, count: Int(want))
                try mapNewRun(logical: logical, physical: start, count: got, into: &rec)
                pending.assigned.append((rec.number, logical, UInt64(got), start))
                allocation.reserved -= Int64(got)
                goal = start + UInt64(got)
                logical += UInt64(got)
            }
            i = j
        }
    }
}

/// How giving one file's delayed pages their blocks went.
enum DelayedMapping {
    case mapped
    /// Out of memory: rolled back, the pages stay delayed; a later pass tries again.
    case shortOfMemory
    /// No space but blocks freed since the last commit: rolled back, mapped after a commit.
    case waitsForCommit
    /// Any other failure (a device error, damage in the file's tree): rolled back and logged
    /// once per file. A device error is recorded as the file's write error, as a failed
    /// writeback is: fsync and close report it, and the errors policy applies.
    case failed
}

extension Filesystem: DelayedBlockMapper {
    /// Maps the delayed pages of every file (commit), each file in its own handle: one that cannot
    /// keeps its pages delayed and dirty for a later try. Under the write lock.
    func mapAllDelayed(_ state: WriteState, only files: Set<UInt32>? = nil) {
        guard let pageCache else { return }
        var waiting: [UInt32] = []
        for inode in pageCache.delayedInodes where files?.contains(inode) ?? true {
            keepWithinBound(state)
            // Short of memory, try again: writeback's shortage is never the user's error.
            var result = DelayedMapping.shortOfMemory
            for _ in 0..<8 where result == .shortOfMemory { result = mapDelayed(inode, state) }
            if result == .waitsForCommit { waiting.append(inode) }
        }
        guard !waiting.isEmpty else { return }
        // The only free blocks left were freed since the last commit: commit what is mapped
        // (its data first), then the rest gets its blocks.
        for n in state.orderedData.sorted() { pageCache.writeBack(n) }
        try? commitTransaction(state, flush: true)
        for inode in waiting {
            var result = DelayedMapping.shortOfMemory
            for _ in 0..<8 where result == .shortOfMemory || result == .waitsForCommit { result = mapDelayed(inode, state, last: true) }
        }
    }

    /// Maps the delayed pages of one file in a handle of its own.
    @discardableResult
    func mapDelayed(_ inode: UInt32, _ state: WriteState, last: Bool = false) -> DelayedMapping {
        do {
            try runOperation(state, credits: 64, pages: []) { ctx in
                var rec = try ctx.inode(inode)
                try ctx.mapDelayed(&rec)
                try ctx.store(rec)
            }
            writeFailures.mappingSucceeded(inode)
            state.orderedData.insert(inode)  // its new blocks must hold its data before the commit
            return .mapped
        } catch {
            let e = HoldfastError.wrap(error)
            if case .outOfMemory = e { return .shortOfMemory }
            if case .noSpace = e, !last, state.space.freedUncommittedBlocks > 0 { return .waitsForCommit }
            writeFailures.mappingFailed(inode, e, image: device.path)
            if case .io(let cause) = e { pageCache?.recordMappingFailure(inode, cause) }
            return .failed
        }
    }

    /// The flusher's way in (`DelayedBlockMapper`): takes the write lock (the flusher holds no
    /// writeback then).
    package func mapDelayedBlocks(of inode: UInt32) -> Bool {
        guard let writer else { return false }
        return writer.withLock { state in
            guard !state.closed else { return false }
            keepWithinBound(state)
            let mapped = mapDelayed(inode, state) == .mapped
            if state.transaction.dirtyBlocks > 0 { commitTimer.arm(startedAt: state.transaction.startedAt) }
            return mapped
        }
    }

    /// Mapping a file's delayed pages takes up to a handle's 64 blocks: a transaction that would
    /// pass the journal's bound is committed first (the data it needs written before it), as
    /// `mutate` does for an operation.
    func keepWithinBound(_ state: WriteState) {
        let transaction = state.transaction
        guard transaction.journal != nil, transaction.dirtyBlocks > 0, transaction.dirtyBlocks + 64 > transaction.bound else { return }
        for n in state.orderedData.sorted() { pageCache?.writeBack(n) }
        try? commitTransaction(state, flush: true)
    }
}
