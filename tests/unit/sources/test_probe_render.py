"""render() is pure: the exact C text for a configuration."""

from __future__ import annotations

import pytest

from enforcer.sources import ebpf
from enforcer.sources import syscalls as sc
from enforcer.sources.ebpf import EbpfSource, plan, registers_at_exit_supported
from enforcer.sources.probe import ProbeConfig, lpm_key, render, wakeup_every


def test_render_fills_every_placeholder() -> None:
    text = render(ProbeConfig(agent_tgid=4242, open_prefixes={"/etc/": 7}))
    for placeholder in ("HANDLERS", "AGENT_TGID_VALUE", "OPEN_FILTER_ENABLED",
                        "RINGBUF_PAGES", "LPM_DATA_SIZE", "EV_FORK", "MAX_ARGV"):
        assert placeholder not in text
    assert "#define AGENT_TGID 4242" in text
    assert "#define OPEN_FILTER 1" in text


def test_render_only_the_selected_syscalls() -> None:
    text = render(ProbeConfig(syscalls=("openat", "execve")))
    assert "sys_enter_openat" in text and "sys_exit_openat" in text
    assert "sys_enter_execve)" in text
    assert "sys_enter_connect" not in text
    assert "sched_process_fork" in text and "sched_process_exit" in text
    assert "#define OPEN_FILTER 0" in text


def test_render_rejects_unknown_syscalls() -> None:
    with pytest.raises(ValueError, match="nosuchcall"):
        render(ProbeConfig(syscalls=("nosuchcall",)))


def test_exec_is_keyed_by_process_and_drops_failures() -> None:
    text = render(ProbeConfig(syscalls=("execve",)))
    assert "stash_it(e, EXEC_KEY(e->tgid))" in text
    assert "if (args->ret != 0)" in text


def test_plan_attaches_what_rules_need_plus_lifecycle() -> None:
    available = frozenset(s.name for s in sc.SYSCALLS) - {"init_module"}
    cfg, att = plan(frozenset({"openat", "init_module", "connect"}), available, ProbeConfig())
    assert set(cfg.syscalls) == ({"openat", "connect", "execve", "execveat", "chdir", "fchdir"}
                                 | sc.FD_STATE)
    assert att.missing == ("init_module",)
    # the descriptor table's syscalls no rule asks for: reduced in the kernel
    assert set(cfg.state_only) == sc.FD_STATE - {"connect"}
    cfg, _ = plan(None, available, ProbeConfig())
    assert len(cfg.syscalls) == len(available)


def test_lpm_key_exact_paths_keep_their_nul() -> None:
    bits, data = lpm_key("/etc/shadow\0")
    assert bits == 12 * 8 and data.startswith(b"/etc/shadow\0")
    bits, _ = lpm_key("/etc/")
    assert bits == 40


def test_relative_opens_pass_for_every_class_some_prefix_wants() -> None:
    text = render(ProbeConfig(open_prefixes={"/etc/": 0x00AA, "/var/log/": 0xC000},
                              open_suffixes={"/cron": 0x0C00}))
    assert "#define PREFIX_CLASSES 0xc0aa" in text
    assert "#define SUFFIX_CLASSES 0xc00" in text


def test_the_trie_is_only_consulted_for_second_bytes_of_some_prefix() -> None:
    text = render(ProbeConfig(open_prefixes={"/etc/": 1, "/var/log/": 2, "/etc/shadow\0": 1}))
    e_and_v = (1 << (ord("e") - 64)) | (1 << (ord("v") - 64))
    assert f"c < 128 ? {hex(e_and_v)}ULL" in text
    assert "c < 64 ? 0x0ULL" in text and "PREFIX_BYTE1" not in text
    everything = render(ProbeConfig(open_prefixes={"": 1}))
    assert f"c < 64 ? {hex(2**64 - 1)}ULL" in everything


def test_wakeups_are_batched_only_when_the_ring_buffer_has_room_for_it() -> None:
    from enforcer.sources.ebpf import EbpfSource  # noqa: PLC0415

    assert wakeup_every(ProbeConfig()) == 1  # default: the kernel's adaptive wake-up
    assert EbpfSource(ProbeConfig()).max_wait_ms is None
    big = ProbeConfig(wakeup_every=64)  # 16 MiB
    assert wakeup_every(big) == 64
    assert "#define WAKEUP_EVERY 64" in render(big)
    assert EbpfSource(big).max_wait_ms == 10
    small = ProbeConfig(ringbuf_pages=16, wakeup_every=64)  # 64 KiB: some 30 records
    assert wakeup_every(small) == 2
    assert "#define WAKEUP_EVERY 2" in render(small)
    tiny = ProbeConfig(ringbuf_pages=8, wakeup_every=64)
    assert wakeup_every(tiny) == 1 and EbpfSource(tiny).max_wait_ms is None


