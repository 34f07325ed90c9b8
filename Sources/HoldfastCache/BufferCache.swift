#if canImport(Glibc)
import Glibc
#endif
import HoldfastDevice
import HoldfastFormat
import HoldfastMemory

/// Metadata blocks by block number, least recently used dropped first. Block data lives in
/// arena pages charged at `.bufferBlock`, the index entry at `.bufferIndex`; a shrinker gives
/// clean blocks back under memory pressure. Dirty blocks (changed by a transaction, not yet
/// written) are pinned: off the LRU list until `writeBack` has written them. Thread-safe: device
/// reads and allocations happen outside the lock, so reclaim can always take it.
public final class BufferCache: Sendable {
    public let device: any BlockDevice
    public let blockSize: Int
    public let budget: MemoryBudget
    public let redirects: BlockRedirects
    /// Bookkeeping per cached block beyond its page (dictionary slot, list links).
    static let indexEntryBytes = 64
    private var cost: Int { blockSize + Self.indexEntryBytes }

    private struct Slot {
        var block: UInt64
        var page: Page
        var prev: Int
        var next: Int
        /// Changed in memory and not yet written: off the LRU list, so reclaim never sees it.
        var dirty = false
    }

    private struct State {
        var index: [UInt64: Int] = [:]
        var slots: [Slot] = []
        var free: [Int] = []
        var head = -1  // most recent
        var tail = -1  // least recent
        var hits = 0
        var misses = 0
        var dirtyCount = 0
        /// Counts the times blocks left the cache (evicted, discarded, drained). A read from the
        /// device started before a block left may return its contents from before a change that
        /// was written home and dropped meanwhile: such a read is not cached.
        var departures: UInt64 = 0
    }

    private let state = Locked(State())
    private let shrinkerToken = Locked<ShrinkerToken?>(nil)

    public init(device: any BlockDevice, blockSize: Int, budget: MemoryBudget, redirects: BlockRedirects = BlockRedirects()) {
        precondition(budget.pageSize == blockSize, "the budget's arena pages must be filesystem blocks")
        self.device = device
        self.blockSize = blockSize
        self.budget = budget
        self.redirects = redirects
        let token = budget.register(Shrinker(
            name: "buffer cache", cost: 2,
            count: { [weak self] in self.map { c in c.state.withLock { $0.index.count } * c.cost } ?? 0 },
            scan: { [weak self] request in self?.evict(bytes: request.bytes) ?? 0 }))
        shrinkerToken.withLock { $0 = token }
    }

    deinit {
        if let token = shrinkerToken.withLock({ $0 }) { budget.unregister(token) }
        drain()
    }

    /// The contents of `block`, from the cache or the device (honouring journal redirects).
    /// The caller gets its own copy; the cached page stays in the arena.
    public func block(_ block: UInt64) throws -> [UInt8] {
        if let hit = state.withLock({ s -> [UInt8]? in
            guard let i = s.index[block] else { s.misses += 1; return nil }
            s.hits += 1
            Self.touch(&s, i)
            return Array(UnsafeRawBufferPointer(budget.bytes(s.slots[i].page)))
        }) {
            return hit
        }
        let page = try budget.allocatePageOrThrow(at: .bufferBlock)
        let departures = state.withLock { $0.departures }
        do {
            try read(blocks: block, into: budget.bytes(page))
            try budget.chargeOrThrow(Self.indexEntryBytes, at: .bufferIndex)
        } catch {
            budget.freePage(page, for: .bufferBlock)
            throw error
        }
        let data = Array(UnsafeRawBufferPointer(budget.bytes(page)))
        let duplicate = state.withLock { s -> Bool in
            // Another thread read it meanwhile, or a block left the cache during the read (this
            // copy may predate a change written home since): not cached.
            if s.index[block] != nil || s.departures != departures { return true }
            let slot = Slot(block: block, page: page, prev: -1, next: -1)
            let i: Int
            if let f = s.free.popLast() { s.slots[f] = slot; i = f } else { s.slots.append(slot); i = s.slots.count - 1 }
            s.index[block] = i
            Self.pushFront(&s, i)
            return false
        }
        if duplicate {
            budget.uncharge(Self.indexEntryBytes, for: .bufferIndex)
            budget.freePage(page, for: .bufferBlock)
        }
        return data
    }

