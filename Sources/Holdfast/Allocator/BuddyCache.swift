import HoldfastMemory

extension AllocationSite {
    static let allocatorBuddy = AllocationSite("allocator.buddy", .mayFail, .allocator,
        "a block group's buddy bitmaps (which aligned 2, 4, 8, ... block chunks are free), built from its block bitmap; without one the allocator scans the bitmap")
}

/// One group's free space by order, as ext4's mballoc keeps it. `used` is the block bitmap with
/// the blocks that preallocation windows hold also marked (1 = taken); `free[k - 1]` has bit i set
/// when blocks [i << k, (i + 1) << k) are all free, so a request for 2^k blocks finds an aligned
/// free chunk without walking small holes.
struct GroupBuddy {
    static let maxOrder = 13
    private(set) var used: [UInt8]
    private var free: [[UInt8]]
    private(set) var freeChunks: [Int]
    /// Per order, no chunk below this index is free (searches start there).
    private var lowestFree: [Int]
    let blocks: Int
    /// The group's bitmap was rolled back under it (an operation failed): rebuild before use.
    var stale = false

    init(bitmap: [UInt8], blocks: Int, reserved: [(start: Int, count: Int)]) {
        // Its own copy now: marking it later, under the cache's lock, must not copy a block.
        used = bitmap.withUnsafeBufferPointer { Array($0) }
        self.blocks = blocks
        let orders = max(0, min(Self.maxOrder, Int.bitWidth - 1 - max(1, blocks).leadingZeroBitCount))
        free = (1...max(1, orders)).map { k in [UInt8](repeating: 0, count: ((blocks >> k) + 8) / 8) }
        if orders == 0 { free = [] }
        freeChunks = [Int](repeating: 0, count: free.count)
        lowestFree = [Int](repeating: 0, count: free.count)
        for r in reserved { for i in r.start..<(r.start + r.count) { Bitmap.set(&used, i) } }
        recompute(0, blocks)
    }

    /// Bytes this buddy takes (charged at `.allocatorBuddy`).
    static func cost(blocks: Int, bitmapBytes: Int) -> Int {
        var bytes = bitmapBytes + 128
        var k = 1
        while k <= maxOrder, blocks >> k > 0 { bytes += ((blocks >> k) + 8) / 8; k += 1 }
        return bytes
    }

    var orders: Int { free.count }

    func isFree(_ i: Int) -> Bool { i < blocks && !Bitmap.isSet(used, i) }

    /// Marks blocks [start, start+count) taken or free, and the chunks over them.
    mutating func mark(_ start: Int, _ count: Int, taken: Bool) {
        for i in start..<(start + count) { if taken { Bitmap.set(&used, i) } else { Bitmap.clear(&used, i) } }
        recompute(start, start + count)
    }

    private func chunkFree(order k: Int, _ i: Int) -> Bool {
        if k == 0 { return isFree(i) }
        let layer = free[k - 1]
        return i >> 3 < layer.count && layer[i >> 3] & (1 << UInt8(i & 7)) != 0
    }

    private mutating func recompute(_ from: Int, _ to: Int) {
        guard from < to, orders >= 1 else { return }
        for k in 1...orders {
            var changed = false
            for i in (from >> k)...((to - 1) >> k) {
                let whole = (i + 1) << k <= blocks && chunkFree(order: k - 1, 2 * i) && chunkFree(order: k - 1, 2 * i + 1)
                let was = chunkFree(order: k, i)
                if whole != was {
                    changed = true
                    if whole { free[k - 1][i >> 3] |= 1 << UInt8(i & 7) } else { free[k - 1][i >> 3] &= ~(1 << UInt8(i & 7)) }
                    freeChunks[k - 1] += whole ? 1 : -1
                    if whole { lowestFree[k - 1] = min(lowestFree[k - 1], i) }
                }
            }
            // Larger chunks are made of these: if none of these changed, none of those did.
            if !changed { break }
        }
    }

    /// The first block of a free chunk of 2^order blocks at or after block `from` (then from the
    /// group's start), or nil when the group has none.
    mutating func findChunk(order k: Int, from: Int) -> Int? {
        guard k >= 1, k <= orders, freeChunks[k - 1] > 0 else { return nil }
        let count = blocks >> k
        let first = min(count, (from + (1 << k) - 1) >> k)
        let lowest = lowestFree[k - 1]
        let layer = free[k - 1]
        func scan(_ lower: Int, _ upper: Int) -> Int? {
            var i = lower
            while i < upper {
                if i & 7 == 0, i + 8 <= upper, layer[i >> 3] == 0 { i += 8; continue }
                if layer[i >> 3] & (1 << UInt8(i & 7)) != 0 { return i }
                i += 1
            }
            return nil
        }
        if let i = scan(max(first, lowest), count) {
            if first <= lowest { lowestFree[k - 1] = i }
            return i << k
        }
        if let i = scan(lowest, min(first, count)) {
            lowestFree[k - 1] = i
            return i << k
        }
        lowestFree[k - 1] = count
        return nil
    }
}

