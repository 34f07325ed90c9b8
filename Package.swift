// swift-tools-version: 6.0
// Holdfast: ext4 in user space, inside a fixed memory budget.
import PackageDescription

let package = Package(
    name: "Holdfast",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Holdfast", targets: ["Holdfast"]),
        .executable(name: "holdfast", targets: ["holdfast"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C only where Swift cannot reach: crc32c with SSE4.2 (chosen at run time).
        .target(name: "CHoldfastShim"),
        // Layer 1: on-disk structures as values, checksums, name hashes. No I/O.
        .target(name: "HoldfastFormat", dependencies: ["CHoldfastShim"]),
        // Layer 2: the memory budget, allocation sites and policies, reserves, reclaim, fault injection.
        .target(name: "HoldfastMemory"),
        // Layer 3: block devices over image files, and the wrapper that injects I/O faults.
        .target(name: "HoldfastDevice", dependencies: ["CHoldfastShim", "HoldfastFormat", "HoldfastMemory"]),
        // Layer 4: the buffer cache, on the memory layer.
        .target(name: "HoldfastCache", dependencies: ["HoldfastDevice", "HoldfastMemory"]),
        // Layer 5: transactions and handles (commit in place for now), jbd2 replay in memory.
        .target(name: "HoldfastJournal", dependencies: ["HoldfastFormat", "HoldfastMemory", "HoldfastDevice", "HoldfastCache"]),
        // Layer 7: the filesystem operations and the public API.
        .target(name: "Holdfast", dependencies: ["CHoldfastShim", "HoldfastFormat", "HoldfastMemory", "HoldfastDevice", "HoldfastCache", "HoldfastJournal"]),
        // Front end: the command-line tool.
        .executableTarget(name: "holdfast", dependencies: [
            "Holdfast", "HoldfastCache",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        // Benchmark of the memory layer's hot paths (make bench-memory).
        .executableTarget(name: "holdfast-membench", dependencies: ["HoldfastMemory"]),
        .testTarget(name: "HoldfastMemoryTests", dependencies: ["HoldfastMemory"]),
        .testTarget(name: "HoldfastTests", dependencies: ["holdfast", "Holdfast", "HoldfastFormat", "HoldfastDevice", "HoldfastCache", "HoldfastJournal", "HoldfastMemory"]),
    ],
    swiftLanguageModes: [.v6]
)
