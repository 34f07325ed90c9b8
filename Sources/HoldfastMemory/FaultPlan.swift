import Synchronization

/// Which allocation hits fail on purpose: `--inject SPEC` and `HOLDFAST_INJECT`.
///
/// SPEC is a comma list: `nth=N` (the Nth matching hit, counting from 1), `site=NAME`,
/// `category=NAME`, `persistent` (that hit and every later one), `probability=P` with
/// `seed=S` (each matching hit fails with chance P; with nth, only from the Nth hit on).
/// A plan naming only a site or category fails its first hit (or all of them, persistent).
public struct FaultPlan: Sendable, Equatable, CustomStringConvertible {
    public var nth: Int?
    public var site: String?
    public var category: MemoryCategory?
    public var persistent = false
    public var probability: Double?
    public var seed: UInt64 = 1

    public init(nth: Int? = nil, site: String? = nil, category: MemoryCategory? = nil,
                persistent: Bool = false, probability: Double? = nil, seed: UInt64 = 1) {
        self.nth = nth
        self.site = site
        self.category = category
        self.persistent = persistent
        self.probability = probability
        self.seed = seed
    }

    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public let description: String
    }

    public init(parsing spec: String) throws(ParseError) {
        for raw in spec.split(separator: ",", omittingEmptySubsequences: true) {
            let part = raw.trimmingSpaces
            let (key, value) = part.firstIndex(of: "=").map { (String(part[..<$0]), String(part[part.index(after: $0)...])) } ?? (part, "")
            switch key {
            case "nth":
                guard let n = Int(value), n >= 1 else { throw ParseError(description: "nth=\(value): give a hit number from 1") }
                nth = n
            case "site":
                guard !value.isEmpty else { throw ParseError(description: "site= needs a site name (see `holdfast sites`)") }
                site = value
            case "category":
                guard let c = MemoryCategory(name: value) else {
                    throw ParseError(description: "category=\(value): not a category; one of \(MemoryCategory.allCases.map(\.description).joined(separator: ", "))")
                }
                category = c
            case "persistent":
                guard value.isEmpty else { throw ParseError(description: "persistent takes no value") }
                persistent = true
            case "probability":
                guard let p = Double(value), p >= 0, p <= 1 else { throw ParseError(description: "probability=\(value): give a number from 0 to 1") }
                probability = p
            case "seed":
                guard let s = UInt64(value) else { throw ParseError(description: "seed=\(value): give a non-negative integer") }
                seed = s
            default:
                throw ParseError(description: "unknown fault-plan key \"\(key)\"; use nth=N, site=NAME, category=NAME, persistent, probability=P, seed=S")
            }
        }
        guard nth != nil || site != nil || category != nil || probability != nil else {
            throw ParseError(description: "empty fault plan \"\(spec)\"; for example nth=5 or category=buffer,probability=0.1,seed=7")
        }
    }

    public var description: String {
        var parts: [String] = []
        if let nth { parts.append("nth=\(nth)") }
        if let site { parts.append("site=\(site)") }
        if let category { parts.append("category=\(category)") }
        if persistent { parts.append("persistent") }
        if let probability { parts.append("probability=\(probability)"); parts.append("seed=\(seed)") }
        return parts.joined(separator: ",")
    }

    func matches(_ s: AllocationSite) -> Bool {
        if let site, site != s.name { return false }
        if let category, category != s.category { return false }
        return true
    }
}

/// Applies a plan: counts matching hits and decides which fail. Deterministic for a given
/// sequence of hits (the random draws come from a seeded generator).
final class FaultInjector: Sendable {
    let plan: FaultPlan
    private let matchingHits = Atomic<Int>(0)
    private let firedCount = Atomic<Int>(0)
    private let random: Locked<SplitMix64>

    init(_ plan: FaultPlan) {
        self.plan = plan
        random = Locked(SplitMix64(seed: plan.seed))
    }

    func shouldFail(_ site: AllocationSite) -> Bool {
        guard plan.matches(site) else { return false }
        let n = matchingHits.add(1, ordering: .relaxed).newValue
        var fail: Bool
        if let nth = plan.nth {
            fail = plan.persistent || plan.probability != nil ? n >= nth : n == nth
        } else {
            fail = plan.persistent || plan.probability != nil || n == 1
        }
        if fail, let p = plan.probability {
            fail = random.withLock { $0.nextUnit() } < p
        }
        if fail { firedCount.add(1, ordering: .relaxed) }
        return fail
    }

    var fired: Int { firedCount.load(ordering: .relaxed) }
    var hits: Int { matchingHits.load(ordering: .relaxed) }
}

/// A small seeded generator (SplitMix64), so injected failures (and randomized tests) repeat for a seed.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func nextUnit() -> Double { Double(next() >> 11) / Double(UInt64(1) << 53) }
}

extension Substring {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