    /// Bytes [offset, offset + count) of `block`: a hit copies only those (descriptor and inode
    /// reads want 32 to 512 bytes of a block), a miss reads and caches the whole block.
    public func bytes(of block: UInt64, at offset: Int, count: Int) throws -> [UInt8] {
        precondition(offset >= 0 && offset + count <= blockSize)
        if let hit = state.withLock({ s -> [UInt8]? in
            guard let i = s.index[block] else { return nil }
            s.hits += 1
            Self.touch(&s, i)
            return Array(UnsafeRawBufferPointer(rebasing: budget.bytes(s.slots[i].page)[offset..<(offset + count)]))
        }) {
            return hit
        }
        return Array(try self.block(block)[offset..<(offset + count)])
    }

    /// Reads the uncached blocks from `first` (up to `count`, stopping at the first cached one)
    /// into the cache in one vectored read: inode-table readahead, as ext4's inode_readahead_blks.
    /// Opportunistic: short of memory it reads fewer or none, and a failed read only reports false.
    @discardableResult
    public func readAhead(_ first: UInt64, count: Int) -> Bool {
        let run = state.withLock { s -> Int in
            var n = 0
            while n < count, s.index[first + UInt64(n)] == nil { n += 1 }
            return n
        }
        guard run > 0, budget.charge(run * Self.indexEntryBytes, at: .bufferIndex) else { return false }
        var pages: [Page] = []
        pages.reserveCapacity(run)
        while pages.count < run, let p = budget.allocatePage(at: .bufferBlock) { pages.append(p) }
        if pages.count < run { budget.uncharge((run - pages.count) * Self.indexEntryBytes, for: .bufferIndex) }
        guard !pages.isEmpty else { return false }
        let departures = state.withLock { $0.departures }
        do {
            try read(blocks: first, scattering: pages.map { budget.bytes($0) })
        } catch {
            for p in pages { budget.freePage(p, for: .bufferBlock) }
            budget.uncharge(pages.count * Self.indexEntryBytes, for: .bufferIndex)
            return false
        }
        var unused: [Page] = []
        state.withLock { s in
            // A block left the cache during the read: what was read may be stale (see `departures`).
            guard s.departures == departures else { unused = pages; return }
            for (k, page) in pages.enumerated() {
                let block = first + UInt64(k)
                // Another thread read (or changed) it meanwhile: its copy is the one to keep.
                if s.index[block] != nil { unused.append(page); continue }
                let slot = Slot(block: block, page: page, prev: -1, next: -1)
                let i: Int
                if let f = s.free.popLast() { s.slots[f] = slot; i = f } else { s.slots.append(slot); i = s.slots.count - 1 }
                s.index[block] = i
                Self.pushFront(&s, i)
            }
        }
        for p in unused { budget.freePage(p, for: .bufferBlock) }
        if !unused.isEmpty { budget.uncharge(unused.count * Self.indexEntryBytes, for: .bufferIndex) }
        return true
    }

    /// Is `block` in the cache?
    public func contains(_ block: UInt64) -> Bool { state.withLock { $0.index[block] != nil } }

    /// Reads one block without caching it.
    public func readBlock(_ block: UInt64) throws -> [UInt8] {
        var data = [UInt8](repeating: 0, count: blockSize)
        try data.withUnsafeMutableBytes { try read(blocks: block, into: $0) }
        return data
    }

