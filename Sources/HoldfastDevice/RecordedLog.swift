#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HoldfastMemory

/// A `RecordingDevice` log read back: the writes and flushes in the order they were done, and
/// the crash states they allow. A state is the image as a power cut could have left it: every
/// write before the last flush is on disk; of the writes since, any subset may be, in any order
/// (a disk's volatile cache).
///
/// The log's format, little-endian: the header is "HFRECLOG" and the image's size (u64); each
/// record is a kind (u32: 1 write, 2 flush), 4 bytes of zero, the offset (u64) and the length
/// (u64), then a write's bytes. A log cut short ends at its last whole record.
public struct RecordedLog: Sendable {
    static let magic: [UInt8] = Array("HFRECLOG".utf8)
    static let headerSize = 16
    static let recordHeaderSize = 24

    enum Kind: UInt32 { case write = 1, flush = 2 }

    public enum Event: Sendable, Equatable {
        /// `length` bytes at `offset` of the image; the bytes sit at `logOffset` in the log.
        case write(offset: UInt64, length: Int, logOffset: UInt64)
        case flush
    }

    public let path: String
    /// The recorded image's size.
    public let imageBytes: UInt64
    public let events: [Event]

    public var writeCount: Int { events.reduce(0) { if case .write = $1 { $0 + 1 } else { $0 } } }
    public var flushCount: Int { events.count - writeCount }

