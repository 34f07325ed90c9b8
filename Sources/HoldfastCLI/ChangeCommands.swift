import ArgumentParser
import Holdfast
import HoldfastHost

#if canImport(Glibc)
import Glibc
#endif

/// Opens the image writable, runs `body`, and closes it: every change is written and flushed, or the
/// command fails naming what could not be written.
func changing(_ options: ImageOptions, _ body: (Filesystem) throws -> Void) throws {
    try reportingErrors {
        let fs = try options.open(writable: true)
        do {
            try body(fs)
        } catch {
            try? fs.close()
            throw error
        }
        try fs.close()
    }
}

struct MkdirCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mkdir", abstract: "Create a directory in the image.",
        discussion: """
            As root's mkdir -m MODE: owner 0:0, and in a setgid directory its group and setgid bit.
            A MODE with setuid or setgid bits is set exactly; --owner then sets the owner, as chown.

            Example:
              holdfast mkdir disk.img /srv/www -p --mode 755
            """)
    @OptionGroup var options: ImageOptions
    @Argument(help: "Directory to create.") var path: String
    @Flag(name: .short, help: "Create missing parents too; an existing directory is not an error.") var parents = false
    @Option(help: "Permission bits, octal.") var mode: String = "755"
    @Option(help: "Owner of the new directory (the last, with -p), UID:GID.") var owner: String?

    func run() throws {
        try changing(options) { fs in
            let wanted = try ownership(owner ?? "0:0", mode)
            let made = Ownership(permissions: wanted.permissions & 0o1777)
            // -p leaves a directory that is there already as it is.
            if parents, let existing = try? fs.resolve(path, followFinal: true), existing.fileType == .directory { return }
            let number = parents ? try fs.makeDirectories(path: path, owner: made) : try fs.create(path: path, kind: .directory, owner: made)
            if wanted.permissions & 0o6000 != 0 { try fs.setAttributes(number, AttributeChanges(permissions: wanted.permissions)) }
            if owner != nil { try fs.setAttributes(number, AttributeChanges(uid: wanted.uid, gid: wanted.gid)) }
        }
    }
}

struct RmCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm", abstract: "Remove a file, symlink or empty directory from the image.",
        discussion: "With -r, a directory and everything under it.\n\nExample:\n  holdfast rm disk.img /tmp/cache -r")
    @OptionGroup var options: ImageOptions
    @Argument(help: "Path to remove.") var path: String
    @Flag(name: .short, help: "Remove directories and their contents recursively.") var recursive = false

    func run() throws {
        try changing(options) { fs in
            if recursive {
                try fs.removeTree(path: path)
            } else if try fs.resolve(path).fileType == .directory {
                try fs.removeDirectory(path: path)
            } else {
                try fs.unlink(path: path)
            }
        }
    }
}

struct MvCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mv", abstract: "Rename or move a file or directory inside the image.",
        discussion: "An existing destination file is replaced (an existing empty directory too, by a directory).\nIf DEST is an existing directory, SRC moves into it.\n\nExample:\n  holdfast mv disk.img /etc/old.conf /etc/new.conf")
    @OptionGroup var options: ImageOptions
    @Argument(help: "Existing path.") var source: String
    @Argument(help: "New path.") var destination: String
    @Flag(name: .long, help: "Fail if the destination exists (RENAME_NOREPLACE).") var noClobber = false
    @Flag(name: .long, help: "Swap source and destination, which must both exist (RENAME_EXCHANGE).") var exchange = false

    func run() throws {
        try changing(options) { fs in
            var dest = destination
            if !exchange, let d = try? fs.resolve(destination, followFinal: true), d.fileType == .directory,
               let s = try? fs.resolve(source), s.number != d.number {
                let base = source.split(separator: "/").last.map(String.init) ?? source
                dest = destination.hasSuffix("/") ? destination + base : destination + "/" + base
            }
            try fs.rename(path: source, to: dest, mode: exchange ? .exchange : noClobber ? .noReplace : .replace)
        }
    }
}

