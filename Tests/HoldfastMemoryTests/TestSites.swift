import HoldfastMemory

// Sites of the memory layer's own tests. Each test uses its own sites, so tests running in
// parallel on different budgets never share a counter that matters.
extension AllocationSite {
    static let testMayFail = AllocationSite("test.may-fail", .mayFail, .test, "a mayFail allocation in a test")
    static let testNoWait = AllocationSite("test.no-wait", .noWait, .test, "a noWait allocation in a test")
    static let testNoFail = AllocationSite("test.no-fail", .noFail, .test, "a noFail allocation in a test")
    static let testFiller = AllocationSite("test.filler", .noWait, .test, "memory a test holds to fill the budget")
    static let testOtherNoFail = AllocationSite("test.other-no-fail", .noFail, .inode, "a second noFail site in a test")
    static let testPagePool = AllocationSite("test.page-pool", .noFail, .writeback, "a reserve of pages that waits")
    static let testObjectPool = AllocationSite("test.object-pool", .noWait, .journal, "a reserve that never waits")
}
