import Foundation
import HoldfastDevice
import HoldfastMemory
import HoldfastTestSupport
import Testing

@Suite("block devices")
struct DeviceTests {
    @Test("an image opened writable takes writes in place, flushes, and never grows")
    func writeAndFlush() throws {
        let s = try Scratch()
        let path = s.path("dev.img")
        try Support.sh(["truncate", "-s", "64K", path])
        let dev = try ImageFile(path: path, writable: true)
        let data = [UInt8](repeating: 0xA5, count: 5000)
        try data.withUnsafeBytes { try dev.write($0, at: 4096) }
        try dev.flush()
        #expect(Bytes(try dev.read(count: 5000, at: 4096)) == Bytes(data))
        let onDisk = try Data(contentsOf: URL(fileURLWithPath: path))
        #expect(onDisk.count == 65536 && Array(onDisk[4096..<9096]) == data && onDisk[4095] == 0)
        #expect(throws: DeviceError(.write, path: path, offset: 65000, errno: ENOSPC)) {
            try data.withUnsafeBytes { try dev.write($0, at: 65000) }
        }
        let readOnly = try ImageFile(path: path)
        #expect(!readOnly.isWritable)
        #expect(throws: DeviceError(.write, path: path, offset: 0, errno: EROFS)) {
            try data.withUnsafeBytes { try readOnly.write($0, at: 0) }
        }
    }

    @Test("the fault-injecting device fails the planned I/O hit with EIO, counted at its site")
    func injectedIO() throws {
        let s = try Scratch()
        let path = s.path("dev.img")
        try Support.sh(["truncate", "-s", "64K", path])
        let budget = MemoryBudget(limit: 1 << 20, faultPlan: FaultPlan(nth: 2, category: .io))
        let dev = FaultInjectingDevice(try ImageFile(path: path, writable: true), budget: budget)
        let block = [UInt8](repeating: 1, count: 512)
        try block.withUnsafeBytes { try dev.write($0, at: 0) }  // hit 1
        do {
            try block.withUnsafeBytes { try dev.write($0, at: 512) }  // hit 2: fails, nothing written
            Issue.record("the second write was not failed")
        } catch let error as DeviceError {
            #expect(error.errno == EIO && error.injectedAt == "device.write")
            #expect(error.description.contains("injected at device.write"))
        } catch {
            Issue.record("wrong error \(error)")
        }
        try dev.flush()  // hit 3
        #expect(try dev.read(count: 512, at: 512) == [UInt8](repeating: 0, count: 512))
        #expect(budget.statistics(.deviceWrite).hits == 2 && budget.statistics(.deviceWrite).failed == 1)
        #expect(budget.statistics(.deviceFlush).hits == 1 && budget.statistics(.deviceRead).hits == 1)
        #expect(budget.faultsFired == 1)
    }

    @Test("vectored I/O resumes after a short call at the right byte of the right piece")
    func vectorsAdvancePastShortCalls() throws {
        var storage = [UInt8](repeating: 0, count: 12)
        storage.withUnsafeMutableBytes { raw in
            let pieces = (0..<3).map { UnsafeMutableRawBufferPointer(rebasing: raw[($0 * 4)..<($0 * 4 + 4)]) }
            var v = IOVectors(pieces)
            v.advance(by: 6)  // the first piece and half the second
            let (base, count) = v.withRemaining { p, n in (p!.pointee.iov_base, n) }
            #expect(count == 2)
            #expect(base == raw.baseAddress! + 6)
            v.advance(by: 2)
            #expect(v.withRemaining { _, n in n } == 1)
            #expect(v.withRemaining { p, _ in p!.pointee.iov_len } == 4)
            v.advance(by: 4)
            #expect(v.withRemaining { _, n in n } == 0)
        }
    }
}
