// libfuse3's low-level API for HoldfastFUSE. The version macro must come before the headers,
// and the calls libfuse spells as macros (the multithreaded loop, the argument list) get small
// inline functions Swift can call.
#ifndef HOLDFAST_CFUSE3_SHIM_H
#define HOLDFAST_CFUSE3_SHIM_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

// MARK: The polling session loop
//
// A FUSE request costs two sleeps and two wake-ups: the client's, and the server thread's that
// reads /dev/fuse. This loop saves the server's while requests keep coming: one worker at a time
// (the reader) reads the device, made non-blocking, and answers what it reads itself; after an
// answer it spins up to `spin_ns` for the next request before it sleeps in poll(2). The other
// workers wait on a condition variable, never on the device, so a request wakes nobody. A request
// that keeps the reader busy for longer than `rescue_ns` (an fsync, a commit's wait) hands the
// reader's role to a waiting worker: a watchdog thread, ticking only while the reader is awake,
// sees to that, so slow requests do not hold up the others.
//
// The client's side of a request has a wake-up too: the reply wakes the process that waits for
// it, on its own CPU, which is idle in the meantime. An idle CPU that sleeps (HLT; on a virtual
// machine, an exit to the host) takes about 15 microseconds to wake, more than the request
// itself. With `latency_ns` > 0, once a stream of requests comes (HF_LATENCY_STREAK of them
// without the reader falling asleep between two), the loop asks the kernel's CPU-latency QoS
// (/dev/cpu_dma_latency) for a wake-up latency of 0, so idle CPUs poll rather than sleep and a
// wake-up takes a memory write. The watchdog withdraws the request `latency_ns` after the last
// request, whether or not a worker is free to read. The request is the whole machine's, so the
// loop makes none where it could do nothing (no cpuidle driver) or where the process may run on
// only some of the CPUs (a confined tenant asks nothing of the others); and the kernel drops it
// when the process ends, by a crash too. Requests that trickle in leave the CPUs alone.

struct hf_poll_loop {
    struct fuse_session *se;
    long spin_ns, rescue_ns;
    pthread_mutex_t lock;
    pthread_cond_t followers;  /* workers waiting for the reader's role */
    pthread_cond_t watchdog;   /* the watchdog, parked while the reader sleeps */
    unsigned long generation;  /* counts readers: a demoted reader's number is stale */
    int leading;               /* a worker holds the reader's role */
    int busy;                  /* the reader is answering a request, since `busy_since` */
    struct timespec busy_since;
    int asleep;                /* the reader sleeps in poll(2) */
    int done;                  /* the session ended: every thread leaves */
    int error;                 /* the negative errno that ended it, or 0 */
    long latency_ns;           /* the CPU-latency request's idle timeout; 0: never made */
    int latency_fd;            /* /dev/cpu_dma_latency, or -1 */
    /* Under `lock`: */
    int latency_held;          /* the request for 0 stands */
    unsigned streak;           /* requests since the reader last fell asleep */
    struct timespec last_request, held_since;
    struct hf_loop_stats *stats;
};

/// Requests in a row, none after a sleep of the reader, before the CPU-latency request is made.
#define HF_LATENCY_STREAK 16

/// Why the loop made no CPU-latency request.
enum { HF_LATENCY_READY = 0, HF_LATENCY_NOT_ASKED, HF_LATENCY_NO_DEVICE, HF_LATENCY_NO_CPUIDLE, HF_LATENCY_CONFINED,
       HF_LATENCY_NO_WATCHDOG };

/// What the loop did, for `--stats`.
struct hf_loop_stats {
    int latency_state;         /* HF_LATENCY_* */
    int latency_errno;         /* HF_LATENCY_NO_DEVICE: why /dev/cpu_dma_latency did not open */
    long allowed_cpus, online_cpus;  /* HF_LATENCY_CONFINED: where the process may run, of how many */
    unsigned long latency_holds;  /* times the CPU-latency request was made */
    long long latency_held_ns;    /* how long it stood in all */
};

static inline long hf_ns_since(const struct timespec *start) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000000000L + (now.tv_nsec - start->tv_nsec);
}

