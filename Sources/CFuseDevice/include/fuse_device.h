// The FUSE session's device I/O (libfuse's custom io), for what libfuse 3.14 does not carry:
// FUSE_HANDLE_KILLPRIV_V2 and a write request's FUSE_WRITE_KILL_SUIDGID.
#ifndef HOLDFAST_FUSE_DEVICE_H
#define HOLDFAST_FUSE_DEVICE_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

/// read(2) of one request from /dev/fuse. Notes the kernel's offer of HANDLE_KILLPRIV_V2 at
/// FUSE_INIT, and a FUSE_WRITE's write_flags for the calling thread, which handles it next.
ssize_t hf_device_read(int fd, void *buf, size_t len, void *userdata);

/// writev(2) of one reply to /dev/fuse; the FUSE_INIT reply gains HANDLE_KILLPRIV_V2 (in place of
/// the old HANDLE_KILLPRIV) when the kernel offered it.
ssize_t hf_device_writev(int fd, struct iovec *iov, int count, void *userdata);

/// 1 once the kernel has taken HANDLE_KILLPRIV_V2: it then leaves clearing setuid, setgid and
/// file capabilities on write, truncate and chown to this server, and asks for security.capability
/// only before an inode's first write after its attributes were refreshed (S_NOSEC), not before
/// each. (libfuse's -d output prints the init reply's flags before this layer adds the flag.)
unsigned hf_killpriv_v2(void);

/// 1 when the write request this thread is handling carries FUSE_WRITE_KILL_SUIDGID (the writer
/// lacks CAP_FSETID).
unsigned hf_write_kills_suidgid(void);

#endif
