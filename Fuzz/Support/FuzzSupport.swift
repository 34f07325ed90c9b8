import Holdfast

#if canImport(Glibc)
import Glibc
#endif

/// What every harness shares: the scratch image an input becomes, and the walk that reads all of
/// an image. A harness ends in success or a typed error; anything else (a trap, an
/// AddressSanitizer report, a leak, a slow or oversized input) is a finding.
public enum Fuzz {
    /// The memory budget of each open. Under AddressSanitizer a finding is one allocation over
    /// this plus 48 MiB (libFuzzer's -malloc_limit_mb, set by run.sh); the peak RSS per input is
    /// judged without sanitizers, by replay.py on the corpus.
    public static let memoryBudget = 16 << 20

    /// Bytes read from one file, and from one image: a corrupt size may claim terabytes of holes,
    /// which the engine would read as zeros correctly but slowly.
    public static let bytesPerFile = 256 << 10
    public static let bytesPerImage = 4 << 20
    /// Inodes visited in one walk (a corrupt tree may list an inode many times over).
    public static let inodesPerImage = 2048

    /// The scratch image of this process, on tmpfs, rewritten with each input.
    public static let imagePath = "/dev/shm/holdfast-fuzz-\(getpid()).img"

    /// Writes the input as the scratch image; false when it cannot (then the input is skipped).
    /// An input shorter than the size its superblock gives (s_blocks_count_lo blocks, up to
    /// `largestImage`) is extended with zeros: seeds carry no trailing free space, so the fuzzer
    /// spends its mutations on metadata.
    public static func writeImage(_ data: UnsafePointer<UInt8>, _ size: Int) -> Bool {
        let fd = open(imagePath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var done = 0
        while done < size {
            let n = pwrite(fd, data + done, size - done, off_t(done))
            guard n > 0 else { return false }
            done += n
        }
        let superblock = 1024, blocksCount = superblock + 4, logBlockSize = superblock + 24
        if size >= logBlockSize + 4 {
            func le32(_ at: Int) -> Int { Int(data[at]) | Int(data[at + 1]) << 8 | Int(data[at + 2]) << 16 | Int(data[at + 3]) << 24 }
            let shift = le32(logBlockSize)
            if shift <= 6 {
                let claimed = le32(blocksCount) << (10 + shift)
                if claimed > size && claimed <= largestImage { _ = ftruncate(fd, off_t(claimed)) }
            }
        }
        return true
    }

    /// The largest size an input is zero-extended to.
    public static let largestImage = 16 << 20

    /// Removes the scratch image when the process exits.
    public static func removeImageAtExit() {
        atexit { unlink(Fuzz.imagePath) }
    }

    /// Reads everything reachable from the root: every directory listed, every name looked up
    /// again (the htree path), every inode's xattrs, files read (capped), links read, and the
    /// group descriptors checked. Errors are expected; only how they are reported matters.
    public static func walk(_ fs: Filesystem) {
        var pending: [UInt32] = [Filesystem.rootInode]
        var listed = Set<UInt32>()
        var visited = 0
        var bytesLeft = bytesPerImage
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 << 10, alignment: 16)
        defer { buffer.deallocate() }
        while let number = pending.popLast(), visited < inodesPerImage {
            guard listed.insert(number).inserted, let dir = try? fs.inode(number),
                  let entries = try? fs.directoryEntries(dir) else { continue }
            for entry in entries where visited < inodesPerImage {
                visited += 1
                _ = try? fs.lookup(entry.name, in: dir)
                guard let node = try? fs.inode(entry.inode, linkedFrom: number) else { continue }
                _ = try? fs.xattrs(node)
                switch node.fileType {
                case .directory:
                    if entry.name != [0x2E] && entry.name != [0x2E, 0x2E] { pending.append(node.number) }
                case .regular:
                    var offset: UInt64 = 0
                    while offset < min(node.size, UInt64(bytesPerFile)), bytesLeft > 0 {
                        guard let n = try? fs.read(node, offset: offset, into: buffer), n > 0 else { break }
                        offset += UInt64(n)
                        bytesLeft -= n
                    }
                    _ = try? fs.seek(node.number, from: 0, to: .hole)
                    _ = try? fs.blockRuns(node) { _ in }
                case .symlink:
                    _ = try? fs.readLink(node)
                default:
                    break
                }
            }
        }
        _ = fs.checkGroups()
    }
}

/// libFuzzer's driver, entered from a harness's main.swift (SwiftPM gives every executable a
/// main of its own, so libFuzzer's cannot be used).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

extension Fuzz {
    /// Runs libFuzzer over `harness` with the process's arguments; never returns.
    public static func run(_ harness: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> Never {
        removeImageAtExit()
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv, harness))
    }
}
