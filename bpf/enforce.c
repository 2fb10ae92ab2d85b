// enforcer in-kernel kill fast path (bcc). Its own BPF object, attached next to
// bpf/events.c on the same tracepoints (several programs per tracepoint are fine).
// Rendered by enforcer.kernel.kill_tables.render(): UPPERCASE placeholders are filled in there.
//
// Userspace decides a rule's process fields at exec (enforcer.kernel.residue) and leaves
// here, per process (kill_map, keyed by tgid), the set of conjuncts of the residue that
// are still possible. A conjunct (conjs) says: the syscall, the open-flag class, the
// result, and path sets the path must / must not be in. Path sets are bits of one LPM
// trie (paths) whose values are precomputed in userspace for every stored key.
//
// Connects (and sendto/sendmsg with an address): the sockaddr is read at entry exactly as the event probe
// (bpf/events.c) reads it, and classed as userspace's decoder does: AF_INET, AF_INET6,
// AF_INET6 holding an IPv4-mapped address (userspace prints it as IPv4), AF_UNIX, other.
// The remote port is looked up in port_bits and the address in the addrs trie (IP
// version, then the address); conjuncts that check them only match the three IP classes.
// A connect whose sockaddr cannot be read is never judged here.
//
// Where the kill happens: a conjunct that needs the open's result (fd.num >= 0, as
// upstream's open_read does) is checked at sys_exit_*: the file is open but the process
// has not run a single instruction since, and the SIGKILL sent with bpf_send_signal() is
// delivered on the way back to userspace, so not one byte is ever read. Killing at entry
// instead would also kill opens that fail (ENOENT, EACCES), which the rule does not match:
// a false kill. Conjuncts that do not look at the result are checked at sys_enter_*.
// The same holds for a connect's result (upstream's outbound macro wants
// `evt.rawres >= 0 or evt.res = EINPROGRESS`): the kill then comes at sys_exit_connect,
// before the process can send a byte on the socket.
//
// Never a false kill: the kill map is only trusted while everything userspace decided it
// from is unchanged. The current thread's comm, uid, gid and cgroup must equal those the
// residue was computed with, and the stamp of the process and of every ancestor it read
// (stamps: a unique number set at each exec, each fork that creates the pid, each
// PR_SET_NAME) must be the one userspace saw. Otherwise the kernel does nothing and the
// event goes to userspace as usual. Only absolute, already-normal paths are judged here:
// userspace's fd.name resolves relative paths and `.`, `..`, `//`, which the kernel does
// not see, so any other path falls back to userspace.

#include <linux/sched.h>

#define PATH_LEN 256
#define MAX_CONJ 64
#define MAX_DEPS MAX_DEPS_VALUE
#define AGENT_TGID AGENT_TGID_VALUE
#define STAMP_RENAMED (1ULL << 61)
#define STAMP_FORK (1ULL << 62)
#define STAMP_POISON (1ULL << 63)

#define T_OPEN 1
#define T_OPENAT 2
#define T_OPENAT2 4
#define T_CREAT 8
#define T_CONNECT 16
#define T_SENDTO 32
#define T_SENDMSG 64
#define T_NET (T_CONNECT | T_SENDTO | T_SENDMSG)
// only the syscalls the in_kernel rules match are attached (enforcer.kernel.kill_tables.render)
#define WANT_OPEN WANT_OPEN_VALUE
#define WANT_OPENAT WANT_OPENAT_VALUE
#define WANT_OPENAT2 WANT_OPENAT2_VALUE
#define WANT_CREAT WANT_CREAT_VALUE
#define WANT_CONNECT WANT_CONNECT_VALUE
#define WANT_SENDTO WANT_SENDTO_VALUE
#define WANT_SENDMSG WANT_SENDMSG_VALUE
#define ALL_RESULTS ALL_RESULTS_VALUE
#define NET_UNKNOWN 31  // a net class no conjunct has: never judged
#define SADDR_SIZE 128

struct kill_entry_t {
    u64 conj;       // bitmap over conjs
    u64 cgroup;     // 0: not checked (processes found running at start)
    u32 uid;
    u32 gid;
    u32 ndeps;
    u32 pad;
    char comm[16];
    u32 dep_pid[MAX_DEPS];
    u64 dep_stamp[MAX_DEPS];
};

