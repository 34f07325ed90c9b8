/// A `mayFail` or `noWait` allocation found the budget spent, and reclaim could not free enough
/// (or a fault plan failed it on purpose). The caller has undone its partial work.
public struct OutOfMemoryError: Error, Sendable, CustomStringConvertible {
    /// The allocation site's name (see `holdfast sites`).
    public let site: String
    /// What the site allocates, in words.
    public let what: String
    public let bytes: Int
    public let limit: Int
    /// True when a fault plan failed the allocation rather than real exhaustion.
    public let injected: Bool

    public init(site: AllocationSite, bytes: Int, limit: Int, injected: Bool = false) {
        self.site = site.name
        self.what = site.summary
        self.bytes = bytes
        self.limit = limit
        self.injected = injected
    }

    public var description: String {
        let budget = limit >= 1 << 20 ? "\(limit >> 20) MiB" : "\(limit) byte"
        let cause = injected ? "failed by the fault plan (--inject)" : "the \(budget) budget is spent (try a larger --memory)"
        return "out of memory at \(site) (\(what), \(bytes) bytes): \(cause)"
    }
}
