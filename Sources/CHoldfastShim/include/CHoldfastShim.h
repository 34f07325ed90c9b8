#ifndef CHOLDFAST_SHIM_H
#define CHOLDFAST_SHIM_H

#include <stddef.h>
#include <stdint.h>

/// Raw crc32c (Castagnoli) update, as ext4 and jbd2 use it: no final inversion.
/// `crc` is the running value (ext4 seeds with ~0). Uses SSE4.2 when the CPU has it.
uint32_t hf_crc32c_update(uint32_t crc, const void *data, size_t length);

/// 1 when the SSE4.2 path is in use, 0 for the portable table.
int hf_crc32c_is_hardware(void);

/// The portable path, always; for tests that compare both.
uint32_t hf_crc32c_update_portable(uint32_t crc, const void *data, size_t length);

#endif

#ifndef CHOLDFAST_SHIM_HOST
#define CHOLDFAST_SHIM_HOST
#include <sys/types.h>

/// Linux calls the Swift Glibc module does not expose.
int hf_fsetxattr(int fd, const char *name, const void *value, size_t size, int flags);
int hf_lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags);
long hf_llistxattr(const char *path, char *list, size_t size);
long hf_lgetxattr(const char *path, const char *name, void *value, size_t size);
long hf_flistxattr(int fd, char *list, size_t size);
long hf_fgetxattr(int fd, const char *name, void *value, size_t size);
dev_t hf_makedev(unsigned int major, unsigned int minor);
/// copy_file_range(2) with 64-bit offsets updated in place; -1 and errno on failure.
/// sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE): start writeback of every dirty page, without waiting.
int hf_start_writeback(int fd);
long hf_copy_file_range(int in_fd, long long *in_offset, int out_fd, long long *out_offset, size_t count);
#endif