struct LnCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ln", abstract: "Make a hard link, or with -s a symbolic link, in the image.",
        discussion: "Example:\n  holdfast ln disk.img /usr/bin/python3 /usr/bin/python -s")
    @OptionGroup var options: ImageOptions
    @Argument(help: "The existing file (or, with -s, the link's target text).") var target: String
    @Argument(help: "The new link.") var link: String
    @Flag(name: .short, help: "Make a symbolic link.") var symbolic = false

    func run() throws {
        try changing(options) { fs in
            if symbolic {
                try fs.create(path: link, kind: .symlink(target: Array(target.utf8)), owner: Ownership(permissions: 0o777))
            } else {
                try fs.link(existing: target, newPath: link)
            }
        }
    }
}

struct ChmodCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chmod", abstract: "Set a file's permission bits (octal).",
        discussion: "A symbolic link is followed (a link's own mode cannot change).\n\nExample:\n  holdfast chmod disk.img 0640 /etc/shadow")
    @OptionGroup var options: ImageOptions
    @Argument(help: "Octal mode, e.g. 755 or 4755.") var mode: String
    @Argument(help: "Path inside the image.") var path: String

    func run() throws {
        try changing(options) { fs in
            guard let bits = UInt16(mode, radix: 8), bits <= 0o7777 else { throw HoldfastError.invalidArgument("\(mode): give an octal mode up to 7777") }
            try fs.setAttributes(try fs.resolve(path, followFinal: true).number, AttributeChanges(permissions: bits))
        }
    }
}

struct ChownCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chown", abstract: "Set a file's owner and group (numeric).",
        discussion: """
            As chown(1): a symbolic link is followed unless --no-dereference is given. As the
            kernel's chown, a new owner or group of anything but a directory clears setuid,
            setgid (where group-execute is set) and the file's capabilities.

            Example:
              holdfast chown disk.img 1000:1000 /home/user
            """)
    @OptionGroup var options: ImageOptions
    @Argument(help: "UID:GID, or UID alone to keep the group.") var owner: String
    @Argument(help: "Path inside the image.") var path: String
    @Flag(help: "Change a symbolic link itself, not what it points to (chown -h).") var noDereference = false

    func run() throws {
        try changing(options) { fs in
            let parts = owner.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2, let uid = UInt32(parts[0]) else { throw HoldfastError.invalidArgument("\(owner): give UID:GID as numbers") }
            let gid = parts.count == 2 ? UInt32(parts[1]) : nil
            if parts.count == 2 && gid == nil { throw HoldfastError.invalidArgument("\(owner): give UID:GID as numbers") }
            try fs.setAttributes(try fs.resolve(path, followFinal: !noDereference).number, AttributeChanges(uid: uid, gid: gid))
        }
    }
}

struct TruncateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "truncate", abstract: "Set a regular file's size: shrinking frees blocks, growing leaves a hole.",
        discussion: "Example:\n  holdfast truncate disk.img /var/log/big.log 0")
    @OptionGroup var options: ImageOptions
    @Argument(help: "Path inside the image.") var path: String
    @Argument(help: "New size in bytes (suffixes K, M, G).") var size: String

    func run() throws {
        try changing(options) { fs in
            guard let bytes = parseSize(size) else { throw HoldfastError.invalidArgument("\(size): not a size") }
            try fs.truncate(try fs.resolve(path, followFinal: true).number, to: UInt64(bytes))
        }
    }
}

struct FallocateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fallocate", abstract: "Preallocate, punch a hole in or zero a range of a regular file (fallocate(2)).",
        discussion: """
            Without a mode flag the range is allocated as unwritten extents (it reads as zeros)
            and a range past the end grows the file. --keep-size allocates without growing it.
            --punch-hole frees the whole blocks of the range and zeroes the partial ones; the
            size stays. --zero-range makes the range read as zeros with its blocks allocated.

            Examples:
              holdfast fallocate disk.img /var/lib/db/data --length 64M
              holdfast fallocate disk.img /var/log/big.log --offset 4K --length 1M --punch-hole
            """)
    @OptionGroup var options: ImageOptions
    @Argument(help: "Regular file inside the image.") var path: String
    @Option(help: "First byte of the range (suffixes K, M, G).") var offset: String = "0"
    @Option(help: "Bytes in the range (suffixes K, M, G).") var length: String
    @Flag(help: "Allocate without changing the file size (FALLOC_FL_KEEP_SIZE).") var keepSize = false
    @Flag(help: "Free the range's blocks (FALLOC_FL_PUNCH_HOLE); the size stays.") var punchHole = false
    @Flag(help: "Make the range read as zeros, blocks allocated (FALLOC_FL_ZERO_RANGE).") var zeroRange = false

    func validate() throws {
        if punchHole && zeroRange { throw ValidationError("--punch-hole and --zero-range exclude each other") }
    }

    func run() throws {
        try changing(options) { fs in
            guard let start = parseSize(offset) else { throw HoldfastError.invalidArgument("\(offset): not a size") }
            guard let count = parseSize(length), count > 0 else { throw HoldfastError.invalidArgument("\(length): not a positive size") }
            let mode: FallocateMode = punchHole ? .punchHole : zeroRange ? .zeroRange(keepSize: keepSize) : keepSize ? .keepSize : .allocate
            try fs.fallocate(try fs.resolve(path, followFinal: true).number, offset: UInt64(start), length: UInt64(count), mode: mode)
        }
    }
}

