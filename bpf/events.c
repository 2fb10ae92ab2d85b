// enforcer syscall event probes (bcc). Rendered by enforcer.sources.probe.render():
// UPPERCASE placeholders are filled in there, and the per-syscall handlers are generated
// from the table in enforcer/sources/syscalls.py.
//
// Tracepoint arguments and helpers are read, and kernel structs only at offsets taken from
// the running kernel's BTF (never from the installed headers, which may be another
// kernel's): tracepoint formats come from tracefs at load time, so they always match the
// running kernel. The task's saved user registers come from a helper (bpf_task_pt_regs);
// their layout is the architecture's syscall ABI. The one walk through kernel structs is
// fd_sock() (a descriptor's socket), for the two ends of a connect or accept.
//
// Enter handlers stash the arguments in a per-thread record; exit handlers add the return
// value and copy the record to the one ring buffer. Records are fixed-size; a failed
// output increments a per-CPU drop counter of the record's event type that userspace reports. Where the kernel allows
// it (ARGS_AT_EXIT), every syscall but exec has an exit handler only instead: it reads
// the arguments from the saved registers and emits the record at once, so a syscall pays
// for one tracepoint hit, not two. Exec keeps the pair: its arguments live in memory
// the new image replaces.

#include <linux/ptrace.h>

#define ARGV_HALF ARGV_HALF_SIZE
#define PATH_SIZE PATH_MAX_SIZE
#define SADDR_SIZE 128
#define LPM_DATA LPM_DATA_SIZE

struct event_t {
    u64 ts;
    u32 tgid;
    u32 tid;
    u32 uid;
    u32 gid;
    s64 ret;
    s64 a[6];
    u16 type;
    u16 nargv;
    u16 len1;
    u16 len2;
    u16 argv_len;
    u16 saddr_len;
    u32 ppid;
    u64 cgroup_id;  // cgroup v2 id: userspace maps it to a path, hence a container
    char comm[16];
    u32 lpm_len;            // must sit right before path1: path1 is an LPM trie key
    char path1[PATH_SIZE];
    char path2[PATH_SIZE];
    char saddr[SADDR_SIZE];
    char argv[ARGV_HALF * 2];
    // user pointers of paths that could not be read at enter (page not yet faulted in);
    // the exit handler reads them again, once the kernel itself has touched them
    u64 p1ptr;
    u64 p2ptr;
};

struct lpm_key_t {
    u32 prefixlen;
    char data[LPM_DATA];
};

BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
// drops by event type (the record's code; 0 for a code out of range), per CPU
BPF_PERCPU_ARRAY(drops, u64, DROP_SLOTS);
BPF_PERCPU_ARRAY(scratch, struct event_t, 1);
BPF_HASH(stash, u32, struct event_t, STASH_ENTRIES);
// Path prefixes that some loaded rule could match on an open. The value is a bitmap over
// the 16 open classes (see open_class) that matter below that prefix.
BPF_LPM_TRIE(open_prefixes, struct lpm_key_t, u16, OPEN_PREFIX_ENTRIES);

// Path suffixes that some loaded rule could match on an open (`fd.name endswith X`,
// `fd.filename in (...)`), with the classes that matter for each.
#define SUFFIX_LEN 32
#define N_SUFFIXES OPEN_SUFFIX_COUNT
#define SUFFIX_CLASSES OPEN_SUFFIX_CLASSES
#define PREFIX_CLASSES OPEN_PREFIX_CLASSES
struct suffix_t {
    u32 len;
    u16 classes;
    char s[SUFFIX_LEN];
};
BPF_ARRAY(open_suffixes, struct suffix_t, OPEN_SUFFIX_ENTRIES);

#define OPEN_FILTER OPEN_FILTER_ENABLED
#define AGENT_TGID AGENT_TGID_VALUE

// Where the syscall ABI keeps the arguments in the saved user registers. At exit they are
// still the caller's: the kernel writes only the return value (arm64 keeps the first
// argument in orig_x0, since x0 becomes the return value).
#if AT_EXIT_WANTED && (defined(bpf_target_x86) || defined(bpf_target_arm64))
#define ARGS_AT_EXIT 1
static __always_inline struct pt_regs *syscall_regs(void) {
    return (struct pt_regs *)bpf_task_pt_regs((struct task_struct *)bpf_get_current_task_btf());
}

// The registers are read with plain loads: bpf_task_pt_regs gives a BTF-typed pointer, which
// the verifier lets a program load from directly (a load that cannot fault the kernel);
// bpf_probe_read_kernel cost a helper call per argument, ~25 ns each on every open
// (tests/bench/bench_overhead.py probes).
static __always_inline unsigned long syscall_arg(struct pt_regs *regs, int i) {
#if defined(bpf_target_x86)
    switch (i) {
    case 0: return regs->di;
    case 1: return regs->si;
    case 2: return regs->dx;
    case 3: return regs->r10;
    case 4: return regs->r8;
    default: return regs->r9;
    }
#else
    if (i == 0)
        return regs->orig_x0;
    return regs->regs[i & 7];
#endif
}
#else
#define ARGS_AT_EXIT 0
#endif

