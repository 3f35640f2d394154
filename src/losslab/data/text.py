"""Text normalisation, applied identically at training, evaluation and prediction time."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Iterable

USER_TOKEN = "<user>"
URL_TOKEN = "<<url>>"

_HANDLE = re.compile(r"(?<![\w@])@\w{1,30}")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Normalizer:
    """Lowercase, ``@handle`` → ``<user>``, links → ``<<url>>``, collapse whitespace.

    MEX-A3T is already in this form (lowercased, ``<user>``, ``<<url>>``); raw tweets from
    elsewhere are brought to it so vocabularies match.
    """

    lowercase: bool = True
    users: bool = True
    urls: bool = True
    whitespace: bool = True

    def __call__(self, text: str) -> str:
        if self.urls:
            text = _URL.sub(URL_TOKEN, text)
        if self.users:
            text = _HANDLE.sub(USER_TOKEN, text)
        if self.lowercase:
            text = text.lower()
        if self.whitespace:
            text = _SPACE.sub(" ", text).strip()
        return text

    def many(self, texts: Iterable[str]) -> list[str]:
        return [self(t) for t in texts]

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)
