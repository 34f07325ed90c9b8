import HoldfastCache
import HoldfastFormat

/// What an in-memory replay found.
public struct ReplaySummary: Sendable {
    public var transactions = 0
    public var firstSequence: UInt32 = 0
    public var lastSequence: UInt32 = 0
    public var blocksReplayed = 0
    public var blocksRevoked = 0
    public var dataChecksumFailures = 0
    /// What ended the log early: a descriptor, revoke or commit block that fails its checksum
    /// (the kernel ends its replay there too, at the last good transaction). Nil when the log
    /// simply ended.
    public var damage: String?
}

/// Replays a jbd2 journal into `BlockRedirects`: the image is never written; reads of logged blocks
/// are sent to their newest committed copy in the journal, as the kernel would have written them.
public enum JournalReplay {
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public let reason: String
        public var description: String { reason }
    }

    /// - Parameters:
    ///   - journal: the decoded journal superblock.
    ///   - physical: maps a journal block index to its filesystem block (through the journal inode's extents).
    ///   - read: reads one filesystem block by physical number.
    public static func replay(
        journal: Jbd2.Superblock,
        physical: (UInt64) throws -> UInt64,
        read: (UInt64) throws -> [UInt8]
    ) throws -> (BlockRedirects, ReplaySummary) {
        var summary = ReplaySummary()
        guard journal.start != 0 else { return (BlockRedirects(), summary) }
        if journal.featureIncompat & ~Jbd2.knownIncompat != 0 {
            throw Failure(reason: "journal has unknown incompatible features 0x\(String(journal.featureIncompat, radix: 16))")
        }
        if journal.featureIncompat & Jbd2.incompatFastCommit != 0 && journal.fastCommitBlocks > 0 {
            throw Failure(reason: "journal needs fast_commit replay, which Holdfast does not support yet")
        }
        let first = UInt64(journal.first)
        let end = UInt64(journal.maxLength)
        func wrap(_ b: UInt64) -> UInt64 { b >= end ? first + (b - end) : b }

        struct Logged { let target: UInt64; let journalBlock: UInt64; let escaped: Bool; let tag: Jbd2.Tag }
        struct Transaction { let sequence: UInt32; var logged: [Logged] = []; var revoked: [UInt64] = [] }

        // Pass 1: walk the log from s_start while sequence numbers follow and commits are whole.
        var committed: [Transaction] = []
        var sequence = journal.sequence
        var position = UInt64(journal.start)
        var current = Transaction(sequence: sequence)
        var steps: UInt64 = 0
        scan: while steps < end {
            steps += 1
            let block = try read(try physical(position))
            let header = Jbd2.Header(block)
            guard header.magic == Jbd2.magic, header.sequence == sequence else { break }
            switch Jbd2.BlockType(rawValue: header.type) {
            case .descriptor:
                guard Jbd2.verifyBlockTail(block, journal: journal) else {
                    summary.damage = "the descriptor block at journal block \(position) of transaction \(sequence) fails its checksum"
                    break scan
                }
                let tags = Jbd2.tags(block, journal: journal)
                var p = wrap(position + 1)
                for tag in tags {
                    current.logged.append(Logged(target: tag.target, journalBlock: p, escaped: tag.flags & Jbd2.tagEscape != 0, tag: tag))
                    p = wrap(p + 1)
                }
                steps += UInt64(tags.count)
                position = p
                continue
            case .commit:
                guard Jbd2.verifyCommit(block, journal: journal) else {
                    summary.damage = "the commit block at journal block \(position) of transaction \(sequence) fails its checksum"
                    break scan
                }
                committed.append(current)
                sequence &+= 1
                current = Transaction(sequence: sequence)
            case .revoke:
                guard Jbd2.verifyBlockTail(block, journal: journal) else {
                    summary.damage = "the revoke block at journal block \(position) of transaction \(sequence) fails its checksum"
                    break scan
                }
                current.revoked += Jbd2.revoked(block, journal: journal)
            default:
                break scan
            }
            position = wrap(position + 1)
        }

        // Pass 2: the newest transaction that revokes each block.
        var revokedAt: [UInt64: UInt32] = [:]
        for t in committed {
            for b in t.revoked { revokedAt[b] = t.sequence }
        }
        // Pass 3: later copies win; a block revoked in the same or a later transaction is skipped.
        var newest: [UInt64: BlockRedirects.Entry] = [:]
        for t in committed {
            for l in t.logged {
                if let r = revokedAt[l.target], r &- t.sequence < 0x8000_0000 {
                    summary.blocksRevoked += 1
                    continue
                }
                if journal.hasChecksumV2orV3 {
                    // The tag's checksum covers the block as logged (escaped blocks with their
                    // first word zeroed), as the kernel's replay checks it.
                    let data = try read(try physical(l.journalBlock))
                    if !Jbd2.verifyData(data, tag: l.tag, sequence: t.sequence, journal: journal) {
                        // The kernel skips such a block and reports it; so do we.
                        summary.dataChecksumFailures += 1
                        continue
                    }
                }
                newest[l.target] = BlockRedirects.Entry(target: l.target, source: try physical(l.journalBlock), escaped: l.escaped)
                summary.blocksReplayed += 1
            }
        }
        summary.transactions = committed.count
        summary.firstSequence = journal.sequence
        summary.lastSequence = committed.last?.sequence ?? journal.sequence
        return (BlockRedirects(Array(newest.values)), summary)
    }
}
