import FuzzSupport
import Holdfast

/// Target (a): an image opened read-only (its journal replayed in memory, as every reading
/// command does) and read whole.
func fuzzRead(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard Fuzz.writeImage(data, size) else { return 0 }
    guard let fs = try? Filesystem.open(path: Fuzz.imagePath, options: OpenOptions(memoryBudget: Fuzz.memoryBudget)) else { return 0 }
    Fuzz.walk(fs)
    try? fs.close()
    return 0
}
