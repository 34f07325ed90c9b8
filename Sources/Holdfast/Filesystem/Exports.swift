// The vocabulary of the public API, re-exported so that a front end imports `Holdfast` alone
// (and `HoldfastHost` for the host bridges). Each name here appears in a public signature or is
// what a front end needs beside them: the decoded values of the image (`Jbd2` brings its record
// types along, as a namespace cannot be exported in part), the budget, and the syscall funnel
// so a front end's own reads and writes retry as the engine's do.

// Values read from the image.
@_exported import struct HoldfastFormat.Superblock
@_exported import struct HoldfastFormat.SuperblockState
@_exported import struct HoldfastFormat.GroupDescriptor
@_exported import struct HoldfastFormat.Inode
@_exported import enum HoldfastFormat.FileType
@_exported import struct HoldfastFormat.Timestamp
@_exported import struct HoldfastFormat.DirectoryEntry
@_exported import enum HoldfastFormat.DirectoryHash
@_exported import struct HoldfastFormat.XattrValue
@_exported import enum HoldfastFormat.Jbd2
@_exported import struct HoldfastFormat.CorruptionError
@_exported import enum HoldfastFormat.Structure

// The memory budget, its sites and fault plans.
@_exported import class HoldfastMemory.MemoryBudget
@_exported import class HoldfastMemory.AllocationSite
@_exported import enum HoldfastMemory.AllocationPolicy
@_exported import enum HoldfastMemory.MemoryCategory
@_exported import struct HoldfastMemory.FaultPlan
@_exported import struct HoldfastMemory.OutOfMemoryError
@_exported import enum HoldfastMemory.MemoryEvent

// Device errors carried by `HoldfastError.io`, and the syscall funnel front ends share.
@_exported import struct HoldfastDevice.DeviceError
@_exported import enum HoldfastDevice.Syscall

// What the journal did (`Filesystem.journalStatistics`).
@_exported import struct HoldfastJournal.JournalStatistics