static __always_inline int is_agent(u64 pid_tgid) {
    return (u32)(pid_tgid >> 32) == AGENT_TGID;
}

static __always_inline struct event_t *scratch_get(void) {
    int zero = 0;
    return scratch.lookup(&zero);
}

// Everything but path1 (read first by opens, to filter before paying for the rest), the
// timestamp and the cgroup (set when the record is emitted).
static __always_inline void fill_header(struct event_t *e, u16 type) {
    u64 id = bpf_get_current_pid_tgid();
    u64 ug = bpf_get_current_uid_gid();
    e->tgid = id >> 32;
    e->tid = (u32)id;
    e->uid = (u32)ug;
    e->gid = ug >> 32;
    e->ret = 0;
    e->type = type;
    e->nargv = 0;
    e->len2 = 0;
    e->argv_len = 0;
    e->saddr_len = 0;
    e->ppid = 0;
    e->lpm_len = 0;
    e->p2ptr = 0;
    e->path2[0] = 0;
#pragma unroll
    for (int i = 0; i < 6; i++)
        e->a[i] = 0;
}

// A syscall record at enter.
static __always_inline struct event_t *start_syscall(u16 type) {
    struct event_t *e = scratch_get();
    if (!e)
        return 0;
    fill_header(e, type);
    e->len1 = 0;
    e->p1ptr = 0;
    e->path1[0] = 0;
    return e;
}

// A record emitted at once (process lifecycle).
static __always_inline struct event_t *start(u16 type) {
    struct event_t *e = start_syscall(type);
    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->cgroup_id = bpf_get_current_cgroup_id();
    return e;
}

// Waking the reader costs the emitting task an interrupt and the reader a context switch
// per record. With WAKEUP_EVERY > 1 records wake it only every WAKEUP_EVERY per CPU and
// userspace also drains on a short timer (EbpfSource.max_wait_ms), which bounds the
// latency. With 1 (the default) the reader says in reader_polling whether it is awake and
// draining on a 1 ms timer (a run of activity: no record needs to wake it) or asleep
// (idle: the kernel's adaptive wake-up, so the first record wakes it at once).
#define WAKEUP_EVERY WAKEUP_EVERY_VALUE
BPF_PERCPU_ARRAY(unwoken, u32, 1);
BPF_ARRAY(reader_polling, u32, 1);

static __always_inline u64 wakeup_flags(void) {
#if WAKEUP_EVERY > 1
    int zero = 0;
    u32 *n = unwoken.lookup(&zero);
    if (!n)
        return 0;
    *n += 1;
    if (*n < WAKEUP_EVERY)
        return BPF_RB_NO_WAKEUP;
    *n = 0;
    return BPF_RB_FORCE_WAKEUP;
#else
    int zero = 0;
    u32 *polling = reader_polling.lookup(&zero);
    return polling && *polling ? BPF_RB_NO_WAKEUP : 0;
#endif
}

// A record with one path and nothing after it (most: opens, execs without argv never
// reach here) is emitted up to the end of that path: ~160 bytes instead of the whole
// struct, so the ring holds ten times more of them and the kernel copies less. Userspace
// reads nothing past the lengths the header gives (enforcer/sources/decode.py).
static __always_inline u32 record_size(struct event_t *e) {
    if (e->len2 || e->saddr_len || e->argv_len || e->nargv)
        return sizeof(*e);
    u32 n = e->len1;
    if (n > PATH_SIZE)
        n = PATH_SIZE;
    return offsetof(struct event_t, path1) + n;
}

static __always_inline void emit(struct event_t *e) {
    u32 size = record_size(e);
    // hide size's origin from clang so that the verifier sees the bound
    asm volatile("" : "+r"(size));
    if (size > sizeof(*e))
        size = sizeof(*e);
    if (size < offsetof(struct event_t, path1))
        size = offsetof(struct event_t, path1);
    if (events.ringbuf_output(e, size, wakeup_flags()) != 0) {
        int slot = e->type < DROP_SLOTS ? e->type : 0;
        u64 *d = drops.lookup(&slot);
        if (d)
            *d += 1;
    }
}

static __always_inline void read_path1(struct event_t *e, const char *p) {
    long n = bpf_probe_read_user_str(e->path1, PATH_SIZE, p);
    e->len1 = n > 0 ? n : 0;
    e->p1ptr = n > 0 ? 0 : (u64)p;
}

static __always_inline void read_path2(struct event_t *e, const char *p) {
    long n = bpf_probe_read_user_str(e->path2, PATH_SIZE, p);
    e->len2 = n > 0 ? n : 0;
    e->p2ptr = n > 0 ? 0 : (u64)p;
}

