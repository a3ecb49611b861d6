"""PII detection and redaction for text bound for an LLM provider, a log line or a metric label.

Pure functions, no I/O and no state shared between calls: safe in workflow code, activities
and log processors alike.

Kinds detected (``PiiKind``):

- ``email``: practical RFC 5322 subset, ``local@domain.tld``; the local part uses
  ``A-Z a-z 0-9 . _ % + -``, the domain needs at least one dot and an alphabetic TLD of two or
  more letters. Domains whose "TLD" is a common file extension (``logo@2x.png``) are ignored.
- ``phone``: international forms with a ``+`` or ``00`` prefix (``+44 20 7946 0958``,
  ``+1 (415) 555-0100``, ``0044 20 7946 0958``, ``+14155550100``), NANP national forms
  (``(415) 555-0132``, ``415-555-0199``, ``1-800-555-0199``; area code and exchange must start
  with 2-9), trunk-prefixed national forms (``020 7946 0958``, ``07700 900123``,
  ``01 23 45 67 89``) and bare digit runs right after a label such as ``Phone:``/``Tel:``.
  9 to 15 digits (ITU-T Recommendation E.164: an international number has at most 15
  digits). Separators are one space, dot or dash, or parentheses. Bare digit runs without a
  label or ``+`` are *not* phones (they are far more often order numbers, epoch timestamps or
  IDs); neither is a ``00`` form with no separator (``00123456789`` is usually a zero-padded
  ID), nor a ``0``/``00`` form in groups of 4 digits with one more group of 4 beside it
  (``0418 4502 0005`` in the IBAN ``ES91 2100 0418 4502 0005 1332``).
- ``ssn``: US Social Security numbers ``123-45-6789`` / ``123 45 6789`` (or 9 bare digits
  right after ``SSN``/``Social Security number``), excluding numbers the SSA never issues:
  area 000, 666 and 900-999, group 00, serial 0000 (SSA, "Social Security Number
  Randomization", 2011: https://www.ssa.gov/employer/randomization.html).
- ``card``: payment-card numbers (PANs), 13-19 digits, unseparated or in 4-digit groups (also
  Amex 4-6-5 / Diners 4-6-4) separated by single spaces or dashes, which pass the Luhn check
  (the Luhn formula of ISO/IEC 7812-1, annex B) and start with an issuer identification
  number of a known network with a length that network issues (ISO/IEC 7812; table from
  Wikipedia, "Payment card number", https://en.wikipedia.org/wiki/Payment_card_number: Visa,
  Mastercard, Amex, Discover, JCB, Diners Club, UnionPay, Maestro, Mir, RuPay).
  A card is made of whole digit groups, so it is never cut out of a longer digit run; another
  number may come right before or after it, one space apart (``SSN 123-45-6789
  4111111111111111``, ``4242424242424242 5555555555554444``), except that a card in groups of
  4 takes at most one more group of 4 beside it (``qty 1234 4242 4242 4242 4242``): more make
  it part of a longer number grouped the same way, unless they are a card too.
- ``ip``: IPv4 dotted quads (each octet 0-255, no leading zeros, as ``ipaddress`` accepts them)
  and IPv6 addresses (validated with ``ipaddress.IPv6Address``; at least two non-empty groups
  and a decimal digit, so ``::``, ``x[::2]``, ``dead::beef`` are not flagged). All addresses are
  flagged, private and loopback ones included.

  Dotted quads that are version strings are **not** flagged when the context says so: a
  preceding version label (``v``, ``ver``, ``version``, ``release``, ``build``, ``firmware``,
  ``rev``, ``patch``, ``kernel``, ``update``: ``version 1.2.3.4``, ``v1.2.3.4``) or
  document-numbering label (``section``, ``table``, ``figure``, ``chapter``, ``clause``,
  ``step``, ``appendix``, ``OID``, ``§``), a ``product/`` prefix (``Chrome/120.0.0.0``), a
  suffix like ``-beta``, or being part of a longer dotted number (``1.2.3.4.5``). A bare
  ``1.2.3.4`` with no such context *is* flagged: it is a valid address, and redacting a
  version number costs less than leaking an address.

Numbers glued to letters or to other digits (``ORD-2024-000123``, ``#100234567``,
``INV2024415555019``, ``1.2.3.4.5``) are never matches; dates, times, ISO timestamps, UUIDs
and hashes do not have any of the shapes above. A number separated from the one before it by
a space is found whatever that one is (``order 2024 020 7946 0777``). When candidates
overlap, the ones that cover the most text win (see :func:`find_pii`).

Known limitations: names, postal addresses and other free-form PII are not detected; nor are
obfuscated e-mails (``jane at example dot com``), vanity numbers (``1-800-FLOWERS``),
unlabelled bare national numbers (``4155550100``) or unseparated SSNs without a label. An
international phone number directly followed by a short number after a space can absorb it
(``+44 20 7946 0958 12`` while it stays within 15 digits; not when that number starts another
match: ``+44 20 7946 0958 234 56 7890`` is a phone and an SSN), and ``+`` followed by digit
groups (``+100 200 300``) reads as a phone. A Luhn-valid 13-19 digit ID with a card network's
prefix is reported as a card. ``::1`` and other one-group IPv6 forms are not reported.

Policies (``PiiPolicy``), applied by :class:`Redactor`:

- ``off``: text unchanged (detection is skipped).
- ``redact``: each match replaced by ``[EMAIL]``, ``[PHONE]``, ``[SSN]``, ``[CARD]`` or ``[IP]``.
- ``mask``: a hint is kept: ``j***@example.com``, ``+44 *** *** 0958``, ``***-**-6789``,
  ``**** **** **** 4242``, ``192.168.*.*``, ``2001:db8:*:*:*:*:*:*``.
- ``placeholder``: reversible tokens ``<<EMAIL_1>>``, ``<<PHONE_2>>`` ... (the same value gets
  the same token); :func:`restore` puts the originals back. The mapping (token -> original)
  is returned to the caller and must stay in the worker: never log it or send it anywhere.
"""

