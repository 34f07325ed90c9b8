// Nanoseconds per operation of the memory layer's hot paths, uncontended and with two threads,
// next to malloc+free of the same sizes. Run: make bench-memory (a release build).
#if canImport(Glibc)
import Glibc
#endif
import HoldfastMemory

extension AllocationSite {
    static let benchPage = AllocationSite("bench.page", .mayFail, .page, "a page in the benchmark")
    static let benchObject = AllocationSite("bench.object", .mayFail, .inode, "an object charge in the benchmark")
    static let benchPool = AllocationSite("bench.pool", .noFail, .writeback, "a reserve page in the benchmark")
}

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) * 1e9 + Double(t.tv_nsec)
}

/// Runs `body(iterations)` on `threads` threads at once; returns wall nanoseconds per iteration per thread.
func measure(threads: Int, iterations: Int, _ body: @escaping @Sendable (Int) -> Void) -> Double {
    var handles: [pthread_t] = []
    let ready = Locked(0)
    let gate = Locked(false)
    final class Box: @unchecked Sendable { let f: () -> Void; init(_ f: @escaping () -> Void) { self.f = f } }
    for _ in 0..<threads {
        var h = pthread_t()
        let box = Unmanaged.passRetained(Box {
            ready.withLock { $0 += 1 }
            while !gate.withLock({ $0 }) {}
            body(iterations)
        }).toOpaque()
        pthread_create(&h, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().f()
            return nil
        }, box)
        handles.append(h)
    }
    while ready.withLock({ $0 }) < threads {}
    let t0 = now()
    gate.withLock { $0 = true }
    for h in handles { pthread_join(h, nil) }
    return (now() - t0) / Double(iterations)
}

/// Frees what it is given, out of the optimizer's sight, so malloc+free is not folded away.
@inline(never) func sink(_ p: UnsafeMutableRawPointer?) { free(p) }

func median(_ runs: Int, _ f: () -> Double) -> Double {
    let xs = (0..<runs).map { _ in f() }.sorted()
    return xs[xs.count / 2]
}

let iterations = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 2_000_000 : 2_000_000
let budget = MemoryBudget(limit: 64 << 20)
let pool = try! MemoryPool<Page>.pages(name: "bench", site: .benchPool, minimum: 16, budget: budget)

let cases: [(String, @Sendable (Int) -> Void)] = [
    ("page allocate+free", { n in
        for _ in 0..<n {
            let p = budget.allocatePage(at: .benchPage)!
            budget.freePage(p, for: .benchPage)
        }
    }),
    ("object charge+uncharge", { n in
        for _ in 0..<n {
            guard budget.charge(128, at: .benchObject) else { fatalError("charge failed") }
            budget.uncharge(128, for: .benchObject)
        }
    }),
    ("reserve allocate+free", { n in
        for _ in 0..<n { pool.free(pool.allocate()!) }
    }),
    ("malloc+free 4096 (peer)", { n in
        for _ in 0..<n {
            sink(malloc(4096))
        }
    }),
    ("malloc+free 128 (peer)", { n in
        for _ in 0..<n {
            sink(malloc(128))
        }
    }),
]

print("memory layer: ns per operation (median of 5 runs of \(iterations) per thread)")
print("case".padding(26) + "1 thread".padding(12) + "2 threads")
for (name, body) in cases {
    let one = median(5) { measure(threads: 1, iterations: iterations, body) }
    let two = median(5) { measure(threads: 2, iterations: iterations, body) }
    print(name.padding(26) + String(format1(one)).padding(12) + format1(two))
}
precondition(budget.used == 16 * 4096, "the benchmark leaked budget")

func format1(_ x: Double) -> String { String(Int((x * 10).rounded())) .inserting(".", fromEnd: 1) }

extension String {
    func padding(_ n: Int) -> String { self + String(repeating: " ", count: max(1, n - count)) }
    func inserting(_ s: Character, fromEnd k: Int) -> String {
        var c = Array(self)
        while c.count <= k { c.insert("0", at: 0) }
        c.insert(s, at: c.count - k)
        return String(c)
    }
}
