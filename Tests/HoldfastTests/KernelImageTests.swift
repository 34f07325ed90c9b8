import Foundation
import Holdfast
import HoldfastFormat
import HoldfastTestSupport
import Testing

/// Images the kernel's ext4 wrote (scripts/kernel_image.sh): multi-level htrees, unwritten extents,
/// two-level extent trees, reused inodes, shared xattr blocks. The loop mount is the judge.
@Suite("kernel-written images", .serialized)
struct KernelImageTests {
    static let layouts: [(Int, Bool)] = [(1024, true), (4096, true), (2048, false)]

    @Test("extract equals the kernel's view; every htree name found through the index",
          arguments: [0, 1, 2])
    func kernelImage(layoutIndex: Int) throws {
        try Support.requireLoopMount("kernel-written images")
        let (blockSize, csum) = Self.layouts[layoutIndex]
        let scratch = try Scratch()
        let image = scratch.path("kernel.img")
        try Support.sh([Support.scripts + "/kernel_image.sh", image, String(blockSize)] + (csum ? [] : ["--no-csum"]))

        let fs = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 8 << 20))
        try Support.expectExtractMatchesKernel(fs, into: scratch.path("out"), judge: image)

        // Hashed lookups: every name in /big through the index, none by scanning.
        let big = try fs.resolve("/big")
        #expect(big.isHashIndexed)
        let entries = try fs.directoryEntries(big).filter { !$0.isDotOrDotDot }
        #expect(entries.count >= 20_000)
        let before = fs.lookupCounters.snapshot
        for e in entries {
            #expect(try fs.lookup(e.name, in: big) == e.inode)
        }
        #expect(try fs.lookup(Array("no-such-name".utf8), in: big) == nil)
        let after = fs.lookupCounters.snapshot
        let lookups = after.lookups - before.lookups
        let blocksPerLookup = Double(after.blocks - before.blocks) / Double(max(lookups, 1))
        #expect(lookups == entries.count + 1)
        // Index levels plus one leaf (rarely two on a hash collision): never a scan of hundreds of blocks.
        #expect(blocksPerLookup <= 3.5, "read \(blocksPerLookup) blocks per lookup")

        // The two-level extent tree reads back run by run.
        let deep = try fs.resolve("/deep")
        var runs = 0
        try fs.blockRuns(deep) { _ in runs += 1 }
        #expect(runs >= 3000)
        #expect(fs.budget.peak <= 8 << 20)
    }
}