from __future__ import annotations

import ipaddress
import re
import string
from bisect import bisect_right
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Final, get_args

from chorus.contracts.models import PiiKind, PiiPolicy

__all__ = [
    "ALL_KINDS",
    "PiiKind",
    "PiiMatch",
    "PiiPolicy",
    "Redacted",
    "Redactor",
    "find_pii",
    "luhn_valid",
    "restore",
    "scrub_for_logs",
]


ALL_KINDS: Final[tuple[PiiKind, ...]] = get_args(PiiKind)
"""Every kind, in the order used by reports: email, phone, ssn, card, ip."""
POLICIES: Final[tuple[PiiPolicy, ...]] = get_args(PiiPolicy)

_TAG: Final[dict[PiiKind, str]] = {
    "email": "EMAIL",
    "phone": "PHONE",
    "ssn": "SSN",
    "card": "CARD",
    "ip": "IP",
}
_KIND_OF_TAG: Final[dict[str, PiiKind]] = {tag: kind for kind, tag in _TAG.items()}
# Ties between overlapping candidates that cover as much text go to the more specific kind.
_RANK: Final[dict[PiiKind, int]] = {"email": 0, "card": 1, "ssn": 2, "ip": 3, "phone": 4}


@dataclass(frozen=True, slots=True)
class PiiMatch:
    """One detected item: ``text[start:end] == value``."""

    kind: PiiKind
    start: int
    end: int
    value: str


@dataclass(frozen=True, slots=True)
class Redacted:
    """The result of :meth:`Redactor.redact`.

    Attributes:
        text: The text with every match of the selected kinds replaced.
        counts: Matches replaced per kind (occurrences, not distinct values); kinds with no
            match are absent. Empty for policy ``off``.
        placeholders: Token -> original value, only for policy ``placeholder`` (includes the
            mapping passed in, if any). Keep it in the worker: it holds the PII.
    """

    text: str
    counts: dict[PiiKind, int] = field(default_factory=dict)
    placeholders: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Boundaries
# --------------------------------------------------------------------------------------------

_CURRENCY: Final = "$€£¥"


def _numeric_left_ok(text: str, start: int) -> bool:
    """Whether a number starting at ``start`` is not the tail of a longer token."""
    if start == 0:
        return True
    p = text[start - 1]
    if p.isalnum() or p == "_" or p == "#" or p in _CURRENCY:
        return False
    if start >= 2:
        pp = text[start - 2]
        if p in "-./:" and pp.isdigit():
            return False  # 2024-415..., 1.415..., 12:415...
        if p in "-/" and (pp.isalnum() or pp == "_"):
            return False  # ORD-..., path/...
    return True


def _numeric_right_ok(text: str, end: int) -> bool:
    """Whether a number ending at ``end`` is not the head of a longer token."""
    if end >= len(text):
        return True
    n = text[end]
    if n.isalnum() or n == "_":
        return False
    return not (n in "-./" and end + 1 < len(text) and text[end + 1].isdigit())


def _overlapping(regex: re.Pattern[str], text: str) -> Iterator[re.Match[str]]:
    """Matches of ``regex`` in ``text``, overlapping ones included.

    ``finditer`` resumes after the end of a match, so a match that turns out not to be a
    number (it starts inside one: ``2024 020 7946 0777`` matches ``024 020 7946`` first) or
    that borrows the last group of the number before (``555 0111 020 7946 0777`` matches
    ``0111 020 7946``) would hide the real one that overlaps it. Here the search resumes after
    the first digit run of each match instead: a start inside a digit run never passes
    :func:`_numeric_left_ok`, so skipping the rest of the run loses nothing and keeps the scan
    linear for patterns of bounded length. Overlaps are resolved later, in :func:`find_pii`.
    """
    pos = 0
    while (m := regex.search(text, pos)) is not None:
        yield m
        run = _DIGIT_RUN_RE.match(text, m.start())
        pos = run.end() if run is not None else m.start() + 1


# --------------------------------------------------------------------------------------------
# Email
# --------------------------------------------------------------------------------------------

_LOCAL_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-"
)
_EMAIL_DOMAIN_RE: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![A-Za-z0-9_-])"
)
# "TLDs" that are really file extensions (asset@2x.png, icon@3x.webp); none is an IANA TLD.
_FILE_EXTENSIONS: Final = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "tif", "tiff", "ico", "heic", "avif"}
)


