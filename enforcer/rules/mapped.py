"""Condition text that remembers where each character came from.

Conditions are assembled from several YAML scalars (appends, exceptions) and rewritten by
Falco's textual list substitution; `MappedText` carries, for every character, the scalar
and offset it came from, so a parse error deep in an assembled condition is still reported
at the right FILE:LINE:COL.
"""

from __future__ import annotations

from dataclasses import dataclass

from enforcer.rules.yamlsource import Where


@dataclass
class MappedText:
    text: str
    origins: list[tuple[Where | None, int]]

    @classmethod
    def of(cls, text: str, where: Where | None) -> MappedText:
        return cls(text, [(where, i) for i in range(len(text))])

    @classmethod
    def synthetic(cls, text: str, where: Where | None, offset: int = 0) -> MappedText:
        """Text that was generated, attributed to one point of a source."""
        return cls(text, [(where, offset)] * len(text))

    def __add__(self, other: MappedText) -> MappedText:
        return MappedText(self.text + other.text, self.origins + other.origins)

    def add(self, text: str) -> MappedText:
        """Append generated text, attributed to the last character's origin."""
        origin = self.origins[-1] if self.origins else (None, 0)
        return self + MappedText(text, [origin] * len(text))

    def prefix(self, text: str) -> MappedText:
        origin = self.origins[0] if self.origins else (None, 0)
        return MappedText(text, [origin] * len(text)) + self

    def replace(self, start: int, end: int, new: str, at: int | None = None) -> MappedText:
        """Replace text[start:end] by `new`, attributed to the origin of character `at`."""
        at = start if at is None else at
        origin = self.origins[at] if at < len(self.origins) else (
            self.origins[-1] if self.origins else (None, 0))
        return MappedText(self.text[:start] + new + self.text[end:],
                          self.origins[:start] + [origin] * len(new) + self.origins[end:])

    def locate(self, offset: int) -> tuple[str, int, int] | None:
        """(file, line, column) of a character offset, when known."""
        if not self.origins:
            return None
        offset = max(0, min(offset, len(self.origins) - 1))
        where, pos = self.origins[offset]
        if where is None:
            return None
        line, col = where.locate(pos)
        return where.file, line, col