struct conj_t {
    u64 classes;    // bitmap over the 64 open classes
    u64 paths_all;  // path-set bits that must all match
    u64 paths_none; // path-set bits that must not match
    u32 types;      // T_* bits
    u32 results;    // 1: the open returned an fd, 2: it failed
    u32 uses_path;
    u32 rule;
    u64 ports_all;  // port-set bits that must all match (connects)
    u64 ports_none;
    u64 addrs_all;  // address-set bits that must all match (connects)
    u64 addrs_none;
    u32 uses_net;
    u32 pad;
};

struct addr_key_t {
    u32 prefixlen;
    u8 data[20];    // IP version, then the address
};

struct path_key_t {
    u32 prefixlen;
    char data[PATH_LEN];
};

struct path_val_t {
    u64 always;     // path sets matched by every path under this key
    u64 noslash;    // ...only when the path has no '/' after the key (fd.directory)
    u32 keylen;
    u32 pad;
};

struct stamp_t {
    u64 stamp;
    u64 ktime;
};

// A known process's template for its children (userspace: enforcer.kernel.arming): the
// child's conjuncts by its comm. The child's ancestors are this process and its chain,
// its user and container this process's: all checked again when the child is armed.
struct parent_t {
    u64 cgroup;
    u32 tmpl;
    u32 uid;
    u32 gid;
    u32 ndeps;
    u32 dep_pid[MAX_DEPS];
    u64 dep_stamp[MAX_DEPS];
};

struct tkey_t {
    u32 tmpl;
    char comm[16];
};

struct pending_t {
    u32 type;
    u32 cls;        // open class, or net class for a connect
    s32 len;        // bytes read, NUL included; <= 0: not readable at entry
    u32 unread_at_enter;
    u64 ptr;
    struct path_key_t key;  // the path; for a connect, the raw sockaddr
    u32 port;       // a connect's remote port
    u32 pad;
    struct addr_key_t addr;
};

struct kill_rec_t {
    u64 ts;
    u32 tgid;
    u32 tid;
    u32 rule;
    u32 conj;
    u32 type;
    s32 ret;
    u32 at_exit;
    u32 port;       // connects: the remote port, address family (4 or 6) and address
    u32 family;
    u8 addr[16];
    char comm[16];
    char path[PATH_LEN];
};

BPF_HASH(kill_map, u32, struct kill_entry_t, KILL_ENTRIES);
BPF_ARRAY(conjs, struct conj_t, MAX_CONJ);
BPF_LPM_TRIE(paths, struct path_key_t, struct path_val_t, PATH_ENTRIES);
BPF_LPM_TRIE(addrs, struct addr_key_t, u64, PATH_ENTRIES);
BPF_ARRAY(port_bits, u64, 65536);
BPF_TABLE("lru_hash", u32, struct stamp_t, stamps, STAMP_ENTRIES);
BPF_ARRAY(seq, u64, 1);
BPF_HASH(pending, u32, struct pending_t, 16384);
BPF_HASH(parents, u32, struct parent_t, KILL_ENTRIES);
BPF_HASH(tmpl_comm, struct tkey_t, u64, 65536);
BPF_ARRAY(tmpl_default, u64, MAX_TEMPLATES_VALUE);
// the template the child itself gets, for its own children (id + 1; 0: none), by its comm
BPF_HASH(tmpl_child, struct tkey_t, u32, 65536);
BPF_ARRAY(tmpl_child_default, u32, MAX_TEMPLATES_VALUE);
BPF_PERCPU_ARRAY(pscratch, struct parent_t, 1);
// the name prefixes the rules check (`proc.aname[1] startswith google_accounts`): a comm
// that starts with one never takes a template's default, which userspace computed for
// comms that start with none of them (enforcer.kernel.residue.comm_prefixes)
struct comm_key_t {
    u32 prefixlen;
    char data[16];
};
BPF_LPM_TRIE(comm_prefixes, struct comm_key_t, u32, 256);
BPF_TABLE("lru_hash", u32, u32, kparent, STAMP_ENTRIES);
BPF_PERCPU_ARRAY(escratch, struct kill_entry_t, 1);
BPF_PERCPU_ARRAY(scratch, struct pending_t, 1);
BPF_PERCPU_ARRAY(rscratch, struct kill_rec_t, 1);
BPF_RINGBUF_OUTPUT(kills, 16);
// pid -> its start (ns since boot, as /proc's starttime counts it) for each process the
// kernel killed: unlike the records above, never lost to a full ring
BPF_TABLE("lru_hash", u32, u64, killed, 16384);
// 0: kills, 1: refused as stale, 2: kill records lost
BPF_PERCPU_ARRAY(kstats, u64, 4);
// set by userspace when the destructive-action budget trips: the agent is dry-run from
// then on, and a dry run never kills
BPF_ARRAY(switched_off, u32, 1);