// Exit side: the paths the enter handler could not read.
static __always_inline void reread_paths(struct event_t *e) {
    if (e->p1ptr)
        read_path1(e, (const char *)e->p1ptr);
    if (e->p2ptr)
        read_path2(e, (const char *)e->p2ptr);
}

static __always_inline void read_saddr(struct event_t *e, const void *p, long len) {
    if (!p || len <= 0)
        return;
    u32 n = len;
    if (n > SADDR_SIZE - 1)
        n = SADDR_SIZE - 1;
    // hide n's origin from clang so the explicit bound below reaches the verifier
    asm volatile("" : "+r"(n));
    n &= SADDR_SIZE - 1;  // the largest sockaddr (unix) is 110 bytes
    if (bpf_probe_read_user(e->saddr, n, p) == 0)
        e->saddr_len = n;
}

static __always_inline void read_saddr_lenptr(struct event_t *e, const void *p, const int *lenp) {
    int len = 0;
    if (!p || !lenp)
        return;
    bpf_probe_read_user(&len, sizeof(len), lenp);
    read_saddr(e, p, len);
}

struct msghdr_head_t {
    void *name;
    int namelen;
};

static __always_inline void read_msghdr_name(struct event_t *e, const void *msg) {
    struct msghdr_head_t h = {};
    if (!msg || bpf_probe_read_user(&h, sizeof(h), msg) != 0)
        return;
    read_saddr(e, h.name, h.namelen);
}

static __always_inline void read_argv(struct event_t *e, const char *const *argv) {
    u32 off = 0;
#pragma unroll
    for (int i = 0; i < MAX_ARGV; i++) {
        const char *p = 0;
        if (bpf_probe_read_user(&p, sizeof(p), &argv[i]) != 0 || !p)
            break;
        if (off >= ARGV_HALF)
            break;
        long n = bpf_probe_read_user_str(&e->argv[off & (ARGV_HALF - 1)], ARGV_HALF, p);
        if (n <= 0)
            break;
        off += n;
        e->nargv++;
    }
    e->argv_len = off > ARGV_HALF * 2 ? ARGV_HALF * 2 : off;
}

// An open's class: bit 0 readable, bit 1 writable, bit 2 O_TRUNC, bit 3 O_CREAT.
static __always_inline u32 open_class(long flags) {
    long acc = flags & 3;
    u32 cls = 0;
    if (acc != 1)
        cls |= 1;
    if (acc != 0)
        cls |= 2;
    if (flags & 01000)
        cls |= 4;
    if (flags & 0100)
        cls |= 8;
    return cls;
}

// 0x80 in every byte of v that is zero, 0 in the others (exact, no carries across bytes).
#define LOW7 0x7f7f7f7f7f7f7f7fULL
static __always_inline u64 zero_bytes(u64 v) {
    return ~((((v & LOW7) + LOW7) | v) | LOW7);
}

static __always_inline u64 bytes_equal(u64 w, u64 c) {
    return zero_bytes(w ^ (0x0101010101010101ULL * c));
}

// Whether a path of n chars (NUL at n) has `..`, `//`, a `/.` component or a trailing
// `/`: eight bytes per step, each position compared with the next two.
static __always_inline int needs_normalising(const char *p, u32 n) {
    for (int k = 0; k < LPM_DATA / 8; k++) {
        u32 i = k * 8;
        if (i >= n)
            break;
        u64 x = *(const u64 *)&p[i];
        u64 next = *(const u64 *)&p[i + 8];
        u64 y = (x >> 8) | (next << 56);   // the byte after each position
        u64 z = (x >> 16) | (next << 48);  // the byte after that
        u64 slash = bytes_equal(x, '/');
        u64 dot_y = bytes_equal(y, '.');
        u64 end_z = bytes_equal(z, '/') | zero_bytes(z);
        u64 hit = (bytes_equal(x, '.') & dot_y)
                | (slash & (bytes_equal(y, '/') | zero_bytes(y) | (dot_y & end_z)));
        if (n - i < 8)  // positions past the last char are not part of the path
            hit &= (1ULL << ((n - i) * 8)) - 1;
        if (hit)
            return 1;
    }
    return 0;
}

// Whether the first n chars of p hold `..`: the word-wise scan above, one pattern only.
#define DOTS 0x2e2e2e2e2e2e2e2eULL
static __always_inline int has_dotdot(const char *p, u32 n) {
    u64 acc = 0;
#pragma unroll
    for (int k = 0; k < LPM_DATA / 8; k++) {
        u32 i = k * 8;
        if (i >= n)
            break;
        u64 x = *(const u64 *)&p[i];
        u64 next = *(const u64 *)&p[i + 8];
        u64 y = (x >> 8) | (next << 56);  // the byte after each position
        u64 hit = zero_bytes((x ^ DOTS) | (y ^ DOTS));
        if (n - i < 8)
            hit &= (1ULL << ((n - i) * 8)) - 1;
        acc |= hit;
    }
    return acc != 0;
}

