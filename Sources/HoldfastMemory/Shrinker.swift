/// What a shrinker is asked to do in one reclaim pass.
public struct ReclaimRequest: Sendable {
    /// Bytes this shrinker should try to free (its share of the shortfall).
    public let bytes: Int
    /// Reclaim started inside a `noFS` scope: drop only clean memory, never write anything back.
    public let noFS: Bool
}

/// A cache that can give memory back. `count` says how many bytes it could free now;
/// `scan` frees up to the requested bytes and returns how many it freed (after uncharging them).
///
/// Both are called without any budget lock held and may take the cache's own locks; they must
/// not allocate with a waiting policy. A shrinker that needs the filesystem (writes back,
/// takes filesystem locks) sets `needsFilesystem` and is skipped inside `noFS` scopes.
///
/// `cost` says how dear what it frees is to have again (ext4's shrinker "seeks"): reclaim asks the
/// cheapest shrinkers first (clean file pages, 1, before metadata blocks, 2, before buddy bitmaps
/// rebuilt by scanning, 4) and goes on to dearer ones only for what is still missing.
public final class Shrinker: Sendable {
    public let name: String
    public let needsFilesystem: Bool
    public let cost: Int
    let count: @Sendable () -> Int
    let scan: @Sendable (ReclaimRequest) -> Int

    public init(name: String, needsFilesystem: Bool = false, cost: Int = 1,
                count: @escaping @Sendable () -> Int,
                scan: @escaping @Sendable (ReclaimRequest) -> Int) {
        self.name = name
        self.needsFilesystem = needsFilesystem
        self.cost = cost
        self.count = count
        self.scan = scan
    }
}
