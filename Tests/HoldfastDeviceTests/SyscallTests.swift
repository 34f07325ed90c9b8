#if canImport(Glibc)
import Glibc
#endif
import HoldfastDevice
import HoldfastTestSupport
import Testing

/// The one loop every transfer goes through: short counts resumed, EINTR retried, the rest named.
@Suite("syscall funnel")
struct SyscallTests {
    @Test("interrupted and short calls are resumed from where they stopped until every byte moved")
    func shortAndInterrupted() throws {
        var calls: [Int] = []
        var script: [Int] = [-1, 3, -1, 4, 93]  // -1: EINTR
        try Syscall.transferFully(100) { done in
            calls.append(done)
            let n = script.removeFirst()
            if n < 0 { errno = EINTR }
            return n
        }
        #expect(calls == [0, 0, 3, 3, 7])
    }

    @Test("a failure names its errno and the bytes already moved; an early end says where")
    func failuresAreNamed() {
        var step = 0
        do {
            try Syscall.transferFully(10) { _ in
                step += 1
                if step == 1 { return 6 }
                errno = EIO
                return -1
            }
            Issue.record("a failed call passed")
        } catch {
            guard case .failed(let e, let done) = error else { Issue.record("wrong error \(error)"); return }
            #expect(e == EIO && done == 6)
        }
        do {
            try Syscall.transferFully(10) { done in done == 0 ? 4 : 0 }
            Issue.record("an end of file after 4 of 10 bytes passed")
        } catch {
            guard case .endOfFile(let done) = error else { Issue.record("wrong error \(error)"); return }
            #expect(done == 4)
        }
    }

    @Test("readFully and writeFully move whole buffers through a real file")
    func throughAFile() throws {
        let s = try Scratch()
        let fd = open(s.path("f"), O_RDWR | O_CREAT, 0o600)
        #expect(fd >= 0)
        defer { close(fd) }
        let data = Patterns.random(300_000, seed: 3)
        try data.withUnsafeBytes { try Syscall.writeFully(fd, $0, at: 4096) }
        var back = [UInt8](repeating: 0, count: data.count)
        try back.withUnsafeMutableBytes { try Syscall.readFully(fd, into: $0, at: 4096) }
        #expect(Bytes(back) == Bytes(data))
        var past = [UInt8](repeating: 0, count: 10)
        #expect(throws: Syscall.TransferError.self) {
            try past.withUnsafeMutableBytes { try Syscall.readFully(fd, into: $0, at: 4096 + 299_995) }
        }
    }
}
