import ArgumentParser
import Holdfast

/// Options every command takes.
struct ImageOptions: ParsableArguments {
    @Argument(help: "The ext4 image file (or block device) to read.")
    var image: String

    @Option(name: .long, help: ArgumentHelp("Memory budget for caches and buffers, e.g. 8M, 64M, 1G.", valueName: "size"))
    var memory: String = "64M"

    func open() throws(HoldfastError) -> Filesystem {
        guard let bytes = parseSize(memory), bytes >= 1 << 20 else {
            throw .invalidArgument("--memory \(memory): give a size of at least 1M, like 8M or 1G")
        }
        let fs = try Filesystem.open(path: image, options: OpenOptions(memoryBudget: bytes))
        for w in fs.warnings { Output.error("holdfast: warning: \(w)") }
        return fs
    }
}

/// "64M" -> 67108864. Suffixes K, M, G, T (powers of 1024); a plain number is bytes.
func parseSize(_ text: String) -> Int? {
    let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var digits = text.uppercased()
    var scale = 1
    if digits.hasSuffix("B") { digits.removeLast() }
    if digits.hasSuffix("I") { digits.removeLast() }
    if let last = digits.last, let u = units[last] {
        scale = u
        digits.removeLast()
    }
    guard let n = Int(digits), n >= 0 else { return nil }
    let (v, overflow) = n.multipliedReportingOverflow(by: scale)
    return overflow ? nil : v
}
