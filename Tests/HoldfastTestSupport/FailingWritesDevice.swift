import Foundation
import HoldfastDevice
import HoldfastMemory

/// A device in front of an image file that fails writes touching chosen blocks with EIO while
/// `failing` is set: the disk that loses writes in writeback (xfstests generic/441 and 487).
public final class FailingWritesDevice: BlockDevice, @unchecked Sendable {
    public let underlying: ImageFile
    private let state = Locked<(failing: Bool, blocks: Range<UInt64>, failed: Int)>((false, 0..<0, 0))
    public let blockSize: UInt64

    public init(path: String, blockSize: Int) throws {
        underlying = try ImageFile(path: path, writable: true)
        self.blockSize = UInt64(blockSize)
    }

    public func fail(_ blocks: Range<UInt64>) { state.withLock { $0.failing = true; $0.blocks = blocks } }
    public func heal() { state.withLock { $0.failing = false } }
    public var failedWrites: Int { state.withLock { $0.failed } }

    public var byteCount: UInt64 { underlying.byteCount }
    public var path: String { underlying.path }
    public var isWritable: Bool { true }

    private func check(_ offset: UInt64, _ count: Int) throws(DeviceError) {
        let first = offset / blockSize, end = (offset + UInt64(count) + blockSize - 1) / blockSize
        let hit = state.withLock { s -> Bool in
            guard s.failing, first < s.blocks.upperBound, end > s.blocks.lowerBound else { return false }
            s.failed += 1
            return true
        }
        if hit { throw DeviceError(.write, path: path, offset: offset, errno: EIO) }
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DeviceError) { try underlying.read(into: buffer, at: offset) }
    public func copy(from offset: UInt64, count: Int, to fd: Int32, at destination: UInt64) throws(DeviceError) {
        try underlying.copy(from: offset, count: count, to: fd, at: destination)
    }
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DeviceError) {
        try check(offset, bytes.count)
        try underlying.write(bytes, at: offset)
    }
    public func write(fromFile fd: Int32, at source: UInt64, count: Int, to offset: UInt64) throws(DeviceError) {
        try check(offset, count)
        try underlying.write(fromFile: fd, at: source, count: count, to: offset)
    }
    public func write(gathering pieces: [UnsafeRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        try check(offset, pieces.reduce(0) { $0 + $1.count })
        try underlying.write(gathering: pieces, at: offset)
    }
    public func flush() throws(DeviceError) { try underlying.flush() }
}
