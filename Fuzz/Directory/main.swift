import FuzzSupport

Fuzz.run { data, size in
    guard let data else { return 0 }
    return fuzzDirectory(data, size)
}
