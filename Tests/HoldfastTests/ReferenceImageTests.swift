import Foundation
import Holdfast
import HoldfastFormat
import HoldfastHost
import HoldfastTestSupport
import Testing

/// Images built by mkfs.ext4 -d from a generated tree, in every layout the read path claims;
/// `holdfast extract` of each must equal what the kernel's ext4 shows through a loop mount.
@Suite("mkfs.ext4 -d reference images", .serialized)
struct ReferenceImageTests {
    struct Layout: CustomTestStringConvertible, Sendable {
        let name: String
        let mkfs: [String]
        var testDescription: String { name }
    }

    static let layouts: [Layout] = [
        Layout(name: "ext4 1 KiB metadata_csum", mkfs: ["-t", "ext4", "-b", "1024"]),
        Layout(name: "ext4 2 KiB metadata_csum", mkfs: ["-t", "ext4", "-b", "2048"]),
        Layout(name: "ext4 4 KiB metadata_csum", mkfs: ["-t", "ext4", "-b", "4096"]),
        Layout(name: "ext4 4 KiB uninit_bg (crc16)", mkfs: ["-t", "ext4", "-b", "4096", "-O", "^metadata_csum,uninit_bg"]),
        Layout(name: "ext4 1 KiB 32-byte descriptors", mkfs: ["-t", "ext4", "-b", "1024", "-O", "^64bit,^metadata_csum"]),
        Layout(name: "ext4 4 KiB meta_bg", mkfs: ["-t", "ext4", "-b", "4096", "-O", "meta_bg,^resize_inode"]),
        Layout(name: "ext4 4 KiB inline_data", mkfs: ["-t", "ext4", "-b", "4096", "-O", "inline_data"]),
        Layout(name: "ext4 1 KiB inline_data", mkfs: ["-t", "ext4", "-b", "1024", "-O", "inline_data"]),
        Layout(name: "ext3 (block maps, journal)", mkfs: ["-t", "ext3", "-b", "1024"]),
        Layout(name: "ext2 (block maps)", mkfs: ["-t", "ext2", "-b", "4096"]),
    ]

    @Test("extract equals the kernel's view", arguments: layouts)
    func extractMatchesKernel(layout: Layout) throws {
        try Support.requireLoopMount("the kernel comparison")
        let scratch = try Scratch()
        let image = scratch.path("ref.img")
        // Sparse files past 4 GiB need only a few blocks: a small image holds the whole tree.
        try Support.sh(["truncate", "-s", "96M", image])
        try Support.sh(["mkfs.ext4", "-q", "-F", "-d", Trees.small] + layout.mkfs + [image])
        try Support.sh(["e2fsck", "-fn", image])

        let fs = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: 8 << 20))
        try Support.expectExtractMatchesKernel(fs, into: scratch.path("out"), judge: image)
        #expect(fs.budget.peak <= 8 << 20)
    }

    @Test("the image file is never modified")
    func imageUntouched() throws {
        let scratch = try Scratch()
        let image = scratch.path("ro.img")
        try Support.sh(["truncate", "-s", "64M", image])
        try Support.sh(["mkfs.ext4", "-q", "-d", Trees.small, image])
        let before = try Support.sha256(image)
        let fs = try Filesystem.open(path: image)
        _ = try Extractor(fs).run(destination: scratch.path("out"))
        #expect(try Support.sha256(image) == before)
    }
}
