// Thin wrappers over Linux calls that Swift's Glibc module does not import.
#include "CHoldfastShim.h"
#include <sys/sysmacros.h>
#include <sys/xattr.h>

int hf_fsetxattr(int fd, const char *name, const void *value, size_t size, int flags) {
    return fsetxattr(fd, name, value, size, flags);
}

int hf_lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags) {
    return lsetxattr(path, name, value, size, flags);
}

dev_t hf_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
