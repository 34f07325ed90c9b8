#if canImport(Glibc)
import Glibc
#endif
import HoldfastDevice
import Synchronization
import HoldfastMemory

/// An open file description: while one is open, the inode outlives its last link (unlink(2) of
/// an open file); the last close frees it. Closing twice is harmless.
///
/// Each description has its own write-error cursor (errseq): a write of the file's data that fails
/// in writeback is reported once to every description that calls `sync` after it, and at `close`
/// to one that has not heard of it.
public final class OpenFile: Sendable {
    public let inode: UInt32
    private let fs: Filesystem
    private let isOpen = Locked(true)
    private let errorCursor: Locked<UInt64?>

    init(_ fs: Filesystem, inode: UInt32) {
        self.fs = fs
        self.inode = inode
        errorCursor = Locked(fs.pageCache?.errorCursor(inode))
    }

    /// Drops this reference; with the last one, an unlinked inode and its blocks are freed.
    /// Reports a write error of the file this description has not heard of.
    public func close() throws(HoldfastError) {
        let wasOpen = isOpen.withLock { open in
            defer { open = false }
            return open
        }
        guard wasOpen else { return }
        let unheard = errorCursor.withLock { cursor -> DeviceError? in
            guard var c = cursor, let cache = fs.pageCache else { return nil }
            defer { cursor = c }
            return cache.checkError(inode, cursor: &c)
        }
        try fs.release(inode)
        if let unheard { throw HoldfastError.io(unheard) }
    }

    /// fsync(2) through this description: the file's data and the metadata reach the image, and a
    /// write error since this description last asked is thrown (once).
    public func sync() throws(HoldfastError) {
        // The cursor stays locked through the fsync: two syncs at once hear of an error once.
        try errorCursor.withLock { (cursor: inout UInt64?) throws(HoldfastError) in try fs.fsync(inode, cursor: &cursor) }
    }

    /// fdatasync(2) through this description (the same as `sync` until commits go through a journal).
    public func dataSync() throws(HoldfastError) { try sync() }

    /// pread(2) through this description: up to `count` bytes at `offset` (fewer at the end of
    /// the file), through the page cache, reading ahead while the reads are sequential.
    public func read(at offset: UInt64, count: Int) throws(HoldfastError) -> [UInt8] {
        try fs.read(try fs.inode(inode), offset: offset, count: count)
    }

    deinit { try? close() }
}

extension Filesystem {
    /// Opens `inode` for use as a file description (see `OpenFile`).
    public func openFile(_ inode: UInt32) throws(HoldfastError) -> OpenFile {
        try guarded {
            let open = { () throws in
                let rec = try self.readInode(inode)
                guard rec.mode != 0, rec.linksCount > 0 else { throw HoldfastError.notFound(.inode(inode)) }
                try self.inodeCache.open(inode)
            }
            // Checked and counted under the write lock: no unlink can free it in between.
            if let writer { try writer.withLock { _ in try MemoryScope.noFS { try open() } } } else { try open() }
            return OpenFile(self, inode: inode)
        }
    }

    func release(_ inode: UInt32) throws(HoldfastError) {
        guard let writer else {
            inodeCache.close(inode)
            return
        }
        try guarded {
            let last = writer.withLock { state -> Bool in
                guard inodeCache.isOpen(inode), inodeCache.close(inode) == 0 else { return false }
                discardPreallocation(inode, state)
                return !state.closed && state.orphans.contains(inode)
            }
            if last { try evict(inode) }
        }
    }


    /// Is any file description open on `inode`?
    func isOpen(_ state: WriteState, _ inode: UInt32) -> Bool { inodeCache.isOpen(inode) }
}
