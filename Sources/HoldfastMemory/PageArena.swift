#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// One page of the arena, by index. Its bytes are reached through the arena that issued it.
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
    private let warmLimit: Int

    /// Reserves `capacity` pages of `pageSize` bytes (a power of two, at least 512).
    public init(pageSize: Int, capacity: Int) {
        precondition(pageSize >= 512 && pageSize & (pageSize - 1) == 0, "page size must be a power of two")
        precondition(capacity > 0 && capacity < Int(UInt32.max))
        self.pageSize = pageSize
        self.capacity = capacity
        mappedBytes = pageSize * capacity
        guard let p = mmap(nil, mappedBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              p != MAP_FAILED else {
            fatalError("cannot reserve \(mappedBytes) bytes of address space for the page arena: errno \(errno)")
        }
        base = p
        var l = FreeLists()
        l.warm.reserveCapacity(capacity)
        l.cold.reserveCapacity(capacity)
        lists = Locked(l)
        warmLimit = max(16, capacity / 8)
    }

    deinit { munmap(base, mappedBytes) }

    /// Takes a free page, or nil when every page is handed out.
    func take() -> Page? {
        lists.withLock { l -> Page? in
            if let i = l.warm.popLast() { return Page(index: i) }
            if let i = l.cold.popLast() { return Page(index: i) }
            guard Int(l.untouched) < capacity else { return nil }
            defer { l.untouched += 1 }
            return Page(index: l.untouched)
        }
    }

    /// Returns a page. Past the warm limit its memory goes back to the kernel.
    func give(_ page: Page) {
        let release = lists.withLock { l -> Bool in
            if l.warm.count < warmLimit {
                l.warm.append(page.index)
                return false
            }
            l.cold.append(page.index)
            return true
        }
        if release { madvise(address(page), pageSize, MADV_DONTNEED) }
    }

    /// Gives every warm page's memory back to the kernel (after a cache is drained).
    public func trim() {
        let pages = lists.withLock { l -> [UInt32] in
            let w = l.warm
            l.cold.append(contentsOf: w)
            l.warm.removeAll(keepingCapacity: true)
            return w
        }
        for i in pages { madvise(address(Page(index: i)), pageSize, MADV_DONTNEED) }
    }

    /// The page's bytes. Valid until the page is freed; the holder of the page owns them.
    @inline(__always)
    public func bytes(_ page: Page) -> UnsafeMutableRawBufferPointer {
        precondition(Int(page.index) < capacity)
        return UnsafeMutableRawBufferPointer(start: address(page), count: pageSize)
    }

    @inline(__always)
    private func address(_ page: Page) -> UnsafeMutableRawPointer {
        base + Int(page.index) * pageSize
    }

    /// Pages handed out at least once (an upper bound on the arena's resident memory).
    public var touchedPages: Int { lists.withLock { Int($0.untouched) - $0.cold.count } }
}
