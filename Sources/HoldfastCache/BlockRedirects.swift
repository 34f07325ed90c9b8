/// Where the newest copy of a block lives when it is not in place: after an in-memory journal
/// replay, a filesystem block is read from its last logged copy in the journal instead.
/// Holds only block numbers, never block data, so replaying a large journal costs no cache memory.
public struct BlockRedirects: Sendable {
    public struct Entry: Sendable {
        public let target: UInt64   // the filesystem block
        public let source: UInt64   // the physical block in the journal holding its data
        public let escaped: Bool    // jbd2 zeroed the block's leading magic; put it back on read

        public init(target: UInt64, source: UInt64, escaped: Bool) {
            self.target = target
            self.source = source
            self.escaped = escaped
        }
    }

    /// Sorted by target.
    public let entries: [Entry]

    public init(_ entries: [Entry] = []) {
        self.entries = entries.sorted { $0.target < $1.target }
    }

    public var isEmpty: Bool { entries.isEmpty }
    public var count: Int { entries.count }

    /// Index of the first entry with target >= block.
    public func firstIndex(atOrAfter block: UInt64) -> Int {
        var lo = 0, hi = entries.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if entries[mid].target < block { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    public func lookup(_ block: UInt64) -> Entry? {
        let i = firstIndex(atOrAfter: block)
        return i < entries.count && entries[i].target == block ? entries[i] : nil
    }
}