    /// Reads the log at `path`; fails on a file that is not one.
    public init(path: String) throws(DeviceError) {
        let fd = Syscall.open(path, O_RDONLY)
        guard fd >= 0 else { throw DeviceError(.open, path: path, errno: Syscall.errno) }
        defer { Syscall.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw DeviceError(.stat, path: path, errno: Syscall.errno) }
        let size = UInt64(st.st_size)
        func read(_ count: Int, at offset: UInt64) throws(DeviceError) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: count)
            var failure: DeviceError?
            out.withUnsafeMutableBytes { b in
                do throws(Syscall.TransferError) { try Syscall.readFully(fd, into: b, at: offset) } catch {
                    switch error {
                    case .failed(let e, _): failure = DeviceError(.read, path: path, offset: offset, errno: e)
                    case .endOfFile(let done): failure = DeviceError(.read, path: path, offset: offset, errno: 0, shortBy: count - done)
                    }
                }
            }
            if let failure { throw failure }
            return out
        }
        guard size >= UInt64(Self.headerSize) else { throw DeviceError(.read, path: path, offset: 0, errno: EINVAL) }
        let header = try read(Self.headerSize, at: 0)
        guard Array(header.prefix(8)) == Self.magic else { throw DeviceError(.read, path: path, offset: 0, errno: EINVAL) }
        imageBytes = Self.word(header, at: 8)
        self.path = path
        var events: [Event] = []
        var at = UInt64(Self.headerSize)
        while at + UInt64(Self.recordHeaderSize) <= size {
            let h = try read(Self.recordHeaderSize, at: at)
            let kind = UInt32(h[0]) | UInt32(h[1]) << 8 | UInt32(h[2]) << 16 | UInt32(h[3]) << 24
            let offset = Self.word(h, at: 8), length = Self.word(h, at: 16)
            let body = at + UInt64(Self.recordHeaderSize)
            switch Kind(rawValue: kind) {
            case .write:
                guard length <= size - body, offset <= imageBytes, length <= imageBytes - offset else { break }
                events.append(.write(offset: offset, length: Int(length), logOffset: body))
                at = body + length
                continue
            case .flush:
                events.append(.flush)
                at = body
                continue
            case nil:
                throw DeviceError(.read, path: path, offset: at, errno: EINVAL)
            }
            break  // a write cut short: the log ends at the record before it
        }
        self.events = events
    }

    /// The little-endian u64 at `o` of a log header (the log's own format, not an on-disk structure).
    static func word(_ b: [UInt8], at o: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) }
    }

    static func recordHeader(_ kind: Kind, offset: UInt64, length: UInt64) -> [UInt8] {
        var h: [UInt8] = []
        h.reserveCapacity(recordHeaderSize)
        h.appendLittleEndian(UInt64(kind.rawValue))
        h.appendLittleEndian(offset)
        h.appendLittleEndian(length)
        return h
    }

    // MARK: Crash states

    /// One image a power cut could leave: the writes applied (indices into `events`, in the
    /// order applied) after the first `cut` events were issued.
    public struct CrashState: Sendable, CustomStringConvertible {
        public enum Kind: Sendable, Equatable {
            /// Every write issued before the cut reached the disk.
            case prefix
            /// All but one of the writes since the last flush did (`dropped` is its event index).
            case dropped(Int)
            /// A random subset of the writes since the last flush did, in a random order.
            case subset(seed: UInt64)
        }
        public let cut: Int
        public let kind: Kind
        public let applied: [Int]

        public var description: String {
            switch kind {
            case .prefix: "cut after \(cut) events, every write on disk"
            case .dropped(let i): "cut after \(cut) events, write \(i) lost"
            case .subset(let seed): "cut after \(cut) events, \(applied.count) writes on disk in a shuffled order (seed \(seed))"
            }
        }
    }

    /// The states to check: a prefix state at every write, and at each flush (and the log's
    /// end) whose epoch has two or more writes, one state per write of the epoch lost and
    /// `subsets` random subsets in random orders.
    public func crashStates(subsets: Int = 4, seed: UInt64 = 1) -> [CrashState] {
        var states: [CrashState] = []
        var durable: [Int] = []
        var pending: [Int] = []
        func closeEpoch(at cut: Int) {
            if pending.count >= 2 {
                for lost in pending {
                    states.append(CrashState(cut: cut, kind: .dropped(lost), applied: durable + pending.filter { $0 != lost }))
                }
                for k in 0..<subsets {
                    let stateSeed = seed &* 1_000_003 &+ UInt64(cut) &* 31 &+ UInt64(k)
                    var r = SplitMix64(seed: stateSeed)
                    var kept = pending.filter { _ in r.next() & 1 == 0 }
                    for i in stride(from: kept.count - 1, to: 0, by: -1) {
                        kept.swapAt(i, Int(r.next() % UInt64(i + 1)))
                    }
                    states.append(CrashState(cut: cut, kind: .subset(seed: stateSeed), applied: durable + kept))
                }
            }
            durable += pending
            pending = []
        }
        states.append(CrashState(cut: 0, kind: .prefix, applied: []))
        for (i, event) in events.enumerated() {
            switch event {
            case .write:
                pending.append(i)
                states.append(CrashState(cut: i + 1, kind: .prefix, applied: durable + pending))
            case .flush:
                closeEpoch(at: i)
            }
        }
        closeEpoch(at: events.count)
        return states
    }

    /// Writes the image `state` describes to `path`: a copy of `base` (the image before the
    /// recording began) with the state's writes applied.
    public func materialize(_ state: CrashState, base: String, into path: String) throws(DeviceError) {
        let source = Syscall.open(base, O_RDONLY)
        guard source >= 0 else { throw DeviceError(.open, path: base, errno: Syscall.errno) }
        defer { Syscall.close(source) }
        let out = Syscall.open(path, O_RDWR | O_CREAT | O_TRUNC, 0o644)
        guard out >= 0 else { throw DeviceError(.open, path: path, errno: Syscall.errno) }
        defer { Syscall.close(out) }
        let log = Syscall.open(self.path, O_RDONLY)
        guard log >= 0 else { throw DeviceError(.open, path: self.path, errno: Syscall.errno) }
        defer { Syscall.close(log) }
        guard ftruncate(out, off_t(imageBytes)) == 0 else { throw DeviceError(.write, path: path, errno: Syscall.errno) }
        // The base, keeping its holes: copy only its data.
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var at: UInt64 = 0
        while at < imageBytes {
            let data = lseek(source, off_t(at), Syscall.seekData)
            if data < 0 { break }
            var hole = lseek(source, off_t(data), Syscall.seekHole)
            if hole < 0 { hole = off_t(imageBytes) }
            var position = UInt64(data)
            while position < UInt64(hole) {
                let n = Int(min(UInt64(buffer.count), UInt64(hole) - position))
                try copy(from: source, base, at: position, count: n, to: out, path, at: position, &buffer)
                position += UInt64(n)
            }
            at = UInt64(hole)
        }
        for index in state.applied {
            guard case .write(let offset, let length, let logOffset) = events[index] else { continue }
            if buffer.count < length { buffer = [UInt8](repeating: 0, count: length) }
            try copy(from: log, self.path, at: logOffset, count: length, to: out, path, at: offset, &buffer)
        }
    }

    private func copy(from source: Int32, _ sourcePath: String, at sourceOffset: UInt64, count: Int,
                      to out: Int32, _ outPath: String, at outOffset: UInt64, _ buffer: inout [UInt8]) throws(DeviceError) {
        var failure: DeviceError?
        buffer.withUnsafeMutableBytes { all in
            let b = UnsafeMutableRawBufferPointer(rebasing: all[0..<count])
            do throws(Syscall.TransferError) { try Syscall.readFully(source, into: b, at: sourceOffset) } catch {
                switch error {
                case .failed(let e, _): failure = DeviceError(.read, path: sourcePath, offset: sourceOffset, errno: e)
                case .endOfFile(let done): failure = DeviceError(.read, path: sourcePath, offset: sourceOffset, errno: 0, shortBy: count - done)
                }
                return
            }
            do throws(Syscall.TransferError) { try Syscall.writeFully(out, UnsafeRawBufferPointer(b), at: outOffset) } catch {
                switch error {
                case .failed(let e, _): failure = DeviceError(.write, path: outPath, offset: outOffset, errno: e)
                case .endOfFile: failure = DeviceError(.write, path: outPath, offset: outOffset, errno: EIO)
                }
            }
        }
        if let failure { throw failure }
    }
}

extension Array where Element == UInt8 {
    mutating func appendLittleEndian(_ value: UInt64) {
        for k in 0..<8 { append(UInt8(truncatingIfNeeded: value >> (8 * UInt64(k)))) }
    }
}
