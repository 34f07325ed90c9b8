import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

@main
struct HoldfastCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "holdfast",
        abstract: "Read and change ext4 images in user space, inside a fixed memory budget.",
        discussion: """
            Paths inside an image are written from its root, e.g. /etc/passwd.
            Reading commands never modify the image: an image whose journal needs recovery
            is replayed in memory, so you see what the kernel would show after mounting it.
            Changing commands (mkfs, put, write, mkdir, rm, mv, ln, chmod, chown, truncate,
            fallocate, xattr --set/--remove) open
            the image read-write, first recovering a journal that needs it as the kernel's
            mount does; each change completes or leaves the image as it was, and
            everything is written and flushed before the command exits.

            Every command takes --memory (the budget), --stats (per-site allocation
            counts and the budget's peak, on stderr at exit) and --inject (fail
            allocations on purpose; see `holdfast sites` for the site names).

            Exit status: 0 success, 1 failure, 2 usage error, 3 corrupt image,
            4 unsupported ext4 feature, 5 out of memory (budget spent or --inject).
            """,
        subcommands: [InfoCommand.self, LsCommand.self, StatCommand.self, CatCommand.self, TreeCommand.self, ExtractCommand.self, MkfsCommand.self,
                      PutCommand.self, WriteCommand.self, MkdirCommand.self, RmCommand.self, MvCommand.self, LnCommand.self,
                      ChmodCommand.self, ChownCommand.self, TruncateCommand.self, FallocateCommand.self, XattrCommand.self, MountCommand.self, SitesCommand.self]
    )
}

extension HoldfastCommand {
    /// ArgumentParser's own entry point, but usage errors exit 2 as the help text promises
    /// (ArgumentParser would use EX_USAGE, 64).
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            if exitCode(for: error) == .validationFailure {
                Output.error(fullMessage(for: error))
                Glibc.exit(2)
            }
            exit(withError: error)
        }
    }
}
