import Holdfast

#if canImport(Glibc)
import Glibc
#endif

/// `ls -l` style permission string, e.g. "drwxr-sr-t".
func modeString(_ mode: UInt16) -> String {
    var s: [Character] = [FileType(mode: mode).letter]
    let bits: [(UInt16, Character)] = [(0o400, "r"), (0o200, "w"), (0o100, "x"), (0o40, "r"), (0o20, "w"), (0o10, "x"), (0o4, "r"), (0o2, "w"), (0o1, "x")]
    for (bit, c) in bits { s.append(mode & bit != 0 ? c : "-") }
    if mode & 0o4000 != 0 { s[3] = mode & 0o100 != 0 ? "s" : "S" }
    if mode & 0o2000 != 0 { s[6] = mode & 0o10 != 0 ? "s" : "S" }
    if mode & 0o1000 != 0 { s[9] = mode & 0o1 != 0 ? "t" : "T" }
    return String(s)
}

/// UTC time with nanoseconds: 2024-05-01 12:00:00.123456789 +0000
func timeString(_ t: Timestamp) -> String {
    var seconds = time_t(t.seconds)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    func pad(_ v: Int32, _ width: Int) -> String {
        let s = String(v)
        return String(repeating: "0", count: max(0, width - s.count)) + s
    }
    let ns = String(t.nanoseconds)
    return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2)) "
        + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))."
        + String(repeating: "0", count: 9 - ns.count) + ns + " +0000"
}

func shortTime(_ t: Timestamp) -> String { String(timeString(t).prefix(16)) }

/// Bytes as a human size: 1.5 MiB.
func humanSize(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var v = Double(bytes)
    var i = 0
    while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
    if i == 0 { return "\(bytes) B" }
    let rounded = (v * 10).rounded() / 10
    return "\(rounded) \(units[i])"
}

/// Name bytes for a terminal: invalid UTF-8 and control characters escaped.
func printableName(_ bytes: [UInt8]) -> String {
    var out = ""
    let s = String(decoding: bytes, as: UTF8.self)
    if Array(s.utf8) != bytes {
        for b in bytes { out += b >= 0x20 && b < 0x7F ? String(UnicodeScalar(b)) : "\\x" + String(b, radix: 16) }
        return out
    }
    for ch in s.unicodeScalars {
        if ch.value < 0x20 || ch.value == 0x7F { out += "\\x" + String(ch.value, radix: 16) } else { out.unicodeScalars.append(ch) }
    }
    return out
}

func padRight(_ s: String, _ width: Int) -> String { s + String(repeating: " ", count: max(0, width - s.count)) }

/// `ls -l` lines built as bytes, straight into the output buffer: a listing of 20,000 entries
/// spends its time here, and Strings cost an allocation or more per field.
struct LongListing {
    private(set) var bytes: [UInt8] = []
    private var lastMinute: Int64 = .min
    private var lastTime: [UInt8] = []

    private static let permissionLetters: [UInt8] = Array("rwxrwxrwx".utf8)

    init() { bytes.reserveCapacity(1 << 16) }

    mutating func removeAll() { bytes.removeAll(keepingCapacity: true) }

    /// mode, links, uid, gid, size (or major, minor), mtime to the minute, name, " -> target".
    mutating func append(_ inode: Inode, name: [UInt8], target: [UInt8]?) {
        appendMode(inode.mode)
        bytes.append(0x20)
        appendNumber(UInt64(inode.linksCount), width: 3)
        bytes.append(0x20)
        appendNumber(UInt64(inode.uid), width: 5)
        bytes.append(0x20)
        appendNumber(UInt64(inode.gid), width: 5)
        bytes.append(0x20)
        if inode.fileType == .characterDevice || inode.fileType == .blockDevice {
            let d = inode.device
            appendPadded(Array("\(d.major), \(d.minor)".utf8), width: 10)
        } else {
            appendNumber(inode.size, width: 10)
        }
        bytes.append(0x20)
        appendMinute(inode.modificationTime)
        bytes.append(0x20)
        appendName(name)
        if let target {
            bytes.append(contentsOf: [0x20, 0x2D, 0x3E, 0x20])  // " -> "
            appendName(target)
        }
        bytes.append(0x0A)
    }

    private mutating func appendMode(_ mode: UInt16) {
        let start = bytes.count
        bytes.append(FileType(mode: mode).letter.asciiValue ?? 0x3F)
        for i in 0..<9 { bytes.append(mode & (0o400 >> UInt16(i)) != 0 ? Self.permissionLetters[i] : 0x2D) }
        if mode & 0o4000 != 0 { bytes[start + 3] = mode & 0o100 != 0 ? 0x73 : 0x53 }  // s S
        if mode & 0o2000 != 0 { bytes[start + 6] = mode & 0o10 != 0 ? 0x73 : 0x53 }
        if mode & 0o1000 != 0 { bytes[start + 9] = mode & 0o1 != 0 ? 0x74 : 0x54 }  // t T
    }

    private mutating func appendNumber(_ value: UInt64, width: Int) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var n = 0
        var v = value
        withUnsafeMutableBytes(of: &digits) { d in
            repeat { d[19 - n] = 0x30 + UInt8(v % 10); v /= 10; n += 1 } while v > 0
        }
        for _ in n..<max(n, width) { bytes.append(0x20) }
        withUnsafeBytes(of: &digits) { d in bytes.append(contentsOf: d[(20 - n)...]) }
    }

    private mutating func appendPadded(_ text: [UInt8], width: Int) {
        for _ in text.count..<max(text.count, width) { bytes.append(0x20) }
        bytes.append(contentsOf: text)
    }

    /// "2024-05-01 12:00", formatted once per distinct minute (a listing's files mostly share one).
    private mutating func appendMinute(_ t: Timestamp) {
        let minute = t.seconds >= 0 ? t.seconds / 60 : (t.seconds - 59) / 60
        if minute != lastMinute {
            lastMinute = minute
            lastTime = Array(shortTime(t).utf8)
        }
        bytes.append(contentsOf: lastTime)
    }

    /// The name as printableName shows it; printable ASCII, the usual case, is copied as is.
    private mutating func appendName(_ name: [UInt8]) {
        if name.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
            bytes.append(contentsOf: name)
        } else {
            bytes.append(contentsOf: printableName(name).utf8)
        }
    }
}
