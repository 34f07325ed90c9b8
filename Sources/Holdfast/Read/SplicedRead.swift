import HoldfastCache
import HoldfastDevice
import HoldfastMemory

/// Reads whose bytes go from the image file to their destination (a FUSE reply, by splice(2))
/// without passing through this process.
///
/// The read path's other reads copy first and check afterwards that nothing remapped the file
/// meanwhile, starting over when something did. Bytes handed on cannot be taken back, so a
/// spliced read checks before, and holds `SplicedReads` while the bytes move: the blocks it maps
/// stay the file's, because blocks freed since the last commit go back to the allocator only
/// once no spliced read is under way (`Filesystem.releaseFreed`).
public struct ReadPlan: Sendable {
    public enum Piece: Sendable, Equatable {
        /// `count` bytes of the image file from byte `offset`.
        case image(offset: UInt64, count: Int)
        /// `count` bytes of zeros (a hole, an unwritten extent, or past the last written block).
        case zeros(count: Int)
    }

    /// The open image file the `.image` pieces are in.
    public let descriptor: Int32
    /// Back to back, the bytes asked for from the offset on, clipped to the file's size.
    public internal(set) var pieces: [Piece] = []
    /// Their bytes in all.
    public internal(set) var count = 0
}

/// The gate between spliced reads and the release of freed blocks (see `ReadPlan`). A release
/// waiting at the gate keeps new reads out, so a stream of reads cannot hold it off.
final class SplicedReads: @unchecked Sendable {
    private let lock = ConditionLock()
    private var readers = 0
    private var releaseWaiting = false
    private var reads = 0, bytes = 0

    /// Runs `body` as a read of `count` bytes: no freed block is released until it returns.
    /// Counts the read when `body` hands it on (returns non-nil).
    func reading<R>(count: Int, _ body: () throws -> R?) rethrows -> R? {
        lock.withLock {
            while releaseWaiting { lock.wait() }
            readers += 1
        }
        var handed = false
        defer {
            lock.withLock {
                readers -= 1
                if handed {
                    reads += 1
                    bytes += count
                }
                if readers == 0 { lock.broadcast() }
            }
        }
        let result = try body()
        handed = result != nil
        return result
    }

    /// `--stats`: the plans handed on, and their bytes.
    var line: String { lock.withLock { "spliced-reads reads=\(reads) bytes=\(bytes)" } }

    /// Runs `body`, which releases freed blocks, once no read is under way.
    func releasing(_ body: () -> Void) {
        lock.withLock {
            releaseWaiting = true
            while readers > 0 { lock.wait() }
        }
        body()
        lock.withLock {
            releaseWaiting = false
            lock.broadcast()
        }
    }
}

extension Filesystem {
    /// Hands bytes [offset, offset + count) of `given`, clipped to its size, to `body` as pieces
    /// of the image file and runs of zeros, when they can go that way: the file's bytes are in
    /// blocks (not inline), the image is a plain file read without journal redirects, and no page
    /// of the range is in the page cache (a cached page may be newer than its block).
    ///
    /// `body` runs while the blocks it is given cannot pass to another file; it must not take the
    /// write lock or allocate from the budget (a release of freed blocks, under the write lock,
    /// waits for it). It returns nil when it did not hand the bytes on after all. Returns
    /// `body`'s result, or nil when the read must go the usual way (`read(_:offset:into:)`):
    /// `body` declined, or was not called (among others for an empty range, or one of holes).
    public func readSpliced<R>(_ given: Inode, offset: UInt64, count want: Int,
                               _ body: (ReadPlan) -> R?) throws(HoldfastError) -> R? {
        guard let pageCache, cache.redirects.isEmpty, given.fileType == .regular, !given.hasInlineData else { return nil }
        let end = min(given.size, offset + UInt64(max(0, want)))
        guard offset < end else { return nil }
        let number = given.number
        let bs = UInt64(blockSize)
        let first = offset / bs, stop = (end + bs - 1) / bs
        let uncached = { pageCache.missing(number, first: first, count: stop - first) == Int(stop - first) }
        guard uncached() else { return nil }
        return try guarded { () throws -> R? in
            pageCache.beginRead(number, pinning: false)
            defer { pageCache.endRead(number, pinning: false) }
            let epoch = pageCache.epoch(number)
            // The mapping as it is after the epoch (as `readCached` reads it).
            let runs: [(logical: UInt64, length: UInt64, physical: UInt64)]
            do {
                runs = try mappedData(try currentInode(given), from: first, to: stop)
            } catch let e as CorruptionError {
                // A tree block freed and reused while the walk read it: the usual read starts over.
                guard pageCache.epoch(number) != epoch else { throw e }
                return nil
            }
            var plan: ReadPlan?
            var at = offset
            for run in runs {
                let from = max(at, run.logical * bs), to = min(end, (run.logical + run.length) * bs)
                guard to > from else { continue }
                let position = run.physical * bs + (from - run.logical * bs)
                guard let fd = try device.spliceSource(at: position, count: Int(to - from)) else { return nil }
                if plan == nil { plan = ReadPlan(descriptor: fd) }
                if from > at { plan!.pieces.append(.zeros(count: Int(from - at))) }
                plan!.pieces.append(.image(offset: position, count: Int(to - from)))
                at = to
            }
            // A range of holes has no file to splice from: the usual read answers it.
            guard var plan else { return nil }
            if end > at { plan.pieces.append(.zeros(count: Int(end - at))) }
            plan.count = Int(end - offset)
            return splicedReads.reading(count: plan.count) { () -> R? in
                // Nothing remapped the file since the mapping was read, and until `body` returns
                // no block it freed meanwhile goes to another file.
                guard pageCache.epoch(number) == epoch, uncached() else { return nil }
                return body(plan)
            }
        }
    }
}