def _find_emails(text: str) -> Iterable[PiiMatch]:
    at = text.find("@")
    while at != -1:
        start = at
        # Walk back over the local part (RFC 5321: at most 64 octets).
        while start > 0 and at - start < 64 and text[start - 1] in _LOCAL_CHARS:
            if text[start - 1] == "." and start >= 2 and text[start - 2] == ".":
                break  # ".." cannot be inside a local part: "see...jane@" starts at "jane"
            start -= 1
        too_long = at - start >= 64 and start > 0 and text[start - 1] in _LOCAL_CHARS
        while start < at and text[start] in ".-+":
            start += 1  # a local part does not start with a dot; "--" is punctuation
        m = _EMAIL_DOMAIN_RE.match(text, at + 1)
        if (
            start < at
            and not too_long
            and text[at - 1] != "."
            and m is not None
            and m.group(1).lower() not in _FILE_EXTENSIONS
        ):
            yield PiiMatch("email", start, m.end(), text[start : m.end()])
        at = text.find("@", at + 1)


# --------------------------------------------------------------------------------------------
# Phone
# --------------------------------------------------------------------------------------------

# At most 15 digit groups after the country code: E.164 numbers have at most 15 digits, so a
# longer match has no valid cut and the bound keeps the overlapping scan linear.
_INTL_PHONE_RE: Final = re.compile(
    r"(?:\+|00)[1-9]\d{0,3}(?:[ .\-]?\(\d{1,5}\))?(?:[ .\-]?\d{1,8}){0,15}+", re.ASCII
)
# NANP: area code and exchange start with 2-9. Two regexes with a plain first character are
# much faster to scan for than one starting with an optional "1-" trunk prefix.
_NANP_PHONE_RE: Final = re.compile(r"[2-9]\d\d[ .\-][2-9]\d\d[ .\-]\d{4}", re.ASCII)
_NANP_PAREN_PHONE_RE: Final = re.compile(r"\([2-9]\d\d\)[ .\-]?[2-9]\d\d[ .\-]\d{4}", re.ASCII)
_TRUNK_PHONE_RE: Final = re.compile(
    r"\(0[1-9]\d{0,3}\)[ \-]?\d{3,4}[ \-]?\d{3,4}"
    r"|0[1-9]\d{0,3}[ \-]\d{3,4}[ \-]?\d{3,4}"
    r"|0[1-9](?:([ .\-])\d\d)(?:\1\d\d){3}",
    re.ASCII,
)
_BARE_NUMBER_RE: Final = re.compile(r"\d{9,15}", re.ASCII)  # only after a label (Phone:, SSN:)
_PHONE_LABEL_RE: Final = re.compile(
    r"(?i)\b(?:tel|phone|mobile|cell|fax)(?:\s*(?:no\.?|number|#))?\s*[:.=]?\s*$"
)
_SSN_LABEL_RE: Final = re.compile(
    r"(?i)(?:\bssn|\bss#|\bsocial security(?:\s+(?:number|no\.?|#))?)\s*[:#=]?\s*$"
)
_DIGIT_RUN_RE: Final = re.compile(r"\d+", re.ASCII)
_GROUP_RE: Final = re.compile(r"[ .\-]?(?:\(\d+\)|\d+)", re.ASCII)


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


_FOURS_RE: Final = re.compile(r"\d{4}(?:[ \-]\d{4})+", re.ASCII)


def _amid_fours(text: str, start: int, end: int) -> bool:
    """Whether ``text[start:end]`` is in groups of 4 digits, with one more group of 4 beside it.

    Such a "phone" (``0418 4502 0005`` in ``ES91 2100 0418 4502 0005 1332``) is a piece of a
    longer number grouped in fours: an IBAN, a tracking or a card number. National formats
    are not 4-4-4.
    """
    if _FOURS_RE.fullmatch(text, start, end) is None:
        return False
    size = len(text)
    before = (
        start >= 5
        and text[start - 1] == " "
        and all("0" <= ch <= "9" for ch in text[start - 5 : start - 1])
        and (start == 5 or not text[start - 6].isdigit())
    )
    after = (
        end + 5 <= size
        and text[end] == " "
        and all("0" <= ch <= "9" for ch in text[end + 1 : end + 5])
        and (end + 5 == size or not text[end + 5].isdigit())
    )
    return before or after


def _find_phones(text: str) -> Iterable[PiiMatch]:
    if "+" in text or "00" in text:
        for m in _overlapping(_INTL_PHONE_RE, text):
            start, value = m.start(), m.group()
            if not _numeric_left_ok(text, start):
                continue
            prefix = 1 if value.startswith("+") else 2
            if prefix == 2 and not any(ch in " .-(" for ch in value):
                continue  # 00123456789 is far more often a zero-padded ID than a phone
            # Every prefix (cut between digit groups) with 9-15 digits (E.164) that ends on a
            # boundary: an unrelated number can follow a phone number. find_pii keeps the
            # longest one unless a shorter one leaves room for a match that follows
            # (+44 20 7946 0958 234 56 7890: the SSN, not a phone ending in 234).
            cuts: list[tuple[int, int]] = []  # (end of the prefix, its digits counted as E.164)
            n = 1 if prefix == 2 else 0
            for g in _GROUP_RE.finditer(value, prefix):
                n += len(_digits(g.group()))
                cuts.append((g.end(), n))
            for cut, n in reversed(cuts):
                if n < 9:
                    break
                candidate = value[:cut]
                if prefix == 2 and not any(ch in " .-(" for ch in candidate):
                    break  # as above, whatever follows it
                if (
                    n <= 15
                    and _numeric_right_ok(text, start + cut)
                    and candidate.count("(") == candidate.count(")")
                    and not (prefix == 2 and _amid_fours(text, start, start + cut))
                ):
                    yield PiiMatch("phone", start, start + cut, candidate)
    for regex in (_NANP_PHONE_RE, _NANP_PAREN_PHONE_RE):
        for m in _overlapping(regex, text):
            start = m.start()
            # A "1" trunk prefix: 1-800-555-0199, 1 (415) 555-0100.
            if start >= 2 and text[start - 2] == "1" and text[start - 1] in " .-":
                if _numeric_left_ok(text, start - 2):
                    start -= 2
            if _numeric_left_ok(text, start) and _numeric_right_ok(text, m.end()):
                yield PiiMatch("phone", start, m.end(), text[start : m.end()])
    for m in _overlapping(_TRUNK_PHONE_RE, text):
        if not (_numeric_left_ok(text, m.start()) and _numeric_right_ok(text, m.end())):
            continue
        n = len(_digits(m.group()))
        if 9 <= n <= 15 and not _amid_fours(text, m.start(), m.end()):
            yield PiiMatch("phone", m.start(), m.end(), m.group())


