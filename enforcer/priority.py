"""Falco's priorities, most severe first, with its spellings and comparisons."""

from __future__ import annotations

import enum


class Priority(enum.IntEnum):
    """Lower value = more severe, as in Falco (EMERGENCY=0 … DEBUG=7)."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFORMATIONAL = 6
    DEBUG = 7

    @property
    def display(self) -> str:
        """Falco's display word: Emergency, …, Informational, Debug."""
        return self.name.capitalize()

    def at_least(self, minimum: Priority) -> bool:
        """True when this priority is as severe as `minimum` or more."""
        return self.value <= minimum.value

    @classmethod
    def parse(cls, text: str) -> Priority:
        """Case-insensitive; accepts `Info` for Informational. Raises ValueError."""
        word = str(text).strip().upper()
        if word == "INFO":
            word = "INFORMATIONAL"
        try:
            return cls[word]
        except KeyError:
            names = ", ".join(p.display for p in cls)
            raise ValueError(f"Invalid priority {text!r}: expected one of {names}") from None
