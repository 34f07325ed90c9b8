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