static __always_inline int is_off(void) {
    int zero = 0;
    u32 *off = switched_off.lookup(&zero);
    return !off || *off;
}

static __always_inline void count(int i) {
    u64 *v = kstats.lookup(&i);
    if (v)
        *v += 1;
}

static __always_inline void stamp(u32 pid, u64 flags) {
    int zero = 0;
    u64 *s = seq.lookup(&zero);
    if (!s)
        return;
    struct stamp_t v = {};
    v.stamp = (__sync_fetch_and_add(s, 1) + 1) | flags;
    v.ktime = bpf_ktime_get_ns();
    stamps.update(&pid, &v);
}

// The open class (enforcer.kernel.residue): bit 0 readable, 1 writable, 2 O_TRUNC,
// 3 O_CREAT, 4 the O_DIRECTORY bit, 5 O_TMPFILE.
static __always_inline u32 open_class(u64 flags) {
    u32 acc = flags & 3;
    u32 cls = 0;
    if (acc == 0 || acc == 2)
        cls |= 1;
    if (acc == 1 || acc == 2)
        cls |= 2;
    if (flags & 01000)
        cls |= 4;
    if (flags & 0100)
        cls |= 8;
    if (flags & 0200000)
        cls |= 16;
    if ((flags & 020200000) == 020200000)
        cls |= 32;
    return cls;
}

// The result class (enforcer.kernel.residue.result_bit): 0, positive, one bit per
// named errno, any other errno.
static __always_inline u32 result_bit(long ret) {
    if (ret == 0)
        return 1;
    if (ret > 0)
        return 2;
    switch (-ret) {
    RESULT_CASES
    }
    return 4;
}

// Whether the current thread still has the user, group and container a residue was
// computed for (cgroup 0: not checked).
static __always_inline int same_identity(u32 uid, u32 gid, u64 cgroup) {
    u64 ug = bpf_get_current_uid_gid();
    if ((u32)ug != uid || (u32)(ug >> 32) != gid)
        return 0;
    return !cgroup || bpf_get_current_cgroup_id() == cgroup;
}

// Whether every process a residue was computed from (the first n of at most max) still
// carries the stamp it had then.
static __always_inline int deps_current(const u32 *pid, const u64 *stamp, u32 n, int max) {
    for (int i = 0; i < max; i++) {
        if (i >= n)
            break;
        u32 p = pid[i];
        struct stamp_t *s = stamps.lookup(&p);
        if ((s ? s->stamp : 0) != stamp[i])
            return 0;
    }
    return 1;
}

// A child's dependencies: the child itself, then at most `room` of its parent's. Returns
// how many.
static __always_inline u32 inherit_deps(u32 *pid, u64 *stamp, u32 child, u64 own_stamp,
                                        const struct parent_t *t, int room) {
    pid[0] = child;
    stamp[0] = own_stamp;
    u32 n = 1;
    for (int i = 0; i < room; i++) {
        if (i >= t->ndeps)
            break;
        pid[i + 1] = t->dep_pid[i];
        stamp[i + 1] = t->dep_stamp[i];
        n++;
    }
    return n;
}

static __always_inline int fresh(struct kill_entry_t *k) {
    if (!same_identity(k->uid, k->gid, k->cgroup))
        return 0;
    char comm[16] = {};
    bpf_get_current_comm(comm, sizeof(comm));
#pragma unroll
    for (int i = 0; i < 16; i++) {
        if (comm[i] != k->comm[i])
            return 0;
        if (comm[i] == 0)
            break;
    }
    return deps_current(k->dep_pid, k->dep_stamp, k->ndeps, MAX_DEPS);
}

