"""The field registry: every field a rule may use, with its type and a one-line description.

Types (what operators accept and how literals are converted, as in libsinsp):
- `string`, `path`: text; every operator but bcontains/bstartswith.
- `number`: integers (pids, uids, ports, fd numbers, timestamps); = != < <= > >= in
  intersects exists.
- `bool`: `true`/`false`; = != in intersects exists.
- `ipaddr`: an IP address (text in events); = != in intersects exists; literals are
  addresses, compared by value (so `::1` equals `0:0::1`).
- `ipnet`: an IP address that literals compare to as networks: `fd.net = 10.0.0.0/8` is
  true when the address lies inside; = != in intersects exists.
- `buffer`: bytes (text in events, taken as latin-1); = != contains startswith endswith in
  intersects bcontains bstartswith exists.
- `list`: several values; only exists, in (every value in the set) and intersects (any).
- `any`: dynamic event arguments whose type depends on the event (`evt.rawarg.*`):
  literals that look like integers compare as integers.

Argument kinds: `index` (`proc.aname[2]`, ancestors counted from the process itself = 0),
`name` (`evt.arg[flags]`), `key` (free text, e.g. a mount path or environment variable).
`evt.arg.NAME`, `evt.rawarg.NAME` and `evt.arg[N]` are families: any NAME or N is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPES = ("string", "path", "number", "bool", "ipaddr", "ipnet", "buffer", "list", "any")


@dataclass(frozen=True)
class FieldSpec:
    """A field's name, value type, one-line description and argument kind (or None)."""

    name: str
    type: str
    desc: str
    arg: str | None = None  # None, "index", "name", "key"
    arg_required: bool = False
    ancestor_of: str | None = None  # for proc.aname & co: the field at index 0


def _f(name: str, type_: str, desc: str, **kw) -> FieldSpec:
    return FieldSpec(name, type_, desc, **kw)


