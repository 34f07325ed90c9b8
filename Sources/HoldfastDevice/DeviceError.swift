/// A failed device call: what was attempted, where, and the errno.
public struct DeviceError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Operation: String, Sendable { case open, read, write, sync, stat }
    public let operation: Operation
    public let path: String
    public let offset: UInt64?
    public let errno: Int32
    /// A short read at the end of the image is reported as errno 0 with this set.
    public let shortBy: Int?
    /// Failed on purpose by a fault plan (`--inject`), naming the I/O site.
    public let injectedAt: String?

    public init(_ operation: Operation, path: String, offset: UInt64? = nil, errno: Int32, shortBy: Int? = nil, injectedAt: String? = nil) {
        self.operation = operation
        self.path = path
        self.offset = offset
        self.errno = errno
        self.shortBy = shortBy
        self.injectedAt = injectedAt
    }

    public var description: String {
        var s = "\(operation.rawValue) \(path)"
        if let offset { s += " at byte \(offset)" }
        if let shortBy { return s + ": image ends \(shortBy) bytes early (truncated image?)" }
        if let injectedAt { return s + ": " + errnoDescription(errno) + " (injected at \(injectedAt) by the fault plan)" }
        return s + ": " + errnoDescription(errno)
    }
}
