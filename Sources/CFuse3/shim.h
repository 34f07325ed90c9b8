// libfuse3's low-level API for HoldfastFUSE. The version macro must come before the headers,
// and the calls libfuse spells as macros (the multithreaded loop, the argument list) get small
// inline functions Swift can call.
#ifndef HOLDFAST_CFUSE3_SHIM_H
#define HOLDFAST_CFUSE3_SHIM_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

/// Runs the multithreaded session loop with at most `max_threads` workers, `max_idle` of them
/// kept when idle. Returns 0 after an unmount or fuse_session_exit, else a negative errno.
static inline int hf_fuse_loop_mt(struct fuse_session *se, unsigned max_threads, unsigned max_idle) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) return -12; /* ENOMEM */
    fuse_loop_cfg_set_max_threads(config, max_threads);
    fuse_loop_cfg_set_idle_threads(config, max_idle);
    fuse_loop_cfg_set_clone_fd(config, 0);
    int rc = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return rc;
}

/// The capability bits of a connection, read and changed from Swift without the struct's layout.
static inline unsigned hf_conn_capable(const struct fuse_conn_info *conn) { return conn->capable; }
static inline void hf_conn_want(struct fuse_conn_info *conn, unsigned set, unsigned clear) {
    conn->want = (conn->want | (set & conn->capable)) & ~clear;
}

/// fork(2), which Swift's Glibc module marks unavailable: the mount forks before it opens
/// anything, while the process has one thread.
static inline pid_t hf_fork(void) { return fork(); }

/// The open flags and the writepage bit of a request's file info (bit fields in C).
static inline int hf_fi_flags(const struct fuse_file_info *fi) { return fi ? fi->flags : 0; }
static inline unsigned hf_fi_writepage(const struct fuse_file_info *fi) { return fi ? fi->writepage : 0; }
static inline void hf_fi_set_keep_cache(struct fuse_file_info *fi, unsigned v) { fi->keep_cache = v; }
static inline void hf_fi_set_cache_readdir(struct fuse_file_info *fi, unsigned v) { fi->cache_readdir = v; }
static inline void hf_fi_set_noflush(struct fuse_file_info *fi, unsigned v) { fi->noflush = v; }

#endif
