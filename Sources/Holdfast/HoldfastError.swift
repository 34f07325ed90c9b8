import HoldfastCache
import HoldfastDevice
import HoldfastFormat
import HoldfastJournal
import HoldfastMemory

/// Every error the public API throws: each names what failed.
public enum HoldfastError: Error, Sendable, CustomStringConvertible {
    /// The image is damaged: which structure, where, what.
    case corrupt(CorruptionError)
    /// A device call failed.
    case io(DeviceError)
    /// The image uses features Holdfast cannot read.
    case unsupportedFeatures([String])
    /// The journal cannot be replayed.
    case journal(String)
    /// The memory budget is spent and nothing could be reclaimed.
    case outOfMemory(OutOfMemoryError)
    case notFound(String)
    case notADirectory(String)
    case isADirectory(String)
    case tooManySymlinks(String)
    case invalidArgument(String)
    /// A failure writing outside the image (extract destination, standard output).
    case hostFile(path: String, operation: String, errno: Int32)

    public var description: String {
        switch self {
        case .corrupt(let c): return c.description
        case .io(let e): return "I/O error: \(e)"
        case .unsupportedFeatures(let names): return "unsupported ext4 feature\(names.count == 1 ? "" : "s"): \(names.joined(separator: ", "))"
        case .journal(let why): return "journal: \(why)"
        case .outOfMemory(let e): return e.description
        case .notFound(let p): return "\(p): no such file or directory in the image"
        case .notADirectory(let p): return "\(p): not a directory"
        case .isADirectory(let p): return "\(p): is a directory"
        case .tooManySymlinks(let p): return "\(p): too many levels of symbolic links"
        case .invalidArgument(let why): return why
        case .hostFile(let path, let op, let e): return "\(op) \(path): \(errnoDescription(e))"
        }
    }

    /// Maps errors from the layers below onto the public type.
    static func wrap(_ error: any Error) -> HoldfastError {
        switch error {
        case let e as HoldfastError: return e
        case let e as CorruptionError: return .corrupt(e)
        case let e as DeviceError:
            if e.shortBy != nil {
                return .corrupt(CorruptionError(.image, .impossible(e.description)))
            }
            return .io(e)
        case let e as OutOfMemoryError: return .outOfMemory(e)
        case let e as JournalReplay.Failure: return .journal(e.reason)
        default: return .invalidArgument(String(describing: error))
        }
    }
}

/// Runs `body`, presenting any failure as a `HoldfastError`.
@inline(__always)
func guarded<T>(_ body: () throws -> T) throws(HoldfastError) -> T {
    do { return try body() } catch { throw HoldfastError.wrap(error) }
}
