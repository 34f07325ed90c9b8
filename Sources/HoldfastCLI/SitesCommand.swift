import ArgumentParser
import Holdfast
import HoldfastFUSE
import HoldfastHost

struct SitesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sites",
        abstract: "List every allocation site: name, policy, category, description.",
        discussion: """
            Every place Holdfast takes memory from its budget is a named site with a policy:
              mayFail  returns nothing after reclaim; the command fails with exit 5
              noWait   never blocks or reclaims; the caller has a fallback
              noFail   reclaims and waits until memory comes back; never fails
            Names here are what --inject site=NAME and --stats use.

            Example:
              holdfast sites
              holdfast extract disk.img out --inject site=buffer.block,nth=3 --stats
            """
    )

    func run() throws {
        let sites = Filesystem.allocationSites + AllocationSite.hostSites + AllocationSite.fuseSites
        let nameWidth = sites.map(\.name.count).max() ?? 0
        let out = StdoutWriter()
        for s in sites {
            out.line(padRight(s.name, nameWidth + 2) + padRight(s.policy.rawValue, 9) + padRight(s.category.description, 15) + s.summary)
        }
    }
}
