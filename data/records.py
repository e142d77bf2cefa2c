"""The small records the data layer passes around."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    path: str
    label: int
    split: str | None  # train / val / test; None until assigned (flat layout)
    sha256: str = ""
    encoding: str = ""  # text files: the codec to read them with


@dataclass(frozen=True)
class SkippedFile:
    path: str
    reason: str


@dataclass(frozen=True)
class ConvertedFile:
    path: str
    notes: tuple[str, ...]
