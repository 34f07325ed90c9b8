/// Warnings the budget raises instead of failing (DESIGN.md, rule 8). Rate-limited per kind.
public enum MemoryEvent: Sendable, CustomStringConvertible {
    /// A `noFail` allocation has waited this long and keeps waiting.
    case longWait(site: String, seconds: Double, used: Int, limit: Int)
    /// Every waiter is `noFail`, nothing is reclaimable and no writeback is in flight:
    /// nothing can make progress unless a holder frees memory.
    case stall(sites: [String], used: Int, limit: Int)
    /// A reserve had no element left and a caller waited for one to come back.
    case reserveExhausted(pool: String, minimum: Int)

    public var description: String {
        switch self {
        case let .longWait(site, seconds, used, limit):
            let s = (seconds * 10).rounded() / 10
            return "memory: \(site) has waited \(s) s for memory (used \(used) of \(limit) bytes) and keeps waiting"
        case let .stall(sites, used, limit):
            return "memory STALL: every waiter is noFail (\(sites.joined(separator: ", "))), nothing is reclaimable and no writeback is in flight; used \(used) of \(limit) bytes"
        case let .reserveExhausted(pool, minimum):
            return "memory: reserve \(pool) (\(minimum) elements) is empty; waiting for an element to come back"
        }
    }
}
