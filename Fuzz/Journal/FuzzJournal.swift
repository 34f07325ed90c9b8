import FuzzSupport
import HoldfastFormat
import HoldfastJournal

/// Target (c): the jbd2 replay parser alone. The input is a journal of 1 KiB blocks, its
/// superblock first, mapped one to one (a block past the input is an I/O error, as a journal
/// block past the journal inode's extents is).
func fuzzJournal(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let blockSize = 1024
    let blocks = size / blockSize
    guard blocks >= 1 else { return 0 }
    let bytes = UnsafeBufferPointer(start: data, count: blocks * blockSize)
    func block(_ i: UInt64) throws -> [UInt8] {
        guard i < UInt64(blocks) else { throw FuzzJournalError.pastTheEnd }
        return Array(bytes[Int(i) * blockSize..<(Int(i) + 1) * blockSize])
    }
    guard let journal = try? Jbd2.Superblock(try! block(0), fsBlockSize: blockSize) else { return 0 }
    guard let (redirects, _) = try? JournalReplay.replay(journal: journal, physical: { $0 }, read: block) else { return 0 }
    // What the replay hands on must point inside the journal it read.
    for entry in redirects.entries where entry.source >= UInt64(blocks) { fatalError("redirect to block \(entry.source) outside the journal") }
    return 0
}

enum FuzzJournalError: Error { case pastTheEnd }
