/// ext4 feature flags, by the kernel's names (Documentation/filesystems/ext4/super.rst).
public struct CompatFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let dirPrealloc = Self(rawValue: 0x1)
    public static let imagicInodes = Self(rawValue: 0x2)
    public static let hasJournal = Self(rawValue: 0x4)
    public static let extAttr = Self(rawValue: 0x8)
    public static let resizeInode = Self(rawValue: 0x10)
    public static let dirIndex = Self(rawValue: 0x20)
    public static let lazyBG = Self(rawValue: 0x40)
    public static let excludeBitmap = Self(rawValue: 0x100)
    public static let sparseSuper2 = Self(rawValue: 0x200)
    public static let fastCommit = Self(rawValue: 0x400)
    public static let stableInodes = Self(rawValue: 0x800)
    public static let orphanFile = Self(rawValue: 0x1000)

    public static let names: [(Self, String)] = [
        (.dirPrealloc, "dir_prealloc"), (.imagicInodes, "imagic_inodes"), (.hasJournal, "has_journal"),
        (.extAttr, "ext_attr"), (.resizeInode, "resize_inode"), (.dirIndex, "dir_index"), (.lazyBG, "lazy_bg"),
        (.excludeBitmap, "snapshot_bitmap"), (.sparseSuper2, "sparse_super2"), (.fastCommit, "fast_commit"),
        (.stableInodes, "stable_inodes"), (.orphanFile, "orphan_file"),
    ]
}

public struct IncompatFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let compression = Self(rawValue: 0x1)
    public static let filetype = Self(rawValue: 0x2)
    public static let recover = Self(rawValue: 0x4)
    public static let journalDev = Self(rawValue: 0x8)
    public static let metaBG = Self(rawValue: 0x10)
    public static let extents = Self(rawValue: 0x40)
    public static let bit64 = Self(rawValue: 0x80)
    public static let mmp = Self(rawValue: 0x100)
    public static let flexBG = Self(rawValue: 0x200)
    public static let eaInode = Self(rawValue: 0x400)
    public static let dirData = Self(rawValue: 0x1000)
    public static let csumSeed = Self(rawValue: 0x2000)
    public static let largeDir = Self(rawValue: 0x4000)
    public static let inlineData = Self(rawValue: 0x8000)
    public static let encrypt = Self(rawValue: 0x10000)
    public static let casefold = Self(rawValue: 0x20000)

    public static let names: [(Self, String)] = [
        (.compression, "compression"), (.filetype, "filetype"), (.recover, "needs_recovery"),
        (.journalDev, "journal_dev"), (.metaBG, "meta_bg"), (.extents, "extent"), (.bit64, "64bit"), (.mmp, "mmp"),
        (.flexBG, "flex_bg"), (.eaInode, "ea_inode"), (.dirData, "dirdata"), (.csumSeed, "metadata_csum_seed"),
        (.largeDir, "large_dir"), (.inlineData, "inline_data"), (.encrypt, "encrypt"), (.casefold, "casefold"),
    ]
}

public struct ROCompatFeatures: OptionSet, Sendable, Hashable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let sparseSuper = Self(rawValue: 0x1)
    public static let largeFile = Self(rawValue: 0x2)
    public static let btreeDir = Self(rawValue: 0x4)
    public static let hugeFile = Self(rawValue: 0x8)
    public static let gdtCsum = Self(rawValue: 0x10)
    public static let dirNlink = Self(rawValue: 0x20)
    public static let extraIsize = Self(rawValue: 0x40)
    public static let hasSnapshot = Self(rawValue: 0x80)
    public static let quota = Self(rawValue: 0x100)
    public static let bigalloc = Self(rawValue: 0x200)
    public static let metadataCsum = Self(rawValue: 0x400)
    public static let replica = Self(rawValue: 0x800)
    public static let readonly = Self(rawValue: 0x1000)
    public static let project = Self(rawValue: 0x2000)
    public static let sharedBlocks = Self(rawValue: 0x4000)
    public static let verity = Self(rawValue: 0x8000)
    public static let orphanPresent = Self(rawValue: 0x10000)

    public static let names: [(Self, String)] = [
        (.sparseSuper, "sparse_super"), (.largeFile, "large_file"), (.btreeDir, "btree_dir"), (.hugeFile, "huge_file"),
        (.gdtCsum, "uninit_bg"), (.dirNlink, "dir_nlink"), (.extraIsize, "extra_isize"), (.hasSnapshot, "snapshot"),
        (.quota, "quota"), (.bigalloc, "bigalloc"), (.metadataCsum, "metadata_csum"), (.replica, "replica"),
        (.readonly, "read-only"), (.project, "project"), (.sharedBlocks, "shared_blocks"), (.verity, "verity"),
        (.orphanPresent, "orphan_present"),
    ]
}

/// Names of the set bits, unknown bits as `FEATURE_X0x...` (dumpe2fs style).
func featureNames<F: OptionSet>(_ set: F, _ table: [(F, String)], prefix: String) -> [String] where F.RawValue == UInt32, F.Element == F {
    var names: [String] = []
    var rest = set.rawValue
    for (flag, name) in table where set.contains(flag) {
        names.append(name)
        rest &= ~flag.rawValue
    }
    var bit: UInt32 = 1
    while rest != 0 {
        if rest & bit != 0 { names.append("FEATURE_\(prefix)\(String(bit.trailingZeroBitCount))"); rest &= ~bit }
        bit <<= 1
    }
    return names
}

/// What the read path can do with an image's feature set.
public struct FeatureAssessment: Sendable {
    /// Features that stop Holdfast from reading the image at all.
    public var refused: [String] = []
    /// Features that Holdfast reads but does not maintain: the image opens read-only.
    public var readOnlyBecause: [String] = []

    /// Incompatible features the read path understands.
    public static let readableIncompat: IncompatFeatures = [
        .filetype, .recover, .metaBG, .extents, .bit64, .mmp, .flexBG, .eaInode, .csumSeed, .largeDir, .inlineData,
    ]
    /// Read-only-compatible features whose on-disk effects the read path understands.
    public static let understoodROCompat: ROCompatFeatures = [
        .sparseSuper, .largeFile, .btreeDir, .hugeFile, .gdtCsum, .dirNlink, .extraIsize, .quota, .bigalloc,
        .metadataCsum, .project, .verity, .orphanPresent, .readonly, .sharedBlocks,
    ]

    public init(_ sb: Superblock) {
        let badIncompat = IncompatFeatures(rawValue: sb.featureIncompat.rawValue & ~Self.readableIncompat.rawValue)
        refused = featureNames(badIncompat, IncompatFeatures.names, prefix: "I")
        let unknownRO = ROCompatFeatures(rawValue: sb.featureROCompat.rawValue & ~Self.understoodROCompat.rawValue)
        readOnlyBecause = featureNames(unknownRO, ROCompatFeatures.names, prefix: "R")
        if sb.featureCompat.contains(.hasJournal) && sb.journalInode == 0 {
            refused.append("external journal (journal_dev \(sb.journalDevice))")
        }
    }
}