_FIELDS: list[FieldSpec] = [
    # event
    _f("evt.type", "string", "Event type: the syscall name (open, openat, execve, connect...)"),
    _f("evt.dir", "string", "Event direction: '>' enter, '<' exit (deprecated in rules)"),
    _f("evt.num", "number", "Event sequence number"),
    _f("evt.time", "string", "Event timestamp as a time string with nanoseconds"),
    _f("evt.time.s", "string", "Event timestamp as a time string without nanoseconds"),
    _f("evt.time.iso8601", "string", "Event timestamp in ISO 8601 format"),
    _f("evt.datetime", "string", "Event timestamp as a date and time string"),
    _f("evt.rawtime", "number", "Event timestamp in nanoseconds since the epoch"),
    _f("evt.hostname", "string", "Name of the host that produced the event"),
    _f("evt.res", "string", "Event return value as text: SUCCESS or an errno name (ENOENT)"),
    _f("evt.rawres", "number", "Event return value as a number (negative errno on failure)"),
    _f("evt.failed", "bool", "True for events that returned an error"),
    _f("evt.args", "string", "All event arguments rendered as one string"),
    _f("evt.buffer", "buffer", "The binary data buffer of read/write/send/recv events"),
    _f("evt.buflen", "number", "Length of the binary data buffer"),
    _f("evt.is_open_read", "bool", "True for open events whose flags include read access"),
    _f("evt.is_open_write", "bool", "True for open events whose flags include write access"),
    _f("evt.is_open_exec", "bool", "True for open/creat events that create executable files"),
    _f("evt.is_open_create", "bool", "True for open events that create a file (O_CREAT)"),
    _f("evt.source", "string", "Event source name (syscall)"),
    _f("evt.category", "string", "Event category: file, net, process, ipc, memory..."),
    _f("evt.count", "number", "Always 1; counts events in aggregations"),
    _f("evt.is_io", "bool", "True for events that read or write data"),
    _f("evt.is_io_read", "bool", "True for events that read data"),
    _f("evt.is_io_write", "bool", "True for events that write data"),
    _f("evt.is_syslog", "bool", "True for writes to /dev/log"),
    _f("evt.is_wait", "bool", "True for events that make the thread wait"),
    _f("evt.latency", "number", "Nanoseconds between enter and exit of the syscall"),
    _f("evt.cpu", "number", "CPU the event happened on"),
    _f("evt.pluginname", "string", "Name of the plugin that produced the event"),
    _f("evt.arg", "string",
       "An event argument by name (evt.arg.NAME, evt.arg[NAME]) or position (evt.arg[N]), "
       "rendered as text (flags as names, e.g. O_RDONLY|O_CLOEXEC)",
       arg="name", arg_required=True),
    _f("evt.rawarg", "any", "An event argument by name (evt.rawarg.NAME), unformatted value",
       arg="name", arg_required=True),
    # process
    _f("proc.name", "string", "Name of the process executable (truncated comm or exe name)"),
    _f("proc.exe", "string", "First command-line argument (argv[0]) of the process"),
    _f("proc.exepath", "path", "Full path of the process executable"),
    _f("proc.args", "string", "Command-line arguments of the process, without argv[0]"),
    _f("proc.cmdline", "string", "Full command line: name and arguments"),
    _f("proc.pid", "number", "Process id"),
    _f("proc.vpid", "number", "Process id as seen from its own pid namespace"),
    _f("proc.ppid", "number", "Parent process id"),
    _f("proc.pname", "string", "Name of the parent process"),
    _f("proc.pcmdline", "string", "Command line of the parent process"),
    _f("proc.pexe", "string", "argv[0] of the parent process"),
    _f("proc.pexepath", "path", "Full executable path of the parent process"),
    _f("proc.sname", "string", "Name of the session leader of the process"),
    _f("proc.sid", "number", "Session id of the process"),
    _f("proc.vpgid", "number", "Process group id as seen from its pid namespace"),
    _f("proc.tty", "number", "Controlling terminal of the process (0 when none)"),
    _f("proc.cwd", "path", "Current working directory of the process"),
    _f("proc.env", "string", "Environment variables of the process, or one with [NAME]",
       arg="key"),
    _f("proc.duration", "number", "Nanoseconds since the process started"),
    _f("proc.start_ts", "number", "Start time of the process, nanoseconds since the epoch"),
    _f("proc.is_exe_upper_layer", "bool",
       "True when the executable lives in the upper (writable) layer of an overlayfs"),
    _f("proc.is_exe_from_memfd", "bool", "True when the executable is a memfd (fileless)"),
    _f("proc.is_exe_writable", "bool", "True when the executable is writable by the process"),
    _f("proc.is_vpgid_leader", "bool", "True when the process leads its process group"),
    _f("proc.is_sid_leader", "bool", "True when the process leads its session"),
    _f("proc.exe_ino", "number", "Inode number of the executable"),
    _f("proc.exe_ino.ctime", "number", "Last status change time of the executable's inode"),
    _f("proc.exe_ino.mtime", "number", "Last modification time of the executable's inode"),
    _f("proc.exe_ino.ctime_duration_proc_start", "number",
       "Nanoseconds between the executable inode's ctime and the process start"),
    _f("proc.pvpid", "number", "Parent process id as seen from its pid namespace"),
    _f("proc.exeline", "string", "Full command line with the executable path"),
    _f("proc.loginshellid", "number", "Pid of the oldest shell ancestor (login shell)"),
    _f("proc.nthreads", "number", "Number of threads of the process"),
    _f("proc.ppid.duration", "number", "Nanoseconds since the parent process started"),
    _f("proc.is_container_healthcheck", "bool",
       "True when the process is a container healthcheck"),
    _f("proc.is_container_liveness_probe", "bool",
       "True when the process is a Kubernetes liveness probe"),
    _f("proc.is_container_readiness_probe", "bool",
       "True when the process is a Kubernetes readiness probe"),
    _f("proc.stdin.type", "string", "Type of the process's standard input (file, pipe...)"),
    _f("proc.stdout.type", "string", "Type of the process's standard output"),
    _f("proc.stderr.type", "string", "Type of the process's standard error"),
    _f("proc.stdin.name", "string", "Name of the process's standard input"),
    _f("proc.stdout.name", "string", "Name of the process's standard output"),
    _f("proc.stderr.name", "string", "Name of the process's standard error"),
    _f("proc.aname", "string",
       "Name of an ancestor: [1] parent, [2] grandparent...; without index, any ancestor",
       arg="index", ancestor_of="proc.name"),
    _f("proc.apid", "number", "Pid of an ancestor ([1] parent...); without index, any",
       arg="index", ancestor_of="proc.pid"),
    _f("proc.aexe", "string", "argv[0] of an ancestor ([1] parent...); without index, any",
       arg="index", ancestor_of="proc.exe"),
    _f("proc.aexepath", "path",
       "Executable path of an ancestor ([1] parent...); without index, any",
       arg="index", ancestor_of="proc.exepath"),
    _f("proc.acmdline", "string",
       "Command line of an ancestor ([1] parent...); without index, any",
       arg="index", ancestor_of="proc.cmdline"),
    # thread
    _f("thread.tid", "number", "Thread id"),
    _f("thread.vtid", "number", "Thread id as seen from its pid namespace"),
    _f("thread.cap_effective", "string", "Effective capabilities, as names separated by spaces"),
    _f("thread.cap_permitted", "string", "Permitted capabilities, as names separated by spaces"),
    _f("thread.cap_inheritable", "string", "Inheritable capabilities, as names"),
    _f("thread.ismain", "bool", "True for the main thread of a process"),
    _f("thread.cap_bounding", "string", "Bounding capability set, as names"),
    # user and group
    _f("user.uid", "number", "User id of the process"),
    _f("user.name", "string", "User name of the process"),
    _f("user.loginuid", "number", "Audit login uid of the process (-1 when unset)"),
    _f("user.loginname", "string", "Audit login user name of the process"),
    _f("user.homedir", "path", "Home directory of the user"),
    _f("user.shell", "path", "Login shell of the user"),
    _f("group.gid", "number", "Group id of the process"),
    _f("group.name", "string", "Group name of the process"),
    # file descriptors
    _f("fd.num", "number", "File descriptor number (-1 when the call failed)"),
    _f("fd.type", "string", "Descriptor type: file, directory, ipv4, ipv6, unix, pipe..."),
    _f("fd.typechar", "string", "Descriptor type as one letter: f file, 4 ipv4, 6 ipv6, u..."),
    _f("fd.name", "path", "Full name of the descriptor: file path or connection tuple"),
    _f("fd.nameraw", "path", "Descriptor name as passed to the syscall, not resolved"),
    _f("fd.directory", "path", "Directory of a file descriptor"),
    _f("fd.filename", "string", "File name of a file descriptor, without directory"),
    _f("fd.name_changed", "bool", "True when the descriptor's name changed (rename, etc.)"),
    _f("fd.ip", "ipaddr", "Client or server address of a connection (either matches)"),
    _f("fd.cip", "ipaddr", "Client address of a connection"),
    _f("fd.sip", "ipaddr", "Server address of a connection"),
    _f("fd.lip", "ipaddr", "Local address of a connection"),
    _f("fd.rip", "ipaddr", "Remote address of a connection"),
    _f("fd.net", "ipnet", "Client or server address, compared to networks (CIDR)"),
    _f("fd.cnet", "ipnet", "Client address, compared to networks (CIDR)"),
    _f("fd.snet", "ipnet", "Server address, compared to networks (CIDR)"),
    _f("fd.lnet", "ipnet", "Local address, compared to networks (CIDR)"),
    _f("fd.rnet", "ipnet", "Remote address, compared to networks (CIDR)"),
    _f("fd.port", "number", "Client or server port of a connection (either matches)"),
    _f("fd.cport", "number", "Client port of a connection"),
    _f("fd.sport", "number", "Server port of a connection"),
    _f("fd.lport", "number", "Local port of a connection"),
    _f("fd.rport", "number", "Remote port of a connection"),
    _f("fd.cip.name", "string", "Domain name of the client address"),
    _f("fd.sip.name", "string", "Domain name of the server address"),
    _f("fd.lip.name", "string", "Domain name of the local address"),
    _f("fd.rip.name", "string", "Domain name of the remote address"),
    _f("fd.l4proto", "string", "Transport protocol of a socket: tcp, udp, icmp, raw"),
    _f("fd.sockfamily", "string", "Socket family: ip or unix"),
    _f("fd.connected", "bool", "True when the socket is connected"),
    _f("fd.is_server", "bool", "True when the process is the server end of the connection"),
    _f("fd.types", "list", "Types of all descriptors of the process"),
    _f("fd.cproto", "string", "Client protocol name of a connection"),
    _f("fd.sproto", "string", "Server protocol name of a connection"),
    _f("fd.lproto", "string", "Local protocol name of a connection"),
    _f("fd.rproto", "string", "Remote protocol name of a connection"),
    _f("fd.uid", "string", "Unique identifier of the descriptor (pid and fd)"),
    _f("fd.ino", "number", "Inode number of the file"),
    _f("fd.dev", "number", "Device number of the file"),
    _f("fd.containername", "string", "Container id and fd name, joined"),
    _f("fd.containerdirectory", "string", "Container id and fd directory, joined"),
    _f("fd.is_upper_layer", "bool", "True when the file is in an overlayfs upper layer"),
    _f("fd.is_lower_layer", "bool", "True when the file is in an overlayfs lower layer"),
    _f("fs.path.name", "path", "Path of a filesystem operation (unlink, mkdir, rename...)"),
    _f("fs.path.nameraw", "path", "Path of a filesystem operation, as passed"),
    _f("fs.path.source", "path", "Source path of a rename/link operation"),
    _f("fs.path.sourceraw", "path", "Source path of a rename/link operation, as passed"),
    _f("fs.path.target", "path", "Target path of a rename/link operation"),
    _f("fs.path.targetraw", "path", "Target path of a rename/link operation, as passed"),
    # containers (the container plugin's fields)
    _f("container.id", "string", "Container id (12 characters), or 'host'"),
    _f("container.full_id", "string", "Full container id"),
    _f("container.name", "string", "Container name"),
    _f("container.image", "string", "Container image, with tag"),
    _f("container.image.id", "string", "Container image id"),
    _f("container.image.repository", "string", "Container image repository"),
    _f("container.image.tag", "string", "Container image tag"),
    _f("container.image.digest", "string", "Container image digest"),
    _f("container.type", "string", "Container runtime: docker, containerd, cri-o, podman..."),
    _f("container.privileged", "bool", "True for a privileged container"),
    _f("container.mounts", "string", "All container mounts, as one string"),
    _f("container.mount.dest", "string",
       "Destination of the container mount whose source matches [PATTERN], or N/A",
       arg="key", arg_required=True),
    _f("container.mount.source", "string",
       "Source of the container mount whose destination matches [PATTERN], or N/A",
       arg="key", arg_required=True),
    _f("container.user", "string", "User the container runs as"),
    _f("container.ip", "string", "Main IP address of the container"),
    _f("container.cni.json", "string", "CNI result of the container, as JSON"),
    _f("container.host_pid", "bool", "True when the container shares the host pid namespace"),
    _f("container.host_network", "bool",
       "True when the container shares the host network namespace"),
    _f("container.host_ipc", "bool", "True when the container shares the host ipc namespace"),
    _f("container.healthcheck", "string", "Healthcheck command of the container"),
    _f("container.liveness_probe", "string", "Liveness probe command of the container"),
    _f("container.readiness_probe", "string", "Readiness probe command of the container"),
    _f("container.label", "string", "A container label ([NAME])", arg="key",
       arg_required=True),
    _f("container.labels", "string", "All container labels"),
    _f("container.start_ts", "number", "Container start time, nanoseconds since the epoch"),
    _f("container.duration", "number", "Nanoseconds since the container started"),
    _f("container.info", "string", "Deprecated: removed from outputs with a warning"),
    # kubernetes (from container labels)
    _f("k8s.ns.name", "string", "Kubernetes namespace of the pod"),
    _f("k8s.pod.name", "string", "Kubernetes pod name"),
    _f("k8s.pod.uid", "string", "Kubernetes pod uid"),
    _f("k8s.pod.id", "string", "Kubernetes pod uid (legacy name)"),
    _f("k8s.pod.label", "string", "A Kubernetes pod label ([NAME])", arg="key",
       arg_required=True),
    _f("k8s.pod.labels", "string", "All Kubernetes pod labels"),
    _f("k8s.container.name", "string", "Kubernetes container name"),
    _f("k8s.pod.ip", "string", "Kubernetes pod IP address"),
    _f("k8s.pod.cni.json", "string", "CNI result of the pod, as JSON"),
    _f("k8s.pod.full_sandbox_id", "string", "Full id of the pod sandbox"),
    _f("k8s.pod.sandbox_id", "string", "Id of the pod sandbox (12 characters)"),
]