// An absolute path with no empty, `.` or `..` component and no trailing slash: exactly
// what userspace's fd.name is for it.
static __always_inline int normal_path(struct pending_t *p) {
    if (p->len < 2 || p->len >= PATH_LEN || p->key.data[0] != '/')
        return 0;
    for (int i = 0; i < PATH_LEN - 3; i++) {
        char c = p->key.data[i];
        if (c == 0)
            break;
        if (c != '/')
            continue;
        char d1 = p->key.data[(i + 1) & (PATH_LEN - 1)];
        char d2 = p->key.data[(i + 2) & (PATH_LEN - 1)];
        char d3 = p->key.data[(i + 3) & (PATH_LEN - 1)];
        if (d1 == '/' || (d1 == 0 && i > 0))
            return 0;
        if (d1 == '.' && (d2 == '/' || d2 == 0))
            return 0;
        if (d1 == '.' && d2 == '.' && (d3 == '/' || d3 == 0))
            return 0;
    }
    return 1;
}

static __always_inline u64 path_bits(struct pending_t *p) {
    p->key.prefixlen = p->len * 8;
    struct path_val_t *v = paths.lookup(&p->key);
    if (!v)
        return 0;
    u64 bits = v->always;
    if (v->noslash) {
        int slash = 0;
        for (int i = 0; i < PATH_LEN; i++) {
            if (i >= p->len - 1)
                break;
            if (i >= v->keylen && p->key.data[i] == '/') {
                slash = 1;
                break;
            }
        }
        if (!slash)
            bits |= v->noslash;
    }
    return bits;
}

static __always_inline void record(struct pending_t *p, struct conj_t *c, u32 i,
                                   long ret, u32 at_exit) {
    int zero = 0;
    struct kill_rec_t *r = rscratch.lookup(&zero);
    if (!r)
        return;
    u64 id = bpf_get_current_pid_tgid();
    r->ts = bpf_ktime_get_ns();
    r->tgid = id >> 32;
    r->tid = (u32)id;
    r->rule = c->rule;
    r->conj = i;
    r->type = p->type;
    r->ret = ret;
    r->at_exit = at_exit;
    bpf_get_current_comm(r->comm, sizeof(r->comm));
    if (p->type & T_NET) {
        r->path[0] = 0;
        r->port = p->port;
        r->family = p->addr.data[0];
        bpf_probe_read_kernel(r->addr, 16, &p->addr.data[1]);
    } else {
        r->port = 0;
        r->family = 0;
        bpf_probe_read_kernel(r->path, PATH_LEN, p->key.data);
    }
    if (kills.ringbuf_output(r, sizeof(*r), 0) != 0)
        count(2);
}

// at_exit 0: only conjuncts that do not need the result; 1: the others (and, when the
// path could not be read at entry, the path conjuncts too).
static __always_inline int judge(struct kill_entry_t *k, struct pending_t *p, u32 at_exit,
                                 long ret) {
    if (is_off())
        return 0;
    if (!fresh(k)) {
        count(1);
        return 0;
    }
    int net = (p->type & T_NET) != 0;
    int readable = !net && p->len > 0;
    int normal = readable ? normal_path(p) : 0;
    u64 pbits = normal ? path_bits(p) : 0;
    u64 portbits = 0, addrbits = 0;
    if (net && p->cls <= 2) {  // an IPv4 or IPv6 address: port and address are known
        u32 port = p->port & 0xffff;
        u64 *pb = port_bits.lookup(&port);
        portbits = pb ? *pb : 0;
        u64 *ab = addrs.lookup(&p->addr);
        addrbits = ab ? *ab : 0;
    }
    u32 rbit = result_bit(ret);
    for (u32 i = 0; i < MAX_CONJ; i++) {
        if (!((k->conj >> i) & 1))
            continue;
        u32 idx = i;
        struct conj_t *c = conjs.lookup(&idx);
        if (!c)
            continue;
        if (!(c->types & p->type) || !((c->classes >> p->cls) & 1))
            continue;
        if (!at_exit) {
            if (c->results != ALL_RESULTS)
                continue;
        } else if (c->results == ALL_RESULTS) {
            if (!(c->uses_path && p->unread_at_enter))
                continue;
        } else if (!(c->results & rbit)) {
            continue;
        }
        if (c->uses_path) {
            if (!normal)
                continue;
            if ((pbits & c->paths_all) != c->paths_all || (pbits & c->paths_none))
                continue;
        }
        if (c->uses_net) {
            if (!net || p->cls > 2)
                continue;
            if ((portbits & c->ports_all) != c->ports_all || (portbits & c->ports_none))
                continue;
            if ((addrbits & c->addrs_all) != c->addrs_all || (addrbits & c->addrs_none))
                continue;
        }
        // whom the kernel killed, by pid and start (the userspace backstop says
        // done-in-kernel only for these); written before the signal, so that a process seen
        // with SIGKILL pending by the kernel's kill is always found here
        u32 tgid = bpf_get_current_pid_tgid() >> 32;
        struct task_struct *task = (struct task_struct *)bpf_get_current_task();
        u64 start = task->group_leader->start_boottime;
        killed.update(&tgid, &start);
        bpf_send_signal(9);
        count(0);
        record(p, c, i, at_exit ? ret : 0, at_exit);
        return 1;
    }
    return 0;
}

