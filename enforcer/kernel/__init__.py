"""The kernel side of detection and response, kept apart from the probes that load it: the
open filter and the failed-syscall filter derived from the rules, the rules' residues on a
process's fixed fields, the per-process detection masks and the in-kernel kill's tables
built from those residues, their arming per process, and whether attached probes still
cover a reloaded rule set. Pure Python except arming and the masks, which drive the loaded
maps through enforcer.adapters."""
