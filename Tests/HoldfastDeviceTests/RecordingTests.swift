import Foundation
import HoldfastDevice
import HoldfastTestSupport
import Testing

/// The recording device and the crash states its log allows (DESIGN.md, "Crash consistency").
@Suite("recording device")
struct RecordingTests {
    static func fileBytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

    @Test("every kind of write and the flush are logged in order; states rebuild the image at each cut")
    func logAndStates() throws {
        let s = try Scratch()
        let image = s.path("dev.img"), base = s.path("base.img"), log = s.path("dev.log")
        try Support.sh(["truncate", "-s", "256K", image])
        try Support.sh(["cp", image, base])
        let a = [UInt8](repeating: 0xA1, count: 4096), b = [UInt8](repeating: 0xB2, count: 2048)
        let c = [UInt8](repeating: 0xC3, count: 1024), d = Patterns.random(8192, seed: 4)
        let host = s.path("host.bin")
        try Data(d).write(to: URL(fileURLWithPath: host))
        do {
            let dev = try RecordingDevice(try ImageFile(path: image, writable: true), logPath: log)
            try a.withUnsafeBytes { try dev.write($0, at: 0) }
            try dev.flush()
            try b.withUnsafeBytes { bb in try c.withUnsafeBytes { cc in try dev.write(gathering: [bb, cc], at: 8192) } }
            let fd = open(host, O_RDONLY)
            defer { close(fd) }
            try dev.write(fromFile: fd, at: 0, count: d.count, to: 65536)
            try a.withUnsafeBytes { try dev.write(UnsafeRawBufferPointer(rebasing: $0[0..<512]), at: 131_072) }
            #expect(dev.recordCount == 5)
        }
        let recorded = try RecordedLog(path: log)
        #expect(recorded.imageBytes == 256 << 10)
        #expect(recorded.events.count == 5 && recorded.writeCount == 4 && recorded.flushCount == 1)
        #expect(recorded.events[1] == .flush)
        guard case .write(8192, 3072, _) = recorded.events[2], case .write(65536, 8192, _) = recorded.events[3] else {
            Issue.record("gathered and host-file writes: \(recorded.events)")
            return
        }

        let states = recorded.crashStates(subsets: 3, seed: 9)
        // 5 prefix states (no write, then one per write) and, for the 3 writes after the flush,
        // one state per lost write and 3 subsets.
        #expect(states.filter { $0.kind == .prefix }.count == 5)
        #expect(states.filter { if case .dropped = $0.kind { true } else { false } }.count == 3)
        #expect(states.filter { if case .subset = $0.kind { true } else { false } }.count == 3)
        // Every state keeps the write before the flush.
        #expect(states.filter { $0.cut > 1 }.allSatisfy { $0.applied.first == 0 })

        let final = try Self.fileBytes(image)
        let rebuilt = s.path("state.img")
        let whole = try #require(states.last { $0.kind == .prefix })
        try recorded.materialize(whole, base: base, into: rebuilt)
        #expect(Bytes(try Self.fileBytes(rebuilt)) == Bytes(final), "all writes applied: the image as it is")
        // Losing the host-file write leaves its range as the base had it, and the rest written.
        let lost = try #require(states.first { $0.kind == .dropped(3) })
        try recorded.materialize(lost, base: base, into: rebuilt)
        let partial = try Self.fileBytes(rebuilt)
        #expect(partial[65536..<(65536 + 8192)].allSatisfy { $0 == 0 })
        #expect(Array(partial[8192..<11264]) == b + c && Array(partial[0..<4096]) == a)
        // A log cut in the middle of a record ends at the record before it.
        let bytes = try Self.fileBytes(log)
        try Data(bytes.dropLast(100)).write(to: URL(fileURLWithPath: log))
        #expect(try RecordedLog(path: log).events.count == 4)
        // Not a log at all: refused.
        #expect(throws: DeviceError.self) { try RecordedLog(path: image) }
    }
}
