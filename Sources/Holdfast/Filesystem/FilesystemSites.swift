import HoldfastMemory

extension AllocationSite {
    static let readBuffer = AllocationSite("read.buffer", .mayFail, .page, "the bounded buffer a file read streams through")
    static let directoryListing = AllocationSite("directory.listing", .mayFail, .directory, "one block's entries of a directory listing, while it is held")
    static let journalRedirects = AllocationSite("journal.redirects", .mayFail, .journal, "the table of blocks an in-memory journal replay redirects")

    /// The filesystem layer's sites.
    static let filesystemSites: [AllocationSite] = [.readBuffer, .directoryListing, .journalRedirects, .allocatorBuddy, .writebackMap, .evictionReserve]
}
