// Thin wrappers over Linux calls that Swift's Glibc module does not import.
#define _GNU_SOURCE
#include "CHoldfastShim.h"
#include <unistd.h>
#include <fcntl.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

int hf_fsetxattr(int fd, const char *name, const void *value, size_t size, int flags) {
    return fsetxattr(fd, name, value, size, flags);
}

int hf_lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags) {
    return lsetxattr(path, name, value, size, flags);
}

dev_t hf_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }

long hf_copy_file_range(int in_fd, long long *in_offset, int out_fd, long long *out_offset, size_t count) {
    loff_t in = *in_offset, out = *out_offset;
    ssize_t n = copy_file_range(in_fd, &in, out_fd, &out, count, 0);
    *in_offset = in;
    *out_offset = out;
    return n;
}

int hf_start_writeback(int fd) { return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE); }

long hf_llistxattr(const char *path, char *list, size_t size) { return llistxattr(path, list, size); }
long hf_lgetxattr(const char *path, const char *name, void *value, size_t size) { return lgetxattr(path, name, value, size); }
long hf_flistxattr(int fd, char *list, size_t size) { return flistxattr(fd, list, size); }
long hf_fgetxattr(int fd, const char *name, void *value, size_t size) { return fgetxattr(fd, name, value, size); }
