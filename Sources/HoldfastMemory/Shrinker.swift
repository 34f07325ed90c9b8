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
public final class Shrinker: Sendable {
    public let name: String
    public let needsFilesystem: Bool
    let count: @Sendable () -> Int
    let scan: @Sendable (ReclaimRequest) -> Int

    public init(name: String, needsFilesystem: Bool = false,
                count: @escaping @Sendable () -> Int,
                scan: @escaping @Sendable (ReclaimRequest) -> Int) {
        self.name = name
        self.needsFilesystem = needsFilesystem
        self.count = count
        self.scan = scan
    }
}