struct WriteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "write", abstract: "Write standard input into a file of the image at an offset.",
        discussion: "The file is created (mode 644) if it does not exist; it is never truncated.\n\nExample:\n  echo hello | holdfast write disk.img /etc/motd --offset 0")
    @OptionGroup var options: ImageOptions
    @Argument(help: "File inside the image.") var path: String
    @Option(help: "Byte offset to write at.") var offset: UInt64 = 0

    func run() throws {
        try changing(options) { fs in
            let inode: UInt32
            if let existing = try? fs.resolve(path, followFinal: true) {
                guard existing.fileType == .regular else {
                    throw existing.fileType == .directory ? HoldfastError.isADirectory(.path(path)) : HoldfastError.invalidArgument("\(path): not a regular file")
                }
                inode = existing.number
            } else {
                inode = try fs.create(path: try creationPath(fs, path), kind: .regular, owner: Ownership(permissions: 0o644))
            }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var position = offset
            while true {
                var failure: Syscall.TransferError?
                let n = buffer.withUnsafeMutableBytes { b -> Int in
                    do throws(Syscall.TransferError) { return try Syscall.readSome(0, into: b) } catch { failure = error; return 0 }
                }
                if case .failed(let e, _)? = failure {
                    throw HoldfastError.hostFile(path: "standard input", operation: "read", errno: e)
                }
                if n == 0 { break }
                try buffer.withUnsafeBytes { try fs.write(inode, at: position, UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                position += UInt64(n)
            }
        }
    }
}

/// Where open(O_CREAT) creates `path`: the path itself, or, when it names a dangling symbolic
/// link, the link's target (followed, as the kernel follows it, up to 40 links).
func creationPath(_ fs: Filesystem, _ path: String) throws -> String {
    var current = path
    for _ in 0..<40 {
        guard let node = try? fs.resolve(current), node.fileType == .symlink else { return current }
        let target = String(decoding: try fs.readLink(node), as: UTF8.self)
        // A target naming a directory ("dir/") cannot be created as a file (EISDIR).
        if target.hasSuffix("/") { throw HoldfastError.isADirectory(.path(target)) }
        if target.hasPrefix("/") {
            current = target
        } else {
            let parent = current.split(separator: "/", omittingEmptySubsequences: true).dropLast().joined(separator: "/")
            current = "/" + (parent.isEmpty ? "" : parent + "/") + target
        }
    }
    throw HoldfastError.tooManySymlinks(.path(path))
}

/// "UID:GID" and an octal mode as an Ownership.
func ownership(_ owner: String, _ mode: String) throws -> Ownership {
    let parts = owner.split(separator: ":")
    guard parts.count == 2, let uid = UInt32(parts[0]), let gid = UInt32(parts[1]) else {
        throw HoldfastError.invalidArgument("\(owner): give UID:GID as numbers")
    }
    guard let bits = UInt16(mode, radix: 8), bits <= 0o7777 else { throw HoldfastError.invalidArgument("\(mode): give an octal mode up to 7777") }
    return Ownership(uid: uid, gid: gid, permissions: bits)
}

struct PutCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "put", abstract: "Copy a host file or directory into the image, like cp -a.",
        discussion: """
            Directories are copied recursively with every file type, owners, permission bits,
            nanosecond times, hard links within the copy and sparse files' holes.
            If DEST is an existing directory, SRC is copied into it under its own name.

            Example:
              holdfast put disk.img ./rootfs/etc /etc
            """)
    @OptionGroup var options: ImageOptions
    @Argument(help: "Host file or directory.") var source: String
    @Argument(help: "Destination path inside the image.") var destination: String

    func run() throws {
        try changing(options) { fs in
            var parent: UInt32
            var name: [UInt8]
            if let d = try? fs.resolve(destination, followFinal: true), d.fileType == .directory {
                parent = d.number
                let trimmed = source.split(separator: "/").last.map(String.init) ?? source
                name = Array(trimmed.utf8)
            } else {
                (parent, name) = try fs.parentAndName(destination)
            }
            let progress = StatusLine(label: "put")
            let summary = try fs.importHost(source, into: parent, name: name) { s in
                progress.update("\(s.files + s.directories + s.symlinks + s.specialFiles) entries, \(s.bytes >> 20) MiB")
            }
            progress.finish("\(summary.files) files, \(summary.directories) directories, \(summary.symlinks) symlinks, \(summary.specialFiles) special, \(summary.hardLinks) hard links, \(summary.bytes) bytes")
        }
    }
}

