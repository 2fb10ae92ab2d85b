"""A syscall's result as Falco prints it (`evt.res`): shared by the decoder of kernel records
(enforcer.sources.decode) and the rules' partial evaluation (enforcer.kernel.residue),
which must agree on it, without either importing the other's layer."""

from __future__ import annotations

import errno


def errno_text(ret: int) -> str:
    """evt.res: `SUCCESS`, the errno name (`ENOENT`), or the number for non-errors."""
    if ret >= 0:
        return "SUCCESS" if ret == 0 else str(ret)
    return errno.errorcode.get(-ret, str(ret))
