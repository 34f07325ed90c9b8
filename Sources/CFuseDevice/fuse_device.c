// Without FUSE_HANDLE_KILLPRIV_V2 the kernel asks a FUSE server for security.capability before
// every write (file_remove_privs; FUSE clears SB_NOSEC), a second round trip per write. With it,
// the server clears setuid, setgid and capabilities itself, told by FUSE_WRITE_KILL_SUIDGID in a
// write and FATTR_KILL_SUIDGID in a setattr when the caller lacks CAP_FSETID. libfuse 3.14 knows
// neither the init flag nor the write bit (its setattr passes FATTR_KILL_SUIDGID on, as
// FUSE_SET_ATTR_KILL_SUID), so the session's device I/O goes through these two calls. The layouts
// are the kernel's own, from <linux/fuse.h>.
#define _GNU_SOURCE
#define FUSE_USE_VERSION 312
#include "fuse_device.h"

#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

static _Atomic uint64_t init_unique;        /* the FUSE_INIT request's id, until its reply */
static _Atomic unsigned killpriv_offered;   /* the kernel offered HANDLE_KILLPRIV_V2 */
static _Atomic unsigned killpriv_granted;   /* and the init reply took it */
static _Atomic int init_error;              /* the init reply's error (negative errno), or 0 */
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
        atomic_store(&init_error, 0);  /* a new session's INIT: nothing refused yet */
        atomic_store(&init_unique, in.unique);
    }
    return n;
}