// An entry check's start: the calling process's kill entry (none: nothing to check) and
// the per-CPU record to fill, typed.
static __always_inline struct pending_t *begin(u32 type, struct kill_entry_t **kp) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (tgid <= 1 || tgid == AGENT_TGID)  // guards: userspace never arms them either
        return 0;
    struct kill_entry_t *k = kill_map.lookup(&tgid);
    if (!k)
        return 0;
    int zero = 0;
    struct pending_t *p = scratch.lookup(&zero);
    if (!p)
        return 0;
    p->type = type;
    *kp = k;
    return p;
}

// An entry check's end: judged now, or kept for the exit when the rule reads the result.
static __always_inline int judge_or_keep(struct kill_entry_t *k, struct pending_t *p) {
    if (judge(k, p, 0, 0))
        return 0;
    u32 tid = (u32)bpf_get_current_pid_tgid();
    pending.update(&tid, p);
    return 0;
}

static __always_inline int on_enter(u32 type, const char *path, u64 flags) {
    struct kill_entry_t *k = 0;
    struct pending_t *p = begin(type, &k);
    if (!p || !k)
        return 0;
    p->cls = open_class(flags);
    p->ptr = (u64)path;
    p->len = bpf_probe_read_user_str(p->key.data, PATH_LEN, path);
    p->unread_at_enter = p->len <= 0;
    return judge_or_keep(k, p);
}

static __always_inline int on_exit(long ret) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    struct pending_t *p = pending.lookup(&tid);
    if (!p)
        return 0;
    u32 tgid = id >> 32;
    struct kill_entry_t *k = kill_map.lookup(&tgid);
    if (k) {
        if (!(p->type & T_NET) && p->len <= 0)  // the page was not there at entry; the kernel has touched it now
            p->len = bpf_probe_read_user_str(p->key.data, PATH_LEN, (const char *)p->ptr);
        judge(k, p, 1, ret);
    }
    pending.delete(&tid);
    return 0;
}