// The bytes that follow the leading `/` in some open prefix (a bitmap in four words, all
// ones when a prefix is shorter): most paths (/usr, /proc, /tmp...) skip the trie lookup.
static __always_inline int second_byte_may_match(u8 c) {
    u64 w = c < 64 ? PREFIX_BYTE1_0 : c < 128 ? PREFIX_BYTE1_1 : c < 192 ? PREFIX_BYTE1_2
                                                                          : PREFIX_BYTE1_3;
    return (w >> (c & 63)) & 1;
}

// Whether an open of path1 with these flags could matter to a loaded rule.
//
// A relative path resolves against a directory only userspace knows (the cwd or dirfd),
// so any prefix could match it: it passes when its class is in any prefix's set
// (PREFIX_CLASSES). Otherwise only suffixes can match, and the resolved name ends with
// the raw path (or with "/" + the raw path) as long as the raw path has no `.`/`..`
// component, no `//` and no trailing `/`, which is checked below for every path.
static __always_inline int open_wanted(struct event_t *e, long flags) {
#if OPEN_FILTER
    if (e->p1ptr)
        return 1;  // not read yet: decided at exit
    u32 cls = open_class(flags);
    // The common case first (most opens: /usr/..., /proc/..., /tmp/...): an absolute path
    // whose first component starts with a byte no prefix has there, for a class that no
    // suffix wants. Normalising only drops `.` and empty components and a trailing `/`, so
    // without a `..` the first component (a plain name: it does not start with `.` or
    // `/`) stays first: no prefix can match the resolved name, whatever else the path has.
    u8 c1 = e->path1[1];
    if (e->path1[0] == '/' && !((SUFFIX_CLASSES >> cls) & 1) && c1 != '.' && c1 != '/'
            && c1 != 0 && e->len1 <= LPM_DATA && !second_byte_may_match(c1))
        return has_dotdot(e->path1, e->len1 - 1);
    int relative = e->path1[0] != '/';
    if (relative && (((PREFIX_CLASSES >> cls) & 1) || e->len1 <= 1))
        return 1;
    if (e->len1 > LPM_DATA)
        return 1;
    // userspace normalises `.` and `..` components, `//` and a trailing `/` before rules
    // see the path: such paths cannot be judged by their raw text. Any `..` passes too,
    // so that rules about traversal in the raw path (fd.nameraw contains "../") never
    // need the trie. A name that merely starts with a dot (/root/.ssh) is judged.
    if (e->path1[0] == '.' && (e->path1[1] == '/' || e->path1[1] == 0))
        return 1;  // "./x", "."
    if (needs_normalising(e->path1, e->len1 - 1))
        return 1;
    if (!relative && second_byte_may_match(e->path1[1])) {
        u32 n = e->len1;
        e->lpm_len = n * 8;
        u16 *mask = open_prefixes.lookup((struct lpm_key_t *)&e->lpm_len);
        e->lpm_len = 0;
        if (mask && ((*mask >> cls) & 1))
            return 1;
    }
#if N_SUFFIXES > 0
    if (!((SUFFIX_CLASSES >> cls) & 1))
        return 0;
    u32 plen = e->len1 - 1;  // without the NUL
    for (int i = 0; i < N_SUFFIXES; i++) {
        int k = i;
        struct suffix_t *sf = open_suffixes.lookup(&k);
        if (!sf || sf->len == 0 || !((sf->classes >> cls) & 1))
            continue;
        // a relative path is compared as "/" + path: the resolved name has that slash
        u32 skip = 0;
        if (sf->len > plen) {
            if (!relative || sf->len != plen + 1 || sf->s[0] != '/')
                continue;
            skip = 1;
        }
        u32 off = plen + skip - sf->len;
        int same = 1;
        for (int j = 0; j < SUFFIX_LEN; j++) {
            if (j + skip >= sf->len)
                break;
            if (e->path1[(off + j) & (PATH_SIZE - 1)] != sf->s[(j + skip) & (SUFFIX_LEN - 1)]) {
                same = 0;
                break;
            }
        }
        if (same)
            return 1;
    }
#endif
    return 0;
#else
    return 1;
#endif
}

// Per-process detection masks (enforcer.kernel.detection_masks): for a process whose every rule
// reduces to false on its own fields for some syscalls, userspace leaves here the set of
// those syscalls (a bit per syscall, in the table order of enforcer/sources/syscalls.py),
// with the comm, uid, gid and cgroup id it computed them from and the exec or fork the
// process was at (born: the timestamp of that record, noted below when it is made). A
// record of such a syscall is dropped only while all of those still hold for the calling
// thread; otherwise (no entry, a rename, setuid, another cgroup, a newer exec, a pid used
// again) it crosses as before. Wider, never narrower.
#define QUIET_MASKS QUIET_MASKS_ENABLED
struct quiet_t {
    u64 quiet;
    u64 born;
    u64 cgroup;
    u32 uid;
    u32 gid;
    u64 comm[2];
};
BPF_F_TABLE("hash", u32, struct quiet_t, quiet, QUIET_ENTRIES, BPF_F_NO_PREALLOC);
BPF_F_TABLE("hash", u32, u64, born, QUIET_ENTRIES * 4, BPF_F_NO_PREALLOC);
// records dropped by the masks, per CPU
BPF_PERCPU_ARRAY(quiet_dropped, u64, 1);
// set when an exec or fork could not be noted (born full): no mask is trusted from then on
BPF_ARRAY(quiet_off, u32, 1);

