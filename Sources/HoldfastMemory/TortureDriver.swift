/// Fails every allocation hit of a workload in turn (DESIGN.md, "Fault injection, built in").
///
/// A dry run counts the hits. Then for N = 1, 2, ... the workload runs on a fresh budget whose
/// plan fails the Nth hit, first one-off and then persistent, until a run completes with no
/// fault fired. A run fails when the workload throws anything but `OutOfMemoryError`, when the
/// budget is not back to zero after it (a leak), or when `check` names a problem.
public struct TortureDriver {
    public enum Mode: String, Sendable, CaseIterable {
        case oneOff = "one-off"
        case persistent
    }

    /// Builds the budget for one run (the plan is nil for the dry run).
    public var makeBudget: (FaultPlan?) -> MemoryBudget
    /// The sites the workload is meant to reach; the report lists those it never reached.
    public var sites: [AllocationSite]
    /// Restricts injection to one site or category (the plan's other fields are the driver's).
    public var site: String?
    public var category: MemoryCategory?
    /// A safety stop for workloads whose hit count does not converge.
    public var maxRunsPerMode = 100_000

    public init(sites: [AllocationSite], makeBudget: @escaping (FaultPlan?) -> MemoryBudget) {
        self.sites = sites
        self.makeBudget = makeBudget
    }

    public struct Failure: Sendable, CustomStringConvertible {
        public let mode: Mode?
        public let nth: Int
        public let problem: String
        public var description: String {
            mode.map { "\($0.rawValue) nth=\(nth): \(problem)" } ?? "dry run: \(problem)"
        }
    }

    public struct Coverage: Sendable {
        public let site: AllocationSite
        public var hits = 0     // in the dry run
        public var failed = 0   // injected failures over all runs
    }

    public struct Report: Sendable {
        public var dryRunHits = 0
        public var runs = 0
        public var cleanErrors = 0
        public var failures: [Failure] = []
        public var coverage: [Coverage] = []

        public var neverReached: [AllocationSite] { coverage.filter { $0.hits == 0 && $0.failed == 0 }.map(\.site) }
        public var neverFailed: [AllocationSite] { coverage.filter { $0.failed == 0 }.map(\.site) }
        public var passed: Bool { failures.isEmpty }

        /// One line per site: `NAME hit=N failed=N` or `NAME never reached`.
        public var lines: [String] {
            coverage.map { c in
                c.hits == 0 && c.failed == 0 ? "\(c.site.name) never reached"
                    : "\(c.site.name) policy=\(c.site.policy) hit=\(c.hits) failed=\(c.failed)"
            } + ["runs=\(runs) dry-run-hits=\(dryRunHits) clean-errors=\(cleanErrors) failures=\(failures.count)"]
        }
    }

    /// Runs the workload under every fault in turn. `check` sees the budget after the workload
    /// and the error it threw (if any), and returns a problem or nil.
    public func run(_ workload: (MemoryBudget) throws -> Void,
                    check: (MemoryBudget, (any Error)?) -> String? = { _, _ in nil }) -> Report {
        var report = Report()
        var coverage = Dictionary(uniqueKeysWithValues: sites.map { ($0.id, Coverage(site: $0)) })

        let dry = makeBudget(nil)
        if let problem = once(workload, check, dry, &report) {
            report.failures.append(Failure(mode: nil, nth: 0, problem: problem))
        }
        for s in sites { coverage[s.id]?.hits = dry.statistics(s).hits }
        report.dryRunHits = dry.hitSites.reduce(0) { $0 + $1.hits }

        for mode in Mode.allCases {
            var n = 1
            while n <= maxRunsPerMode {
                var plan = FaultPlan(nth: n, site: site, category: category, persistent: mode == .persistent)
                plan.seed = UInt64(n)
                let budget = makeBudget(plan)
                if let problem = once(workload, check, budget, &report) {
                    report.failures.append(Failure(mode: mode, nth: n, problem: problem))
                }
                for s in sites { coverage[s.id]?.failed += budget.statistics(s).injected }
                if budget.faultsFired == 0 { break }
                n += 1
            }
        }
        report.coverage = sites.compactMap { coverage[$0.id] }
        return report
    }

    private func once(_ workload: (MemoryBudget) throws -> Void, _ check: (MemoryBudget, (any Error)?) -> String?,
                      _ budget: MemoryBudget, _ report: inout Report) -> String? {
        report.runs += 1
        var thrown: (any Error)?
        do {
            try workload(budget)
        } catch let e as OutOfMemoryError {
            thrown = e
            report.cleanErrors += 1
        } catch {
            return "unexpected error: \(error)"
        }
        if budget.used != 0 {
            let by = MemoryCategory.allCases.filter { budget.used($0) != 0 }.map { "\($0)=\(budget.used($0))" }
            return "budget leak: \(budget.used) bytes still charged (\(by.joined(separator: " ")))"
        }
        return check(budget, thrown)
    }
}
