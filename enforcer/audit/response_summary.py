"""The stop summary's responses block, in the style of Falco's own summary:

    Responses by action and outcome:
       kill: 3 (done: 2, failed: 1)
       label_pod: 5 (dry-run: 5)
    Response decisions: 8 (act: 6, rate-limited: 2)
    Matches not answered (responder queue full): 0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _breakdown(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{outcome}: {n}" for outcome, n in sorted(counts.items()))


def format_response_summary(stats: Mapping[str, Any]) -> str:
    """Format `Responder.stats()` (`{"actions": {action: {outcome: n}}, "decisions":
    {outcome: n}, "dropped": n, "suspended": [policy]}`) as lines ending in a newline."""
    actions: Mapping[str, Mapping[str, int]] = stats.get("actions", {}) or {}
    decisions: Mapping[str, int] = stats.get("decisions", {}) or {}
    lines = ["Responses by action and outcome:"]
    for action in sorted(actions):
        outcomes = actions[action]
        lines.append(f"   {action}: {sum(outcomes.values())} ({_breakdown(outcomes)})")
    if decisions:
        lines.append(f"Response decisions: {sum(decisions.values())} "
                     f"({_breakdown(decisions)})")
    lines.append(f"Matches not answered (responder queue full): {stats.get('dropped', 0)}")
    if stats.get("suspended"):
        lines.append("Policies suspended for new workloads (blast radius): "
                     + ", ".join(stats["suspended"]))
    return "\n".join(lines) + "\n"
