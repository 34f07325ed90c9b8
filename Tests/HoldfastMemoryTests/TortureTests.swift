import HoldfastMemory
import Testing

@Suite("Torture driver")
struct TortureTests {
    static func value(_ key: Int, _ version: Int) -> [UInt8] {
        (0..<(100 + key * 37 % 900)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ key &* 7 &+ version) }
    }

    /// 120 puts over 20 keys in a 16-page budget, with reads and periodic flushes. Puts that run
    /// out of memory are expected; what matters is that nothing is lost, nothing is wrong and
    /// every byte comes back. Returns a problem, or nil.
    static func workload(_ budget: MemoryBudget, bug: PageLRU.PlantedBug) throws -> String? {
        let lru = try PageLRU(budget: budget, bug: bug)
        var model: [Int: [UInt8]] = [:]
        var problem: String?
        for i in 0..<120 {
            let key = (i * 7) % 20
            let v = value(key, i)
            do {
                try lru.put(key, v)
                model[key] = v
            } catch {}
            if i % 3 == 0, let expected = model[(i * 5) % 20], lru.get((i * 5) % 20) != expected, problem == nil {
                problem = "key \((i * 5) % 20) read back wrong after put \(i)"
            }
            if i % 10 == 9 { lru.flush() }
        }
        for (key, expected) in model where lru.get(key) != expected && problem == nil {
            problem = "key \(key) read back wrong at the end"
        }
        lru.close()
        return problem
    }

    static func driver() -> TortureDriver {
        TortureDriver(sites: AllocationSite.lruSites) { plan in
            MemoryBudget(limit: 16 * 4096, faultPlan: plan, configuration: PolicyTests.quiet(100_000))
        }
    }

    static func run(_ bug: PageLRU.PlantedBug) -> TortureDriver.Report {
        let problems = ProblemLog()
        let report = driver().run({ b in
            if let p = try workload(b, bug: bug) { problems.add(p) }
        }, check: { _, _ in problems.take() })
        return report
    }

    @Test func reachesAndFailsEverySiteOfACorrectWorkload() {
        let report = Self.run(.none)
        #expect(report.passed, "\(report.failures.prefix(5))")
        #expect(report.neverReached.isEmpty, "never reached: \(report.neverReached)")
        #expect(report.neverFailed.isEmpty, "never failed: \(report.neverFailed)")
        #expect(report.runs >= report.dryRunHits)
        print(report.lines.joined(separator: "\n"))
        #expect(report.lines.last!.contains("failures=0"))
    }

    @Test func catchesALeakPlantedInAFailurePath() {
        let report = Self.run(.leakOnPageFailure)
        #expect(!report.passed)
        #expect(report.failures.contains { $0.problem.contains("budget leak") })
    }

    @Test func catchesACorruptionPlantedInAFailurePath() {
        let report = Self.run(.corruptOnPageFailure)
        #expect(!report.passed)
        #expect(report.failures.contains { $0.problem.contains("read back wrong") })
        #expect(!report.failures.contains { $0.problem.contains("leak") })
    }
}

/// Problems the workload found, handed to the driver's check.
final class ProblemLog: @unchecked Sendable {
    private var problems: [String] = []
    func add(_ p: String) { problems.append(p) }
    func take() -> String? { defer { problems = [] }; return problems.first }
}
