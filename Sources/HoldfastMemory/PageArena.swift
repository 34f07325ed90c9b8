#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// One page of the arena, by index: a handle, owned by whoever took it until it is given back.
/// Its bytes are reached through the arena that issued it (in the engine, scoped: see
/// `PageCache.withBytes`). The arena keeps who owns what, so a page given back twice, or one
/// given back that was never taken, stops the program instead of having two owners.
public struct Page: Sendable, Hashable {
    public let index: UInt32
}

/// The address space for block-sized buffers and pages, reserved up front at the budget's size.
///
/// Reserving costs no memory: pages become resident when first written. Freed pages are kept
/// for reuse (most recently freed first) up to a cap; beyond it they are handed back to the
/// kernel with `madvise(MADV_DONTNEED)`, so resident memory tracks what the budget has charged.
/// The arena does no accounting of its own: `MemoryBudget` charges before it takes a page.
public final class PageArena: @unchecked Sendable {
    public let pageSize: Int
    public let capacity: Int
    private let base: UnsafeMutableRawPointer
    private let mappedBytes: Int

    private struct FreeLists {
        var warm: [UInt32] = []    // freed, still resident
        var cold: [UInt32] = []    // freed and given back to the kernel
        var untouched: UInt32 = 0  // pages from here on were never handed out
    }
    private let lists: Locked<FreeLists>
    /// One bit per page, set while it is handed out; read and written only under `lists`' lock.
    private let owned: UnsafeMutablePointer<UInt64>
    private let ownedWords: Int
    private let warmLimit: Int
    private let canGiveBack: Bool

