import CHoldfastShim
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one place the engine calls the C library for I/O, so tests and fault injection can stand
/// in front of it, and the one loop that copes with short transfers and EINTR
/// (swift-system's `valueOrErrno(retryOnInterrupt:)`, written once).
public enum Syscall {
    /// lseek's whences for sparse files (not exported by Glibc's module map).
    #if os(Linux)
    public static let seekData: Int32 = 3
    public static let seekHole: Int32 = 4
    #else
    public static let seekData: Int32 = SEEK_DATA
    public static let seekHole: Int32 = SEEK_HOLE
    #endif

    /// How a transfer of many bytes ended early: the call failed with `errno`, or the file ended
    /// (a read returned 0), after `done` bytes had moved.
    public enum TransferError: Error, Sendable {
        case failed(errno: Int32, done: Int)
        case endOfFile(done: Int)
    }

    /// Moves `total` bytes through a call that may move fewer than asked (a short read or write)
    /// or be interrupted: `call(done)` moves bytes from position `done` on and returns how many,
    /// 0 at the end of a file, or -1 with errno set. EINTR is retried here and nowhere else.
    public static func transferFully(_ total: Int, _ call: (_ done: Int) -> Int) throws(TransferError) {
        var done = 0
        while done < total {
            let n = call(done)
            if n < 0 {
                let e = Syscall.errno
                if e == EINTR { continue }
                throw .failed(errno: e, done: done)
            }
            if n == 0 { throw .endOfFile(done: done) }
            done += n
        }
    }

    /// Calls `body` until it is not interrupted; returns its result (-1 with errno set on failure).
    public static func retryingInterrupts<R: FixedWidthInteger>(_ body: () -> R) -> R {
        while true {
            let r = body()
            if r >= 0 || Syscall.errno != EINTR { return r }
        }
    }

    /// pread(2) until `buffer` is full.
    public static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(TransferError) {
        try transferFully(buffer.count) { done in
            Syscall.pread(fd, UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), offset + UInt64(done))
        }
    }

    /// read(2) from a stream (standard input, a pipe) into `buffer`: the bytes read, 0 at its end.
    public static func readSome(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(TransferError) -> Int {
        let n = retryingInterrupts { Glibc.read(fd, buffer.baseAddress, buffer.count) }
        if n < 0 { throw .failed(errno: Syscall.errno, done: 0) }
        return n
    }

    /// pwrite(2) until all of `bytes` is written at `offset`; write(2) to a stream when `offset` is nil.
    public static func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64?) throws(TransferError) {
        try transferFully(bytes.count) { done in
            let rest = UnsafeRawBufferPointer(rebasing: bytes[done...])
            guard let offset else { return Glibc.write(fd, rest.baseAddress, rest.count) }
            return Syscall.pwrite(fd, rest, offset + UInt64(done))
        }
    }

    static func open(_ path: String, _ flags: Int32) -> Int32 {
        path.withCString { Glibc.open($0, flags | O_CLOEXEC) }
    }

    /// `open` that may create the file with `mode`.
    static func open(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 {
        path.withCString { Glibc.open($0, flags | O_CLOEXEC, mode) }
    }

    static func pread(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, _ offset: UInt64) -> Int {
        Glibc.pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
    }

    static func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ offset: UInt64) -> Int {
        Glibc.pwrite(fd, bytes.baseAddress, bytes.count, off_t(offset))
    }

    static func preadv(_ fd: Int32, _ vectors: UnsafePointer<iovec>?, _ count: Int32, _ offset: UInt64) -> Int {
        Glibc.preadv(fd, vectors, count, off_t(offset))
    }

    static func pwritev(_ fd: Int32, _ vectors: UnsafePointer<iovec>?, _ count: Int32, _ offset: UInt64) -> Int {
        Glibc.pwritev(fd, vectors, count, off_t(offset))
    }

    /// Reads `pieces` in order from `fd` at `offset` with preadv(2) until all are full.
    public static func readFully(_ fd: Int32, scattering pieces: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(TransferError) {
        var vectors = IOVectors(pieces)
        try transferFully(pieces.reduce(0) { $0 + $1.count }) { done in
            let n = vectors.withRemaining { Syscall.preadv(fd, $0, $1, offset + UInt64(done)) }
            if n > 0 { vectors.advance(by: n) }
            return n
        }
    }

    /// Writes `pieces` in order to `fd` at `offset` with pwritev(2) until all are written.
    static func writeFully(_ fd: Int32, gathering pieces: [UnsafeRawBufferPointer], at offset: UInt64) throws(TransferError) {
        var vectors = IOVectors(pieces)
        try transferFully(pieces.reduce(0) { $0 + $1.count }) { done in
            let n = vectors.withRemaining { Syscall.pwritev(fd, $0, $1, offset + UInt64(done)) }
            if n > 0 { vectors.advance(by: n) }
            return n
        }
    }

    static func fdatasync(_ fd: Int32) -> Int32 { retryingInterrupts { Glibc.fdatasync(fd) } }

    static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    static func seek(_ fd: Int32, _ offset: UInt64) -> Bool { lseek(fd, off_t(offset), SEEK_SET) >= 0 }

    /// copy_file_range(2): the kernel moves the bytes, no user-space buffer (not in Glibc's module map).
    static func copyFileRange(_ input: Int32, _ inOffset: inout Int64, _ output: Int32, _ outOffset: inout Int64, _ count: Int) -> Int {
        hf_copy_file_range(input, &inOffset, output, &outOffset, count)
    }

    static func startWriteback(_ fd: Int32) { _ = hf_start_writeback(fd) }

    static func sendfile(_ out: Int32, _ input: Int32, _ offset: inout off_t, _ count: Int) -> Int {
        Glibc.sendfile(out, input, &offset, count)
    }

    static var errno: Int32 { Glibc.errno }
}

public func errnoDescription(_ code: Int32) -> String {
    String(cString: strerror(code))
}

/// Writes all of `bytes` to the host file `fd` at `offset` (an extract's output).
public func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DeviceError) {
    do { try Syscall.writeFully(fd, bytes, at: offset) } catch {
        switch error {
        case .failed(let e, let done): throw DeviceError(.write, path: "output", offset: offset + UInt64(done), errno: e)
        case .endOfFile(let done): throw DeviceError(.write, path: "output", offset: offset + UInt64(done), errno: EIO)
        }
    }
}
