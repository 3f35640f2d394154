"""Text normalisation, applied identically at training, evaluation and prediction time.

Besides the corpus form (lowercase, ``<user>``, ``<<url>>``, whitespace) four tweet-aware
options, off unless switched on (``data.normalize.*``; a bundle saved before they existed
loads with them off):

- ``repeats``: a letter written 3+ times in a row is cut to 2 ("siiiii" → "sii");
- ``laughter``: jajaja / jejeje / jsjs / hahaha / lol / xd … → ``<laugh>``;
- ``emoji``: each emoji → a token named after it (😂 → ``<emoji_face_with_tears_of_joy>``,
  🇲🇽 → ``<emoji_flag_mx>``); variation selectors, joiners and skin tones are dropped;
- ``hashtags``: "#NoMásViolencia" → "<hashtag> no más violencia" (CamelCase and digits split).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Mapping

USER_TOKEN = "<user>"
URL_TOKEN = "<<url>>"
LAUGH_TOKEN = "<laugh>"
HASHTAG_TOKEN = "<hashtag>"
EMOJI_PREFIX = "emoji_"

_HANDLE = re.compile(r"(?<![\w@])@\w{1,30}")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
_REPEAT = re.compile(r"([^\W\d_])\1{2,}")
_WORD = re.compile(r"(?<![\w<])[^\W\d_]+(?![\w>])")
_VOWELS = "aeiouáéíóú"
_LAUGH_J = re.compile(rf"[{_VOWELS}]*j[js{_VOWELS}]*")   # jaja, ajaja, jajsjs, jsjs (≥ 2 j, checked below)
_LAUGH_H = re.compile(rf"[{_VOWELS}]*h[h{_VOWELS}]*")    # haha, jeje's English cousin hehe (≥ 2 h)
_LAUGH_OTHER = re.compile(r"l+o+l+(?:o+l+)*|lmf?a+o+|x+d+|rofl")
_HASHTAG = re.compile(r"(?<![\w#])#(\w+)")
_CAMEL = re.compile(r"[A-ZÁÉÍÓÚÑÜ]+(?![a-záéíóúñü])|[A-ZÁÉÍÓÚÑÜ]?[a-záéíóúñü]+|\d+|[^\W\d_]+")
# Emoji blocks (no © ® ° or other symbols); modifiers that only shape the emoji before them are dropped.
_EMOJI = re.compile("[\U0001F1E6-\U0001F1FF]{2}|[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF"
                    "\u231A\u231B\u23E9-\u23FA]")
_EMOJI_JUNK = re.compile("[\uFE0E\uFE0F\u200D\u20E3\U0001F3FB-\U0001F3FF]")
_NOT_WORD = re.compile(r"[^0-9a-z]+")


def is_laughter(word: str) -> bool:
    """Whether one word (letters only) is a laugh: jaja, jejeje, jajsjs, jsjs, hahaha, lol, lmao, xd…"""
    w = word.lower()
    if len(w) < 3 and w != "xd":
        return False
    if _LAUGH_J.fullmatch(w):
        return w.count("j") >= 2 and w.strip("j") != ""
    if _LAUGH_H.fullmatch(w):
        return w.count("h") >= 2 and any(c in _VOWELS for c in w)
    return bool(_LAUGH_OTHER.fullmatch(w))


def emoji_token(emoji: str) -> str:
    """``<emoji_<unicode name>>`` for one emoji (a pair of regional indicators: ``<emoji_flag_xx>``)."""
    if len(emoji) == 2:
        letters = "".join(chr(ord(c) - 0x1F1E6 + ord("a")) for c in emoji)
        return f"<{EMOJI_PREFIX}flag_{letters}>"
    name = unicodedata.name(emoji, f"u{ord(emoji):x}").lower()
    return f"<{EMOJI_PREFIX}{_NOT_WORD.sub('_', name).strip('_')}>"


def split_hashtag(match: re.Match[str]) -> str:
    """"#NoMásViolencia" → " <hashtag> NoMásViolencia-split " (lowercasing, if on, comes after)."""
    words = _CAMEL.findall(match.group(1)) or [match.group(1)]
    return f" {HASHTAG_TOKEN} {' '.join(words)} "


@dataclass(frozen=True)
class Normalizer:
    """Lowercase, ``@handle`` → ``<user>``, links → ``<<url>>``, collapse whitespace; optionally
    the tweet-aware ``repeats``, ``laughter``, ``emoji`` and ``hashtags`` (module docstring).

    MEX-A3T is already in the corpus form (lowercased, ``<user>``, ``<<url>>``); raw tweets from
    elsewhere are brought to it so vocabularies match. The new options default to off here so that
    ``Normalizer(**old_bundle_dict)`` keeps the behaviour the bundle was trained with; the
    project's defaults live in ``conf/data/*.yaml``.
    """

    lowercase: bool = True
    users: bool = True
    urls: bool = True
    whitespace: bool = True
    repeats: bool = False
    laughter: bool = False
    emoji: bool = False
    hashtags: bool = False

    def __call__(self, text: str) -> str:
        if self.urls:
            text = _URL.sub(URL_TOKEN, text)
        if self.users:
            text = _HANDLE.sub(USER_TOKEN, text)
        if self.hashtags:  # before lowercasing: the CamelCase is what splits the words
            text = _HASHTAG.sub(split_hashtag, text)
        if self.emoji:
            text = _EMOJI.sub(lambda m: f" {emoji_token(m.group(0))} ", _EMOJI_JUNK.sub("", text))
        if self.lowercase:
            text = text.lower()
        if self.repeats:
            text = _REPEAT.sub(r"\1\1", text)
        if self.laughter:
            text = _WORD.sub(lambda m: LAUGH_TOKEN if is_laughter(m.group(0)) else m.group(0), text)
        if self.whitespace:
            text = _SPACE.sub(" ", text).strip()
        return text

    def many(self, texts: Iterable[str]) -> list[str]:
        return [self(t) for t in texts]

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> "Normalizer":
        """From ``to_dict()`` output or a ``data.normalize`` config; missing options are off (old bundles),
        unknown ones fail."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"data.normalize: unknown option(s) {unknown}; known: {sorted(known)}.")
        return cls(**{k: bool(v) for k, v in options.items()})