static __always_inline void born_note(u32 pid, u64 ts) {
#if QUIET_MASKS
    int zero = 0;
    if (born.update(&pid, &ts) != 0) {
        u32 one = 1;
        quiet_off.update(&zero, &one);
    }
    quiet.delete(&pid);
#endif
}

static __always_inline int quiet_drop(u32 bit, u32 uid, u32 gid) {
#if QUIET_MASKS
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct quiet_t *q = quiet.lookup(&tgid);
    if (!q || !((q->quiet >> bit) & 1))
        return 0;
    if (q->uid != uid || q->gid != gid || q->cgroup != bpf_get_current_cgroup_id())
        return 0;
    u64 *b = born.lookup(&tgid);
    if ((b ? *b : 0) != q->born)
        return 0;
    int zero = 0;
    u32 *off = quiet_off.lookup(&zero);
    if (!off || *off)
        return 0;
    u64 comm[2] = {};
    bpf_get_current_comm(comm, sizeof(comm));
    if (comm[0] != q->comm[0] || comm[1] != q->comm[1])
        return 0;
    u64 *n = quiet_dropped.lookup(&zero);
    if (n)
        *n += 1;
    return 1;
#else
    return 0;
#endif
}

// Stash keys: the thread id, except for exec, which is keyed by process (high bit set):
// a non-leader thread that execs returns from it as the leader, with the leader's tid.
#define EXEC_KEY(tgid) ((tgid) | 0x80000000)

// A direct-mapped count of stashed records per key slot: most exits (every open the
// filter dropped) find 0 there and skip the hash lookup. Collisions only cost a lookup.
#define GATE_SLOTS 65536
BPF_ARRAY(gate, u32, GATE_SLOTS);

static __always_inline void gate_add(u32 key, int delta) {
    u32 slot = key & (GATE_SLOTS - 1);
    u32 *count = gate.lookup(&slot);
    if (count)
        __sync_fetch_and_add(count, delta);
}

static __always_inline int stash_it(struct event_t *e, u32 key) {
    gate_add(key, 1);
    stash.update(&key, e);
    return 0;
}

static __always_inline struct event_t *unstash(u32 key) {
    u32 slot = key & (GATE_SLOTS - 1);
    u32 *count = gate.lookup(&slot);
    if (!count || *count == 0)
        return 0;
    return stash.lookup(&key);
}

static __always_inline void drop_stash(u32 key) {
    if (stash.delete(&key) == 0)
        gate_add(key, -1);
}

// The descriptor table (enforcer.state.fd_table). The kernel keeps the keys
// (tgid << 32 | fd) of the descriptors userspace holds an entry for (sockets, and their
// dups), so that a close, dup or fcntl of any other descriptor is dropped here when no
// rule asks for that syscall: the open/close loop of a build never crosses.
BPF_HASH(fd_tracked, u64, u8, FD_TRACKED_ENTRIES);

static __always_inline u64 fd_key(u32 tgid, long fd) {
    return ((u64)tgid << 32) | (u32)fd;
}

static __always_inline int fd_is_tracked(u32 tgid, long fd) {
    u64 k = fd_key(tgid, fd);
    return (int)fd >= 0 && fd_tracked.lookup(&k) != 0;
}

// The processes that hold tracked descriptors (slot: tgid & 0xffff) with the highest
// number they ever tracked: a fork copies the keys of such a parent's descriptors to the
// child at once (sched_process_fork), so the child's first closes are judged like
// anyone's. A stale or overwritten slot only costs records.
#define HOLDER_SLOTS 65536
#define FORK_COPY_FDS 64
struct holder_t {
    u32 tgid;
    u32 max_fd;
};
BPF_ARRAY(fd_holders, struct holder_t, HOLDER_SLOTS);

static __always_inline void fd_holder(u32 tgid, u32 fd) {
    u32 slot = tgid & (HOLDER_SLOTS - 1);
    struct holder_t *h = fd_holders.lookup(&slot);
    if (!h)
        return;
    if (h->tgid != tgid) {
        h->tgid = tgid;
        h->max_fd = fd;
    } else if (fd > h->max_fd) {
        h->max_fd = fd;
    }
}

