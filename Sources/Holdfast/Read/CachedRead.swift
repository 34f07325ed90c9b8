#if canImport(Glibc)
import Glibc
#endif
import HoldfastCache
import HoldfastFormat
import HoldfastMemory

/// Reads at an offset go through the page cache, with readahead for sequential readers.
/// (Whole-file streaming, `streamData` and `copyData`, reads around the cache into one bounded
/// buffer, looking only at pages already cached: a file read once would only push out others.)
extension Filesystem {
    /// The largest readahead window in blocks: 1 MiB, or a sixteenth of the budget when that is less.
    var readaheadBlocks: UInt64 { UInt64(max(1, min(1 << 20, budget.limit / 16) / blockSize)) }

    /// Fills `out` with bytes [offset, offset + out.count) of `given`, which the caller has
    /// clipped to i_size. Short of memory a read first reads ahead less, then reads around the
    /// cache: it never fails for want of pages.
    /// `caching: false` takes no pages: what is not cached is read around the cache.
    func readCached(_ given: Inode, offset: UInt64, into out: UnsafeMutableRawBufferPointer, caching: Bool = true) throws {
        guard pageCache != nil, !given.hasInlineData, out.count > 0 else {
            return try readStreamed(given, offset: offset, into: out)
        }
        // A large read goes in pieces of at most a sixteenth of the budget (1 MiB at most), so the
        // pages it takes at once never crowd out the metadata its mapping needs.
        let piece = UInt64(max(1, min(1 << 20, budget.limit / 16) / blockSize) * blockSize)
        var at: UInt64 = 0
        while at < UInt64(out.count) {
            // Piece ends fall on block boundaries of the file, so the next piece reads on sequentially.
            let stop = min(UInt64(out.count), (offset + at) / UInt64(blockSize) * UInt64(blockSize) + piece - offset)
            try readCachedPiece(given, offset: offset + at, into: UnsafeMutableRawBufferPointer(rebasing: out[Int(at)..<Int(stop)]),
                                caching: caching)
            at = stop
        }
    }

    private func readCachedPiece(_ given: Inode, offset: UInt64, into out: UnsafeMutableRawBufferPointer, caching: Bool) throws {
        guard let cache = pageCache else { return }
        let bs = UInt64(blockSize)
        let number = given.number
        let first = offset / bs, end = (offset + UInt64(out.count) + bs - 1) / bs
        var plan: (fillEnd: UInt64, missingDemand: Int, missingAhead: Int) = (end, 0, 0)
        if caching {
            let p = cache.readPlan(number, first: first, end: end, limit: (given.size + bs - 1) / bs, maxWindow: readaheadBlocks)
            plan = (p.fillEnd, p.missingDemand, p.missingAhead)
        }
        // Nothing is pinned while the read maps blocks (which may need memory, and reclaim may take
        // this file's clean pages): a writeback or drop meanwhile makes it start over instead.
        var spare: [Page] = []
        defer { for p in spare { budget.freePage(p, for: .pageCacheRead) } }
        var cut = false
        for n in 0..<(plan.missingDemand + plan.missingAhead) {
            guard let page = budget.allocatePage(at: n < plan.missingDemand ? .pageCacheRead : .readahead) else {
                cut = n >= plan.missingDemand || plan.missingAhead > 0
                break
            }
            spare.append(page)
        }
        cache.beginRead(number, pinning: false)
        defer { cache.endRead(number, pinning: false) }
        var backoff = Backoff.racingRead
        for _ in 0..<16 {
            // Changes keep coming in between: give them a moment to pass.
            backoff.pause()
            let epoch = cache.epoch(number)
            // The mapping read afresh after the epoch: a block mapped now is the file's at `epoch`.
            let inode = try currentInode(given)
            let fillEnd = max(end, min(plan.fillEnd, (inode.size + bs - 1) / bs))
            let runs: [(logical: UInt64, length: UInt64, physical: UInt64)]
            do {
                runs = try mappedData(inode, from: first, to: fillEnd)
            } catch let e as CorruptionError {
                // A tree block freed and reused while the walk read it reads as garbage: start over.
                guard cache.epoch(number) != epoch else { throw e }
                cache.countRestart(fellBack: false)
                continue
            }
            let slots = cache.beginFill(number, runs: runs, spare: &spare)
            do {
                try fill(slots, of: cache)
            } catch {
                cache.abandonRead(number, slots)
                throw error
            }
            // nil: a truncate or punch came in between (its blocks may be another file's now), or a
            // page became clean and may have gone after the mapping said "hole".
            guard let copied = cache.finishRead(number, slots, epoch: epoch, offset: offset, into: out) else {
                cache.countRestart(fellBack: false)
                continue
            }
            let uncached = try readAround(runs, copied: copied, first: first, offset: offset, into: out)
            // Blocks read around the cache were read after the check: a drop meanwhile may have
            // given them to another file, so they count only if still nothing moved.
            if uncached > 0 && cache.epoch(number) != epoch {
                cache.countRestart(fellBack: false)
                continue
            }
            if caching && (uncached > 0 || cut) { cache.countShortRead(uncachedBlocks: uncached, readaheadCut: cut) }
            return
        }
        // Changes kept racing this read: read as a stream does.
        cache.countRestart(fellBack: true)
        try readStreamed(given, offset: offset, into: out)
    }