ssize_t hf_device_writev(int fd, struct iovec *iov, int count, void *userdata) {
    (void)userdata;
    uint64_t init = atomic_load(&init_unique);
    if (init != 0 && count >= 1 && iov[0].iov_len >= sizeof(struct fuse_out_header)) {
        struct fuse_out_header out;
        memcpy(&out, iov[0].iov_base, sizeof(out));
        if (out.unique == init) {
            if (out.error != 0) atomic_store(&init_error, out.error);  /* an error reply is the header alone */
            size_t at = offsetof(struct fuse_init_out, flags);
            if (out.error == 0 && count >= 2 && atomic_load(&killpriv_offered) && iov[1].iov_len >= at + sizeof(uint32_t)) {
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

/* The spliced reply this thread is sending (`hf_reply_pieces`): its header and bytes, or 0. */
static _Thread_local size_t splice_expected;

void hf_splice_expect(size_t bytes) { splice_expected = bytes; }

/* Sends EIO for the request whose reply waits in the pipe `fdin` (`len` bytes, header first),
   and empties the pipe. */
static ssize_t splice_fail(int fdin, int fdout, size_t len) {
    struct fuse_out_header out;
    if (read(fdin, &out, sizeof(out)) != (ssize_t)sizeof(out)) return -1;
    char sink[16384];
    for (size_t left = len - sizeof(out); left > 0;) {
        ssize_t n = read(fdin, sink, left < sizeof(sink) ? left : sizeof(sink));
        if (n <= 0) break;
        left -= (size_t)n;
    }
    out.len = sizeof(out);
    out.error = -EIO;
    if (write(fdout, &out, sizeof(out)) != (ssize_t)sizeof(out)) return -1;
    return (ssize_t)len;
}

ssize_t hf_device_splice_send(int fdin, off_t *offin, int fdout, off_t *offout, size_t len, unsigned flags,
                              void *userdata) {
    (void)userdata;
    size_t expected = splice_expected;
    if (expected != 0 && len != expected && len >= sizeof(struct fuse_out_header)) {
        /* libfuse got fewer bytes from the image than the pieces hold (they lie inside it: a read
           error part-way) and would send a short reply, which the kernel takes for the end of the
           file. The request gets EIO instead, as a read through the server's buffer would. */
        return splice_fail(fdin, fdout, len);
    }
    return splice(fdin, offin, fdout, offout, len, flags);
}

unsigned hf_killpriv_v2(void) { return atomic_load(&killpriv_granted); }

int hf_init_error(void) { return atomic_load(&init_error); }

unsigned hf_write_kills_suidgid(void) { return (write_flags & FUSE_WRITE_KILL_SUIDGID) != 0; }

// MARK: Replies spliced from the image
//
// libfuse splices a reply whose data lies in a file (fuse_reply_data with FUSE_BUF_IS_FD pieces):
// the header and the data go into a pipe of its own (one per thread), and from there into
// /dev/fuse, so the bytes never pass through this process. It does so only when that pipe holds
// the whole reply; else it reads the file into a buffer it allocates for the one reply, which is
// slower than the server's own read. So the server splices only replies that fit.

/* The most buffers one spliced reply takes (a reply in more pieces goes the usual way). */
#define SPLICE_PIECES 64
#define ZEROS_SIZE ((size_t)1 << 20)

static void *zeros = MAP_FAILED;
static size_t pipe_limit;
static pthread_once_t splice_once = PTHREAD_ONCE_INIT;

static void splice_setup(void) {
    /* Zeros to send: a private anonymous mapping never written takes no memory. */
    zeros = mmap(NULL, ZEROS_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* The largest pipe this process gets (past /proc/sys/fs/pipe-max-size only with
       CAP_SYS_RESOURCE), asked for as libfuse asks for its own. */
    int p[2];
    if (pipe(p) != 0) return;
    int got = fcntl(p[0], F_SETPIPE_SZ, 4 << 20);
    if (got < 0) {
        int max = 0;
        FILE *f = fopen("/proc/sys/fs/pipe-max-size", "r");
        if (f) {
            if (fscanf(f, "%d", &max) != 1) max = 0;
            fclose(f);
        }
        got = max > 0 ? fcntl(p[0], F_SETPIPE_SZ, max) : -1;
    }
    if (got > 0) pipe_limit = (size_t)got;
    close(p[0]);
    close(p[1]);
}

size_t hf_splice_limit(size_t pieces) {
    pthread_once(&splice_once, splice_setup);
    /* libfuse's pipe for a reply: a page per buffer, the header's and one more, and the bytes. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t overhead = page * (pieces + 2) + sizeof(struct fuse_out_header);
    return pipe_limit > overhead ? pipe_limit - overhead : 0;
}

int hf_reply_pieces(fuse_req_t req, const struct hf_read_piece *pieces, size_t count) {
    size_t slots = 0, bytes = 0;
    for (size_t i = 0; i < count; i++) {
        slots += pieces[i].fd >= 0 ? 1 : (pieces[i].size + ZEROS_SIZE - 1) / ZEROS_SIZE;
        bytes += pieces[i].size;
    }
    if (slots == 0 || slots > SPLICE_PIECES || bytes > hf_splice_limit(slots)) return 1;
    /* libfuse's estimate counts whole pages; pieces that start inside a page (blocks smaller
       than a page) take a pipe slot more each. Such a reply must fit too, or libfuse reads the
       pipe back and sends the reply from memory. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE), taken = 2;
    for (size_t i = 0; i < count; i++) {
        if (pieces[i].fd < 0 && zeros == MAP_FAILED) return 1;
        size_t start = pieces[i].fd >= 0 ? (size_t)pieces[i].pos % page : 0;
        taken += (start + pieces[i].size + page - 1) / page + (pieces[i].fd < 0);
    }
    if (taken > pipe_limit / page) return 1;
    /* A vector of `slots` buffers: fuse_bufvec ends in a one-element array that runs on. */
    _Alignas(struct fuse_bufvec) char storage[sizeof(struct fuse_bufvec) + (SPLICE_PIECES - 1) * sizeof(struct fuse_buf)];
    memset(storage, 0, sizeof(storage));
    struct fuse_bufvec *v = (struct fuse_bufvec *)storage;
    v->count = slots;
    size_t k = 0;
    for (size_t i = 0; i < count; i++) {
        if (pieces[i].fd >= 0) {
            v->buf[k].size = pieces[i].size;
            v->buf[k].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
            v->buf[k].fd = pieces[i].fd;
            v->buf[k].pos = pieces[i].pos;
            k++;
            continue;
        }
        for (size_t left = pieces[i].size; left > 0; k++) {
            size_t n = left < ZEROS_SIZE ? left : ZEROS_SIZE;
            v->buf[k].size = n;
            v->buf[k].mem = zeros;
            left -= n;
        }
    }
    hf_splice_expect(sizeof(struct fuse_out_header) + bytes);
    int res = fuse_reply_data(req, v, 0);
    hf_splice_expect(0);
    return res;
}
