#if canImport(Glibc)
import Glibc
#endif
import HoldfastDevice
import HoldfastMemory

/// Writeback: the flusher thread, synchronous writeback for fsync and commit, the dirty throttle,
/// and per-file write errors with errseq semantics.
extension PageCache {
    /// Pages on consecutive device blocks, taken for one write.
    struct Run {
        let inode: UInt32
        let indices: [UInt64]
        let pages: [Page]
        let physical: UInt64
    }

    /// Longest run, in pages (1 MiB of 4 KiB blocks).
    var maxRunPages: Int { max(1, (1 << 20) / blockSize) }
    /// Bytes charged at `.writebackVector` per page of a run.
    static let vectorBytesPerPage = 32

    /// Under the lock: marks up to `limit` of the file's dirty, unheld pages as in writeback and
    /// groups them in runs of consecutive device blocks.
    func takeRuns(_ inode: UInt32, _ file: FileState, limit: Int) -> [Run] {
        // Delayed pages wait for their blocks (`mapDelayed` first).
        var picked = Array(file.dirtyIndices.filter { !file.pages[$0]!.held && !file.pages[$0]!.writeback && file.pages[$0]!.physical != nil })
        guard !picked.isEmpty else { return [] }
        picked.sort()
        if picked.count > limit { picked.removeLast(picked.count - limit) }
        var runs: [Run] = []
        var indices: [UInt64] = [], pages: [Page] = []
        var start: UInt64 = 0, next: UInt64 = 0
        func close() {
            if !indices.isEmpty { runs.append(Run(inode: inode, indices: indices, pages: pages, physical: start)) }
            indices = []; pages = []
        }
        for i in picked {
            let p = file.pages[i]!
            let physical = p.physical!
            if indices.isEmpty || physical != next || indices.count >= maxRunPages {
                close()
                start = physical
            }
            indices.append(i)
            pages.append(p.page)
            next = physical + 1
            clearDirty(inode, file, i)
            file.pages[i]!.writeback = true
        }
        close()
        file.writeback += picked.count
        writebackPages += picked.count
        return runs
    }

    /// Writes one run taken by `takeRuns`. Its page list is charged at `.writebackVector`; if that
    /// fails and `mayBackOff`, the run goes back to dirty for a later pass (false is returned),
    /// else it takes the writeback reserve, and with the reserve in use it is written page by
    /// page, which needs no memory at all. A device error leaves the pages dirty and is recorded
    /// against the file.
    func write(_ run: Run, mayBackOff: Bool) -> Bool {
        let vectorBytes = run.pages.count * Self.vectorBytesPerPage
        var gathered = budget.charge(vectorBytes, at: .writebackVector)
        if !gathered && mayBackOff {
            finish(run, error: nil, backedOff: true)
            return false
        }
        let pool = gathered ? nil : writebackPool.withLock { $0 }
        let reserved = pool?.allocate()
        defer { if let reserved { pool?.free(reserved) } }
        if !gathered {
            monitor.withLock { if reserved != nil { counters.poolRuns += 1 } else { counters.reserveRuns += 1 } }
        }
        let vectored = gathered || reserved != nil
        budget.writebackStarted()
        var failure: DeviceError?
        let bs = UInt64(blockSize)
        do throws(DeviceError) {
            if vectored && run.pages.count > 1 {
                try device.write(gathering: run.pages.map { UnsafeRawBufferPointer(budget.bytes($0)) }, at: run.physical * bs)
            } else {
                for (k, page) in run.pages.enumerated() {
                    try device.write(UnsafeRawBufferPointer(budget.bytes(page)), at: (run.physical + UInt64(k)) * bs)
                }
            }
        } catch {
            failure = error
        }
        if gathered { budget.uncharge(vectorBytes, for: .writebackVector); gathered = false }
        finish(run, error: failure, backedOff: false)
        budget.writebackFinished()
        if let failure { onWriteError(failure) }
        return true
    }

    /// The delayed pages of `inode` could not get blocks, for `error`: their write failed before it
    /// began. Reported as a failed writeback is (every fsync hears of it, the errors policy
    /// applies); the pages stay dirty and delayed, and the flusher leaves the file alone a while.
    package func recordMappingFailure(_ inode: UInt32, _ error: DeviceError) {
        monitor.withLock {
            counters.writeErrors += 1
            allErrors += 1
            lastError = error
            guard let file = files[inode] else { return }
            file.errors += 1
            file.lastError = error
            file.errorSeen = false
            file.retryAfter = MonotonicClock.nanoseconds + 200_000_000
        }
        onWriteError(error)
    }

