#if canImport(Glibc)
import Glibc
#endif
import HoldfastMemory

extension AllocationSite {
    // I/O sites share the allocation sites' registry and fault plans. Their policy is mayFail:
    // a hit the plan fails returns EIO to the caller, as a failing disk would.
    public static let deviceRead = AllocationSite("device.read", .mayFail, .io, "a read from the image (fails with EIO)")
    public static let deviceWrite = AllocationSite("device.write", .mayFail, .io, "a write to the image (fails with EIO)")
    public static let deviceFlush = AllocationSite("device.flush", .mayFail, .io, "fdatasync of the image (fails with EIO)")

    /// The device layer's sites.
    public static let deviceSites: [AllocationSite] = [.deviceRead, .deviceWrite, .deviceFlush]
}

/// A device in front of another that counts every call as a hit at its I/O site and fails the
/// ones the budget's fault plan names, with EIO, before they reach the device underneath.
public final class FaultInjectingDevice: BlockDevice {
    public let underlying: any BlockDevice
    public let budget: MemoryBudget

    public init(_ underlying: any BlockDevice, budget: MemoryBudget) {
        self.underlying = underlying
        self.budget = budget
    }

    public var byteCount: UInt64 { underlying.byteCount }
    public var path: String { underlying.path }
    public var isWritable: Bool { underlying.isWritable }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(DeviceError) {
        try check(.deviceRead, .read, offset)
        try underlying.read(into: buffer, at: offset)
    }

    public func read(scattering pieces: [UnsafeMutableRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        try check(.deviceRead, .read, offset)
        try underlying.read(scattering: pieces, at: offset)
    }

    public func spliceSource(at offset: UInt64, count: Int) throws(DeviceError) -> Int32? {
        try check(.deviceRead, .read, offset)
        return try underlying.spliceSource(at: offset, count: count)
    }

    public func copy(from offset: UInt64, count: Int, to fd: Int32, at destination: UInt64) throws(DeviceError) {
        try check(.deviceRead, .read, offset)
        try underlying.copy(from: offset, count: count, to: fd, at: destination)
    }

    public func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws(DeviceError) {
        try check(.deviceWrite, .write, offset)
        try underlying.write(bytes, at: offset)
    }

    public func write(fromFile fd: Int32, at source: UInt64, count: Int, to offset: UInt64) throws(DeviceError) {
        try check(.deviceWrite, .write, offset)
        try underlying.write(fromFile: fd, at: source, count: count, to: offset)
    }

    public func write(gathering pieces: [UnsafeRawBufferPointer], at offset: UInt64) throws(DeviceError) {
        try check(.deviceWrite, .write, offset)
        try underlying.write(gathering: pieces, at: offset)
    }

    public func flush() throws(DeviceError) {
        try check(.deviceFlush, .sync, nil)
        try underlying.flush()
    }

    private func check(_ site: AllocationSite, _ operation: DeviceError.Operation, _ offset: UInt64?) throws(DeviceError) {
        if budget.failsIO(at: site) {
            throw DeviceError(operation, path: path, offset: offset, errno: EIO, injectedAt: site.name)
        }
    }
}
