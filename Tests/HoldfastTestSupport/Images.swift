import Foundation
import Holdfast
import HoldfastMemory
import Testing

/// Images the tests make with mkfs, open with Holdfast and hand to the outside judges
/// (`e2fsck -fn`, `debugfs`).
public enum Images {
    /// A fresh ext4 image from `mkfs.ext4` (`extra` adds its options).
    public static func make(_ path: String, blockSize: Int, megabytes: Int, extra: [String] = []) throws {
        try Support.sh(["mkfs.ext4", "-q", "-F", "-b", String(blockSize)] + extra + [path, "\(megabytes)M"])
    }

    /// `e2fsck -fn` finds nothing to repair.
    public static func expectClean(_ image: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try Support.run(["e2fsck", "-fn", image])
        #expect(r.status == 0, "e2fsck -fn:\n\(r.out)\(r.stderr)", sourceLocation: sourceLocation)
    }

    /// Opens `image` writable with a small budget (and a fault plan, for sweeps).
    public static func openWritable(_ image: String, memory: Int = 16 << 20, faults: FaultPlan? = nil,
                                    delayedAllocation: Bool = true) throws -> Filesystem {
        var options = OpenOptions(memoryBudget: memory, writable: true)
        options.faultPlan = faults
        options.delayedAllocation = delayedAllocation
        return try Filesystem.open(path: image, options: options)
    }

    /// How many runs of blocks the file at `path` has (one per extent, as the allocator laid it out).
    public static func extentCount(_ fs: Filesystem, _ path: String) throws -> Int {
        var n = 0
        try fs.blockRuns(try fs.resolve(path)) { _ in n += 1 }
        return n
    }

    /// The file as debugfs reads it from the image (an outside judge of what reached the disk).
    public static func dumped(_ image: String, _ path: String, _ scratch: Scratch) throws -> [UInt8] {
        let out = scratch.path("dump-\(UUID().uuidString)")
        try Support.sh(["debugfs", "-R", "dump \(path) \(out)", image])
        return Array(try Data(contentsOf: URL(fileURLWithPath: out)))
    }
}

/// Test data that a broken engine would not reproduce by accident.
public enum Patterns {
    /// `count` bytes of xorshift output from `seed`: no two blocks alike, no runs of zeros.
    public static func random(_ count: Int, seed: UInt64) -> [UInt8] {
        var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        return (0..<count).map { _ in
            x ^= x << 13; x ^= x >> 7; x ^= x << 17
            return UInt8(truncatingIfNeeded: x)
        }
    }
}
