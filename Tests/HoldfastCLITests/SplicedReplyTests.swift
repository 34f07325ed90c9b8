import CFuseDevice
import Foundation
import HoldfastTestSupport
import Testing

/// The mount's spliced read replies at the device (CFuseDevice): what reaches /dev/fuse when the
/// image gave libfuse fewer bytes than the reply's pieces hold.
@Suite("spliced read replies")
struct SplicedReplyTests {
    /// A reply as libfuse puts it in its pipe: fuse_out_header (len, error, unique), then data.
    static func reply(unique: UInt64, error: Int32 = 0, data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        withUnsafeBytes(of: UInt32(16 + data.count).littleEndian) { out += $0 }
        withUnsafeBytes(of: error.littleEndian) { out += $0 }
        withUnsafeBytes(of: unique.littleEndian) { out += $0 }
        return out + data
    }

    @Test("a spliced reply that came up short reaches the kernel as EIO, never as a short read")
    func shortReply() throws {
        let scratch = try Scratch()
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        _ = fcntl(ends[0], F_SETFL, O_NONBLOCK)
        let devicePath = scratch.path("device")
        let device = open(devicePath, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        defer { close(device) }
        // 100 bytes of the 8,192 the pieces asked for: a read error part-way through the image.
        let short = Self.reply(unique: 77, data: [UInt8](repeating: 0xAB, count: 100))
        #expect(write(ends[1], short, short.count) == short.count)
        hf_splice_expect(16 + 8192)
        let sent = hf_device_splice_send(ends[0], nil, device, nil, short.count, 0, nil)
        hf_splice_expect(0)
        #expect(sent == short.count, "libfuse takes the reply as sent, and frees its request")
        var rest = [UInt8](repeating: 0, count: 8)
        #expect(read(ends[0], &rest, rest.count) == -1 && errno == EAGAIN, "the pipe is empty")
        let failed = Self.reply(unique: 77, error: -EIO, data: [])
        #expect(Bytes(FileManager.default.contents(atPath: devicePath) ?? Data()) == Bytes(failed), "EIO for request 77")
        // A reply of the length expected goes through whole.
        let whole = Self.reply(unique: 78, data: [UInt8](repeating: 0xCD, count: 8192))
        #expect(write(ends[1], whole, whole.count) == whole.count)
        hf_splice_expect(whole.count)
        let spliced = hf_device_splice_send(ends[0], nil, device, nil, whole.count, 0, nil)
        hf_splice_expect(0)
        #expect(spliced == whole.count)
        #expect(Bytes(FileManager.default.contents(atPath: devicePath) ?? Data()) == Bytes(failed + whole))
    }

    @Test("a refused FUSE_INIT is remembered as the session's error, which the mount's loop returns")
    func refusedInit() throws {
        let scratch = try Scratch()
        // fuse_in_header (len, opcode 26 = FUSE_INIT, unique 5, nodeid, uid, gid, pid, extlen,
        // padding), then fuse_init_in's major, minor, max_readahead and flags.
        var request: [UInt8] = []
        for word: UInt32 in [56, 26] { withUnsafeBytes(of: word.littleEndian) { request += $0 } }
        for long: UInt64 in [5, 0] { withUnsafeBytes(of: long.littleEndian) { request += $0 } }
        for word: UInt32 in [0, 0, 0, 0, 7, 45, 131_072, 0] { withUnsafeBytes(of: word.littleEndian) { request += $0 } }
        #expect(request.count == 56)
        let requestPath = scratch.path("request")
        #expect(FileManager.default.createFile(atPath: requestPath, contents: Data(request)))
        let input = open(requestPath, O_RDONLY)
        defer { close(input) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        #expect(hf_device_read(input, &buffer, buffer.count, nil) == 56)
        let device = open(scratch.path("device"), O_RDWR | O_CREAT | O_TRUNC, 0o600)
        defer { close(device) }
        func send(_ header: [UInt8]) -> Int {
            var bytes = header
            return bytes.withUnsafeMutableBytes { raw in
                var iov = iovec(iov_base: raw.baseAddress, iov_len: raw.count)
                return hf_device_writev(device, &iov, 1, nil)
            }
        }
        // Another request's error is not the session's.
        #expect(send(Self.reply(unique: 4, error: -ENOENT, data: [])) == 16)
        #expect(hf_init_error() == 0)
        #expect(send(Self.reply(unique: 5, error: -EPROTO, data: [])) == 16)
        #expect(hf_init_error() == -EPROTO, "the init reply's error should be kept for the loop")
        // A new session's INIT starts with nothing refused.
        #expect(lseek(input, 0, SEEK_SET) == 0)
        #expect(hf_device_read(input, &buffer, buffer.count, nil) == 56)
        #expect(hf_init_error() == 0)
        #expect(send(Self.reply(unique: 5, error: 0, data: [UInt8](repeating: 0, count: 64))) == 80)
        #expect(hf_init_error() == 0, "an accepted INIT is no error")
    }
}