    /// Reserves `capacity` pages of `pageSize` bytes (a power of two, at least 512). Fails when the
    /// address space cannot be reserved (a `ulimit -v` smaller than the budget, say).
    public init(pageSize: Int, capacity: Int) throws(ArenaReservationError) {
        precondition(pageSize >= 512 && pageSize & (pageSize - 1) == 0, "page size must be a power of two")
        guard capacity > 0, capacity < Int(UInt32.max), capacity <= Int.max / pageSize else {
            throw ArenaReservationError(bytes: capacity.multipliedReportingOverflow(by: pageSize).partialValue, errno: 0,
                                        reason: "more than the arena can index (\(UInt32.max - 1) pages of \(pageSize) bytes)")
        }
        self.pageSize = pageSize
        self.capacity = capacity
        mappedBytes = pageSize * capacity
        guard let p = mmap(nil, mappedBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              p != MAP_FAILED else {
            throw ArenaReservationError(bytes: mappedBytes, errno: errno, reason: String(cString: strerror(errno)))
        }
        base = p
        ownedWords = (capacity + 63) / 64
        owned = .allocate(capacity: ownedWords)
        owned.initialize(repeating: 0, count: ownedWords)
        var l = FreeLists()
        l.warm.reserveCapacity(capacity)
        l.cold.reserveCapacity(capacity)
        lists = Locked(l)
        // madvise works on whole system pages: smaller arena pages share one with their
        // neighbours, so giving one back would zero pages still in use. Those stay warm.
        canGiveBack = pageSize >= Int(sysconf(Int32(_SC_PAGESIZE)))
        warmLimit = canGiveBack ? max(16, capacity / 8) : capacity
    }

    deinit {
        munmap(base, mappedBytes)
        owned.deallocate()
    }

    // The ownership bits, with the lock held.
    @inline(__always) private func markTaken(_ index: UInt32) {
        owned[Int(index) >> 6] |= 1 << UInt64(index & 63)
    }

    /// Clears the page's bit; false if it was not set (a double free).
    @inline(__always) private func markGiven(_ index: UInt32) -> Bool {
        let bit: UInt64 = 1 << UInt64(index & 63)
        guard owned[Int(index) >> 6] & bit != 0 else { return false }
        owned[Int(index) >> 6] &= ~bit
        return true
    }

    private func isTaken(_ index: UInt32) -> Bool { lists.withLock { _ in owned[Int(index) >> 6] & (1 << UInt64(index & 63)) != 0 } }

    /// Takes a free page, or nil when every page is handed out.
    func take() -> Page? {
        lists.withLock { l -> Page? in
            let index: UInt32
            if let i = l.warm.popLast() {
                index = i
            } else if let i = l.cold.popLast() {
                index = i
            } else {
                guard Int(l.untouched) < capacity else { return nil }
                index = l.untouched
                l.untouched += 1
            }
            markTaken(index)
            return Page(index: index)
        }
    }

    /// Returns a page. Past the warm limit its memory goes back to the kernel, before the page
    /// is listed again: once listed another thread may take it, and must not see it zeroed.
    func give(_ page: Page) {
        precondition(Int(page.index) < capacity, "page \(page.index) is not one of this arena's")
        let kept = lists.withLock { l -> Bool in
            // Two owners of one page would corrupt data silently: stop here instead.
            precondition(markGiven(page.index), "page \(page.index) given back twice, or never taken")
            guard l.warm.count < warmLimit else { return false }
            l.warm.append(page.index)
            return true
        }
        if kept { return }
        madvise(address(page), pageSize, MADV_DONTNEED)
        lists.withLock { $0.cold.append(page.index) }
    }

    /// Returns many pages at once (a reclaim pass, a cache emptied at close): one pass under the
    /// lock, and the pages past the warm limit go back to the kernel one madvise per run of
    /// neighbouring pages, not one per page (at close, 60,000 calls took a fifth of an unmount).
    func give(_ pages: [Page]) {
        guard pages.count > 1 else {
            if let p = pages.first { give(p) }
            return
        }
        let release = lists.withLock { l -> [UInt32] in
            var release: [UInt32] = []
            for page in pages {
                precondition(Int(page.index) < capacity, "page \(page.index) is not one of this arena's")
                precondition(markGiven(page.index), "page \(page.index) given back twice, or never taken")
                if l.warm.count < warmLimit {
                    l.warm.append(page.index)
                } else {
                    release.append(page.index)
                }
            }
            return release
        }
        guard !release.isEmpty else { return }
        // As in `give(_:)`: zeroed before they are listed, so no taker sees one go to zeros.
        let sorted = release.sorted()
        var first = 0
        while first < sorted.count {
            var end = first + 1
            while end < sorted.count && sorted[end] == sorted[end - 1] + 1 { end += 1 }
            madvise(address(Page(index: sorted[first])), pageSize * (end - first), MADV_DONTNEED)
            first = end
        }
        lists.withLock { $0.cold.append(contentsOf: release) }
    }

    /// Gives every warm page's memory back to the kernel (after a cache is drained).
    public func trim() {
        guard canGiveBack else { return }
        let pages = lists.withLock { l -> [UInt32] in
            defer { l.warm.removeAll(keepingCapacity: true) }
            return l.warm
        }
        for i in pages { madvise(address(Page(index: i)), pageSize, MADV_DONTNEED) }
        lists.withLock { $0.cold.append(contentsOf: pages) }
    }

    /// The page's bytes. Valid until the page is freed; the holder of the page owns them (debug
    /// builds check that it is handed out).
    @inline(__always)
    public func bytes(_ page: Page) -> UnsafeMutableRawBufferPointer {
        precondition(Int(page.index) < capacity)
        assert(isTaken(page.index), "bytes of page \(page.index), which nobody holds")
        return UnsafeMutableRawBufferPointer(start: address(page), count: pageSize)
    }

    @inline(__always)
    private func address(_ page: Page) -> UnsafeMutableRawPointer {
        base + Int(page.index) * pageSize
    }

    /// Pages handed out at least once and not given back to the kernel (an upper bound on the
    /// arena's resident memory; pages between `give`/`trim` and their listing count as resident).
    public var touchedPages: Int { lists.withLock { Int($0.untouched) - $0.cold.count } }
}

/// The page arena's address space could not be reserved.
public struct ArenaReservationError: Error, Sendable, CustomStringConvertible {
    public let bytes: Int
    /// The mmap error, or 0 when the size itself is out of range.
    public let errno: Int32
    public let reason: String

    public var description: String {
        "cannot reserve \(bytes) bytes of address space for the memory budget's page arena: \(reason) (try a smaller --memory)"
    }
}
