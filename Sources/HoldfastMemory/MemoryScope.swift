#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Per-thread reclaim constraints, nestable (the kernel's memalloc_nofs_save/restore).
///
/// Code that holds filesystem locks runs inside `MemoryScope.noFS { ... }`: reclaim started
/// there drops only clean memory and never calls a shrinker that needs the filesystem.
/// Reclaim itself runs inside a `reclaiming` scope, so an allocation made by a shrinker
/// never starts a second, nested reclaim.
public enum MemoryScope {
    /// Runs `body` with filesystem reclaim forbidden on this thread.
    public static func noFS<R, E: Error>(_ body: () throws(E) -> R) throws(E) -> R {
        let saved = flags
        flags = saved + noFSUnit
        defer { flags = saved }
        return try body()
    }

    /// True inside at least one `noFS` scope on this thread.
    public static var isNoFS: Bool { flags >= noFSUnit }

    /// Depth of nested `noFS` scopes on this thread.
    public static var noFSDepth: Int { flags / noFSUnit }

    static func reclaiming<R>(_ body: () -> R) -> R {
        let saved = flags
        flags = saved | reclaimBit
        defer { flags = saved }
        return body()
    }

    static var isReclaiming: Bool { flags & reclaimBit != 0 }

    // Bit 0: inside reclaim. Bits 1...: noFS depth.
    private static let reclaimBit = 1
    private static let noFSUnit = 2

    private static var flags: Int {
        get { Int(bitPattern: pthread_getspecific(key.value)) }
        set { pthread_setspecific(key.value, UnsafeRawPointer(bitPattern: newValue)) }
    }

    private static let key = ThreadKey()
}

/// One pthread key, created once; the value is a plain integer, so it needs no destructor.
private final class ThreadKey: Sendable {
    let value: pthread_key_t
    init() {
        var k = pthread_key_t()
        precondition(pthread_key_create(&k, nil) == 0, "pthread_key_create failed")
        value = k
    }
}
