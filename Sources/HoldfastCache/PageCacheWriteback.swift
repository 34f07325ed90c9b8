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

    /// Marks up to `limit` of the file's dirty, unheld pages (with the state's lock held) as in
    /// writeback and groups them in runs of consecutive device blocks.
    func takeRuns(_ s: inout PageCacheState, _ inode: UInt32, _ file: PageCacheState.FileState, limit: Int) -> [Run] {
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
            s.clearDirty(inode, file, i)
            file.pages[i]!.writeback = true
        }
        close()
        file.writeback += picked.count
        s.writebackPages += picked.count
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
            state.withLock { s in if reserved != nil { s.counters.poolRuns += 1 } else { s.counters.reserveRuns += 1 } }
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
        state.withLock { $0.recordError(inode, error, now: MonotonicClock.nanoseconds) }
        onWriteError(error)
    }

    /// A run's write is over: clean on success, dirty again otherwise.
    private func finish(_ run: Run, error: DeviceError?, backedOff: Bool) {
        state.withLock { s in
            guard let file = s.files[run.inode] else { return }
            let now = MonotonicClock.nanoseconds
            for i in run.indices {
                guard file.pages[i] != nil else { continue }
                file.pages[i]!.writeback = false
                if error == nil && !backedOff {
                    if !file.pages[i]!.queued {
                        file.pages[i]!.queued = true
                        s.cleanQueue.append((run.inode, i))
                    }
                } else {
                    s.setDirty(run.inode, file, i, now: now)
                }
            }
            file.writeback -= run.indices.count
            s.writebackPages -= run.indices.count
            if backedOff {
                s.counters.writebackRetries += 1
            } else if let error {
                s.recordError(run.inode, error, now: now)
            } else {
                s.counters.pagesWritten += run.indices.count
            }
        }
    }

    /// Writes the dirty pages of `inode` (every file when nil) on this thread, after waiting for
    /// writes already in flight; fsync, sync and the commit use it. Each page is tried once per
    /// call; memory never stops it. True when those files have no dirty page left.
    @discardableResult
    public func writeBack(_ inode: UInt32?) -> Bool {
        let runs: [Run]
        if let inode {
            runs = state.wait(until: { s in (s.files[inode]?.writeback ?? 0) == 0 }) { s in
                guard let file = s.files[inode] else { return [] }
                return takeRuns(&s, inode, file, limit: .max)
            }
        } else {
            runs = state.wait(until: { $0.writebackPages == 0 }) { s in
                s.dirtyInodes.keys.sorted().flatMap { takeRuns(&s, $0, s.files[$0]!, limit: .max) }
            }
        }
        for run in runs { _ = write(run, mayBackOff: false) }
        return state.withLock { s in
            if let inode { return (s.files[inode]?.dirty ?? 0) == 0 }
            return s.dirtyPages == 0
        }
    }

    /// Gives delayed pages their blocks (through the filesystem's mapper) and writes everything
    /// dirty, on this thread. Never call it holding the filesystem's write lock: the mapper takes it.
    public func flushAll() {
        let (mapper, waiting) = state.withLock { s in (s.delayedMapper, s.files.filter { $0.value.delayed > 0 }.map(\.key)) }
        if let mapper { for inode in waiting { _ = mapper.mapDelayedBlocks(of: inode) } }
        writeBack(nil)
    }

    /// Files that still have dirty pages (close names them when it cannot write them).
    public var dirtyFiles: [UInt32] {
        state.withLock { s in Set(s.dirtyInodes.keys).union(s.files.filter { $0.value.writeback > 0 }.map(\.key)).sorted() }
    }

    // MARK: The dirty throttle

    /// Called by a writer before it takes pages: while dirty and writeback pages pass the dirty
    /// limit it waits for the flusher, so memory never fills with dirty data. Throws the device's
    /// error only when writeback has failed and made no progress for `stuckNanoseconds`: the
    /// data cannot be written, and waiting longer would wait forever.
    public func throttle(stuckNanoseconds: UInt64 = 5_000_000_000) throws(DeviceError) {
        let limit = dirtyLimit
        let start: (errors: UInt64, written: Int)? = state.withLock { s in
            guard s.overDirtyLimit(limit) else { return nil }
            s.counters.throttledWriters += 1
            guard s.flusher.running else { return nil }
            s.flusher.kick = true
            return (s.allErrors, s.counters.pagesWritten)
        }
        if let start {
            enum Step { case done, progressed(Int), failed(DeviceError), stillStuck }
            var progress = start.written
            var since = MonotonicClock.nanoseconds
            waiting: while true {
                // Wake on room, on a page written, on the flusher stopping; once stuck for the
                // whole interval, on a write error of this wait too.
                let elapsed = MonotonicClock.nanoseconds - since
                let stuck = elapsed >= stuckNanoseconds
                let written = progress
                let step = state.wait(until: { s in
                    !s.overDirtyLimit(limit) || !s.flusher.running || s.counters.pagesWritten != written
                        || (stuck && s.allErrors != start.errors)
                }, timeoutNanoseconds: stuck ? nil : Int(stuckNanoseconds - elapsed)) { s, _ -> Step in
                    if !s.overDirtyLimit(limit) || !s.flusher.running { return .done }
                    if s.counters.pagesWritten != written { return .progressed(s.counters.pagesWritten) }
                    // Only an error of this wait: writeback is failing now, not hours ago.
                    if s.allErrors != start.errors, MonotonicClock.nanoseconds - since >= stuckNanoseconds, let e = s.lastError { return .failed(e) }
                    s.flusher.kick = true
                    return .stillStuck
                }
                switch step {
                case .done: break waiting
                case .progressed(let n):
                    progress = n
                    since = MonotonicClock.nanoseconds
                case .failed(let error): throw error
                case .stillStuck: continue
                }
            }
        }
        // Without a flusher the writer does the writeback itself.
        let over = state.withLock { s in !s.flusher.running && s.dirtyPages >= limit }
        if over { flushAll() }
    }

    // MARK: Errors (errseq)

    /// The error cursor a new file description starts from: an error nobody was told of yet is
    /// still reported to it.
    public func errorCursor(_ inode: UInt32) -> UInt64 {
        state.withLock { s in
            guard let file = s.files[inode] else { return 0 }
            return file.errorSeen ? file.errors : file.errors - 1
        }
    }

    /// The write error `inode` had since `cursor`, if any, and moves the cursor past it: each
    /// description hears of each error once.
    public func checkError(_ inode: UInt32, cursor: inout UInt64) -> DeviceError? {
        state.withLock { s in
            guard let file = s.files[inode], file.errors > cursor else { return nil }
            cursor = file.errors
            file.errorSeen = true
            return file.lastError
        }
    }

    /// `checkError` with the file's own cursor, for callers without a description.
    public func checkError(_ inode: UInt32) -> DeviceError? {
        state.withLock { s in
            guard let file = s.files[inode], file.errors > file.anonymousSeen else { return nil }
            file.anonymousSeen = file.errors
            file.errorSeen = true
            return file.lastError
        }
    }

    /// A write error of any file since the last call (sync).
    public func checkAnyError() -> DeviceError? {
        state.withLock { s in
            guard s.allErrors > s.allErrorsSeen else { return nil }
            s.allErrorsSeen = s.allErrors
            return s.lastError
        }
    }

    // MARK: The flusher thread

    /// Starts the background flusher: it writes old dirty data, and under pressure the oldest files first.
    public func startFlusher() {
        let started = state.withLock { s in
            guard !s.flusher.running else { return false }
            s.flusher.running = true
            s.flusher.stopping = false
            return true
        }
        guard started else { return }
        final class Box: Sendable { let cache: PageCache; init(_ c: PageCache) { cache = c } }
        let box = Unmanaged.passRetained(Box(self)).toOpaque()
        var thread = pthread_t()
        let created = pthread_create(&thread, nil, { raw in
            let cache = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().cache
            cache.flusherMain()
            return nil
        }, box)
        if created != 0 {
            Unmanaged<Box>.fromOpaque(box).release()
            state.withLock { $0.flusher.running = false }
            return
        }
        state.withLock { $0.flusher.thread = thread }
    }

    /// Stops the flusher and waits for it; dirty pages stay (write them with `writeBack`).
    public func stopFlusher() {
        let thread: pthread_t? = state.withLock { s in
            guard s.flusher.running else { return nil }
            s.flusher.stopping = true
            return s.flusher.thread
        }
        guard let thread else { return }
        pthread_join(thread, nil)
        state.withLock { s in
            s.flusher.running = false
            s.flusher.thread = nil
        }
    }

    /// Pages one flusher pass writes before it looks again at what is oldest.
    private var passPages: Int { max(maxRunPages, backgroundLimit / 2) }

    private func flusherMain() {
        var backoff = Backoff.flusher
        let expire = expireNanoseconds, background = backgroundLimit
        while true {
            // Delayed pages get their blocks first, with no run of ours in flight (the mapper takes
            // the filesystem's write lock, whose holders may wait for our writes).
            let (mapper, waiting): ((any DelayedBlockMapper)?, [UInt32]) = state.withLock { s in
                let now = MonotonicClock.nanoseconds
                guard !s.flusher.stopping, s.delayedPages > 0, s.dirtyPages >= background || s.flusher.kick
                        || s.dirtyInodes.values.contains(where: { now - $0 >= expire }) else { return (nil, []) }
                return (s.delayedMapper, s.files.filter { $0.value.delayed > 0 && $0.value.retryAfter <= now }.map(\.key))
            }
            if let mapper {
                var short = false
                for inode in waiting where !mapper.mapDelayedBlocks(of: inode) {
                    short = true
                    // Whatever the reason, this file waits a while before the next try.
                    state.withLock { $0.files[inode]?.retryAfter = MonotonicClock.nanoseconds + Self.retryAfterErrorNanoseconds }
                }
                if short {
                    state.withLock { $0.counters.writebackRetries += 1 }
                    pauseFlusher(nanoseconds: backoff.next())
                }
            }
            guard let runs = nextFlusherPass() else { return }
            if runs.isEmpty {
                // Only delayed pages were due: back to the top, where they get their blocks. The
                // short pause keeps a mapper that maps nothing from spinning.
                pauseFlusher(nanoseconds: 1_000_000)
                continue
            }
            var backedOff = 0
            for run in runs {
                // After repeated shortages the run goes page by page: the flusher always progresses.
                if !write(run, mayBackOff: backoff.attempts < 8) { backedOff += 1 }
            }
            if backedOff == runs.count {
                // Not one run found memory for its page list: give reclaim and the writers a moment.
                pauseFlusher(nanoseconds: backoff.next())
            } else if backedOff == 0 {
                backoff.reset()
            }
            // Some runs written, some not: memory comes and goes; the next pass retries at once.
        }
    }

    /// The flusher's next pass: the runs it takes (empty when only delayed pages are due), or nil
    /// when it is told to stop. Sleeps until a pass is due: a writer's kick, dirty pages past the
    /// background limit, the oldest dirty data's expiry, the end of a failed file's pause, or,
    /// for due pages an operation still holds, their release.
    private func nextFlusherPass() -> [Run]? {
        struct Sleep {
            /// The next expiry or end of a pause (monotonic ns); nil when nothing is pending.
            var deadline: UInt64?
            var pressure: Bool
            var dirtied: UInt64
            /// Due pages were held (or in flight): a release may let them go.
            var blocked: Bool
            var releases: UInt64
        }
        enum Pass { case stop, runs([Run]), sleep(Sleep) }
        let expire = expireNanoseconds, background = backgroundLimit
        while true {
            let pass: Pass = state.withLock { s in
                if s.flusher.stopping { return .stop }
                let now = MonotonicClock.nanoseconds
                let pressure = s.dirtyPages >= background || s.flusher.kick
                var eligible: [(UInt32, PageCacheState.FileState)] = []
                var deadline: UInt64?
                for (number, _) in s.dirtyInodes {
                    let file = s.files[number]!
                    if file.retryAfter <= now { eligible.append((number, file)) }
                    let due = file.retryAfter > now ? file.retryAfter : file.dirtySince + expire
                    if due > now { deadline = min(deadline ?? .max, due) }
                }
                let expired = eligible.contains { now - $0.1.dirtySince >= expire }
                var blocked = false
                if (pressure || expired) && !eligible.isEmpty {
                    s.flusher.kick = false
                    s.counters.flusherPasses += 1
                    var taken: [Run] = []
                    var budgetLeft = passPages
                    for (number, file) in eligible.sorted(by: { $0.1.dirtySince < $1.1.dirtySince }) where budgetLeft > 0 {
                        let r = takeRuns(&s, number, file, limit: budgetLeft)
                        budgetLeft -= r.reduce(0) { $0 + $1.indices.count }
                        taken += r
                    }
                    if !taken.isEmpty { return .runs(taken) }
                    if s.delayedMapper != nil && s.files.contains(where: { $0.value.delayed > 0 && $0.value.retryAfter <= now }) { return .runs([]) }
                    blocked = true
                }
                s.flusher.kick = false
                return .sleep(Sleep(deadline: deadline, pressure: s.dirtyPages >= background, dirtied: s.dirtiedFiles,
                                    blocked: blocked, releases: s.releases))
            }
            switch pass {
            case .stop: return nil
            case .runs(let runs): return runs
            case .sleep(let sleep):
                let timeout = sleep.deadline.map { Int(clamping: $0 &- min($0, MonotonicClock.nanoseconds)) }
                state.wait(until: { s in
                    s.flusher.stopping || s.flusher.kick
                        || (!sleep.pressure && s.dirtyPages >= background)
                        // A file dirtied since, due before the deadline this sleep has.
                        || (s.dirtiedFiles != sleep.dirtied && sleep.deadline.map { s.lastDirtiedAt + expire < $0 } ?? true)
                        || (sleep.blocked && s.releases != sleep.releases)
                }, timeoutNanoseconds: timeout) { _, _ in }
            }
        }
    }

    /// Sleeps `nanoseconds` (a backoff), or less if the flusher is told to stop or a writer
    /// kicks it: a throttled writer waits for this flusher, so its pause ends there.
    private func pauseFlusher(nanoseconds: UInt64) {
        guard nanoseconds > 0 else { return }
        state.wait(until: { $0.flusher.stopping || $0.flusher.kick }, timeoutNanoseconds: Int(nanoseconds)) { _, _ in }
    }
}
