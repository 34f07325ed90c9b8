// Without FUSE_HANDLE_KILLPRIV_V2 the kernel asks a FUSE server for security.capability before
// every write (file_remove_privs; FUSE clears SB_NOSEC), a second round trip per write. With it,
// the server clears setuid, setgid and capabilities itself, told by FUSE_WRITE_KILL_SUIDGID in a
// write and FATTR_KILL_SUIDGID in a setattr when the caller lacks CAP_FSETID. libfuse 3.14 knows
// neither the init flag nor the write bit (its setattr passes FATTR_KILL_SUIDGID on, as
// FUSE_SET_ATTR_KILL_SUID), so the session's device I/O goes through these two calls. The layouts
// are the kernel's own, from <linux/fuse.h>.
#include "fuse_device.h"

#include <linux/fuse.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

static _Atomic uint64_t init_unique;        /* the FUSE_INIT request's id, until its reply */
static _Atomic unsigned killpriv_offered;   /* the kernel offered HANDLE_KILLPRIV_V2 */
static _Atomic unsigned killpriv_granted;   /* and the init reply took it */
static _Thread_local uint32_t write_flags;  /* write_flags of this thread's last FUSE_WRITE */

ssize_t hf_device_read(int fd, void *buf, size_t len, void *userdata) {
    (void)userdata;
    ssize_t n = read(fd, buf, len);  /* on -1, errno is libfuse's to read: nothing below runs */
    if (n < (ssize_t)sizeof(struct fuse_in_header)) return n;
    struct fuse_in_header in;
    memcpy(&in, buf, sizeof(in));
    const char *arg = (const char *)buf + sizeof(in);
    size_t argSize = (size_t)n - sizeof(in);
    if (in.opcode == FUSE_WRITE && argSize >= sizeof(struct fuse_write_in)) {
        memcpy(&write_flags, arg + offsetof(struct fuse_write_in, write_flags), sizeof(write_flags));
    } else if (in.opcode == FUSE_INIT && argSize >= offsetof(struct fuse_init_in, flags) + sizeof(uint32_t)) {
        uint32_t flags;
        memcpy(&flags, arg + offsetof(struct fuse_init_in, flags), sizeof(flags));
        atomic_store(&killpriv_offered, (flags & FUSE_HANDLE_KILLPRIV_V2) != 0);
        atomic_store(&init_unique, in.unique);
    }
    return n;
}

ssize_t hf_device_writev(int fd, struct iovec *iov, int count, void *userdata) {
    (void)userdata;
    uint64_t init = atomic_load(&init_unique);
    if (init != 0 && count >= 2 && iov[0].iov_len >= sizeof(struct fuse_out_header)) {
        struct fuse_out_header out;
        memcpy(&out, iov[0].iov_base, sizeof(out));
        if (out.unique == init) {
            size_t at = offsetof(struct fuse_init_out, flags);
            if (out.error == 0 && atomic_load(&killpriv_offered) && iov[1].iov_len >= at + sizeof(uint32_t)) {
                char *reply = (char *)iov[1].iov_base;  /* libfuse's own reply, about to be sent */
                uint32_t flags;
                memcpy(&flags, reply + at, sizeof(flags));
                flags = (flags & ~(uint32_t)FUSE_HANDLE_KILLPRIV) | FUSE_HANDLE_KILLPRIV_V2;
                memcpy(reply + at, &flags, sizeof(flags));
                atomic_store(&killpriv_granted, 1);
            }
            atomic_store(&init_unique, 0);
        }
    }
    return writev(fd, iov, count);
}

unsigned hf_killpriv_v2(void) { return atomic_load(&killpriv_granted); }

unsigned hf_write_kills_suidgid(void) { return (write_flags & FUSE_WRITE_KILL_SUIDGID) != 0; }