// 1 when the map is full: the record says so and userspace keeps no entry (its close
// would not be seen), the /proc lookup answers for that descriptor instead
static __always_inline int fd_track(u32 tgid, long fd) {
    u64 k = fd_key(tgid, fd);
    u8 one = 1;
    if ((int)fd < 0 || fd_tracked.update(&k, &one) != 0)
        return 1;
    fd_holder(tgid, (u32)fd);
    return 0;
}

static __always_inline void fd_untrack(u32 tgid, long fd) {
    u64 k = fd_key(tgid, fd);
    fd_tracked.delete(&k);
}

// close_range: the kernel's keys of the closed numbers below FORK_COPY_FDS go now, before
// the numbers are reused (userspace, reading the record later, pulls only the rest).
static __always_inline void fd_untrack_range(u32 tgid, long lo, long hi) {
    for (int fd = 0; fd < FORK_COPY_FDS; fd++) {
        if ((u32)fd >= (u32)lo && (u32)fd <= (u32)hi)
            fd_untrack(tgid, fd);
    }
}

// A new process whose parent ever tracked a descriptor numbered FORK_COPY_FDS or more (the
// fork copies only the keys below), by pid, until userspace has read its fork record and
// pushed the keys of everything it copied (slot: pid & 0xffff; 0 once synced). Until then
// the kernel cannot tell which of the child's descriptors the table holds, so all its
// closes, dups and fcntls cross: a close lost here would leave the table a stale socket
// or pipe under a number the child reuses for a file.
#define UNSYNCED_SLOTS 65536
BPF_ARRAY(fd_unsynced, u32, UNSYNCED_SLOTS);

static __always_inline int fd_unsynced_now(u32 tgid) {
    u32 slot = tgid & (UNSYNCED_SLOTS - 1);
    u32 *pid = fd_unsynced.lookup(&slot);
    return pid && *pid == tgid;
}

// The two ends of a socket, as the kernel keeps them: the local end a connect leaves to the
// kernel (the port it picks, the address its route gives; TCP, non-blocking or not, UDP),
// the remote end of an accept called without an address buffer. As libsinsp's drivers do,
// they are read from the socket itself, found from the descriptor in the task's fd table:
// kernel memory only, read with bpf_probe_read_kernel at the offsets the running kernel's
// BTF gives (enforcer.sources.kernel_btf; OFF_* below), never from the caller's memory.
struct tuple_t {
    u64 head;  // family | local port << 16 | 1 << 32 (present)
    u64 lo;    // IPv4 address, or the first 8 bytes of the IPv6 one
    u64 hi;    // the last 8 bytes of the IPv6 address
};

#define SOCK_READS SOCK_READS_ENABLED
#if SOCK_READS
SOCK_OFFSET_DEFINES

// The struct sock behind descriptor fd of the current process, 0 when it is not a socket
// (a socket's file and its struct socket point at each other; no other file's private
// data points back at the file).
static __always_inline u64 fd_sock(long fd) {
    u64 task = bpf_get_current_task();
    u64 files = 0, fdt = 0, arr = 0, file = 0, sock = 0, back = 0, sk = 0;
    u32 max = 0;
    if ((int)fd < 0)
        return 0;
    bpf_probe_read_kernel(&files, sizeof(files), (void *)(task + OFF_TASK_FILES));
    if (!files)
        return 0;
    bpf_probe_read_kernel(&fdt, sizeof(fdt), (void *)(files + OFF_FILES_FDT));
    if (!fdt)
        return 0;
    bpf_probe_read_kernel(&max, sizeof(max), (void *)(fdt + OFF_FDT_MAX));
    if ((u32)fd >= max)
        return 0;
    bpf_probe_read_kernel(&arr, sizeof(arr), (void *)(fdt + OFF_FDT_FD));
    bpf_probe_read_kernel(&file, sizeof(file), (void *)(arr + (u64)(u32)fd * 8));
    if (!file)
        return 0;
    bpf_probe_read_kernel(&sock, sizeof(sock), (void *)(file + OFF_FILE_PRIV));
    if (!sock)
        return 0;
    bpf_probe_read_kernel(&back, sizeof(back), (void *)(sock + OFF_SOCKET_FILE));
    if (back != file)
        return 0;
    bpf_probe_read_kernel(&sk, sizeof(sk), (void *)(sock + OFF_SOCKET_SK));
    return sk;
}