/// The CPU-latency request, with `lock` held: 0 (idle CPUs poll) while requests come, the
/// default (-1, PM_QOS_DEFAULT_VALUE) after `latency_ns` without one. A write that fails
/// changes nothing but the loop's speed.
static inline void hf_latency_hold(struct hf_poll_loop *l, int hold) {
    if (l->latency_fd < 0 || l->latency_held == hold) return;
    int32_t value = hold ? 0 : -1;  /* -1: PM_QOS_DEFAULT_VALUE, no constraint */
    if (write(l->latency_fd, &value, sizeof(value)) != (ssize_t)sizeof(value)) return;
    l->latency_held = hold;
    if (hold) {
        clock_gettime(CLOCK_MONOTONIC, &l->held_since);
        l->stats->latency_holds++;
    } else {
        l->stats->latency_held_ns += hf_ns_since(&l->held_since);
    }
}

/// The reader takes one request: spinning while one arrives within `spin_ns`, then asleep in
/// poll(2) (200 ms at a time, to see a signal's fuse_session_exit). What
/// fuse_session_receive_buf returns: > 0 for a request.
static inline int hf_poll_receive(struct hf_poll_loop *l, struct fuse_buf *buf) {
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        if (fuse_session_exited(l->se)) return 0;
        int res = fuse_session_receive_buf(l->se, buf);
        if (res != -EAGAIN && res != -EINTR) return res;
        if (hf_ns_since(&start) < l->spin_ns) continue;
        pthread_mutex_lock(&l->lock);
        l->asleep = 1;
        l->streak = 0;  /* requests that trickle in make no CPU-latency request */
        pthread_mutex_unlock(&l->lock);
        struct pollfd p = { .fd = fuse_session_fd(l->se), .events = POLLIN };
        poll(&p, 1, 200);
        pthread_mutex_lock(&l->lock);
        l->asleep = 0;
        pthread_cond_signal(&l->watchdog);
        pthread_mutex_unlock(&l->lock);
        clock_gettime(CLOCK_MONOTONIC, &start);
    }
}

static void *hf_poll_worker(void *arg) {
    struct hf_poll_loop *l = (struct hf_poll_loop *)arg;
    struct fuse_buf buf = { .mem = NULL };
    pthread_mutex_lock(&l->lock);
    while (!l->done) {
        if (l->leading) { pthread_cond_wait(&l->followers, &l->lock); continue; }
        l->leading = 1;
        unsigned long mine = ++l->generation;
        pthread_cond_signal(&l->watchdog);  /* a new reader, awake: the watchdog watches it */
        pthread_mutex_unlock(&l->lock);
        for (;;) {  /* the reader, until demoted or the session ends */
            int res = hf_poll_receive(l, &buf);
            pthread_mutex_lock(&l->lock);
            if (res <= 0) {
                l->done = 1;
                if (res < 0 && l->error == 0) l->error = res;
                pthread_cond_broadcast(&l->followers);
                pthread_cond_signal(&l->watchdog);
                break;
            }
            l->busy = 1;
            clock_gettime(CLOCK_MONOTONIC, &l->busy_since);
            l->last_request = l->busy_since;
            if (++l->streak >= HF_LATENCY_STREAK) hf_latency_hold(l, 1);
            pthread_mutex_unlock(&l->lock);
            fuse_session_process_buf(l->se, &buf);
            pthread_mutex_lock(&l->lock);
            if (l->generation != mine) break;  /* demoted meanwhile: a follower reads now */
            l->busy = 0;
            pthread_mutex_unlock(&l->lock);
        }
    }
    pthread_mutex_unlock(&l->lock);
    free(buf.mem);
    return NULL;
}

static void *hf_poll_watchdog(void *arg) {
    struct hf_poll_loop *l = (struct hf_poll_loop *)arg;
    pthread_mutex_lock(&l->lock);
    while (!l->done) {
        if (l->leading && l->busy && hf_ns_since(&l->busy_since) >= l->rescue_ns) {
            /* The reader is stuck in a slow request: a follower takes its role. */
            l->leading = 0;
            l->busy = 0;
            l->generation++;
            pthread_cond_signal(&l->followers);
        }
        /* The CPU-latency request ends `latency_ns` after the last request, even while no
           worker is free to read (all in slow requests, or one worker). */
        long left = -1;  /* until the request is withdrawn; -1: none stands */
        if (l->latency_held) {
            left = l->latency_ns - hf_ns_since(&l->last_request);
            if (left <= 0) {
                hf_latency_hold(l, 0);
                left = -1;
            }
        }
        long wait_ns = l->asleep || !l->leading ? -1 : l->rescue_ns / 2;
        if (left >= 0 && (wait_ns < 0 || left < wait_ns)) wait_ns = left;
        if (wait_ns < 0) {
            pthread_cond_wait(&l->watchdog, &l->lock);
        } else {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += wait_ns / 1000000000L;
            until.tv_nsec += wait_ns % 1000000000L;
            while (until.tv_nsec >= 1000000000L) { until.tv_sec++; until.tv_nsec -= 1000000000L; }
            pthread_cond_timedwait(&l->watchdog, &l->lock, &until);
        }
    }
    pthread_mutex_unlock(&l->lock);
    return NULL;
}

