import CHoldfastShim
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one place device code calls the C library, so tests and fault injection can stand in front of it.
enum Syscall {
    static func open(_ path: String, _ flags: Int32) -> Int32 {
        path.withCString { Glibc.open($0, flags | O_CLOEXEC) }
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

    static func fdatasync(_ fd: Int32) -> Int32 { Glibc.fdatasync(fd) }

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

/// Writes all of `bytes` to the host file `fd` at `offset`, retrying short writes and EINTR.
public func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DeviceError) {
    var done = 0
    while done < bytes.count {
        let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
        if n < 0 {
            if Syscall.errno == EINTR { continue }
            throw DeviceError(.write, path: "output", offset: offset + UInt64(done), errno: Syscall.errno)
        }
        done += n
    }
}
