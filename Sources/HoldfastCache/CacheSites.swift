import HoldfastMemory

extension AllocationSite {
    public static let bufferBlock = AllocationSite("buffer.block", .mayFail, .buffer, "a cached metadata block (one arena page)")
    public static let bufferIndex = AllocationSite("buffer.index", .mayFail, .buffer, "the buffer cache's index entry for a block")

    /// The cache layer's sites.
    public static let cacheSites: [AllocationSite] = [.bufferBlock, .bufferIndex]
}
