#if canImport(Glibc)
import Glibc
#endif
import HoldfastMemory

/// What the layers above need from storage: byte-addressed reads and writes of a fixed-size image.
public protocol BlockDevice: AnyObject, Sendable {
    var byteCount: UInt64 { get }
    var path: String { get }
    /// False for a device opened read-only: `write` and `flush` then fail with EROFS.
    var isWritable: Bool { get }
    /// Fills `buffer` from `offset`; a read past the end is an error, never a silent short read.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DeviceError)
    /// Fills `pieces` back to back from `offset`, in one call where the device can (preadv): the
    /// page cache reads a run of blocks straight into its pages.
    func read(scattering pieces: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(DeviceError)
    /// The open file that holds bytes [offset, offset + count) of the device at those offsets,
    /// for a caller that moves them on without a user-space buffer (splice(2)); nil where there is
    /// none. A device that checks or counts its reads does so here, as for a read.
    func spliceSource(at offset: UInt64, count: Int) throws(DeviceError) -> Int32?
    /// Copies `count` bytes at `offset` into the host file `fd` at `destination`, without passing
    /// through a user-space buffer where the device can (extraction's bulk path).
    func copy(from offset: UInt64, count: Int, to fd: Int32, at destination: UInt64) throws(DeviceError)
    /// Writes all of `bytes` at `offset`; the image never grows, so a write past its end is an error.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DeviceError)
    /// Writes `count` bytes of the host file `fd` from `source` at `offset` (import's bulk path: the
    /// kernel copies, where it can, without a user-space buffer). A short source is an error.
    func write(fromFile fd: Int32, at source: UInt64, count: Int, to offset: UInt64) throws(DeviceError)
    /// Writes `pieces` back to back from `offset`, in one call where the device can (pwritev):
    /// page-cache writeback sends a run of pages from the arena without copying them together.
    func write(gathering pieces: [UnsafeRawBufferPointer], at offset: UInt64) throws(DeviceError)
    /// Makes every completed write durable (fdatasync).
    func flush() throws(DeviceError)
}

extension BlockDevice {
    public func spliceSource(at offset: UInt64, count: Int) throws(DeviceError) -> Int32? { nil }

    /// Reads `count` bytes at `offset` into a new array.
    public func read(count: Int, at offset: UInt64) throws(DeviceError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var failure: DeviceError?
        out.withUnsafeMutableBytes { buffer in
            do throws(DeviceError) { try read(into: buffer, at: offset) } catch { failure = error }
        }
        if let failure { throw failure }
        return out
    }

    /// One read per piece, for devices without a vectored read.
    public func read(scattering pieces: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        var at = offset
        for piece in pieces {
            try read(into: piece, at: at)
            at += UInt64(piece.count)
        }
    }

    /// One write per piece, for devices without a vectored write.
    public func write(gathering pieces: [UnsafeRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        var at = offset
        for piece in pieces {
            try write(piece, at: at)
            at += UInt64(piece.count)
        }
    }
}

/// An image file read with pread and, when opened writable, written with pwrite.
public final class ImageFile: BlockDevice {
    public let path: String
    public let byteCount: UInt64
    public let isWritable: Bool
    private let fd: Int32
    /// Bytes written since writeback was last started: past `writebackKick`, the host starts
    /// writing them out in the background, so a later flush has less to wait for.
    private let unkicked = Locked<Int>(0)
    private static let writebackKick = 32 << 20

    public init(path: String, writable: Bool = false) throws(DeviceError) {
        let fd = Syscall.open(path, writable ? O_RDWR : O_RDONLY)
        guard fd >= 0 else { throw DeviceError(.open, path: path, errno: Syscall.errno) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let e = Syscall.errno
            Syscall.close(fd)
            throw DeviceError(.stat, path: path, errno: e)
        }
        var size = UInt64(st.st_size)
        if (st.st_mode & S_IFMT) == S_IFBLK {
            // A block device reports size 0 through fstat; ask where its end is.
            let end = lseek(fd, 0, SEEK_END)
            if end > 0 { size = UInt64(end) }
        } else if (st.st_mode & S_IFMT) != S_IFREG {
            Syscall.close(fd)
            throw DeviceError(.open, path: path, errno: EINVAL)
        }
        self.fd = fd
        self.path = path
        self.byteCount = size
        self.isWritable = writable
    }

    deinit { Syscall.close(fd) }

    public func spliceSource(at offset: UInt64, count: Int) throws(DeviceError) -> Int32? {
        guard offset + UInt64(count) <= byteCount else {
            throw DeviceError(.read, path: path, offset: offset, errno: 0, shortBy: Int(offset + UInt64(count) - byteCount))
        }
        return fd
    }

    public func copy(from offset: UInt64, count: Int, to out: Int32, at destination: UInt64) throws(DeviceError) {
        guard offset + UInt64(count) <= byteCount else {
            throw DeviceError(.read, path: path, offset: offset, errno: 0, shortBy: Int(offset + UInt64(count) - byteCount))
        }
        guard Syscall.seek(out, destination) else { throw DeviceError(.write, path: "output", offset: destination, errno: Syscall.errno) }
        do {
            try Syscall.transferFully(count) { done in
                var from = off_t(offset) + off_t(done)
                return Syscall.sendfile(out, fd, &from, count - done)
            }
        } catch {
            throw deviceError(error, .read, at: offset, total: count)
        }
    }