/// The buddies of the groups, charged to the budget. Groups where preallocation windows hold
/// blocks are pinned (their buddy is the only record of those reservations besides the windows
/// themselves, and an allocation there must see them); the rest the shrinker may drop.
final class BuddyCache: Sendable {
    private struct Entry {
        var buddy: GroupBuddy
        var bytes: Int
        var pins: Int
    }

    private let budget: MemoryBudget
    private let entries = Locked<[UInt32: Entry]>([:])
    private let token = Locked<ShrinkerToken?>(nil)

    init(budget: MemoryBudget) {
        self.budget = budget
        let t = budget.register(Shrinker(
            name: "buddy bitmaps", cost: 4,
            count: { [weak self] in self?.reclaimable ?? 0 },
            scan: { [weak self] request in self?.drop(bytes: request.bytes) ?? 0 }))
        token.withLock { $0 = t }
    }

    deinit {
        if let t = token.withLock({ $0 }) { budget.unregister(t) }
        let bytes = entries.withLock { e in e.values.reduce(0) { $0 + $1.bytes } }
        if bytes > 0 { budget.uncharge(bytes, for: .allocatorBuddy) }
    }

    private var reclaimable: Int { entries.withLock { e in e.values.reduce(0) { $0 + ($1.pins == 0 ? $1.bytes : 0) } } }

    private func drop(bytes: Int) -> Int {
        let freed = entries.withLock { e -> Int in
            var freed = 0
            while freed < bytes, let (g, entry) = e.first(where: { $0.value.pins == 0 }) {
                e.removeValue(forKey: g)
                freed += entry.bytes
            }
            return freed
        }
        if freed > 0 { budget.uncharge(freed, for: .allocatorBuddy) }
        return freed
    }

    /// Runs `body` on group `g`'s buddy, building it from `bitmap` first when it is missing or
    /// stale. Returns nil (and `body` does not run) when the budget has no room for a new one:
    /// the caller then works from the bitmap alone.
    func with<R>(_ g: UInt32, bitmap: () throws -> [UInt8], blocks: Int, reserved: () -> [(start: Int, count: Int)],
                 _ body: (inout GroupBuddy) throws -> R) throws -> R? {
        let state = entries.withLock { e -> Bool? in e[g].map { !$0.buddy.stale } }
        if state != true {
            // Charged before it is built, so the budget is never exceeded; a stale one is rebuilt
            // in place, its memory charged already.
            let cost = GroupBuddy.cost(blocks: blocks, bitmapBytes: (blocks + 7) / 8)
            let charged = state == nil
            if charged { guard budget.charge(cost, at: .allocatorBuddy) else { return nil } }
            let fresh: GroupBuddy
            do { fresh = GroupBuddy(bitmap: try bitmap(), blocks: blocks, reserved: reserved()) } catch {
                if charged { budget.uncharge(cost, for: .allocatorBuddy) }
                throw error
            }
            let surplus = entries.withLock { e -> Int in
                if e[g] != nil {
                    e[g]!.buddy = fresh
                    return charged ? cost : 0      // another caller's copy arrived meanwhile
                }
                guard charged else { return 0 }    // dropped meanwhile: not pinned, so not needed
                e[g] = Entry(buddy: fresh, bytes: cost, pins: 0)
                return 0
            }
            if surplus > 0 { budget.uncharge(surplus, for: .allocatorBuddy) }
        }
        return try entries.withLock { e -> R? in
            guard e[g] != nil else { return nil }
            return try body(&e[g]!.buddy)
        }
    }

    /// Changes a present buddy (nothing when the group has none).
    func update(_ g: UInt32, _ body: (inout GroupBuddy) -> Void) {
        entries.withLock { e in
            guard e[g] != nil, !e[g]!.buddy.stale else { return }
            body(&e[g]!.buddy)
        }
    }

    /// The groups' bitmaps were rolled back: their buddies are rebuilt at next use.
    func invalidate(_ groups: Set<UInt32>) {
        guard !groups.isEmpty else { return }
        entries.withLock { e in for g in groups where e[g] != nil { e[g]!.buddy.stale = true } }
    }

    /// Pins group `g`'s buddy; false when it has none (then nothing may be reserved there).
    func pin(_ g: UInt32) -> Bool {
        entries.withLock { e in
            guard e[g] != nil, !e[g]!.buddy.stale else { return false }
            e[g]!.pins += 1
            return true
        }
    }
    func unpin(_ g: UInt32) { entries.withLock { e in if e[g] != nil, e[g]!.pins > 0 { e[g]!.pins -= 1 } } }

    /// Drops every buddy (at close, after the windows are gone).
    func dropAll() {
        let bytes = entries.withLock { e -> Int in
            defer { e.removeAll() }
            return e.values.reduce(0) { $0 + $1.bytes }
        }
        if bytes > 0 { budget.uncharge(bytes, for: .allocatorBuddy) }
    }

    /// Bytes held, and bytes held by pinned buddies (for tests and --stats).
    var usage: (total: Int, pinned: Int) {
        entries.withLock { e in (e.values.reduce(0) { $0 + $1.bytes }, e.values.reduce(0) { $0 + ($1.pins > 0 ? $1.bytes : 0) }) }
    }
}