    /// The written blocks of [from, to) as (logical, length, device block) runs: from the
    /// extent-status cache, or from the extent tree, whose extents the cache then learns.
    func mappedData(_ inode: Inode, from: UInt64, to: UInt64) throws -> [(logical: UInt64, length: UInt64, physical: UInt64)] {
        let number = inode.number
        var extents = extentStatus.lookup(number, from: from, to: to)
        if extents == nil {
            let token = extentStatus.beginWalk(number)
            var found: [ExtentStatusCache.Extent] = []
            var at = from
            do {
                // The tree as it is now that the walk is registered: an inode read before could
                // hold a tree an invalidation came too early to stop this walk from caching.
                let current = try currentInode(inode)
                try forEachRun(current, from: from) { run in
                    guard run.logical < to else { return false }
                    // Whole extents, also past `to`: the next reads in them then walk no tree.
                    if run.logical > at { found.append(.init(logical: at, length: run.logical - at, status: .hole)) }
                    let start = max(run.logical, at)
                    found.append(.init(logical: start, length: run.logical + run.length - start, physical: run.physical! + (start - run.logical),
                                       status: run.unwritten ? .unwritten : .written))
                    at = run.logical + run.length
                    return at < to
                }
            } catch {
                extentStatus.endWalk(number)
                throw error
            }
            if at < to { found.append(.init(logical: at, length: to - at, status: .hole)) }
            extentStatus.insertWalk(number, token: token, found)
            extents = found
        }
        return extents!.compactMap { e in
            guard e.status == .written else { return nil }
            let start = max(e.logical, from), stop = min(e.end, to)
            return stop > start ? (start, stop - start, e.physical + (start - e.logical)) : nil
        }
    }

    /// The inode as it is now; never an older copy, whose tree may name freed blocks.
    func currentInode(_ given: Inode) throws -> Inode {
        let fresh = try readInode(given.number)
        // The same file: a number freed and given to a new file has a new generation.
        guard fresh.mode != 0, fresh.fileType == given.fileType, fresh.generation == given.generation else {
            throw HoldfastError.notFound(.inode(given.number))  // freed, or reused, while it was read
        }
        return fresh
    }

    /// Reads the placeholders from the device, one vectored read per physically contiguous stretch.
    private func fill(_ slots: [PageCache.ReadSlot], of pages: PageCache) throws {
        var start = 0
        while start < slots.count {
            var stop = start + 1
            while stop < slots.count, slots[stop].index == slots[stop - 1].index + 1,
                  slots[stop].physical == slots[stop - 1].physical + 1 { stop += 1 }
            try pages.withBytes(of: slots[start..<stop]) { buffers in try cache.read(blocks: slots[start].physical, scattering: buffers) }
            start = stop
        }
    }

    /// The blocks of [first, …) the cache did not supply: zeros for holes and unwritten extents,
    /// the device for mapped ones. Returns how many it read from the device.
    private func readAround(_ runs: [(logical: UInt64, length: UInt64, physical: UInt64)], copied: [Bool],
                            first: UInt64, offset: UInt64, into out: UnsafeMutableRawBufferPointer) throws -> Int {
        let bs = UInt64(blockSize)
        let outEnd = offset + UInt64(out.count)
        /// The part of `out` that holds bytes [from, to) of the file.
        func slice(_ from: UInt64, _ to: UInt64) -> UnsafeMutableRawBufferPointer {
            UnsafeMutableRawBufferPointer(rebasing: out[Int(from - offset)..<Int(to - offset)])
        }
        for (k, done) in copied.enumerated() where !done {
            let i = first + UInt64(k)
            slice(max(offset, i * bs), min(outEnd, (i + 1) * bs)).initializeMemory(as: UInt8.self, repeating: 0)
        }
        var fromDevice = 0
        var edge: [UInt8] = []
        for run in runs {
            var i = run.logical
            while i < run.logical + run.length, i < first + UInt64(copied.count) {
                guard !copied[Int(i - first)] else { i += 1; continue }
                // A stretch of uncopied blocks, read in one call where whole blocks fit in `out`.
                var j = i + 1
                while j < run.logical + run.length, j < first + UInt64(copied.count), !copied[Int(j - first)] { j += 1 }
                let from = max(offset, i * bs), to = min(outEnd, j * bs)
                let physical = run.physical + (i - run.logical)
                if from == i * bs && to == j * bs {
                    try cache.read(blocks: physical, into: slice(from, to))
                } else {
                    // An edge block only partly wanted: through a block of its own.
                    for b in i..<j {
                        if edge.isEmpty { edge = [UInt8](repeating: 0, count: blockSize) }
                        try edge.withUnsafeMutableBytes { try cache.read(blocks: physical + (b - i), into: $0) }
                        let lo = max(offset, b * bs), hi = min(outEnd, (b + 1) * bs)
                        edge.withUnsafeBytes { slice(lo, hi).copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(lo - b * bs)..<Int(hi - b * bs)])) }
                    }
                }
                fromDevice += Int(j - i)
                i = j
            }
        }
        return fromDevice
    }

    /// The streaming path (bounded buffer, pages overlaid) for what the cache does not hold.
    private func readStreamed(_ inode: Inode, offset: UInt64, into out: UnsafeMutableRawBufferPointer) throws {
        out.initializeMemory(as: UInt8.self, repeating: 0)
        try stream(inode, from: offset, to: offset + UInt64(out.count), chunk: Self.readChunk) { piece in
            if case .data(let at, let bytes) = piece {
                UnsafeMutableRawBufferPointer(rebasing: out[Int(at - offset)..<(Int(at - offset) + bytes.count)]).copyMemory(from: bytes)
            }
        }
    }
}
