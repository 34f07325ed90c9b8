import Synchronization

/// What an allocation site does when memory runs out (DESIGN.md, rule 2).
public enum AllocationPolicy: String, Sendable, CaseIterable {
    /// After reclaim (and while writeback that will free memory is in flight), returns nothing;
    /// the caller undoes what it started and reports ENOMEM. Only where a user call can carry an error.
    case mayFail
    /// No reclaim, no waiting: the atomic fast path only. For code that holds a lock; the caller
    /// must have a fallback (drop the lock, allocate with a blocking policy, retake, revalidate).
    case noWait
    /// Never fails: reclaims, then waits for memory to be freed or writeback to finish, and retries.
    /// For code that cannot report an error (eviction, writeback completion, journal commit).
    case noFail
}

/// What kind of object a site allocates; the budget keeps live bytes and a high-water mark per category.
public enum MemoryCategory: Int, Sendable, CaseIterable, CustomStringConvertible {
    case buffer, page, inode, extentStatus, allocator, journal, writeback, directory, io, test

    public var description: String {
        switch self {
        case .buffer: "buffer"
        case .page: "page"
        case .inode: "inode"
        case .extentStatus: "extent-status"
        case .allocator: "allocator"
        case .journal: "journal"
        case .writeback: "writeback"
        case .directory: "directory"
        case .io: "io"
        case .test: "test"
        }
    }

    public init?(name: String) {
        guard let c = Self.allCases.first(where: { $0.description == name }) else { return nil }
        self = c
    }
}

/// One call site that takes memory from the budget: a static, named value with its policy.
/// Declare each as `extension AllocationSite { static let bufferBlock = AllocationSite(...) }`;
/// creating one registers it, so `AllocationSite.registered` lists every site the program has touched.
public final class AllocationSite: Sendable, Hashable, CustomStringConvertible {
    public let name: String
    public let policy: AllocationPolicy
    public let category: MemoryCategory
    public let summary: String
    /// Dense index into each budget's per-site counters.
    public let id: Int

    /// Room for this many sites in every budget's statistics.
    public static let capacity = 512

    public init(_ name: String, _ policy: AllocationPolicy, _ category: MemoryCategory, _ summary: String) {
        self.name = name
        self.policy = policy
        self.category = category
        self.summary = summary
        id = Self.nextID.add(1, ordering: .relaxed).oldValue
        precondition(id < Self.capacity, "more than \(Self.capacity) allocation sites")
        Self.registry.withLock { list in
            precondition(!list.contains { $0.name == name }, "allocation site \(name) declared twice")
            list.append(self)
        }
    }

    private static let nextID = Atomic<Int>(0)

    private static let registry = Locked<[AllocationSite]>([])

    /// Every site created so far, in creation order.
    public static var registered: [AllocationSite] { registry.withLock { $0 } }

    public static func named(_ name: String) -> AllocationSite? {
        registry.withLock { list in list.first { $0.name == name } }
    }

    public var description: String { name }

    public static func == (a: AllocationSite, b: AllocationSite) -> Bool { a === b }
    public func hash(into h: inout Hasher) { h.combine(id) }
}
