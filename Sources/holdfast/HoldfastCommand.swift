import ArgumentParser

@main
struct HoldfastCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "holdfast",
        abstract: "Read ext4 images in user space, inside a fixed memory budget.",
        discussion: """
            Paths inside an image are written from its root, e.g. /etc/passwd.
            The image file is never modified: an image whose journal needs recovery is
            replayed in memory, so you see what the kernel would show after mounting it.

            Every command takes --memory (the budget), --stats (per-site allocation
            counts and the budget's peak, on stderr at exit) and --inject (fail
            allocations on purpose; see `holdfast sites` for the site names).

            Exit status: 0 success, 1 failure, 2 usage error, 3 corrupt image,
            4 unsupported ext4 feature, 5 out of memory (budget spent or --inject).
            """,
        subcommands: [InfoCommand.self, LsCommand.self, StatCommand.self, CatCommand.self, TreeCommand.self, ExtractCommand.self, SitesCommand.self]
    )
}