#if WANT_OPEN
TRACEPOINT_PROBE(syscalls, sys_enter_open) {
    return on_enter(T_OPEN, (const char *)args->filename, (u64)(u32)args->flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_open) { return on_exit(args->ret); }
#endif

#if WANT_OPENAT
TRACEPOINT_PROBE(syscalls, sys_enter_openat) {
    return on_enter(T_OPENAT, (const char *)args->filename, (u64)(u32)args->flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_openat) { return on_exit(args->ret); }
#endif

#if WANT_OPENAT2
TRACEPOINT_PROBE(syscalls, sys_enter_openat2) {
    u64 flags = 0;
    bpf_probe_read_user(&flags, sizeof(flags), args->how);
    return on_enter(T_OPENAT2, (const char *)args->filename, flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_openat2) { return on_exit(args->ret); }
#endif

// The net class of a sockaddr, as enforcer.sources.decode.parse_sockaddr reads it: the
// family (little endian), then the port (big endian) and address.
static __always_inline void net_class(struct pending_t *p, u32 n) {
    u8 *raw = (u8 *)p->key.data;
    p->cls = NET_UNKNOWN;
    if (n < 2)
        return;
    u32 family = raw[0] | (raw[1] << 8);
    p->port = (raw[2] << 8) | raw[3];
    __builtin_memset(&p->addr, 0, sizeof(p->addr));
    if (family == 2 && n >= 8) {
        p->cls = 0;
        p->addr.prefixlen = 8 + 32;
        p->addr.data[0] = 4;
        __builtin_memcpy(&p->addr.data[1], &raw[4], 4);
    } else if (family == 10 && n >= 24) {
        int mapped = raw[18] == 0xff && raw[19] == 0xff;
#pragma unroll
        for (int i = 8; i < 18; i++)
            if (raw[i])
                mapped = 0;
        if (mapped) {  // ::ffff:a.b.c.d: userspace sees the IPv4 address a.b.c.d
            p->cls = 2;
            p->addr.prefixlen = 8 + 32;
            p->addr.data[0] = 4;
            __builtin_memcpy(&p->addr.data[1], &raw[20], 4);
        } else {
            p->cls = 1;
            p->addr.prefixlen = 8 + 128;
            p->addr.data[0] = 6;
            __builtin_memcpy(&p->addr.data[1], &raw[8], 16);
        }
    } else if (family == 1) {
        p->cls = 3;
    } else {
        p->cls = 4;
    }
}

static __always_inline int on_net(u32 type, const void *uaddr, long len) {
    struct kill_entry_t *k = 0;
    struct pending_t *p = begin(type, &k);
    if (!p || !k)
        return 0;
    p->cls = NET_UNKNOWN;
    p->len = 0;
    p->unread_at_enter = 0;
    p->ptr = 0;
    p->port = 0;
    if (uaddr && len > 0) {  // as bpf/events.c's read_saddr: min(len, 127) bytes or none
        u32 n = len;
        if (n > SADDR_SIZE - 1)
            n = SADDR_SIZE - 1;
        asm volatile("" : "+r"(n));
        n &= SADDR_SIZE - 1;
        if (bpf_probe_read_user(p->key.data, n, uaddr) == 0)
            net_class(p, n);
    }
    return judge_or_keep(k, p);
}

#if WANT_CONNECT
TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    return on_net(T_CONNECT, (const void *)args->uservaddr, (long)args->addrlen);
}
TRACEPOINT_PROBE(syscalls, sys_exit_connect) { return on_exit(args->ret); }
#endif

// sendto and sendmsg with an address (without one, the sockaddr is unreadable: never
// judged). Killed at entry, the datagram still leaves: the syscall runs to its end
// before the signal is delivered.
#if WANT_SENDTO
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) {
    return on_net(T_SENDTO, (const void *)args->addr, (long)args->addr_len);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return on_exit(args->ret); }
#endif

#if WANT_SENDMSG
struct msghdr_head_t {
    void *name;
    int namelen;
};

TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) {
    struct msghdr_head_t h = {};  // as bpf/events.c's read_msghdr_name
    if (!args->msg || bpf_probe_read_user(&h, sizeof(h), args->msg) != 0)
        h.name = 0;
    return on_net(T_SENDMSG, (const void *)h.name, (long)h.namelen);
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return on_exit(args->ret); }
#endif

#if WANT_CREAT
TRACEPOINT_PROBE(syscalls, sys_enter_creat) {
    return on_enter(T_CREAT, (const char *)args->pathname, 01101);
}
TRACEPOINT_PROBE(syscalls, sys_exit_creat) { return on_exit(args->ret); }
#endif