// One end of an IP socket: the local one (remote = 0) or the remote one; the port in host
// order. 0 when the socket is not IPv4/IPv6.
static __always_inline int sock_end(u64 sk, int remote, struct tuple_t *t) {
    u16 family = 0, port = 0;
    bpf_probe_read_kernel(&family, sizeof(family), (void *)(sk + OFF_SK_FAMILY));
    if (remote) {
        bpf_probe_read_kernel(&port, sizeof(port), (void *)(sk + OFF_SK_DPORT));
        port = (port >> 8) | (port << 8);
    } else {
        bpf_probe_read_kernel(&port, sizeof(port), (void *)(sk + OFF_SK_NUM));
    }
    t->head = (u64)family | ((u64)port << 16) | (1ULL << 32);
    t->lo = 0;
    t->hi = 0;
    if (family == 2) {
        bpf_probe_read_kernel(&t->lo, 4,
                              (void *)(sk + (remote ? OFF_SK_DADDR : OFF_SK_RCV_SADDR)));
        return 1;
    }
#if OFF_SK_V6_DADDR >= 0
    if (family == 10) {
        u64 at = sk + (remote ? OFF_SK_V6_DADDR : OFF_SK_V6_RCV_SADDR);
        bpf_probe_read_kernel(&t->lo, 8, (void *)at);
        bpf_probe_read_kernel(&t->hi, 8, (void *)(at + 8));
        return 1;
    }
#endif
    return 0;
}

// accept's record: the local end in path2 (unused by accept) and the remote end as the
// record's address, both from the new socket (the caller's address buffer may be NULL,
// and each connection is its own socket: two from one peer never mix)
static __always_inline void accept_tuple(struct event_t *e, long ret) {
    __builtin_memset(e->path2, 0, sizeof(struct tuple_t));  // the scratch record's old bytes
    if (ret < 0)
        return;
    u64 sk = fd_sock(ret);
    struct tuple_t local = {}, peer = {};
    if (!sk || !sock_end(sk, 0, &local) || !sock_end(sk, 1, &peer))
        return;
    __builtin_memcpy(e->path2, &local, sizeof(local));
    u16 family = (u16)peer.head;
    u16 port = (u16)(peer.head >> 16);
    __builtin_memset(e->saddr, 0, 28);
    *(u16 *)&e->saddr[0] = family;
    *(u16 *)&e->saddr[2] = (port >> 8) | (port << 8);
    if (family == 2) {
        *(u32 *)&e->saddr[4] = (u32)peer.lo;
        e->saddr_len = 16;
    } else {
        *(u64 *)&e->saddr[8] = peer.lo;
        *(u64 *)&e->saddr[16] = peer.hi;
        e->saddr_len = 28;
    }
}

// connect's record (connected, or in progress): slots 3-5 get the local end
static __always_inline void connect_tuple(struct event_t *e, long fd) {
    struct tuple_t t = {};
    u64 sk = fd_sock(fd);
    if (!sk || !sock_end(sk, 0, &t))
        return;
    e->a[3] = t.head;
    e->a[4] = t.lo;
    e->a[5] = t.hi;
}
#else
// Without the kernel's BTF: sock:inet_sock_set_state names the socket (an opaque
// address, never dereferenced) when the connecting thread moves it to SYN_SENT, and its
// whole tuple when it is ESTABLISHED; the connect's exit handler joins the two. A
// non-blocking connect (EINPROGRESS) and UDP are left to /proc.
BPF_TABLE("lru_hash", u32, u64, connecting, 16384);
BPF_TABLE("lru_hash", u64, struct tuple_t, established, 16384);

// The local end of an accepted connection, keyed by the remote end, which accept's
// address names: set when the passive socket becomes ESTABLISHED, taken by the accept's
// exit handler. Two pending connections from one remote address and port to two local
// ports would share a key: the later one wins.
struct peer_t {
    u64 head;  // family | remote port << 16
    u64 lo;
    u64 hi;
};
BPF_TABLE("lru_hash", struct peer_t, struct tuple_t, passive, 16384);
TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != 6)  // IPPROTO_TCP
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->newstate == 2) {  // TCP_SYN_SENT, in the connecting thread
        u64 id = bpf_get_current_pid_tgid();
        if (is_agent(id))
            return 0;
        u32 tid = (u32)id;
        connecting.update(&tid, &sk);
    } else if (args->oldstate == 2 && args->newstate == 1) {  // -> TCP_ESTABLISHED
        struct tuple_t t = {};
        t.head = (u64)args->family | ((u64)args->sport << 16) | (1ULL << 32);
        if (args->family == 2) {
            bpf_probe_read_kernel(&t.lo, 4, args->saddr);
        } else {
            bpf_probe_read_kernel(&t.lo, 8, args->saddr_v6);
            bpf_probe_read_kernel(&t.hi, 8, &args->saddr_v6[8]);
        }
        established.update(&sk, &t);
    } else if (args->oldstate == 3 && args->newstate == 1) {  // SYN_RECV -> ESTABLISHED
        struct tuple_t t = {};
        struct peer_t p = {};
        t.head = (u64)args->family | ((u64)args->sport << 16) | (1ULL << 32);
        p.head = (u64)args->family | ((u64)args->dport << 16);
        if (args->family == 2) {
            bpf_probe_read_kernel(&t.lo, 4, args->saddr);
            bpf_probe_read_kernel(&p.lo, 4, args->daddr);
        } else {
            bpf_probe_read_kernel(&t.lo, 8, args->saddr_v6);
            bpf_probe_read_kernel(&t.hi, 8, &args->saddr_v6[8]);
            bpf_probe_read_kernel(&p.lo, 8, args->daddr_v6);
            bpf_probe_read_kernel(&p.hi, 8, &args->daddr_v6[8]);
        }
        passive.update(&p, &t);
    }
    return 0;
}