REGISTRY: dict[str, FieldSpec] = {f.name: f for f in _FIELDS}

# Dynamic families: "evt.arg.flags" is evt.arg with argument "flags".
_FAMILIES = ("evt.arg.", "evt.rawarg.")

# Fields whose values libsinsp never extracts for the deprecated ka.*/jevt.* sources are not
# registered: rules using them fail with "unknown field", as Falco does without the plugin.


def lookup(name: str) -> FieldSpec | None:
    """The spec of a field name (without argument), or None when unknown."""
    spec = REGISTRY.get(name)
    if spec is not None:
        return spec
    for prefix in _FAMILIES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return REGISTRY[prefix[:-1]]
    return None


def check(name: str, arg: str | None) -> str | None:
    """Why `name[arg]` is not a valid field reference, or None when it is."""
    spec = lookup(name)
    if spec is None:
        return (f"nonexistent field '{name}': not a field enforcer knows (run "
                "`enforcer fields` for the list)")
    family = name != spec.name
    if family and arg is not None:
        return f"field '{name}' does not support an argument"
    if arg is None and spec.arg_required and not family:
        return f"field '{name}' requires an argument"
    if arg is not None and spec.arg is None:
        return f"field '{name}' does not support an argument"
    if arg is not None and spec.arg == "index" and not arg.isdigit():
        return f"field '{name}' needs a numeric index, not '{arg}'"
    return None


def all_fields() -> list[FieldSpec]:
    """Every registered field, in registry order."""
    return list(_FIELDS)
