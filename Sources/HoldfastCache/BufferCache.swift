#if canImport(Glibc)
import Glibc
#endif
import HoldfastDevice
import HoldfastFormat
import Synchronization

/// Metadata blocks by block number, least recently used dropped first, every byte charged to the budget.
/// Thread-safe; device reads happen outside the lock.
public final class BufferCache: Sendable {
    public let device: any BlockDevice
    public let blockSize: Int
    public let budget: ByteBudget
    public let redirects: BlockRedirects
    /// Bookkeeping per cached block beyond its data (dictionary slot, list links, array header).
    static let overheadPerBlock = 96

    private struct Slot {
        var block: UInt64
        var data: [UInt8]
        var prev: Int
        var next: Int
    }

    private struct State {
        var index: [UInt64: Int] = [:]
        var slots: [Slot] = []
        var free: [Int] = []
        var head = -1  // most recent
        var tail = -1  // least recent
        var hits = 0
        var misses = 0
    }

    private let state = Mutex(State())

    public init(device: any BlockDevice, blockSize: Int, budget: ByteBudget, redirects: BlockRedirects = BlockRedirects()) {
        self.device = device
        self.blockSize = blockSize
        self.budget = budget
        self.redirects = redirects
    }

    deinit {
        let held = state.withLock { s in s.index.count }
        budget.uncharge(held * (blockSize + Self.overheadPerBlock))
    }

    /// The contents of `block`, from the cache or the device (honouring journal redirects).
    public func block(_ block: UInt64) throws -> [UInt8] {
        if let hit = state.withLock({ s -> [UInt8]? in
            guard let i = s.index[block] else { s.misses += 1; return nil }
            s.hits += 1
            Self.touch(&s, i)
            return s.slots[i].data
        }) {
            return hit
        }
        let data = try readBlock(block)
        try insert(block, data)
        return data
    }

    /// Reads one block without caching it.
    public func readBlock(_ block: UInt64) throws -> [UInt8] {
        var data = [UInt8](repeating: 0, count: blockSize)
        try data.withUnsafeMutableBytes { try read(blocks: block, into: $0) }
        return data
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
                if e.escaped { part.storeBytes(of: Jbd2.magic.bigEndian, toByteOffset: 0, as: UInt32.self) }
                next += 1
                i += 1
            }
        }
    }

    /// Charges `bytes` to the budget, dropping least recently used blocks until they fit.
    public func charge(_ bytes: Int, for what: String) throws {
        while !budget.charge(bytes) {
            guard evictOne() else { throw OutOfMemoryError(what: what, bytes: bytes, limit: budget.limit) }
        }
    }

    /// Drops the least recently used block; false when the cache is empty.
    @discardableResult
    public func evictOne() -> Bool {
        let evicted = state.withLock { s -> Bool in
            guard s.tail >= 0 else { return false }
            let victim = s.tail
            Self.unlink(&s, victim)
            s.index[s.slots[victim].block] = nil
            s.slots[victim].data = []
            s.free.append(victim)
            return true
        }
        if evicted { budget.uncharge(blockSize + Self.overheadPerBlock) }
        return evicted
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

    private func insert(_ block: UInt64, _ data: [UInt8]) throws {
        let cost = blockSize + Self.overheadPerBlock
        try charge(cost, for: "buffer cache block")
        let duplicate = state.withLock { s -> Bool in
            if s.index[block] != nil { return true }  // another thread read it meanwhile
            let slot = Slot(block: block, data: data, prev: -1, next: -1)
            let i: Int
            if let f = s.free.popLast() { s.slots[f] = slot; i = f } else { s.slots.append(slot); i = s.slots.count - 1 }
            s.index[block] = i
            Self.pushFront(&s, i)
            return false
        }
        if duplicate { budget.uncharge(cost) }
    }

    /// Drops every cached block and gives its memory back.
    public func drain() {
        let n = state.withLock { s -> Int in
            let n = s.index.count
            s = State()
            return n
        }
        budget.uncharge(n * (blockSize + Self.overheadPerBlock))
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
        guard s.head != i else { return }
        unlink(&s, i)
        pushFront(&s, i)
    }
}
