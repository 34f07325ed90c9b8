import HoldfastCache
import HoldfastDevice
import HoldfastFormat
import HoldfastJournal
import HoldfastMemory
#if canImport(Glibc)
import Glibc
#endif

// ext4's own names for two Linux errnos (fs/ext4/ext4.h): a damaged structure is
// EFSCORRUPTED (EUCLEAN, "structure needs cleaning"), a failed checksum EFSBADCRC (EBADMSG).
let EFSCORRUPTED: Int32 = EUCLEAN
let EFSBADCRC: Int32 = EBADMSG

/// What an error names: a path the caller gave, an inode by number, a directory entry (by its
/// directory's inode number and its name's bytes), or an extended attribute of an inode. The path
/// API reports paths; the inode API, which the mount will use, reports numbers and entries.
public enum ErrorSubject: Sendable, Hashable, CustomStringConvertible {
    case path(String)
    case inode(UInt32)
    case entry(directory: UInt32, name: [UInt8])
    case attribute(inode: UInt32, name: String)

    public var description: String {
        switch self {
        case .path(let path): path
        case .inode(let number): "inode \(number)"
        case .entry(let directory, let name): "\(String(decoding: name, as: UTF8.self)) (in directory inode \(directory))"
        case .attribute(let inode, let name): "\(name) (of inode \(inode))"
        }
    }
}

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
    /// No such file (ENOENT).
    case notFound(ErrorSubject)
    /// A directory was needed (ENOTDIR).
    case notADirectory(ErrorSubject)
    /// A directory where one may not be (EISDIR).
    case isADirectory(ErrorSubject)
    /// A path whose symbolic links go on for more than 40 hops (ELOOP).
    case tooManySymlinks(ErrorSubject)
    case invalidArgument(String)
    /// A failure writing outside the image (extract destination, standard output).
    case hostFile(path: String, operation: String, errno: Int32)
    /// The name is taken (EEXIST).
    case exists(ErrorSubject)
    /// rmdir or rename over a directory that still has entries (ENOTEMPTY).
    case notEmpty(ErrorSubject)
    /// No free blocks or inodes left, or a directory index is full (ENOSPC).
    case noSpace(String)
    /// A path component longer than 255 bytes (ENAMETOOLONG).
    case nameTooLong(ErrorSubject)
    /// The image cannot be changed: opened read-only, or it uses features Holdfast reads but does not maintain.
    case readOnly([String])
    /// A valid request the engine does not carry out yet, named.
    case unsupported(String)
    /// The link count would pass the limit (EMLINK).
    case tooManyLinks(ErrorSubject)
    /// Moving a directory under itself (EINVAL in rename).
    case wouldLoop(ErrorSubject)
    /// A size or write past the largest file the image can hold (EFBIG).
    case fileTooLarge(ErrorSubject)
    /// The inode has no extended attribute of that name (ENODATA).
    case noSuchAttribute(String)
    /// A change the kernel refuses to every caller, root included (EPERM): user.* attributes on
    /// anything but regular files and directories.
    case notPermitted(String)
    /// File data held dirty in memory could not be written to the image (close, sync): which
    /// inodes, and the device's last error. The data was never reported written.
    case dataNotWritten(inodes: [UInt32], cause: DeviceError?)
    /// A write that failed part way (write(2)'s short count): its first `written` bytes are in
    /// the file, the rest is not, for `cause`.
    indirect case partialWrite(written: Int, requested: Int, cause: HoldfastError)
    /// The file an error is about, as a value (`notFound`, `exists` and the other cases that name
    /// one): what a front end needs to act on it or print it its own way.
    public var subject: ErrorSubject? {
        switch self {
        case .notFound(let s), .notADirectory(let s), .isADirectory(let s), .tooManySymlinks(let s), .exists(let s),
             .notEmpty(let s), .nameTooLong(let s), .tooManyLinks(let s), .wouldLoop(let s), .fileTooLarge(let s):
            s
        case .partialWrite(_, _, let cause): cause.subject
        default: nil
        }
    }

    /// Something that should never happen did: a bug in Holdfast, not a problem of the image or
    /// the caller. Debug builds stop at the point it was made (`assertionFailure`).
    case `internal`(String)

    /// Wraps an error that no layer knows how to name: a bug, reported as one.
    static func unexpected(_ error: any Error, file: StaticString = #fileID, line: UInt = #line) -> HoldfastError {
        assertionFailure("unexpected error \(type(of: error)): \(error)", file: file, line: line)
        return .internal("\(type(of: error)): \(error) (at \(file):\(line))")
    }

    /// The errno a POSIX caller gets for this error: one table, the kernel's ext4's choices, for
    /// front ends that speak errno (the FUSE mount to come). Linux values.
    public var errno: Int32 {
        switch self {
        case .corrupt(let c):
            if case .badChecksum = c.kind { EFSBADCRC } else { EFSCORRUPTED }
        case .io(let e): e.errno == 0 ? EIO : e.errno
        case .unsupportedFeatures: EINVAL  // as the kernel's mount refuses them
        case .journal: EFSCORRUPTED
        case .outOfMemory: ENOMEM
        case .notFound: ENOENT
        case .notADirectory: ENOTDIR
        case .isADirectory: EISDIR
        case .tooManySymlinks: ELOOP
        case .invalidArgument: EINVAL
        case .hostFile(_, _, let e): e
        case .exists: EEXIST
        case .notEmpty: ENOTEMPTY
        case .noSpace: ENOSPC
        case .nameTooLong: ENAMETOOLONG
        case .readOnly: EROFS
        case .unsupported: EOPNOTSUPP
        case .tooManyLinks: EMLINK
        case .wouldLoop: EINVAL
        case .fileTooLarge: EFBIG
        case .noSuchAttribute: ENODATA
        case .notPermitted: EPERM
        case .dataNotWritten(_, let cause): cause.map { $0.errno == 0 ? EIO : $0.errno } ?? EIO
        case .partialWrite(_, _, let cause): cause.errno
        case .internal: EIO
        }
    }

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
        case .exists(let p): return "\(p): already exists"
        case .notEmpty(let p): return "\(p): directory not empty"
        case .noSpace(let why): return "no space left on the image: \(why)"
        case .nameTooLong(let p): return "\(p): name longer than 255 bytes"
        case .readOnly(let why): return "the image cannot be written: \(why.joined(separator: "; "))"
        case .unsupported(let what): return "not supported yet: \(what)"
        case .tooManyLinks(let p): return "\(p): too many links"
        case .wouldLoop(let p): return "\(p): cannot move a directory into itself"
        case .fileTooLarge(let p): return "\(p): past the largest file size this image can hold"
        case .noSuchAttribute(let n): return "\(n): no such extended attribute"
        case .notPermitted(let what): return "not permitted: \(what)"
        case .dataNotWritten(let inodes, let cause):
            let list = inodes.prefix(20).map { "\($0)" }.joined(separator: ", ") + (inodes.count > 20 ? ", ..." : "")
            return "data of \(inodes.count) file\(inodes.count == 1 ? "" : "s") (inode\(inodes.count == 1 ? "" : "s") \(list)) could not be written to the image"
                + (cause.map { ": \($0)" } ?? "")
        case .partialWrite(let written, let requested, let cause):
            return "only \(written) of \(requested) bytes were written: \(cause)"
        case .internal(let what):
            return "internal error (a bug in Holdfast; please report it): \(what)"
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
        case let e as Jbd2Error: return .journal(e.description)
        case let e as CallerError: return .invalidArgument(String(describing: e.error))
        case let e as FaultPlan.ParseError: return .invalidArgument(e.description)
        case let e as ArenaReservationError: return .invalidArgument(e.description)
        default: return .unexpected(error)
        }
    }
}

/// An error of another type that the caller's own closure threw (`streamData`, `blockRuns`):
/// passed back as `invalidArgument` with its description, never taken for a bug of the
/// engine's. (A `HoldfastError` the closure throws passes through as it is.)
struct CallerError: Error {
    let error: any Error
}

/// Runs `body`, presenting any failure as a `HoldfastError`.
@inline(__always)
func guarded<T>(_ body: () throws -> T) throws(HoldfastError) -> T {
    do { return try body() } catch { throw HoldfastError.wrap(error) }
}