    /// A transfer that ended early, as the device error it is: a failed call names its errno, and
    /// an image that ends too soon is a short read (errno 0, `shortBy`).
    private func deviceError(_ error: Syscall.TransferError, _ operation: DeviceError.Operation, at offset: UInt64,
                             total: Int) -> DeviceError {
        switch error {
        case .failed(let e, let done): DeviceError(operation, path: path, offset: offset + UInt64(done), errno: e)
        case .endOfFile(let done): DeviceError(operation, path: path, offset: offset, errno: 0, shortBy: total - done)
        }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DeviceError) {
        do { try Syscall.readFully(fd, into: buffer, at: offset) } catch {
            throw deviceError(error, .read, at: offset, total: buffer.count)
        }
    }

    public func read(scattering pieces: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        do { try Syscall.readFully(fd, scattering: pieces, at: offset) } catch {
            throw deviceError(error, .read, at: offset, total: pieces.reduce(0) { $0 + $1.count })
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DeviceError) {
        guard isWritable else { throw DeviceError(.write, path: path, offset: offset, errno: EROFS) }
        guard offset + UInt64(bytes.count) <= byteCount else {
            throw DeviceError(.write, path: path, offset: offset, errno: ENOSPC)
        }
        do { try Syscall.writeFully(fd, bytes, at: offset) } catch {
            throw deviceError(error, .write, at: offset, total: bytes.count)
        }
        wrote(bytes.count)
    }

    public func write(gathering pieces: [UnsafeRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        guard isWritable else { throw DeviceError(.write, path: path, offset: offset, errno: EROFS) }
        let total = pieces.reduce(0) { $0 + $1.count }
        guard offset + UInt64(total) <= byteCount else { throw DeviceError(.write, path: path, offset: offset, errno: ENOSPC) }
        do { try Syscall.writeFully(fd, gathering: pieces, at: offset) } catch {
            throw deviceError(error, .write, at: offset, total: total)
        }
        wrote(total)
    }

    private func wrote(_ count: Int) {
        let kick = unkicked.withLock { n -> Bool in
            n += count
            guard n >= Self.writebackKick else { return false }
            n = 0
            return true
        }
        if kick { Syscall.startWriteback(fd) }
    }

    public func write(fromFile input: Int32, at source: UInt64, count: Int, to offset: UInt64) throws(DeviceError) {
        guard isWritable else { throw DeviceError(.write, path: path, offset: offset, errno: EROFS) }
        guard offset + UInt64(count) <= byteCount else { throw DeviceError(.write, path: path, offset: offset, errno: ENOSPC) }
        do {
            try Syscall.transferFully(count) { done in
                var from = Int64(source) + Int64(done), to = Int64(offset) + Int64(done)
                return Syscall.copyFileRange(input, &from, fd, &to, count - done)
            }
        } catch {
            switch error {
            case .failed(let e, let done) where e == EXDEV || e == EINVAL || e == ENOSYS || e == EOPNOTSUPP:
                // No in-kernel copy between these files: go through a buffer.
                try bufferedCopy(input, from: source + UInt64(done), count: count - done, to: offset + UInt64(done))
                return
            case .failed(let e, let done):
                throw DeviceError(.write, path: path, offset: offset + UInt64(done), errno: e)
            case .endOfFile(let done):
                throw DeviceError(.read, path: "source file", offset: source + UInt64(done), errno: 0, shortBy: count - done)
            }
        }
        wrote(count)
    }

    private func bufferedCopy(_ input: Int32, from source: UInt64, count: Int, to offset: UInt64) throws(DeviceError) {
        var buffer = [UInt8](repeating: 0, count: min(count, 1 << 20))
        var done = 0
        while done < count {
            let n = min(buffer.count, count - done)
            var failure: DeviceError?
            buffer.withUnsafeMutableBytes { b in
                let part = UnsafeMutableRawBufferPointer(rebasing: b[0..<n])
                do throws(Syscall.TransferError) { try Syscall.readFully(input, into: part, at: source + UInt64(done)) } catch {
                    switch error {
                    case .failed(let e, let d): failure = DeviceError(.read, path: "source file", offset: source + UInt64(done + d), errno: e)
                    case .endOfFile(let d): failure = DeviceError(.read, path: "source file", offset: source + UInt64(done + d), errno: 0, shortBy: count - done - d)
                    }
                    return
                }
                do throws(DeviceError) { try write(UnsafeRawBufferPointer(part), at: offset + UInt64(done)) } catch { failure = error }
            }
            if let failure { throw failure }
            done += n
        }
    }

    public func flush() throws(DeviceError) {
        guard isWritable else { throw DeviceError(.sync, path: path, errno: EROFS) }
        if Syscall.fdatasync(fd) != 0 { throw DeviceError(.sync, path: path, errno: Syscall.errno) }
    }
}