    /// A run's write is over: clean on success, dirty again otherwise.
    private func finish(_ run: Run, error: DeviceError?, backedOff: Bool) {
        monitor.withLock {
            defer { monitor.broadcast() }
            guard let file = files[run.inode] else { return }
            let now = MonotonicClock.nanoseconds
            for i in run.indices {
                guard file.pages[i] != nil else { continue }
                file.pages[i]!.writeback = false
                if error == nil && !backedOff {
                    if !file.pages[i]!.queued {
                        file.pages[i]!.queued = true
                        cleanQueue.append((run.inode, i))
                    }
                } else {
                    setDirty(run.inode, file, i, now: now)
                }
            }
            file.writeback -= run.indices.count
            writebackPages -= run.indices.count
            if backedOff {
                counters.writebackRetries += 1
            } else if let error {
                counters.writeErrors += 1
                file.errors += 1
                file.lastError = error
                file.errorSeen = false
                file.retryAfter = now + 200_000_000
                allErrors += 1
                lastError = error
            } else {
                counters.pagesWritten += run.indices.count
            }
        }
    }

    /// Writes the dirty pages of `inode` (every file when nil) on this thread, after waiting for
    /// writes already in flight; fsync, sync and the commit use it. Each page is tried once per
    /// call; memory never stops it. True when those files have no dirty page left.
    @discardableResult
    public func writeBack(_ inode: UInt32?) -> Bool {
        let runs: [Run] = monitor.withLock {
            if let inode {
                guard let file = files[inode] else { return [] }
                while file.writeback > 0 { monitor.wait(timeoutNanoseconds: 10_000_000) }
                return takeRuns(inode, file, limit: .max)
            }
            while writebackPages > 0 { monitor.wait(timeoutNanoseconds: 10_000_000) }
            return dirtyInodes.keys.sorted().flatMap { takeRuns($0, files[$0]!, limit: .max) }
        }
        for run in runs { _ = write(run, mayBackOff: false) }
        return monitor.withLock {
            if let inode { return (files[inode]?.dirty ?? 0) == 0 }
            return dirtyPages == 0
        }
    }

    /// Gives delayed pages their blocks (through the filesystem's mapper) and writes everything
    /// dirty, on this thread. Never call it holding the filesystem's write lock: the mapper takes it.
    public func flushAll() {
        let (mapper, waiting) = monitor.withLock { (delayedMapper, files.filter { $0.value.delayed > 0 }.map(\.key)) }
        if let mapper { for inode in waiting { _ = mapper.mapDelayedBlocks(of: inode) } }
        writeBack(nil)
    }

    /// Files that still have dirty pages (close names them when it cannot write them).
    public var dirtyFiles: [UInt32] {
        monitor.withLock { Set(dirtyInodes.keys).union(files.filter { $0.value.writeback > 0 }.map(\.key)).sorted() }
    }

    // MARK: The dirty throttle

    /// Called by a writer before it takes pages: while dirty and writeback pages pass the dirty
    /// limit it waits for the flusher, so memory never fills with dirty data. Throws the device's
    /// error only when writeback has failed and made no progress for `stuckNanoseconds`: the
    /// data cannot be written, and waiting longer would wait forever.
    public func throttle(stuckNanoseconds: UInt64 = 5_000_000_000) throws(DeviceError) {
        let failure: DeviceError? = monitor.withLock {
            guard dirtyPages + writebackPages >= dirtyLimit else { return nil }
            counters.throttledWriters += 1
            let errorsBefore = allErrors
            var progress = counters.pagesWritten
            var since = MonotonicClock.nanoseconds
            while dirtyPages + writebackPages >= dirtyLimit {
                guard flusherRunning else { return nil }
                flusherKick = true
                monitor.broadcast()
                monitor.wait(timeoutNanoseconds: 50_000_000)
                let now = MonotonicClock.nanoseconds
                if counters.pagesWritten != progress {
                    progress = counters.pagesWritten
                    since = now
                } else if allErrors != errorsBefore, let e = lastError, now - since >= stuckNanoseconds {
                    // Only an error of this wait: writeback is failing now, not hours ago.
                    return e
                }
            }
            return nil
        }
        if let failure { throw failure }
        // Without a flusher the writer does the writeback itself.
        let over = monitor.withLock { !flusherRunning && dirtyPages >= dirtyLimit }
        if over { flushAll() }
    }

    // MARK: Errors (errseq)

    /// The error cursor a new file description starts from: an error nobody was told of yet is
    /// still reported to it.
    public func errorCursor(_ inode: UInt32) -> UInt64 {
        monitor.withLock {
            guard let file = files[inode] else { return 0 }
            return file.errorSeen ? file.errors : file.errors - 1
        }
    }

    /// The write error `inode` had since `cursor`, if any, and moves the cursor past it: each
    /// description hears of each error once.
    public func checkError(_ inode: UInt32, cursor: inout UInt64) -> DeviceError? {
        monitor.withLock {
            guard let file = files[inode], file.errors > cursor else { return nil }
            cursor = file.errors
            file.errorSeen = true
            return file.lastError
        }
    }

    /// `checkError` with the file's own cursor, for callers without a description.
    public func checkError(_ inode: UInt32) -> DeviceError? {
        monitor.withLock {
            guard let file = files[inode], file.errors > file.anonymousSeen else { return nil }
            file.anonymousSeen = file.errors
            file.errorSeen = true
            return file.lastError
        }
    }

