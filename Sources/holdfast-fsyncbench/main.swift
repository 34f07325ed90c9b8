// Benchmark of fsync latency (make bench-fsync): appends COUNT blocks of SIZE bytes to one file
// of an ext4 image through the library, each followed by fsync, and prints the latency of each
// append+fsync. scripts/bench_fsync.sh runs it beside the kernel's ext4 on a loop mount.
#if canImport(Glibc)
import Glibc
#endif
import Holdfast

func fail(_ message: String) -> Never {
    let line = "holdfast-fsyncbench: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(2)
}

let args = CommandLine.arguments
guard args.count == 5, let count = Int(args[3]), let size = Int(args[4]), count > 0, size > 0 else {
    fail("usage: holdfast-fsyncbench IMAGE PATH COUNT SIZE   (appends COUNT writes of SIZE bytes to PATH, fsync after each)")
}

func now() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

do {
    let fs = try Filesystem.open(path: args[1], options: OpenOptions(memoryBudget: 64 << 20, writable: true))
    let file = try fs.openFile(try fs.create(path: args[2], kind: .regular, owner: Ownership(permissions: 0o644)))
    var bytes = [UInt8](repeating: 0, count: size)
    for i in 0..<size { bytes[i] = UInt8(truncatingIfNeeded: i &* 131 &+ 7) }
    var latencies: [UInt64] = []
    latencies.reserveCapacity(count)
    let start = now()
    for i in 0..<count {
        let t = now()
        try fs.write(file.inode, at: UInt64(i * size), bytes)
        try file.sync()
        latencies.append(now() - t)
    }
    let total = now() - start
    try file.close()
    try fs.close()
    latencies.sort()
    func ms(_ ns: UInt64) -> String {
        let us = ns / 1000
        let frac = String(us % 1000)
        return "\(us / 1000)." + String(repeating: "0", count: 3 - frac.count) + frac
    }
    print("total_ms=\(ms(total)) median_ms=\(ms(latencies[count / 2])) p99_ms=\(ms(latencies[min(count - 1, count * 99 / 100)])) max_ms=\(ms(latencies[count - 1]))")
} catch {
    fail("\(error)")
}
