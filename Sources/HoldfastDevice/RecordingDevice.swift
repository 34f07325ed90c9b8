#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import HoldfastMemory

/// A device that logs every write and flush that reaches the device below it, in order, to a
/// file: the instrument of crash testing (DESIGN.md, "Crash consistency"). `RecordedLog` reads
/// the log back and rebuilds the image as a power cut at any point could have left it.
///
/// Each write is logged after the device below completed it, under one lock, so the log's order
/// is the order the writes were done in. A failed write is not logged (what it left is unknown;
/// the fault-injecting device above fails writes before they get here). Several opens may
/// append to one log (a sequence of CLI commands): the header is written once.
///
/// A test instrument: the copies it logs are not charged to a memory budget.
public final class RecordingDevice: BlockDevice {
    public let underlying: any BlockDevice
    public let logPath: String
    private let fd: Int32
    /// Records appended by this device; its lock keeps one write and its record together.
    private let records = Locked<Int>(0)

    /// Appends to the log at `logPath`, creating it (with its header) if it is absent or empty.
    public init(_ underlying: any BlockDevice, logPath: String) throws(DeviceError) {
        let fd = Syscall.open(logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        guard fd >= 0 else { throw DeviceError(.open, path: logPath, errno: Syscall.errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = Syscall.errno
            Syscall.close(fd)
            throw DeviceError(.stat, path: logPath, errno: e)
        }
        self.underlying = underlying
        self.logPath = logPath
        self.fd = fd
        if st.st_size == 0 {
            var header = RecordedLog.magic
            header.appendLittleEndian(underlying.byteCount)
            try append(header)
        }
    }

    deinit { Syscall.close(fd) }

    /// Writes and flushes this device has logged.
    public var recordCount: Int { records.withLock { $0 } }

    public var byteCount: UInt64 { underlying.byteCount }
    public var path: String { underlying.path }
    public var isWritable: Bool { underlying.isWritable }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DeviceError) {
        try underlying.read(into: buffer, at: offset)
    }

    public func read(scattering pieces: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        try underlying.read(scattering: pieces, at: offset)
    }

    public func spliceSource(at offset: UInt64, count: Int) throws(DeviceError) -> Int32? {
        try underlying.spliceSource(at: offset, count: count)
    }

    public func copy(from offset: UInt64, count: Int, to fd: Int32, at destination: UInt64) throws(DeviceError) {
        try underlying.copy(from: offset, count: count, to: fd, at: destination)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DeviceError) {
        try logged { () throws(DeviceError) in
            try underlying.write(bytes, at: offset)
            try appendWrite(at: offset, [bytes])
        }
    }

    public func write(gathering pieces: [UnsafeRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        try logged { () throws(DeviceError) in
            try underlying.write(gathering: pieces, at: offset)
            try appendWrite(at: offset, pieces)
        }
    }

    public func write(fromFile fd: Int32, at source: UInt64, count: Int, to offset: UInt64) throws(DeviceError) {
        try logged { () throws(DeviceError) in
            try underlying.write(fromFile: fd, at: source, count: count, to: offset)
            // The bytes went host file to image without passing through here: read them back.
            let written = try underlying.read(count: count, at: offset)
            try append(RecordedLog.recordHeader(.write, offset: offset, length: UInt64(count)))
            try append(written)
        }
    }

    public func flush() throws(DeviceError) {
        try logged { () throws(DeviceError) in
            try underlying.flush()
            try append(RecordedLog.recordHeader(.flush, offset: 0, length: 0))
        }
    }

    /// Runs `body` holding the log's lock: one write and its record at a time.
    private func logged(_ body: () throws(DeviceError) -> Void) throws(DeviceError) {
        try records.withLock { (count: inout Int) throws(DeviceError) in
            try body()
            count += 1
        }
    }

    private func appendWrite(at offset: UInt64, _ pieces: [UnsafeRawBufferPointer]) throws(DeviceError) {
        let length = pieces.reduce(0) { $0 + $1.count }
        try append(RecordedLog.recordHeader(.write, offset: offset, length: UInt64(length)))
        for piece in pieces where piece.count > 0 { try append(piece) }
    }

    private func append(_ bytes: [UInt8]) throws(DeviceError) {
        var failure: DeviceError?
        bytes.withUnsafeBytes { b in
            do throws(DeviceError) { try append(b) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// From `init`, or with the lock held.
    private func append(_ bytes: UnsafeRawBufferPointer) throws(DeviceError) {
        do { try Syscall.writeFully(fd, bytes, at: nil) } catch {
            switch error {
            case .failed(let e, _): throw DeviceError(.write, path: logPath, offset: nil, errno: e)
            case .endOfFile: throw DeviceError(.write, path: logPath, offset: nil, errno: EIO)
            }
        }
    }
}
