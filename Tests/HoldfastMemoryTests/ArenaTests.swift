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