def test_syscalls_read_their_arguments_at_exit_by_default() -> None:
    text = render(ProbeConfig(syscalls=("openat", "openat2", "creat", "connect")))
    # the exit-only form: the register each argument sits in (x86_64/arm64 syscall ABI)
    assert "#define AT_EXIT_WANTED" not in text and "#if 1 && (defined" in text
    openat = text[text.index("#if ARGS_AT_EXIT"):]
    openat = openat[:openat.index("#endif")]
    at_exit, pair = openat.split("#else")
    assert "sys_enter_openat" not in at_exit and "sys_enter_openat)" in pair
    assert "read_path1(e, (const char *)syscall_arg(regs, 1));" in at_exit
    assert "long flags = (long)syscall_arg(regs, 2);" in at_exit
    assert "e->a[0] = (s64)syscall_arg(regs, 0);" in at_exit  # dfd
    assert "e->a[2] = (s64)syscall_arg(regs, 3);" in at_exit  # mode
    assert "emit_result(e, args->ret);" in at_exit
    how = text[text.index("sys_exit_openat2"):]
    assert "(const void *)syscall_arg(regs, 2));" in how[:how.index("}")]
    creat = text[text.index("sys_exit_creat"):]
    assert "read_path1(e, (const char *)syscall_arg(regs, 0));" in creat[:creat.index("}")]
    # connect too, with its address read from the registers' pointer and length
    connect = text[text.index("sys_exit_connect"):]
    connect = connect[:connect.index("\n}\n")]  # the handler's own closing brace
    assert ("read_saddr(e, (const void *)syscall_arg(regs, 1), (long)syscall_arg(regs, 2));"
            in connect)
    assert text.count("#if ARGS_AT_EXIT") == 4 and "sys_enter_connect)" in text


def test_exec_keeps_its_pair_whatever_the_setting() -> None:
    text = render(ProbeConfig(syscalls=("execve", "sendto"), sends_need_address=True))
    assert text.count("#if ARGS_AT_EXIT") == 1  # sendto's
    assert "TRACEPOINT_PROBE(syscalls, sys_enter_execve)" in text
    execve = text[text.index("sys_enter_execve"):]
    assert "#else" not in execve[:execve.index("sys_exit_execve")]
    sendto = text[text.index("sys_exit_sendto"):]
    assert "if (1 && e->saddr_len == 0)" in sendto[:sendto.index("\n}\n")]


def test_the_pairs_when_asked() -> None:
    text = render(ProbeConfig(syscalls=("openat",), args_at_exit=False))
    assert "#if 0 && (defined" in text


def test_registers_at_exit_need_linux_5_15_and_btf(tmp_path) -> None:
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"")
    assert registers_at_exit_supported("6.18.44-fc", str(btf))
    assert registers_at_exit_supported("5.15.0-91-generic", str(btf))
    assert not registers_at_exit_supported("5.14.21", str(btf))
    assert not registers_at_exit_supported("6.1.0", str(tmp_path / "absent"))
    assert not registers_at_exit_supported("garbage", str(btf))


def test_a_kernel_refusing_the_exit_only_handlers_gets_the_pair(monkeypatch) -> None:
    from enforcer.adapters import bcc_probe  # noqa: PLC0415
    from enforcer.errors import ProbeError  # noqa: PLC0415

    loaded: list[str] = []

    class Refusing:
        warnings: list[str] = []

        def __init__(self, text: str):
            loaded.append(text)
            if "#if 1 && (defined" in text:
                raise ProbeError("could not load the eBPF probes: invalid func unknown#166",
                                 bcc_probe.EXIT_COMPILE)

    monkeypatch.setattr(bcc_probe, "BccProbe", Refusing)
    monkeypatch.setattr(ebpf, "registers_at_exit_supported", lambda: True)
    source = EbpfSource(ProbeConfig(syscalls=("openat",)))
    source.open()
    assert len(loaded) == 2 and "#if 0 && (defined" in loaded[1]
    assert source.config.args_at_exit is False
    assert any("refused reading their arguments at exit" in w for w in source.warnings)


def test_other_load_failures_are_not_retried(monkeypatch) -> None:
    from enforcer.adapters import bcc_probe  # noqa: PLC0415
    from enforcer.errors import ProbeError  # noqa: PLC0415

    calls = []

    def refuse(text: str) -> None:
        calls.append(text)
        raise ProbeError("tracefs is not mounted", bcc_probe.EXIT_NO_TRACEFS)

    monkeypatch.setattr(bcc_probe, "BccProbe", refuse)
    monkeypatch.setattr(ebpf, "registers_at_exit_supported", lambda: True)
    with pytest.raises(ProbeError, match="tracefs"):
        EbpfSource(ProbeConfig(syscalls=("openat",))).open()
    assert len(calls) == 1
