#if canImport(Glibc)
import Glibc
#endif

/// The pieces of one vectored read or write (preadv/pwritev), and where the next call starts
/// after a short one.
public struct IOVectors {
    public private(set) var vectors: [iovec]
    private var first = 0

    public init(_ pieces: [UnsafeMutableRawBufferPointer]) {
        vectors = pieces.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }
    }

    public init(_ pieces: [UnsafeRawBufferPointer]) {
        vectors = pieces.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
    }

    /// Calls `body` with the pieces not done yet (at most IOV_MAX of them).
    public func withRemaining<R>(_ body: (UnsafePointer<iovec>?, Int32) -> R) -> R {
        vectors[first...].withUnsafeBufferPointer { body($0.baseAddress, Int32(min($0.count, 1024))) }
    }

    /// `n` bytes were moved: skip the pieces finished and the done part of the next.
    public mutating func advance(by n: Int) {
        var left = n
        while first < vectors.count, left >= vectors[first].iov_len {
            left -= vectors[first].iov_len
            first += 1
        }
        if left > 0 {
            vectors[first].iov_base! += left
            vectors[first].iov_len -= left
        }
    }
}
