#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HoldfastMemory
import Testing

extension AllocationSite {
    static let testArenaPage = AllocationSite("test.arena-page", .mayFail, .test, "a small arena page in a test")
}

@Suite("page arena")
struct ArenaTests {
    @Test("pages smaller than the system's: giving many back never zeroes a neighbour still in use")
    func smallPagesKeepTheirNeighbours() throws {
        let budget = MemoryBudget(limit: 256 * 1024, pageSize: 1024)
        let pages = (0..<256).map { _ in budget.allocatePage(at: .testArenaPage)! }
        for (k, p) in pages.enumerated() { budget.bytes(p).initializeMemory(as: UInt8.self, repeating: UInt8(k & 0x7F) | 0x80) }
        // Keep one page of each system page (not the first, which madvise can target); give the rest back, far past any warm limit.
        for (k, p) in pages.enumerated() where k % 4 != 1 { budget.freePage(p, for: .testArenaPage) }
        for (k, p) in pages.enumerated() where k % 4 == 1 {
            #expect(budget.bytes(p).allSatisfy { $0 == UInt8(k & 0x7F) | 0x80 }, "page \(k) lost its contents")
            budget.freePage(p, for: .testArenaPage)
        }
        #expect(budget.used == 0)
    }
}

@Suite("page arena batches")
struct ArenaBatchTests {
    @Test("a batch given back past the warm limit goes to the kernel in runs, and spares the pages still held")
    func batchGiveBack() {
        // 64 pages, of which 16 stay warm: a batch of 42 sends 26 back to the kernel.
        let budget = MemoryBudget(limit: 64 * 4096, pageSize: 4096)
        let pages = (0..<64).map { _ in budget.allocatePage(at: .testArenaPage)! }
        for (k, p) in pages.enumerated() { budget.bytes(p).initializeMemory(as: UInt8.self, repeating: UInt8(k + 1)) }
        let touched = budget.arena.touchedPages
        // Every third page stays: the batch is runs of two with gaps, out of order.
        let kept = pages.enumerated().filter { $0.offset % 3 == 0 }.map(\.element)
        let batch = pages.enumerated().filter { $0.offset % 3 != 0 }.map(\.element).reversed()
        budget.freePages(Array(batch), for: .testArenaPage)
        #expect(budget.used == kept.count * 4096)
        // Only where arena pages are whole system pages (not with 16 KiB or 64 KiB system pages).
        if sysconf(Int32(_SC_PAGESIZE)) <= 4096 {
            #expect(budget.arena.touchedPages == touched - (batch.count - 16), "pages past the warm limit should be given back")
        }
        for p in kept {
            let k = pages.firstIndex(of: p)!
            #expect(budget.bytes(p).allSatisfy { $0 == UInt8(k + 1) }, "page \(k), still held, lost its contents")
        }
        // Everything can be taken again, each page by one taker.
        let again = (0..<batch.count).map { _ in budget.allocatePage(at: .testArenaPage)! }
        #expect(Set(again.map(\.index)).count == batch.count)
        #expect(Set(again.map(\.index)).isDisjoint(with: Set(kept.map(\.index))))
        budget.freePages(again + kept, for: .testArenaPage)
        #expect(budget.used == 0)
    }
}

@Suite("page ownership")
struct PageOwnershipTests {
    #if os(Linux) || os(macOS)
    @Test("a page given back twice stops the program instead of getting two owners")
    func doubleFreeStops() async {
        await #expect(processExitsWith: .failure) {
            let budget = MemoryBudget(limit: 64 * 1024, pageSize: 4096)
            let page = budget.allocatePage(at: .testArenaPage)!
            budget.freePage(page, for: .testArenaPage)
            budget.freePage(page, for: .testArenaPage)
        }
    }
    #endif

    @Test("a page given back is handed out again to exactly one taker")
    func reuseHasOneOwner() {
        let budget = MemoryBudget(limit: 64 * 1024, pageSize: 4096)
        let first = budget.allocatePage(at: .testArenaPage)!
        budget.freePage(first, for: .testArenaPage)
        let pages = (0..<16).compactMap { _ in budget.allocatePage(at: .testArenaPage) }
        #expect(Set(pages).count == pages.count, "no page handed out twice")
        #expect(pages.contains(first))
        for p in pages { budget.freePage(p, for: .testArenaPage) }
        #expect(budget.used == 0)
    }
}
