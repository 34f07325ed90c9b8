import HoldfastFormat

/// What `holdfast mkfs` is asked for.
public struct FormatOptions: Sendable {
    /// Image size in bytes (rounded down to whole blocks).
    public var size: UInt64
    /// 1024, 2048 or 4096; nil picks as mke2fs does (1 KiB below 512 MiB, else 4 KiB).
    public var blockSize: Int?
    /// Inode count; nil uses one inode per 4 KiB (small images) or 16 KiB, as mke2fs does.
    public var inodes: UInt32?
    public var label: String = ""
    /// Journal size in blocks; nil picks mke2fs's default for the image size; 0 for no journal.
    public var journalBlocks: Int?

    public init(size: UInt64, blockSize: Int? = nil, inodes: UInt32? = nil, label: String = "") {
        self.size = size
        self.blockSize = blockSize
        self.inodes = inodes
        self.label = label
    }
}

/// Where everything goes in a new image: groups, flex_bg-packed bitmaps and inode tables, the journal.
struct FormatLayout {
    static let inodeSize = 256
    static let descriptorSize = 64
    static let groupsPerFlex = 16
    static let firstInode: UInt32 = 11
    static let rootInode: UInt32 = 2
    static let journalInode: UInt32 = 8
    static let lostAndFoundInode: UInt32 = 11

    let blockSize: Int
    let blocksCount: UInt64
    let firstDataBlock: UInt64
    let blocksPerGroup: UInt64
    let groups: Int
    let inodesPerGroup: UInt32
    let inodeTableBlocks: Int
    let gdtBlocks: Int
    let journalBlocks: Int
    var blockBitmap: [UInt64] = []
    var inodeBitmap: [UInt64] = []
    var inodeTable: [UInt64] = []

    init(_ o: FormatOptions) throws {
        let bs = o.blockSize ?? (o.size < 512 << 20 ? 1024 : 4096)
        guard [1024, 2048, 4096].contains(bs) else { throw HoldfastError.invalidArgument("block size \(bs): give 1024, 2048 or 4096") }
        blockSize = bs
        var count = o.size / UInt64(bs)
        firstDataBlock = bs == 1024 ? 1 : 0
        blocksPerGroup = UInt64(8 * bs)
        // A last group too small to hold its own metadata and some data is dropped, as mke2fs does.
        var groupCount = Int((count - firstDataBlock + blocksPerGroup - 1) / blocksPerGroup)
        let lastSize = count - firstDataBlock - UInt64(groupCount - 1) * blocksPerGroup
        if groupCount > 1 && lastSize < 256 {
            groupCount -= 1
            count = firstDataBlock + UInt64(groupCount) * blocksPerGroup
        }
        guard count >= 256 + firstDataBlock else {
            throw HoldfastError.invalidArgument("an image of \(o.size) bytes is too small: give at least \((256 + Int(firstDataBlock)) * bs) bytes")
        }
        blocksCount = count
        groups = groupCount
        let ratio: UInt64 = o.size < 512 << 20 ? 4096 : 16384
        let wanted = UInt64(o.inodes ?? UInt32(min(UInt64(UInt32.max), o.size / ratio)))
        let perTableBlock = UInt64(bs / Self.inodeSize)
        // Whole inode-table blocks, a multiple of 8 inodes, at most one bitmap block's worth.
        var ipg = (wanted + UInt64(groups) - 1) / UInt64(groups)
        ipg = max(ipg, 16)
        ipg = (ipg + perTableBlock - 1) / perTableBlock * perTableBlock
        ipg = (ipg + 7) / 8 * 8
        ipg = min(ipg, UInt64(8 * bs))
        guard ipg * UInt64(groups) <= UInt64(UInt32.max) else { throw HoldfastError.invalidArgument("too many inodes") }
        inodesPerGroup = UInt32(ipg)
        inodeTableBlocks = Int(ipg / perTableBlock)
        gdtBlocks = (groups * Self.descriptorSize + bs - 1) / bs
        journalBlocks = o.journalBlocks ?? Self.defaultJournalBlocks(count)
        guard UInt64(inodeTableBlocks + 2) < blocksPerGroup else { throw HoldfastError.invalidArgument("too many inodes per group") }
        try place()
    }

    /// mke2fs's default journal size for a filesystem of `blocks` blocks.
    static func defaultJournalBlocks(_ blocks: UInt64) -> Int {
        switch blocks {
        case ..<2048: 0
        case ..<32768: 1024
        case ..<(256 * 1024): 4096
        case ..<(512 * 1024): 8192
        case ..<(4096 * 1024): 16384
        case ..<(8192 * 1024): 32768
        case ..<(16384 * 1024): 65536
        case ..<(32768 * 1024): 131072
        default: 262144
        }
    }

    func groupFirstBlock(_ g: Int) -> UInt64 { firstDataBlock + UInt64(g) * blocksPerGroup }

    func blocksInGroup(_ g: Int) -> Int { Int(min(blocksPerGroup, blocksCount - groupFirstBlock(g))) }

    /// sparse_super: backups in groups 0, 1 and powers of 3, 5 and 7.
    static func hasSuperblock(_ g: Int) -> Bool {
        if g <= 1 { return true }
        for base in [3, 5, 7] {
            var p = base
            while p < g { p *= base }
            if p == g { return true }
        }
        return false
    }

    /// Superblock and descriptor-table blocks at the start of group `g` (none without a backup).
    func superblockOverhead(_ g: Int) -> Int { Self.hasSuperblock(g) ? 1 + gdtBlocks : 0 }

    /// flex_bg: each run of 16 groups keeps all its bitmaps, then all its inode tables, packed at the
    /// start of its first group.
    private mutating func place() throws {
        blockBitmap = Array(repeating: 0, count: groups)
        inodeBitmap = Array(repeating: 0, count: groups)
        inodeTable = Array(repeating: 0, count: groups)
        var flexStart = 0
        while flexStart < groups {
            let members = min(Self.groupsPerFlex, groups - flexStart)
            var next = groupFirstBlock(flexStart) + UInt64(superblockOverhead(flexStart))
            for i in 0..<members { blockBitmap[flexStart + i] = next; next += 1 }
            for i in 0..<members { inodeBitmap[flexStart + i] = next; next += 1 }
            for i in 0..<members {
                // An inode table never straddles a group holding a superblock backup.
                let g = Int((next - firstDataBlock) / blocksPerGroup)
                let end = next + UInt64(inodeTableBlocks)
                let endGroup = Int((end - 1 - firstDataBlock) / blocksPerGroup)
                if endGroup != g, endGroup < groups, superblockOverhead(endGroup) > 0 {
                    next = groupFirstBlock(endGroup) + UInt64(superblockOverhead(endGroup))
                }
                inodeTable[flexStart + i] = next
                next += UInt64(inodeTableBlocks)
            }
            guard next <= blocksCount else { throw HoldfastError.invalidArgument("the image is too small for its inode tables: give fewer inodes") }
            flexStart += members
        }
    }

    /// Every block the layout itself uses (superblocks, descriptor tables, bitmaps, inode tables).
    func metadataBlocks(_ mark: (UInt64, Int) -> Void) {
        for g in 0..<groups where superblockOverhead(g) > 0 {
            mark(groupFirstBlock(g), superblockOverhead(g))
        }
        for g in 0..<groups {
            mark(blockBitmap[g], 1)
            mark(inodeBitmap[g], 1)
            mark(inodeTable[g], inodeTableBlocks)
        }
    }
}