// accept's record, once its address is read: the local end in path2 (unused by accept)
static __always_inline void accept_tuple(struct event_t *e, long ret) {
    __builtin_memset(e->path2, 0, sizeof(struct tuple_t));  // the scratch record's old bytes
    if (e->saddr_len < 8)
        return;
    struct peer_t p = {};
    u16 family = *(u16 *)&e->saddr[0];
    u16 port_be = *(u16 *)&e->saddr[2];
    p.head = (u64)family | ((u64)((port_be >> 8) | ((port_be & 0xff) << 8)) << 16);
    if (family == 2) {
        u32 ip4 = *(u32 *)&e->saddr[4];
        p.lo = ip4;
    } else if (family == 10 && e->saddr_len >= 24) {
        p.lo = *(u64 *)&e->saddr[8];
        p.hi = *(u64 *)&e->saddr[16];
    } else {
        return;
    }
    struct tuple_t *t = passive.lookup(&p);
    if (!t)
        return;
    __builtin_memcpy(e->path2, t, sizeof(*t));
    passive.delete(&p);
}

// connect's record: slots 3-5 get the local end when it is known
static __always_inline void connect_tuple(struct event_t *e, long fd) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *sk = connecting.lookup(&tid);
    if (!sk)
        return;
    u64 key = *sk;
    connecting.delete(&tid);
    struct tuple_t *t = established.lookup(&key);
    if (!t)
        return;
    e->a[3] = t->head;
    e->a[4] = t->lo;
    e->a[5] = t->hi;
    established.delete(&key);
}

#endif

// A record's result, time, thread and cgroup, filled at the syscall's end.
static __always_inline void fill_result(struct event_t *e, long ret) {
    e->ret = ret;
    e->ts = bpf_ktime_get_ns();
    e->tid = (u32)bpf_get_current_pid_tgid();
    e->cgroup_id = bpf_get_current_cgroup_id();
}

// A record, complete with its result: emitted.
static __always_inline void emit_result(struct event_t *e, long ret) {
    fill_result(e, ret);
    emit(e);
}

static __always_inline void finish(struct event_t *e, long ret, u32 key) {
    emit_result(e, ret);
    drop_stash(key);
}

// The child's copies of its parent's tracked descriptors, keyed for the child before it
// runs (it does not run before sched_process_fork returns). A new thread gets keys too
// (the tracepoint does not say which it is): userspace drops them with the thread's
// entries (FdTable.on_thread).
static __always_inline void fork_fds(u32 parent, u32 child) {
    u32 pslot = parent & (HOLDER_SLOTS - 1);
    struct holder_t *h = fd_holders.lookup(&pslot);
    if (!h || h->tgid != parent)
        return;
    struct holder_t c = {child, h->max_fd};
    u8 one = 1;
    for (int fd = 0; fd < FORK_COPY_FDS; fd++) {
        if (fd > c.max_fd)
            break;
        u64 k = fd_key(parent, fd);
        if (fd_tracked.lookup(&k)) {
            u64 ck = fd_key(child, fd);
            fd_tracked.update(&ck, &one);
        }
    }
    u32 cslot = child & (HOLDER_SLOTS - 1);
    fd_holders.update(&cslot, &c);
    if (c.max_fd >= FORK_COPY_FDS) {
        u32 uslot = child & (UNSYNCED_SLOTS - 1);
        fd_unsynced.update(&uslot, &child);
    }
}

// A successful exec's record: its timestamp is also the process's born (quiet_drop).
static __always_inline void finish_exec(struct event_t *e, long ret, u32 key) {
    fill_result(e, ret);
    born_note(e->tgid, e->ts);
    emit(e);
    drop_stash(key);
}

// Process lifecycle: always attached, the process table depends on them.
TRACEPOINT_PROBE(sched, sched_process_fork) {
    if (is_agent(bpf_get_current_pid_tgid()))
        return 0;
    struct event_t *e = start(EV_FORK);
    if (!e)
        return 0;
    e->ppid = e->tgid;
    e->a[0] = args->child_pid;
    e->a[1] = args->parent_pid;
    fork_fds(e->tgid, args->child_pid);
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    born_note(args->child_pid, e->ts);
    emit(e);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    if (is_agent(bpf_get_current_pid_tgid()))
        return 0;
#if QUIET_MASKS
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    born.delete(&tid);
    if ((u32)(id >> 32) == tid)
        quiet.delete(&tid);
#endif
    struct event_t *e = start(EV_EXIT);
    if (!e)
        return 0;
    bpf_get_current_comm(e->comm, sizeof(e->comm));
    emit(e);
    return 0;
}

HANDLERS