    /// A write error of any file since the last call (sync).
    public func checkAnyError() -> DeviceError? {
        monitor.withLock {
            guard allErrors > allErrorsSeen else { return nil }
            allErrorsSeen = allErrors
            return lastError
        }
    }

    // MARK: The flusher thread

    /// Starts the background flusher: it writes old dirty data, and under pressure the oldest files first.
    public func startFlusher() {
        monitor.withLock {
            guard !flusherRunning else { return }
            flusherRunning = true
            flusherStopping = false
        }
        final class Box: @unchecked Sendable { let cache: PageCache; init(_ c: PageCache) { cache = c } }
        let box = Unmanaged.passRetained(Box(self)).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { raw in
            let cache = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().cache
            cache.flusherMain()
            return nil
        }, box)
        if created != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            monitor.withLock { flusherRunning = false }
            return
        }
        monitor.withLock { flusherThread = thread }
    }

    /// Stops the flusher and waits for it; dirty pages stay (write them with `writeBack`).
    public func stopFlusher() {
        let thread: pthread_t? = monitor.withLock {
            guard flusherRunning else { return nil }
            flusherStopping = true
            monitor.broadcast()
            return flusherThread
        }
        guard let thread else { return }
        pthread_join(thread, nil)
        monitor.withLock {
            flusherRunning = false
            flusherThread = nil
            monitor.broadcast()
        }
    }

    /// Pages one flusher pass writes before it looks again at what is oldest.
    private var passPages: Int { max(maxRunPages, backgroundLimit / 2) }

    private func flusherMain() {
        var backoff = Backoff.flusher
        while true {
            // Delayed pages get their blocks first, with no run of ours in flight (the mapper takes
            // the filesystem's write lock, whose holders may wait for our writes).
            let (mapper, waiting): ((any DelayedBlockMapper)?, [UInt32]) = monitor.withLock {
                guard !flusherStopping, delayedPages > 0, dirtyPages >= backgroundLimit || flusherKick
                        || dirtyInodes.values.contains(where: { MonotonicClock.nanoseconds - $0 >= expireNanoseconds }) else { return (nil, []) }
                return (delayedMapper, files.filter { $0.value.delayed > 0 && $0.value.retryAfter <= MonotonicClock.nanoseconds }.map(\.key))
            }
            if let mapper {
                var short = false
                for inode in waiting where !mapper.mapDelayedBlocks(of: inode) {
                    short = true
                    // Whatever the reason, this file waits a while before the next try.
                    monitor.withLock { files[inode]?.retryAfter = MonotonicClock.nanoseconds + 200_000_000 }
                }
                if short {
                    monitor.withLock { counters.writebackRetries += 1 }
                    let pause = backoff.next()
                    monitor.withLock { _ = monitor.wait(timeoutNanoseconds: Int(pause)) }
                }
            }
            let runs: [Run]? = monitor.withLock {
                while true {
                    if flusherStopping { return nil }
                    let now = MonotonicClock.nanoseconds
                    let pressure = dirtyPages >= backgroundLimit || flusherKick
                    let eligible = dirtyInodes.filter { files[$0.key]!.retryAfter <= now }.map { ($0.key, files[$0.key]!) }
                    let expired = eligible.contains { now - $0.1.dirtySince >= expireNanoseconds }
                    if (pressure || expired) && !eligible.isEmpty {
                        flusherKick = false
                        counters.flusherPasses += 1
                        var taken: [Run] = []
                        var budgetLeft = passPages
                        for (number, file) in eligible.sorted(by: { $0.1.dirtySince < $1.1.dirtySince }) where budgetLeft > 0 {
                            let r = takeRuns(number, file, limit: budgetLeft)
                            budgetLeft -= r.reduce(0) { $0 + $1.indices.count }
                            taken += r
                        }
                        if !taken.isEmpty { return taken }
                        // Only delayed pages: back to the top, where they get their blocks.
                        if delayedMapper != nil && files.contains(where: { $0.value.delayed > 0 && $0.value.retryAfter <= now }) { return [] }
                    }
                    flusherKick = false
                    monitor.wait(timeoutNanoseconds: eligible.isEmpty && dirtyPages > 0 ? 50_000_000 : 200_000_000)
                }
            }
            guard let runs else { return }
            if runs.isEmpty {
                monitor.withLock { _ = monitor.wait(timeoutNanoseconds: 1_000_000) }
                continue
            }
            var shortOfMemory = false
            for run in runs {
                // After repeated shortages the run goes page by page: the flusher always progresses.
                if !write(run, mayBackOff: backoff.attempts < 8) { shortOfMemory = true }
            }
            if shortOfMemory {
                let pause = backoff.next()
                monitor.withLock { _ = monitor.wait(timeoutNanoseconds: Int(pause)) }
            } else {
                backoff.reset()
            }
        }
    }
}
