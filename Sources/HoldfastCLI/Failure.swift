import ArgumentParser
import Holdfast
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Runs a command body; a HoldfastError becomes one line on stderr and a specific exit code.
/// With `--stats`, the memory report follows, whatever the outcome.
func reportingErrors(_ body: () throws -> Void) throws {
    defer { for line in MemoryReport.lines() { Output.error(line) } }
    do {
        try body()
    } catch let error as HoldfastError {
        Output.error("holdfast: \(error)")
        throw ExitCode(exitCode(for: error))
    }
}

func exitCode(for error: HoldfastError) -> Int32 {
    switch error {
    case .corrupt: 3
    case .unsupportedFeatures, .journal: 4
    case .outOfMemory: 5
    case .partialWrite(_, _, let cause): exitCode(for: cause)
    default: 1
    }
}

enum Output {
    /// Set by a mount server in the background without --log: error lines go to the system log
    /// too, since its standard error is /dev/null.
    static let toSystemLog = Atomic<Bool>(false)

    static func error(_ line: String) {
        raw(line + "\n")
        if toSystemLog.load(ordering: .relaxed) {
            line.withCString { text in withVaList([text]) { vsyslog(LOG_ERR, "%s", $0) } }
        }
    }

    static func raw(_ text: String) {
        var s = text
        s.withUTF8 { try? Syscall.writeFully(2, UnsafeRawBufferPointer($0), at: nil) }
    }
}

/// Buffered standard output (print is line-buffered and slow for big listings).
final class StdoutWriter {
    private var buffer: [UInt8] = []

    init() { buffer.reserveCapacity(1 << 16) }

    func write(_ s: String) {
        buffer.append(contentsOf: s.utf8)
        if buffer.count >= 1 << 16 { flush() }
    }

    func line(_ s: String) { write(s + "\n") }

    func write(_ bytes: [UInt8]) {
        buffer.append(contentsOf: bytes)
        if buffer.count >= 1 << 16 { flush() }
    }

    func write(bytes: UnsafeRawBufferPointer) throws {
        flush()
        try writeAll(bytes)
    }

    func flush() {
        guard !buffer.isEmpty else { return }
        buffer.withUnsafeBytes { try? writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        do { try Syscall.writeFully(1, bytes, at: nil) } catch {
            let e: Int32 = if case .failed(let e, _) = error { e } else { EIO }
            throw HoldfastError.hostFile(path: "standard output", operation: "write", errno: e)
        }
    }

    deinit { flush() }
}
