"""`enforcer probes render`: the exact BPF C the agent would load for the given rules, and
(on stderr) the in-kernel open filter derived from them."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace

from enforcer.cli.rules_args import add_rules_option, load_or_report, rules_paths


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probes", help="inspect the eBPF probes")
    psub = p.add_subparsers(dest="probes_command", metavar="SUBCOMMAND")
    rp = psub.add_parser("render", help="print the BPF C the agent would load")
    add_rules_option(rp)
    rp.add_argument("--all-syscalls", action="store_true",
                    help="every syscall the source knows, not only what the rules need")
    rp.add_argument("--agent-pid", type=int, default=0,
                    help="pid whose events the kernel drops (the agent's own; default 0)")
    rp.add_argument("--no-kernel-filter", action="store_true",
                    help="render without the in-kernel open filter")
    rp.set_defaults(func=run_render)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_render(args: argparse.Namespace) -> int:
    from enforcer.kernel.results_filter import with_rule_filters  # noqa: PLC0415
    from enforcer.rules.engine import Engine  # noqa: PLC0415
    from enforcer.sources import syscalls as sc  # noqa: PLC0415
    from enforcer.sources.ebpf import plan  # noqa: PLC0415
    from enforcer.sources.probe import ProbeConfig, render  # noqa: PLC0415

    loaded = load_or_report("probes render", rules_paths(args))
    if isinstance(loaded, int):
        return loaded
    engine = Engine(loaded)
    base = ProbeConfig(agent_tgid=args.agent_pid)
    if not args.no_kernel_filter:
        base = with_rule_filters(base, engine.rules)
    known = frozenset(s.name for s in sc.SYSCALLS)
    types = None if args.all_syscalls else engine.event_types()
    # rendering does not need a kernel: tracepoint availability is checked at load time
    if os.path.isdir("/sys/kernel/tracing/events/syscalls"):
        from enforcer.sources.ebpf import available_syscalls  # noqa: PLC0415

        known = available_syscalls()
    config, attachment = plan(types, known, base)
    # as EbpfSource.open does: the socket reads at this kernel's offsets, when it has BTF
    from enforcer.sources.kernel_btf import running_kernel_offsets  # noqa: PLC0415

    config = replace(config, sock_offsets=running_kernel_offsets())
    sys.stdout.write(render(config))
    if attachment.missing:
        print(f"// not on this kernel: {', '.join(attachment.missing)}", file=sys.stderr)
    prefixes = config.open_prefixes
    if prefixes is None:
        print("// open filter: off (some rule may match any open)", file=sys.stderr)
    else:
        print(f"// open filter: {len(prefixes)} entries in open_prefixes", file=sys.stderr)
        for prefix, mask in sorted(prefixes.items()):
            shown = prefix[:-1] + " (exact)" if prefix.endswith("\0") else (prefix or "(any)")
            print(f"//   {shown}: classes 0x{mask:04x}", file=sys.stderr)
        for suffix, mask in sorted(config.open_suffixes.items()):
            print(f"//   ...{suffix} (suffix): classes 0x{mask:04x}", file=sys.stderr)
    print("// for the fd table only (no rule asks; only records that change it cross): "
          f"{', '.join(config.state_only) or 'none'}", file=sys.stderr)
    dropped = [n for n in config.failures_dropped
               if n in config.syscalls and n not in config.state_only]
    print(f"// failed calls dropped (no rule matches them): {', '.join(dropped) or 'none'}",
          file=sys.stderr)
    return 0
