import Holdfast
import Logging

/// Prints the library's warnings on standard error, one line each, as `holdfast: warning: ...`
/// (and errors as `holdfast: ...`). Notices and below are not shown: what they say reaches the
/// user another way (an error at fsync or close, `info`'s lines).
struct StandardErrorLog: LogHandler {
    var logLevel: Logger.Level = .warning
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let prefix = event.level >= .error ? "holdfast: " : "holdfast: warning: "
        Output.error(prefix + "\(event.message)")
    }

    /// The logger every command gives the library.
    static let logger = Logger(label: "holdfast", factory: { _ in StandardErrorLog() })
}