    /// Consecutive blocks from `first` into `pieces` (one block each), bypassing the cache, in one
    /// vectored read unless journal redirects fall in the run.
    public func read(blocks first: UInt64, scattering pieces: [UnsafeMutableRawBufferPointer]) throws {
        let i = redirects.firstIndex(atOrAfter: first)
        if i < redirects.entries.count, redirects.entries[i].target < first + UInt64(pieces.count) {
            for (k, piece) in pieces.enumerated() { try read(blocks: first + UInt64(k), into: piece) }
            return
        }
        try device.read(scattering: pieces, at: first * UInt64(blockSize))
    }

    /// Bulk read of consecutive blocks into `buffer` (a multiple of the block size), bypassing the cache:
    /// file data is read once and streamed out, so caching it would only evict metadata.
    public func read(blocks first: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        let count = UInt64(buffer.count / blockSize)
        let bs = UInt64(blockSize)
        var next = first
        var i = redirects.firstIndex(atOrAfter: first)
        while next < first + count {
            // Straight run up to the next redirected block.
            let stop = i < redirects.entries.count ? min(redirects.entries[i].target, first + count) : first + count
            if stop > next {
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[Int((next - first) * bs)..<Int((stop - first) * bs)])
                try device.read(into: part, at: next * bs)
                next = stop
            }
            if next < first + count {
                let e = redirects.entries[i]
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[Int((next - first) * bs)..<Int((next - first + 1) * bs)])
                try device.read(into: part, at: e.source * bs)
                if e.escaped { Jbd2.unescape(part) }
                next += 1
                i += 1
            }
        }
    }

    /// Copies bytes [skip, skip+length) of the consecutive blocks starting at `first` into the host file `fd`
    /// at `destination`: straight runs go device-to-file; redirected (journal-replayed) blocks are read and written.
    public func copy(blocks first: UInt64, skip: Int, length: Int, to fd: Int32, at destination: UInt64) throws {
        let bs = UInt64(blockSize)
        var position = first * bs + UInt64(skip)   // device byte address of the next byte
        let end = position + UInt64(length)
        var out = destination
        var i = redirects.firstIndex(atOrAfter: position / bs)
        while position < end {
            let nextRedirect = i < redirects.entries.count ? redirects.entries[i].target * bs : .max
            if position < nextRedirect {
                let stop = min(end, nextRedirect)
                try device.copy(from: position, count: Int(stop - position), to: fd, at: out)
                out += stop - position
                position = stop
                continue
            }
            let data = try readBlock(position / bs)
            let from = Int(position % bs)
            let n = min(Int(bs) - from, Int(end - position))
            let at = out
            try data[from..<(from + n)].withUnsafeBytes { try writeAll(fd, $0, at: at) }
            out += UInt64(n)
            position += UInt64(n)
            i += 1
        }
    }

    /// Drops least recently used blocks until `bytes` are freed (the shrinker). Metadata here is
    /// always clean, so dropping is all reclaim needs.
    @discardableResult
    public func evict(bytes: Int) -> Int {
        let victims = state.withLock { s -> [Page] in
            var out: [Page] = []
            while out.count * cost < bytes, s.tail >= 0 {
                let victim = s.tail
                s.departures &+= 1
                Self.unlink(&s, victim)
                s.index[s.slots[victim].block] = nil
                out.append(s.slots[victim].page)
                s.free.append(victim)
            }
            return out
        }
        release(victims)
        return victims.count * cost
    }

    /// Drops every cached block and gives its memory back.
    public func drain() {
        let pages = state.withLock { s -> [Page] in
            let pages = s.index.values.map { s.slots[$0].page }
            let departures = s.departures
            s = State()
            s.departures = departures &+ 1
            return pages
        }
        release(pages)
        budget.arena.trim()
    }

    private func release(_ pages: [Page]) {
        guard !pages.isEmpty else { return }
        budget.freePages(pages, for: .bufferBlock)
        budget.uncharge(Self.indexEntryBytes * pages.count, for: .bufferIndex)
    }

    // MARK: Dirty blocks (the write path)

    /// Replaces the cached contents of `block` with `bytes` and pins it dirty. A block not cached
    /// gets a page (allocated before the lock is taken); `bytes` must be one block.
    public func storeDirty(_ block: UInt64, _ bytes: [UInt8]) throws {
        precondition(bytes.count == blockSize)
        if try storeIfCached(block, bytes, dirty: true) { return }
        let page = try budget.allocatePageOrThrow(at: .bufferBlock)
        do { try budget.chargeOrThrow(Self.indexEntryBytes, at: .bufferIndex) } catch {
            budget.freePage(page, for: .bufferBlock)
            throw error
        }
        let spare = state.withLock { s -> Page? in
            if let i = s.index[block] {
                Self.fill(budget, s.slots[i].page, bytes)
                Self.markDirty(&s, i)
                return page
            }
            Self.fill(budget, page, bytes)
            let slot = Slot(block: block, page: page, prev: -1, next: -1)
            let i: Int
            if let f = s.free.popLast() { s.slots[f] = slot; i = f } else { s.slots.append(slot); i = s.slots.count - 1 }
            s.index[block] = i
            Self.pushFront(&s, i)
            Self.markDirty(&s, i)
            return nil
        }
        if let spare { release([spare]) }
    }

    /// Puts `bytes` back as the contents of a block the cache holds (a rolled-back change), dirty or
    /// clean as it was before. Never allocates: the block is pinned by the change being undone.
    public func restore(_ block: UInt64, _ bytes: [UInt8], dirty: Bool) {
        let present = (try? storeIfCached(block, bytes, dirty: dirty)) ?? false
        precondition(present, "restore of block \(block), which the cache no longer holds")
    }

    private func storeIfCached(_ block: UInt64, _ bytes: [UInt8], dirty: Bool) throws -> Bool {
        state.withLock { s in
            guard let i = s.index[block] else { return false }
            Self.fill(budget, s.slots[i].page, bytes)
            if dirty { Self.markDirty(&s, i) } else { Self.markClean(&s, i) }
            return true
        }
    }

    /// Overwrites bytes of a cached block in place, dirty state unchanged (the superblock, written
    /// straight to the device at commit, keeps its cached block current this way). Never allocates.
    public func patchIfCached(_ block: UInt64, at offset: Int, _ bytes: [UInt8]) {
        state.withLock { s in
            guard let i = s.index[block] else { return }
            let page = budget.bytes(s.slots[i].page)
            bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: page[offset..<(offset + bytes.count)]).copyMemory(from: $0) }
        }
    }

    /// Copies the cached contents of `block` into `buffer` (one block), without touching the LRU
    /// order or allocating: the journal logs pinned dirty blocks this way. False when not cached.
    public func copy(_ block: UInt64, into buffer: UnsafeMutableRawBufferPointer) -> Bool {
        precondition(buffer.count == blockSize)
        return state.withLock { s in
            guard let i = s.index[block] else { return false }
            buffer.copyMemory(from: UnsafeRawBufferPointer(budget.bytes(s.slots[i].page)))
            return true
        }
    }

    /// Is `block` cached with changes not yet written?
    public func isDirty(_ block: UInt64) -> Bool {
        state.withLock { s in s.index[block].map { s.slots[$0].dirty } ?? false }
    }

    /// Forgets `block`, dirty or not (a freed metadata block: its old contents must never be written).
    public func discard(_ block: UInt64) {
        let page = state.withLock { s -> Page? in
            guard let i = s.index[block] else { return nil }
            if s.slots[i].dirty { s.slots[i].dirty = false; s.dirtyCount -= 1 } else { Self.unlink(&s, i) }
            s.departures &+= 1
            s.index[block] = nil
            s.free.append(i)
            return s.slots[i].page
        }
        if let page { release([page]) }
    }

    /// Writes the given dirty blocks in block order, runs of neighbours in one call, and marks each
    /// clean only after its write completed. A failed write leaves the rest dirty and throws.
    /// With `staging` (the journal's checkpoint), runs are copied through it and nothing is
    /// allocated; without, through a buffer of up to 1 MiB per run.
    public func writeBack(_ blocks: [UInt64], through staging: UnsafeMutableRawBufferPointer? = nil) throws {
        let sorted = blocks.sorted()
        let maxRun = max(1, (staging?.count ?? (1 << 20)) / blockSize)
        var i = 0
        while i < sorted.count {
            var j = i + 1
            while j < sorted.count, j - i < maxRun, sorted[j] == sorted[j - 1] + 1 { j += 1 }
            let run = Array(sorted[i..<j])
            if let staging {
                try writeRun(run, through: UnsafeMutableRawBufferPointer(rebasing: staging[0..<(run.count * blockSize)]))
            } else {
                var buffer = [UInt8](repeating: 0, count: run.count * blockSize)
                try buffer.withUnsafeMutableBytes { try writeRun(run, through: $0) }
            }
            i = j
        }
    }

    /// One run of neighbouring blocks, copied into `buffer` under the lock and written outside it.
    private func writeRun(_ run: [UInt64], through buffer: UnsafeMutableRawBufferPointer) throws {
        let present = state.withLock { s -> [Bool] in
            run.enumerated().map { k, b in
                guard let slot = s.index[b], s.slots[slot].dirty else { return false }
                let src = UnsafeRawBufferPointer(budget.bytes(s.slots[slot].page))
                UnsafeMutableRawBufferPointer(rebasing: buffer[(k * blockSize)..<((k + 1) * blockSize)]).copyMemory(from: src)
                return true
            }
        }
        // Blocks discarded meanwhile split the run: write only what is still dirty.
        var k = 0
        while k < run.count {
            guard present[k] else { k += 1; continue }
            var e = k + 1
            while e < run.count, present[e] { e += 1 }
            try device.write(UnsafeRawBufferPointer(rebasing: buffer[(k * blockSize)..<(e * blockSize)]), at: run[k] * UInt64(blockSize))
            state.withLock { s in
                for b in run[k..<e] { if let slot = s.index[b] { Self.markClean(&s, slot) } }
            }
            k = e
        }
    }

    /// How many blocks are pinned dirty.
    public var dirtyCount: Int { state.withLock { $0.dirtyCount } }

    private static func fill(_ budget: MemoryBudget, _ page: Page, _ bytes: [UInt8]) {
        bytes.withUnsafeBytes { budget.bytes(page).copyMemory(from: $0) }
    }

    private static func markDirty(_ s: inout State, _ i: Int) {
        guard !s.slots[i].dirty else { return }
        unlink(&s, i)
        s.slots[i].dirty = true
        s.dirtyCount += 1
    }

    private static func markClean(_ s: inout State, _ i: Int) {
        guard s.slots[i].dirty else { return }
        s.slots[i].dirty = false
        s.dirtyCount -= 1
        pushFront(&s, i)
    }

    public var statistics: (cached: Int, hits: Int, misses: Int) {
        state.withLock { ($0.index.count, $0.hits, $0.misses) }
    }

    private static func unlink(_ s: inout State, _ i: Int) {
        let p = s.slots[i].prev, n = s.slots[i].next
        if p >= 0 { s.slots[p].next = n } else { s.head = n }
        if n >= 0 { s.slots[n].prev = p } else { s.tail = p }
        s.slots[i].prev = -1
        s.slots[i].next = -1
    }

    private static func pushFront(_ s: inout State, _ i: Int) {
        s.slots[i].next = s.head
        s.slots[i].prev = -1
        if s.head >= 0 { s.slots[s.head].prev = i }
        s.head = i
        if s.tail < 0 { s.tail = i }
    }

    private static func touch(_ s: inout State, _ i: Int) {
        guard s.head != i, !s.slots[i].dirty else { return }
        unlink(&s, i)
        pushFront(&s, i)
    }
}
