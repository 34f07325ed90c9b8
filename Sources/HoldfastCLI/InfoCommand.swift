import ArgumentParser
import Holdfast

#if canImport(Glibc)
import Glibc
#endif

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info",
        abstract: "Describe an image: size, block size, features, counts, state, journal.",
        discussion: """
            What `dumpe2fs -h` says, in plain words. Also checks every group descriptor
            (and, on metadata_csum images, every bitmap checksum) and reports problems.

            Example:
              holdfast info disk.img
            """
    )

    @OptionGroup var options: ImageOptions

    func run() throws {
        try reportingErrors {
            let fs = try options.open()
            let sb = fs.superblock
            let out = StdoutWriter()
            func row(_ k: String, _ v: String) { out.line(padRight(k, 24) + v) }
            let bs = UInt64(sb.blockSize)
            row("Volume name:", sb.volumeName.isEmpty ? "<none>" : sb.volumeName)
            row("UUID:", sb.uuidString)
            row("Size:", "\(humanSize(sb.blocksCount * bs)) (\(sb.blocksCount) blocks of \(sb.blockSize) bytes)")
            row("Free:", "\(humanSize(sb.freeBlocksCount * bs)) (\(sb.freeBlocksCount) blocks), \(sb.freeInodesCount) of \(sb.inodesCount) inodes")
            row("Reserved blocks:", "\(sb.reservedBlocksCount)")
            row("Block groups:", "\(sb.groupCount) of \(sb.blocksPerGroup) blocks and \(sb.inodesPerGroup) inodes")
            row("Inode size:", "\(sb.inodeSize) bytes")
            row("Features:", sb.featureNameList.joined(separator: " "))
            row("Checksums:", sb.hasMetadataChecksums ? "metadata_csum (crc32c)" : sb.hasGDTChecksums ? "uninit_bg (crc16 descriptors)" : "none")
            let state = (sb.state.contains(.cleanlyUnmounted) ? "clean" : "not clean") + (sb.state.contains(.errorsDetected) ? ", with errors" : "")
            row("State:", state)
            row("Errors behaviour:", ["", "continue", "remount read-only", "panic"][Int(min(sb.errors, 3))])
            row("Mount count:", "\(sb.mountCount) (max \(sb.maxMountCount))")
            row("Created:", timeString(Timestamp(seconds: Int64(sb.mkfsTime), nanoseconds: 0)))
            row("Last written:", timeString(Timestamp(seconds: Int64(sb.writeTime), nanoseconds: 0)))
            if !sb.lastMounted.isEmpty { row("Last mounted on:", sb.lastMounted) }
            row("Default hash:", DirectoryHash.Version(rawValue: sb.defaultHashVersion)?.name ?? "unknown (\(sb.defaultHashVersion))")
            if sb.featureCompat.contains(.hasJournal) {
                if let j = fs.journalSuperblock {
                    row("Journal:", "inode \(sb.journalInode), \(humanSize(UInt64(j.maxLength) * bs)), "
                        + (j.featureNames.isEmpty ? "no journal features" : j.featureNames.joined(separator: " ")))
                    row("Journal state:", j.start == 0 ? "empty (sequence \(j.sequence))" : "needs recovery from block \(j.start), sequence \(j.sequence)")
                } else {
                    row("Journal:", "inode \(sb.journalInode), unreadable")
                }
            }
            if let r = fs.journalReplay {
                row("Replayed in memory:", "\(r.transactions) transactions (\(r.firstSequence)...\(r.lastSequence)), \(r.blocksReplayed) blocks, \(r.blocksRevoked) revoked")
                if r.dataChecksumFailures > 0 { row("", "\(r.dataChecksumFailures) logged blocks failed their checksum and were skipped") }
                if let damage = r.damage { row("", "stopped early: \(damage)") }
            }
            // This command opens read-only; say whether a changing command could change the image.
            var reasons = fs.readOnlyReasons
            if access(options.image, W_OK) != 0 { reasons.append("the image file is not writable by this user (\(String(cString: strerror(errno))))") }
            row("Access:", reasons.isEmpty
                ? "read-write: Holdfast can change this image" + (fs.journalReplay != nil ? " (a changing command first recovers its journal)" : "")
                : "read-only: " + reasons.joined(separator: "; "))
            out.flush()
            let problems = fs.checkGroups()
            if !problems.isEmpty {
                for p in problems.prefix(20) { Output.error("holdfast: \(p)") }
                if problems.count > 20 { Output.error("holdfast: ... and \(problems.count - 20) more") }
                throw ExitCode(3)
            }
        }
    }
}