/// /dev/cpu_dma_latency, opened, where a CPU-latency request can do something and concerns only
/// CPUs this process may run on; else -1, and `stats` says why.
static inline int hf_latency_open(struct hf_loop_stats *stats) {
    /* Without a cpuidle driver ("none", or none at all) idle CPUs halt whatever is asked. */
    char driver[32] = { 0 };
    int d = open("/sys/devices/system/cpu/cpuidle/current_driver", O_RDONLY | O_CLOEXEC);
    ssize_t n = d >= 0 ? read(d, driver, sizeof(driver) - 1) : -1;
    if (d >= 0) close(d);
    if (n <= 0 || strncmp(driver, "none", 4) == 0) {
        stats->latency_state = HF_LATENCY_NO_CPUIDLE;
        return -1;
    }
    cpu_set_t allowed;
    long online = sysconf(_SC_NPROCESSORS_ONLN), count = 0;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
        const unsigned long *words = (const unsigned long *)&allowed;
        for (size_t i = 0; i < sizeof(allowed) / sizeof(unsigned long); i++) count += __builtin_popcountl(words[i]);
    }
    if (count < online) {
        stats->latency_state = HF_LATENCY_CONFINED;
        stats->allowed_cpus = count;
        stats->online_cpus = online;
        return -1;
    }
    int fd = open("/dev/cpu_dma_latency", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        stats->latency_state = HF_LATENCY_NO_DEVICE;
        stats->latency_errno = errno;
        return -1;
    }
    stats->latency_state = HF_LATENCY_READY;
    return fd;
}

/// Serves the session on up to `threads` workers, as described above. Returns 0 after an
/// unmount or fuse_session_exit, else a negative errno.
static inline int hf_fuse_loop_poll(struct fuse_session *se, unsigned threads, long spin_ns, long rescue_ns,
                                    long latency_ns, struct hf_loop_stats *stats) {
    *stats = (struct hf_loop_stats){ .latency_state = HF_LATENCY_NOT_ASKED };
    int fd = fuse_session_fd(se);
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return -errno;
    struct hf_poll_loop l = { .se = se, .spin_ns = spin_ns, .rescue_ns = rescue_ns, .latency_ns = latency_ns,
                              .latency_fd = -1, .stats = stats };
    if (latency_ns > 0) l.latency_fd = hf_latency_open(stats);
    pthread_mutex_init(&l.lock, NULL);
    pthread_cond_init(&l.followers, NULL);
    /* The watchdog's timed waits on the monotonic clock: a step of the wall clock cannot stall it. */
    pthread_condattr_t monotonic;
    pthread_condattr_init(&monotonic);
    pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
    pthread_cond_init(&l.watchdog, &monotonic);
    pthread_condattr_destroy(&monotonic);
    pthread_t ids[256], watchdog;
    unsigned started = 0;
    if (threads > 256) threads = 256;
    /* The threads started here take no signal (as libfuse's own workers): the stop signals stay
       the calling thread's, where libfuse's handlers end the session. */
    sigset_t all, kept;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &kept);
    int watching = pthread_create(&watchdog, NULL, hf_poll_watchdog, &l) == 0;
    if (!watching && l.latency_fd >= 0) {  /* nobody would withdraw a CPU-latency request */
        close(l.latency_fd);
        l.latency_fd = -1;
        stats->latency_state = HF_LATENCY_NO_WATCHDOG;
    }
    while (watching && started + 1 < threads && pthread_create(&ids[started], NULL, hf_poll_worker, &l) == 0) started++;
    pthread_sigmask(SIG_SETMASK, &kept, NULL);
    hf_poll_worker(&l);  /* the calling thread serves too */
    for (unsigned i = 0; i < started; i++) pthread_join(ids[i], NULL);
    if (watching) pthread_join(watchdog, NULL);
    pthread_cond_destroy(&l.watchdog);
    pthread_cond_destroy(&l.followers);
    pthread_mutex_destroy(&l.lock);
    hf_latency_hold(&l, 0);
    if (l.latency_fd >= 0) close(l.latency_fd);
    fuse_session_reset(se);
    return l.error;
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