// Arm a process that has just exec'd (or been forked) from its parent's template, before
// it runs a single instruction of its own: userspace only hears of it a little later, and
// replaces the entry with its own computation then. No template, a changed parent, or a
// comm the template cannot decide: no entry, the userspace kill still applies.
static __always_inline void arm_child(u32 parent, u32 child) {
    kill_map.delete(&child);
    parents.delete(&child);
    struct parent_t *t = parents.lookup(&parent);
    if (!t)
        return;
    if (!same_identity(t->uid, t->gid, t->cgroup)
            || !deps_current(t->dep_pid, t->dep_stamp, t->ndeps, MAX_DEPS - 1))
        return;
    struct tkey_t key = {};
    key.tmpl = t->tmpl;
    bpf_get_current_comm(key.comm, sizeof(key.comm));
    int spaced = 0;
#pragma unroll
    for (int i = 0; i < 16; i++) {
        if (key.comm[i] == 0)
            break;
        if (key.comm[i] == ' ')
            spaced = 1;
    }
    if (!spaced) {
        struct comm_key_t ck = {};
        ck.prefixlen = 8 * 16;
        __builtin_memcpy(ck.data, key.comm, 16);
        if (comm_prefixes.lookup(&ck))
            spaced = 1;  // no default either
    }
    u32 idx = t->tmpl;
    u64 conj = 0;
    u32 grand = 0;
    u64 *r = tmpl_comm.lookup(&key);
    u32 *g = tmpl_child.lookup(&key);
    // the defaults are for comms without spaces (proc.cmdline = comm + " " + args) that
    // start with none of comm_prefixes
    if (r) {
        conj = *r;
    } else if (!spaced) {
        u64 *d = tmpl_default.lookup(&idx);
        conj = d ? *d : 0;
    }
    if (g) {
        grand = *g;
    } else if (!spaced) {
        u32 *gd = tmpl_child_default.lookup(&idx);
        grand = gd ? *gd : 0;
    }
    struct stamp_t *own = stamps.lookup(&child);
    u64 own_stamp = own ? own->stamp : 0;
    int zero = 0;
    if (conj) {
        struct kill_entry_t *e = escratch.lookup(&zero);
        if (!e)
            return;
        e->conj = conj;
        e->cgroup = t->cgroup;
        e->uid = t->uid;
        e->gid = t->gid;
        __builtin_memcpy(e->comm, key.comm, 16);
        e->ndeps = inherit_deps(e->dep_pid, e->dep_stamp, child, own_stamp, t, MAX_DEPS - 1);
        kill_map.update(&child, e);
    }
    // the child's own template, until userspace computes it from the child's exec record
    if (grand && t->ndeps < MAX_DEPS - 1) {
        struct parent_t *c = pscratch.lookup(&zero);
        if (!c)
            return;
        c->cgroup = t->cgroup;
        c->tmpl = grand - 1;
        c->uid = t->uid;
        c->gid = t->gid;
        c->ndeps = inherit_deps(c->dep_pid, c->dep_stamp, child, own_stamp, t, MAX_DEPS - 2);
        parents.update(&child, c);
    }
}

// Stamps: what userspace computed a residue from changes at these points.

// A new image (exec) or a new name (rename by the main thread): stamped, and armed again
// from its parent's template, which knows the child by its comm; no parent known: unarmed.
static __always_inline void rearm_from_parent(u32 tgid, u64 how) {
    stamp(tgid, how);
    u32 *parent = kparent.lookup(&tgid);
    if (parent)
        arm_child(*parent, tgid);
    else
        kill_map.delete(&tgid);
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (tgid == AGENT_TGID)
        return 0;
    rearm_from_parent(tgid, 0);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_fork) {
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (parent == AGENT_TGID)
        return 0;
    u32 child = args->child_pid;
    stamp(child, STAMP_FORK);
    kparent.update(&child, &parent);
    arm_child(parent, child);
    return 0;
}

// PR_SET_NAME: userspace only learns the new name at a later event of the process. A
// rename by another thread than the main one is never trusted again (until an exec). The
// main thread renaming the process (busybox run as an applet through /proc/self/exe
// renames itself from "exe" to the applet's name) is treated as an exec with the new
// comm: stamped when the rename is done, armed again from its parent's template by the
// new comm (the template only knows the comm of a child, and proc.cmdline follows it),
// and trusted by userspace once it has applied a later record of the main thread.
BPF_HASH(renaming, u32, u32, 4096);

TRACEPOINT_PROBE(syscalls, sys_enter_prctl) {
    if (args->option == 15) {
        u64 id = bpf_get_current_pid_tgid();
        u32 tgid = id >> 32;
        u32 tid = (u32)id;
        if (tid != tgid) {
            stamp(tgid, STAMP_POISON);
        } else {
            u32 one = 1;
            // no room to follow it: poisoned, as any rename used to be
            if (renaming.update(&tid, &one) != 0)
                stamp(tgid, STAMP_POISON);
        }
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_prctl) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    if (!renaming.lookup(&tid))
        return 0;
    renaming.delete(&tid);
    u32 tgid = id >> 32;
    if (tgid == AGENT_TGID || args->ret != 0)
        return 0;
    rearm_from_parent(tgid, STAMP_RENAMED);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = (u32)id;
    pending.delete(&tid);
    renaming.delete(&tid);
    kill_map.delete(&tid);  // a thread's entry from its fork, or the process's
    if ((u32)(id >> 32) == tid)
        parents.delete(&tid);
    return 0;
}