/// A one-line progress display on a terminal (standard error), silent otherwise.
final class StatusLine {
    let label: String
    let enabled = isatty(2) != 0
    private var last: timespec = timespec()

    init(label: String) { self.label = label }

    func update(_ text: String) {
        guard enabled else { return }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        if now.tv_sec == last.tv_sec && now.tv_nsec - last.tv_nsec < 100_000_000 { return }
        last = now
        Output.raw("\r\(label): \(text)\u{1B}[K")
    }

    func finish(_ text: String) {
        if enabled { Output.raw("\r\u{1B}[K") }
        Output.error("\(label): \(text)")
    }
}

struct XattrCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "xattr", abstract: "List, set or remove a file's extended attributes.",
        discussion: """
            With no option, lists NAME=VALUE lines (values that are not printable text are
            shown as 0x-prefixed hex). --set and --remove may be repeated; a --set value
            starting with 0x is taken as hex.

            Examples:
              holdfast xattr disk.img /bin/ping
              holdfast xattr disk.img /srv --set user.origin=backup --remove user.old
            """)
    @OptionGroup var options: ImageOptions
    @Argument(help: "Path inside the image (symlinks are not followed).") var path: String
    @Option(name: .long, help: ArgumentHelp("Set an attribute, NAME=VALUE.", valueName: "name=value")) var set: [String] = []
    @Option(name: .long, help: ArgumentHelp("Remove an attribute.", valueName: "name")) var remove: [String] = []

    func run() throws {
        if set.isEmpty && remove.isEmpty {
            try reportingErrors {
                let fs = try options.open()
                let out = StdoutWriter()
                for x in try fs.xattrs(try fs.resolve(path)) { out.line("\(x.nameString)=\(display(x.value))") }
            }
            return
        }
        try changing(options) { fs in
            let inode = try fs.resolve(path).number
            for item in set {
                guard let eq = item.firstIndex(of: "=") else { throw HoldfastError.invalidArgument("--set \(item): give NAME=VALUE") }
                let name = Array(item[..<eq].utf8)
                let text = String(item[item.index(after: eq)...])
                try fs.setXattr(inode, name: name, value: try parseValue(text))
            }
            for name in remove { try fs.removeXattr(inode, name: Array(name.utf8)) }
        }
    }

    private func parseValue(_ text: String) throws -> [UInt8] {
        guard text.hasPrefix("0x") else { return Array(text.utf8) }
        let hex = Array(text.utf8.dropFirst(2))
        guard hex.count % 2 == 0 else { throw HoldfastError.invalidArgument("\(text): odd number of hex digits") }
        var out: [UInt8] = []
        for i in stride(from: 0, to: hex.count, by: 2) {
            guard let b = UInt8(String(decoding: hex[i..<(i + 2)], as: UTF8.self), radix: 16) else {
                throw HoldfastError.invalidArgument("\(text): not hex")
            }
            out.append(b)
        }
        return out
    }

    private func display(_ value: [UInt8]) -> String {
        if value.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) { return String(decoding: value, as: UTF8.self) }
        return "0x" + value.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }
}
