// swift-tools-version: 6.0
// Holdfast: ext4 in user space, inside a fixed memory budget.
//
// Each target lists exactly the modules its sources import; scripts/check_layers.sh holds the
// same table and fails `make test` when an import line strays from it (docs/architecture.md).
import PackageDescription

let log = Target.Dependency.product(name: "Logging", package: "swift-log")

let package = Package(
    name: "Holdfast",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Holdfast", targets: ["Holdfast"]),
        .library(name: "HoldfastHost", targets: ["HoldfastHost"]),
        .executable(name: "holdfast", targets: ["HoldfastCLI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
    ],
    targets: [
        // C only where Swift cannot reach: crc32c with SSE4.2 (chosen at run time), and the
        // Linux calls Glibc's module map hides (xattrs of a descriptor, O_DIRECT and friends).
        .target(name: "CHoldfastShim"),
        // Layer 1: on-disk structures as values, checksums, name hashes. No I/O.
        .target(name: "HoldfastFormat", dependencies: ["CHoldfastShim"]),
        // Layer 2: the memory budget, allocation sites and policies, reserves, reclaim, fault injection.
        .target(name: "HoldfastMemory"),
        // Layer 3: block devices over image files, the syscall funnel, the fault-injecting wrapper.
        .target(name: "HoldfastDevice", dependencies: ["CHoldfastShim", "HoldfastMemory"]),
        // Layer 4: the buffer cache, page cache, inode cache and extent-status cache.
        .target(name: "HoldfastCache", dependencies: ["HoldfastDevice", "HoldfastFormat", "HoldfastMemory"]),
        // Layer 5: transactions and handles, the jbd2 writer (commit, checkpoint, revoke), replay.
        .target(name: "HoldfastJournal", dependencies: ["HoldfastFormat", "HoldfastMemory", "HoldfastDevice", "HoldfastCache"]),
        // Layers 6 to 8: allocator, filesystem operations, writeback, mkfs, and the public API.
        .target(name: "Holdfast", dependencies: [
            "CHoldfastShim", "HoldfastFormat", "HoldfastMemory", "HoldfastDevice", "HoldfastCache", "HoldfastJournal", log,
        ]),
        // Host bridges over the public API only: import a host tree, extract to one.
        .target(name: "HoldfastHost", dependencies: ["Holdfast", "CHoldfastShim"]),
        // libfuse3's low-level API from the system (libfuse3-dev), found through pkg-config.
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // The FUSE device's reads and writes, for what libfuse 3.14 does not carry (HANDLE_KILLPRIV_V2),
        // and read replies spliced from the image.
        .target(name: "CFuseDevice", dependencies: ["CFuse3"]),
        // Front end: the FUSE mount, over the public API only.
        .target(name: "HoldfastFUSE", dependencies: ["Holdfast", "CFuse3", "CFuseDevice"]),
        // Front end: the `holdfast` command-line tool.
        .executableTarget(name: "HoldfastCLI", dependencies: [
            "Holdfast", "HoldfastHost", "HoldfastFUSE", log,
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Benchmark of the memory layer's hot paths (make bench-memory).
        .executableTarget(name: "holdfast-membench", dependencies: ["HoldfastMemory"]),
        // Benchmark of append+fsync latency through the library (make bench-fsync).
        .executableTarget(name: "holdfast-fsyncbench", dependencies: ["Holdfast"]),

        // Fixtures shared by the test targets: scratch folders, images, e2fsck, loop mounts, sweeps.
        .target(name: "HoldfastTestSupport", dependencies: ["Holdfast", "HoldfastHost", "HoldfastMemory", "HoldfastDevice"],
                path: "Tests/HoldfastTestSupport"),
        .testTarget(name: "HoldfastFormatTests", dependencies: ["HoldfastFormat", "HoldfastTestSupport"]),
        .testTarget(name: "HoldfastMemoryTests", dependencies: ["HoldfastMemory"]),
        .testTarget(name: "HoldfastDeviceTests", dependencies: ["HoldfastDevice", "HoldfastMemory", "HoldfastTestSupport"]),
        .testTarget(name: "HoldfastCacheTests", dependencies: [
            "Holdfast", "HoldfastCache", "HoldfastDevice", "HoldfastMemory", "HoldfastTestSupport",
        ]),
        .testTarget(name: "HoldfastTests", dependencies: [
            "Holdfast", "HoldfastHost", "HoldfastFormat", "HoldfastMemory", "HoldfastCache", "HoldfastDevice", "HoldfastTestSupport", log,
        ]),
        .testTarget(name: "HoldfastCLITests", dependencies: [
            "HoldfastCLI", "Holdfast", "HoldfastDevice", "HoldfastTestSupport", "CFuseDevice",
        ]),
    ],
    swiftLanguageModes: [.v6]
)

// Fuzz targets (Fuzz/, `make fuzz`): libFuzzer harnesses over hostile images, built only when
// HOLDFAST_FUZZ=1 with -sanitize=fuzzer,address; a plain build never sees them (they have no main).
if Context.environment["HOLDFAST_FUZZ"] == "1" {
    // lld: gold fails on the sanitizers' objects.
    let lld: [LinkerSetting] = [.unsafeFlags(["-use-ld=lld"])]
    package.targets += [
        .target(name: "FuzzSupport", dependencies: ["Holdfast"], path: "Fuzz/Support"),
        .executableTarget(name: "fuzz-read", dependencies: ["FuzzSupport", "Holdfast"], path: "Fuzz/Read", linkerSettings: lld),
        .executableTarget(name: "fuzz-write", dependencies: ["FuzzSupport", "Holdfast"], path: "Fuzz/Write", linkerSettings: lld),
        .executableTarget(name: "fuzz-journal", dependencies: ["FuzzSupport", "HoldfastFormat", "HoldfastJournal"], path: "Fuzz/Journal", linkerSettings: lld),
        .executableTarget(name: "fuzz-directory", dependencies: ["FuzzSupport", "HoldfastFormat"], path: "Fuzz/Directory", linkerSettings: lld),
    ]
}