def _find_labelled(text: str) -> Iterable[PiiMatch]:
    """Bare digit runs right after a ``Phone:``/``Tel:`` or ``SSN:`` label."""
    for m in _BARE_NUMBER_RE.finditer(text):
        start, end = m.start(), m.end()
        if not (_numeric_left_ok(text, start) and _numeric_right_ok(text, end)):
            continue
        value = m.group()
        if _PHONE_LABEL_RE.search(text, max(0, start - 24), start):
            yield PiiMatch("phone", start, end, value)
        elif (
            len(value) == 9
            and _ssn_valid(value[:3], value[3:5], value[5:])
            and _SSN_LABEL_RE.search(text, max(0, start - 32), start)
        ):
            yield PiiMatch("ssn", start, end, value)


# --------------------------------------------------------------------------------------------
# SSN
# --------------------------------------------------------------------------------------------

_SSN_RE: Final = re.compile(r"(\d{3})([- ])(\d{2})\2(\d{4})", re.ASCII)


def _ssn_valid(area: str, group: str, serial: str) -> bool:
    """SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _find_ssns(text: str) -> Iterable[PiiMatch]:
    for m in _overlapping(_SSN_RE, text):
        if (
            _ssn_valid(m.group(1), m.group(3), m.group(4))
            and _numeric_left_ok(text, m.start())
            and _numeric_right_ok(text, m.end())
        ):
            yield PiiMatch("ssn", m.start(), m.end(), m.group())


# --------------------------------------------------------------------------------------------
# Payment cards
# --------------------------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """Whether ``digits`` passes the Luhn (mod 10) check.

    The check digit scheme of ISO/IEC 7812-1 (annex B), also known as the Luhn algorithm
    (H. P. Luhn, US patent 2,950,048).

    Args:
        digits: ASCII digits only, no separators.

    Returns:
        ``True`` when the weighted digit sum is a multiple of 10; ``False`` for an empty string.

    Raises:
        ValueError: ``digits`` contains something other than ASCII digits.
    """
    if not digits:
        return False
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"luhn_valid needs ASCII digits, got {digits!r}")
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _r(lo: int, hi: int) -> range:
    return range(lo, hi + 1)


# (IIN prefix range, lengths issued). Source: Wikipedia "Payment card number", IIN ranges.
_IIN_TABLE: Final[tuple[tuple[range, range | tuple[int, ...]], ...]] = (
    (_r(4, 4), (13, 16, 19)),  # Visa
    (_r(51, 55), (16,)),  # Mastercard
    (_r(2221, 2720), (16,)),  # Mastercard 2-series
    (_r(34, 34), (15,)),  # American Express
    (_r(37, 37), (15,)),
    (_r(6011, 6011), _r(16, 19)),  # Discover
    (_r(644, 649), _r(16, 19)),
    (_r(65, 65), _r(16, 19)),  # Discover / RuPay
    (_r(3528, 3589), _r(16, 19)),  # JCB
    (_r(36, 36), _r(14, 19)),  # Diners Club International
    (_r(300, 305), _r(14, 19)),  # Diners Club Carte Blanche / International
    (_r(38, 39), _r(16, 19)),  # Diners Club International
    (_r(62, 62), _r(16, 19)),  # UnionPay
    (_r(2200, 2204), _r(16, 19)),  # Mir
    (_r(60, 60), (16,)),  # RuPay
    (_r(81, 82), (16,)),  # RuPay
    (_r(508, 508), (16,)),  # RuPay
    (_r(5018, 5018), _r(13, 19)),  # Maestro
    (_r(5020, 5020), _r(13, 19)),
    (_r(5038, 5038), _r(13, 19)),
    (_r(5893, 5893), _r(13, 19)),
    (_r(6304, 6304), _r(13, 19)),
    (_r(6759, 6759), _r(13, 19)),
    (_r(6761, 6763), _r(13, 19)),
)


def _iin_lengths() -> dict[str, frozenset[int]]:
    """``_IIN_TABLE`` as IIN prefix (as written, 1-4 digits) -> lengths issued under it."""
    lengths_of: dict[str, set[int]] = {}
    for prefixes, lengths in _IIN_TABLE:
        for prefix in prefixes:
            lengths_of.setdefault(str(prefix), set()).update(lengths)
    return {prefix: frozenset(lengths) for prefix, lengths in lengths_of.items()}


_IIN_LENGTHS: Final = _iin_lengths()


def _iin_ok(digits: str) -> bool:
    n = len(digits)
    for width in (1, 2, 3, 4):
        lengths = _IIN_LENGTHS.get(digits[:width])
        if lengths is not None and n in lengths:
            return True
    return False


def _card_ok(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and _iin_ok(digits) and luhn_valid(digits)


_LONG_NUMBER_RE: Final = re.compile(r"\d[\d \-]{11,}\d", re.ASCII)  # cheap prefilter: >= 13 chars
_NUMBER_RUN_RE: Final = re.compile(r"\d+(?:[ \-]\d+)*", re.ASCII)


def _card_shape(groups: list[str], seps: set[str]) -> bool:
    """Unseparated, or 4-digit groups (Amex 4-6-5, Diners 4-6-4) with one kind of separator."""
    if len(groups) == 1:
        return True
    if len(seps) != 1 or len(groups[0]) != 4:
        return False
    sizes = [len(g) for g in groups]
    if sizes in ([4, 6, 5], [4, 6, 4]):
        return True
    return all(s == 4 for s in sizes[:-1]) and 1 <= sizes[-1] <= 4


def _find_cards(text: str) -> Iterable[PiiMatch]:
    for long in _LONG_NUMBER_RE.finditer(text):
        yield from _find_cards_in(text, long.start(), long.end())


def _card_window(run: str, spans: list[tuple[int, int]], seps: list[str], lo: int, hi: int) -> bool:
    """Whether digit groups ``lo:hi`` of ``run`` form a card number (shape, IIN, Luhn)."""
    groups = [run[a:b] for a, b in spans[lo:hi]]
    digits = "".join(groups)
    return (
        13 <= len(digits) <= 19 and _card_shape(groups, set(seps[lo : hi - 1])) and _card_ok(digits)
    )


def _find_cards_in(text: str, pos: int, endpos: int) -> Iterable[PiiMatch]:
    for m in _NUMBER_RUN_RE.finditer(text, pos, endpos):
        run = m.group()
        if len(run) < 13:
            continue
        # A run is digit groups joined by single spaces or dashes; seps[i] joins groups i and
        # i + 1. A card is a window of whole groups: never part of a digit group, so a longer
        # digit run (an ID, a tracking number) is never cut into a card.
        spans = [(g.start(), g.end()) for g in _DIGIT_RUN_RE.finditer(run)]
        sizes = [e - s for s, e in spans]
        if sum(sizes) < 13:
            continue
        n = len(spans)
        seps = [run[e] for _, e in spans[:-1]]
        total = [0]  # total[i]: digits in groups[:i]
        for size in sizes:
            total.append(total[-1] + size)
        # fours_to[i]: 4-digit groups joined by spaces that end with group i - 1;
        # fours_from[i]: whether groups[i:] are 4-digit groups joined by spaces (the last one
        # may be shorter).
        fours_to = [0] * (n + 1)
        for i in range(n):
            if sizes[i] == 4:
                fours_to[i + 1] = fours_to[i] + 1 if i and seps[i - 1] == " " else 1
        fours_from = [True] * (n + 1)
        fours_from[n - 1] = sizes[n - 1] <= 4
        for i in range(n - 2, -1, -1):
            fours_from[i] = sizes[i] == 4 and seps[i] == " " and fours_from[i + 1]
        free = 0  # groups before this one belong to a card found already
        lo = 0
        while lo < n:
            found = 0
            # An unrelated number can come before or after a card ("SSN 123-45-6789
            # 4111111111111111", "qty 2 4242 4242 4242 4242", "... 4242 12 28"): a window
            # may start or end at a space. Longest window first; a card has at most 5 groups.
            if lo == 0 or seps[lo - 1] == " ":
                for hi in range(min(n, lo + 5), lo, -1):
                    if total[hi] - total[lo] < 13:
                        break
                    if total[hi] - total[lo] > 19 or (hi < n and seps[hi - 1] != " "):
                        continue
                    if not _card_window(run, spans, seps, lo, hi):
                        continue
                    start, end = m.start() + spans[lo][0], m.start() + spans[hi - 1][1]
                    if lo == 0 and not _numeric_left_ok(text, start):
                        continue
                    if hi == n and not _numeric_right_ok(text, end):
                        continue
                    # (A card has one kind of separator: seps[lo] is the card's.)
                    if hi - lo > 1 and seps[lo] == " " and fours_to[hi - 1] >= hi - 1 - lo:
                        # A card in groups of 4 could also be any 4 groups of a longer number
                        # grouped the same way ("9400 1118 9922 3816 8214 25"): only one more
                        # such group is allowed around it (as in "qty 2 4242 4242 4242 4242"),
                        # unless the groups next to it are a card too.
                        before = lo - free if fours_to[lo] >= lo - free else 0
                        after = (
                            n - hi
                            if sizes[hi - 1] == 4
                            and fours_from[hi]
                            and not any(
                                _card_window(run, spans, seps, hi, h)
                                for h in range(min(n, hi + 5), hi, -1)
                            )
                            else 0
                        )
                        if before + after > 1:
                            continue
                    yield PiiMatch("card", start, end, run[spans[lo][0] : spans[hi - 1][1]])
                    found = hi
                    break
            if found:
                lo = free = found
            else:
                lo += 1


# --------------------------------------------------------------------------------------------
# IP addresses
# --------------------------------------------------------------------------------------------

_IPV4_RE: Final = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", re.ASCII)
_IPV4_TAIL_RE: Final = re.compile(r"(?<![\d.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$", re.ASCII)
_TWO_COLONS_RE: Final = re.compile(r":[0-9A-Fa-f]{0,4}:")
_HEX_COLON: Final = frozenset("0123456789abcdefABCDEF:")
_HEX_COLON_DOT: Final = frozenset("0123456789abcdefABCDEF:.")
_VERSION_LABEL_RE: Final = re.compile(
    r"(?i)(?:\bv|\bver|\bversion|\brelease|\brel|\bbuild|\bfirmware|\bfw|\brev|\brevision"
    r"|\bpatch|\bkernel|\bupdate|\bsection|\bsec|\btable|\bfigure|\bfig|\bchapter|\bclause"
    r"|\bstep|\bappendix|\boid|§)\.?\s*[:=#]?\s*$"
)


def _ipv4_context_ok(text: str, start: int, end: int) -> bool:
    if start > 0:
        p = text[start - 1]
        pp = text[start - 2] if start >= 2 else " "
        if p.isalnum() or p in "_.":
            return False
        if p == "-" and _IPV4_TAIL_RE.search(text, max(0, start - 16), start - 1):
            pass  # a range: 192.0.2.1-192.0.2.9
        elif p in "-/" and (pp.isalnum() or pp == "_"):
            return False  # build-1.2.3.4, Chrome/120.0.0.0
        if p == ":" and pp.isdigit():
            return False
    if end < len(text):
        n = text[end]
        nn = text[end + 1] if end + 1 < len(text) else " "
        if n.isalnum() or n == "_":
            return False
        if n == "." and nn.isdigit():
            return False  # 1.2.3.4.5
        if n == "-" and nn.isalpha():
            return False  # 1.2.3.4-beta
    return _VERSION_LABEL_RE.search(text, max(0, start - 24), start) is None


def _find_ips(text: str) -> Iterable[PiiMatch]:
    if "." in text:
        for m in _IPV4_RE.finditer(text):
            try:
                ipaddress.IPv4Address(m.group())
            except ValueError:
                continue
            if _ipv4_context_ok(text, m.start(), m.end()):
                yield PiiMatch("ip", m.start(), m.end(), m.group())
    # IPv6: every address has two colons at most 4 hex digits apart; expand each such pair to
    # the maximal run of hex digits, colons and dots around it (a regex for the whole address
    # would try every hex letter of the text as a start).
    size = len(text)
    scanned = 0
    for pair in _TWO_COLONS_RE.finditer(text):
        colon = pair.start()
        if colon < scanned:
            continue
        start = colon
        while start > 0 and text[start - 1] in _HEX_COLON:
            start -= 1
        end = colon + 1
        while end < size and text[end] in _HEX_COLON_DOT:
            end += 1
        scanned = end
        while end > start and text[end - 1] == ".":
            end -= 1  # sentence end: "... 2001:db8::1."
        value = text[start:end]
        if (
            value.count(":") >= 2
            and (start == 0 or not (text[start - 1].isalnum() or text[start - 1] in "_."))
            and (end == size or not (text[end].isalnum() or text[end] == "_"))
            and sum(1 for g in value.split(":") if g) >= 2
            and any(ch.isdigit() for ch in value)
        ):
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                pass
            else:
                yield PiiMatch("ip", start, end, value)


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------


_HAS_DIGIT_RE: Final = re.compile(r"\d", re.ASCII)


def _check_kinds(kinds: Iterable[PiiKind]) -> frozenset[PiiKind]:
    chosen = frozenset(kinds)
    unknown = chosen - set(ALL_KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {list(ALL_KINDS)}")
    return chosen


def find_pii(text: str, kinds: Iterable[PiiKind] = ALL_KINDS) -> list[PiiMatch]:
    """Find emails, phone numbers, SSNs, payment-card numbers and IP addresses in ``text``.

    Candidates of every kind are collected, then overlaps are resolved (the non-overlapping
    candidates that cover the most characters win, so a match inside a longer one loses to it;
    on equal coverage the more specific kind, email > card > ssn > ip > phone), and only then
    filtered by ``kinds``, so a card number is never reported as a phone even when only
    phones are asked for.

    Args:
        text: Any text; offsets in the result index into it.
        kinds: The kinds to report (default: all of ``ALL_KINDS``).

    Returns:
        Non-overlapping matches sorted by ``start``.

    Raises:
        TypeError: ``text`` is not a ``str``.
        ValueError: ``kinds`` names an unknown kind.
    """
    if not isinstance(text, str):
        raise TypeError(f"find_pii needs str, got {type(text).__name__}")
    wanted = _check_kinds(kinds)
    candidates: list[PiiMatch] = []
    if "@" in text:
        candidates.extend(_find_emails(text))
    if _HAS_DIGIT_RE.search(text):  # every other kind contains a digit
        candidates.extend(_find_phones(text))
        candidates.extend(_find_labelled(text))
        candidates.extend(_find_ssns(text))
        candidates.extend(_find_cards(text))
        candidates.extend(_find_ips(text))
    if not candidates:
        return []
    return [c for c in _resolve_overlaps(candidates) if c.kind in wanted]


def _resolve_overlaps(candidates: list[PiiMatch]) -> list[PiiMatch]:
    """The non-overlapping candidates that cover the most characters, sorted by ``start``.

    A match inside a longer one loses to it, and a candidate that partly overlaps others loses
    to them when they cover more together: ``+44 20 7946 0958 234 56 7890`` is a phone and an
    SSN, not a phone ending in ``234`` that leaves ``56 7890`` in the clear. On equal coverage
    the more specific kind wins (email > card > ssn > ip > phone). Weighted interval
    scheduling: O(n log n).
    """
    ordered = sorted(candidates, key=lambda c: c.start)
    if all(a.end <= b.start for a, b in pairwise(ordered)):
        return ordered  # the usual case
    best_of_span: dict[tuple[int, int], PiiMatch] = {}
    for c in candidates:
        known = best_of_span.get((c.start, c.end))
        if known is None or _RANK[c.kind] < _RANK[known.kind]:
            best_of_span[(c.start, c.end)] = c
    if len(best_of_span) == 1:
        return list(best_of_span.values())
    spans = sorted(best_of_span.values(), key=lambda c: (c.end, c.start))
    ends = [c.end for c in spans]
    # Weight: length first; the kind bonus (at most 5 per match) only breaks ties.
    scale = 5 * len(spans) + 1
    best = [0] * (len(spans) + 1)  # best[i]: best total weight using spans[:i]
    back = [-1] * (len(spans) + 1)  # spans[i - 1] taken: the prefix it extends; else -1
    for i, c in enumerate(spans, 1):
        before = bisect_right(ends, c.start, 0, i - 1)
        weight = best[before] + (c.end - c.start) * scale + len(_RANK) - _RANK[c.kind]
        if weight > best[i - 1]:
            best[i], back[i] = weight, before
        else:
            best[i] = best[i - 1]
    taken: list[PiiMatch] = []
    i = len(spans)
    while i > 0:
        if back[i] < 0:
            i -= 1
        else:
            taken.append(spans[i - 1])
            i = back[i]
    taken.reverse()
    return taken


# --------------------------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------------------------


def _mask(match: PiiMatch) -> str:
    value = match.value
    if match.kind == "email":
        local, _, domain = value.rpartition("@")
        return f"{local[0]}***@{domain}"
    if match.kind == "ip":
        if ":" in value:
            hextets = ipaddress.IPv6Address(value).exploded.split(":")
            return ":".join([format(int(h, 16), "x") for h in hextets[:2]] + ["*"] * 6)
        a, b, _, _ = value.split(".")
        return f"{a}.{b}.*.*"
    if match.kind in ("card", "ssn"):
        keep = len(value)
        seen = 0
        for i in range(len(value) - 1, -1, -1):
            if value[i].isdigit():
                seen += 1
                if seen == 4:
                    keep = i
                    break
        return "".join("*" if ch.isdigit() else ch for ch in value[:keep]) + value[keep:]
    # phone: keep an international prefix (+CC / 00CC) and the last 4 digits; other digit
    # groups become "***".
    runs = list(_DIGIT_RUN_RE.finditer(value))
    intl = value.startswith(("+", "00")) and len(runs) > 1
    left = 4  # digits still to keep, counted from the end
    parts: list[str] = []
    pos = len(value)
    for i in range(len(runs) - 1, -1, -1):
        run = runs[i]
        digits = run.group()
        parts.append(value[run.end() : pos])
        if i == 0 and intl:
            parts.append(digits)
        elif left >= len(digits):
            parts.append(digits)
            left -= len(digits)
        elif left > 0:
            parts.append("*" * (len(digits) - left) + digits[-left:])
            left = 0
        else:
            parts.append("***")
        pos = run.start()
    parts.append(value[:pos])
    return "".join(reversed(parts))


_TOKEN_RE: Final = re.compile(
    r"<{0,2}\b(EMAIL|PHONE|SSN|CARD|IP)\\?_(\d{1,6})\b>{0,2}", re.IGNORECASE | re.ASCII
)


_EXACT_TOKEN_RE: Final = re.compile(r"<<(EMAIL|PHONE|SSN|CARD|IP)_([1-9]\d{0,5})>>", re.ASCII)


_ASCII_LETTERS: Final = frozenset(string.ascii_letters)
_ASCII_WORD: Final = frozenset(string.ascii_letters + string.digits + "_")  # \w under re.ASCII
_UNDERSCORE_DIGIT_RE: Final = re.compile(r"_\d", re.ASCII)


def _tokens_in(text: str) -> set[tuple[str, int]]:
    """``(TAG, n)`` of every token :func:`restore` would recognise in ``text``.

    Same matches as ``_TOKEN_RE`` (a tag as a whole word, optional backslash before ``_``, 1-6
    digits as a whole word) but anchored on the rare ``_<digit>`` instead of trying a
    case-insensitive alternation at every position.
    """
    found: set[tuple[str, int]] = set()
    for m in _UNDERSCORE_DIGIT_RE.finditer(text):
        j = m.start()
        if j > 0 and text[j - 1] == "\\":
            j -= 1
        k = j
        while k > 0 and j - k < 5 and text[k - 1] in _ASCII_LETTERS:
            k -= 1
        tag = text[k:j].upper()
        if tag not in _KIND_OF_TAG or (k > 0 and text[k - 1] in _ASCII_WORD):
            continue
        d = m.start() + 1
        e = d
        while e < len(text) and "0" <= text[e] <= "9":
            e += 1
        if e - d <= 6 and not (e < len(text) and text[e] in _ASCII_WORD):
            found.add((tag, int(text[d:e])))
    return found


def _token(kind: PiiKind, n: int) -> str:
    return f"<<{_TAG[kind]}_{n}>>"


def restore(text: str, placeholders: Mapping[str, str]) -> str:
    r"""Put the originals back in place of the placeholder tokens :meth:`Redactor.redact` made.

    Models sometimes rewrite tokens, so besides the exact ``<<EMAIL_1>>`` this accepts the
    token with one or both angle brackets dropped on either side (``<EMAIL_1>``,
    ``EMAIL_1``), in any letter case (``<<email_1>>``) and with a Markdown-escaped
    underscore (``EMAIL\_1``). A bare token only matches as a whole word (``EMAIL_12`` is
    not ``EMAIL_1``). Tokens not in ``placeholders`` are left as they are. Substituted values
    are not scanned again.

    Args:
        text: Typically a completion produced from placeholder-redacted input.
        placeholders: Token -> original, as in :attr:`Redacted.placeholders`.

    Returns:
        ``text`` with every known token replaced by its original value.
    """
    if not placeholders:
        return text

    def put_back(m: re.Match[str]) -> str:
        key = f"<<{m.group(1).upper()}_{int(m.group(2))}>>"
        return placeholders.get(key, m.group())

    return _TOKEN_RE.sub(put_back, text)


class Redactor:
    """Applies a :data:`PiiPolicy` to text (per agent: each agent picks a policy and kinds).

    Args:
        kinds: Default kinds for :meth:`redact` (all of ``ALL_KINDS`` unless narrowed).

    Raises:
        ValueError: ``kinds`` names an unknown kind.
    """

    def __init__(self, kinds: Iterable[PiiKind] = ALL_KINDS) -> None:
        self.kinds: frozenset[PiiKind] = _check_kinds(kinds)

    def redact(
        self,
        text: str,
        policy: PiiPolicy = "redact",
        kinds: Collection[PiiKind] | None = None,
        *,
        placeholders: Mapping[str, str] | None = None,
    ) -> Redacted:
        """Replace the PII in ``text`` according to ``policy``.

        For ``placeholder``, tokens are ``<<KIND_N>>`` numbered per kind from 1 in order of
        appearance; the same value always gets the same token. Pass the ``placeholders`` of
        an earlier call (e.g. the previous messages of one conversation) to keep its tokens
        and continue its numbering. Numbers whose token already occurs in ``text`` (a user
        literally typing ``<<EMAIL_1>>``) are skipped so :func:`restore` cannot confuse them.

        Args:
            text: The text to redact.
            policy: ``off``, ``redact``, ``mask`` or ``placeholder``.
            kinds: Kinds to replace; ``None`` means the redactor's default kinds.
            placeholders: Earlier token -> original mapping to extend (``placeholder`` only).

        Returns:
            The redacted text, counts per kind and (``placeholder``) the token mapping.

        Raises:
            TypeError: ``text`` is not a ``str``.
            ValueError: Unknown ``policy`` or kind, or a key of ``placeholders`` that is not a
                ``<<KIND_N>>`` token.
        """
        if policy not in POLICIES:
            raise ValueError(f"unknown PII policy {policy!r}; known: {list(POLICIES)}")
        wanted = self.kinds if kinds is None else _check_kinds(kinds)
        if not isinstance(text, str):
            raise TypeError(f"redact needs str, got {type(text).__name__}")
        mapping: dict[str, str] = dict(placeholders or {})
        if policy == "off" or not wanted:
            return Redacted(text, {}, mapping if policy == "placeholder" else {})
        matches = find_pii(text, wanted)
        counts: dict[PiiKind, int] = {}
        if policy == "placeholder":
            token_of: dict[tuple[PiiKind, str], str] = {}
            used = _tokens_in(text)
            for known, value in mapping.items():
                parsed = _EXACT_TOKEN_RE.fullmatch(known)
                if parsed is None:
                    raise ValueError(f"not a placeholder token: {known!r}")
                token_of[(_KIND_OF_TAG[parsed.group(1)], value)] = known
                used.add((parsed.group(1), int(parsed.group(2))))
            next_n: dict[PiiKind, int] = {}
        out: list[str] = []
        pos = 0
        for m in matches:
            counts[m.kind] = counts.get(m.kind, 0) + 1
            out.append(text[pos : m.start])
            if policy == "redact":
                out.append(f"[{_TAG[m.kind]}]")
            elif policy == "mask":
                out.append(_mask(m))
            else:
                token = token_of.get((m.kind, m.value))
                if token is None:
                    n = next_n.get(m.kind, 1)
                    while (_TAG[m.kind], n) in used:
                        n += 1
                    used.add((_TAG[m.kind], n))
                    next_n[m.kind] = n + 1
                    token = _token(m.kind, n)
                    token_of[(m.kind, m.value)] = token
                    mapping[token] = m.value
                out.append(token)
            pos = m.end
        out.append(text[pos:])
        return Redacted("".join(out), counts, mapping if policy == "placeholder" else {})

    @staticmethod
    def restore(text: str, placeholders: Mapping[str, str]) -> str:
        """Same as the module-level :func:`restore`."""
        return restore(text, placeholders)


_LOG_REDACTOR: Final = Redactor()


def scrub_for_logs(text: str) -> str:
    """Redact every PII kind (policy ``redact``) for a log line or a metric label.

    Args:
        text: A log message, field value or label value.

    Returns:
        ``text`` with matches replaced by ``[EMAIL]``, ``[PHONE]``, ``[SSN]``, ``[CARD]``,
        ``[IP]``.
    """
    return _LOG_REDACTOR.redact(text, "redact").text
