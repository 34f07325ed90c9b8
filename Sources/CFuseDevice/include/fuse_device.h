// The FUSE session's device I/O (libfuse's custom io), for what libfuse 3.14 does not carry:
// FUSE_HANDLE_KILLPRIV_V2 and a write request's FUSE_WRITE_KILL_SUIDGID.
#ifndef HOLDFAST_FUSE_DEVICE_H
#define HOLDFAST_FUSE_DEVICE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/// read(2) of one request from /dev/fuse. Notes the kernel's offer of HANDLE_KILLPRIV_V2 at
/// FUSE_INIT, and a FUSE_WRITE's write_flags for the calling thread, which handles it next.
ssize_t hf_device_read(int fd, void *buf, size_t len, void *userdata);

/// writev(2) of one reply to /dev/fuse; the FUSE_INIT reply gains HANDLE_KILLPRIV_V2 (in place of
/// the old HANDLE_KILLPRIV) when the kernel offered it.
ssize_t hf_device_writev(int fd, struct iovec *iov, int count, void *userdata);

/// splice(2) of a reply from libfuse's pipe to /dev/fuse (a read's data spliced from the image).
/// libfuse offers the kernel spliced replies only when the custom io has this. A reply shorter
/// than `hf_splice_expect` said (libfuse splices what the image gave and sends that, even when a
/// read error cut it short) goes as EIO instead, and the pipe is emptied.
ssize_t hf_device_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len, unsigned flags,
                              void *userdata);

/// The length (header and data) of the spliced reply the calling thread sends next, or 0 after it.
void hf_splice_expect(size_t bytes);

/// 1 once the kernel has taken HANDLE_KILLPRIV_V2: it then leaves clearing setuid, setgid and
/// file capabilities on write, truncate and chown to this server, and asks for security.capability
/// only before an inode's first write after its attributes were refreshed (S_NOSEC), not before
/// each. (libfuse's -d output prints the init reply's flags before this layer adds the flag.)
unsigned hf_killpriv_v2(void);

/// The error libfuse answered FUSE_INIT with (a negative errno: EPROTO when the kernel lacks a
/// capability the server asked for, or speaks too old a protocol), or 0. libfuse's own loop
/// returns it; the server's polling loop cannot see libfuse's session state, so it asks here.
int hf_init_error(void);

/// 1 when the write request this thread is handling carries FUSE_WRITE_KILL_SUIDGID (the writer
/// lacks CAP_FSETID).
unsigned hf_write_kills_suidgid(void);

/// One piece of a read's reply: `size` bytes of the file `fd` from byte `pos`, or zeros when
/// `fd` < 0.
struct hf_read_piece { int fd; off_t pos; size_t size; };

struct fuse_req;  /* libfuse's request (fuse_req_t) */

/// The bytes of the largest reply libfuse can splice in `pieces` buffers (0: none), from the
/// largest pipe this process can have.
size_t hf_splice_limit(size_t pieces);

/// Replies to the read request `req` (a fuse_req_t) with `count` pieces, spliced into /dev/fuse
/// (FUSE_CAP_SPLICE_WRITE, with `hf_device_splice_send`). Returns 1, having replied nothing, when
/// the reply is not one to splice (too many pieces, too large for the pipe, no zeros to send);
/// else what fuse_reply_data returns: 0, or a negative errno.
int hf_reply_pieces(struct fuse_req *req, const struct hf_read_piece *pieces, size_t count);

#endif
