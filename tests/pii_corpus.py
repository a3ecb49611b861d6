"""Labelled corpus for ``chorus.governance.pii``: real-shaped PII and near misses, plus the scoring.

Only reserved or fictional data:

- e-mail domains ``example.com``/``.org``/``.net`` (RFC 2606) and their subdomains;
- phone numbers: NANP ``555-0100``..``555-0199`` (reserved for fiction), Ofcom drama numbers
  (``+44 20 7946 0xxx``, ``+44 113 496 0xxx``, ``+44 161 496 0xxx``, ``07700 900xxx``),
  ACMA fictional numbers (``0491 570 156``, ``(02) 5550 xxxx``), ARCEP ``01 99 00 xx xx``, and
  the ``+49 30 901820`` example from the issue;
- payment cards: the networks' / Stripe's published test numbers (``4242 4242 4242 4242``,
  ``5555 5555 5555 4444``, ``378282246310005`` ...);
- IPs: documentation ranges (RFC 5737 ``192.0.2.0/24``, ``198.51.100.0/24``,
  ``203.0.113.0/24``; RFC 3849 ``2001:db8::/32``) and private/loopback ranges (RFC 1918);
- SSNs: made-up numbers (``123-45-6789`` style) tied to no person; there is no reserved range
  of *valid* SSNs (the advertising block 987-65-432x lies in the never-issued 9xx area).

Each :class:`Sample` holds a text and the ``(kind, value)`` pairs a perfect detector reports
(empty for a near miss). :func:`score` compares a detector against the labels as multisets
per sample and returns true/false positives and false negatives per kind.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from chorus.governance.pii import ALL_KINDS, PiiKind


@dataclass(frozen=True)
class Sample:
    """A text and the PII a perfect detector finds in it."""

    text: str
    expected: tuple[tuple[PiiKind, str], ...] = ()


def pos(text: str, *expected: tuple[PiiKind, str]) -> Sample:
    return Sample(text, expected)


def neg(text: str) -> Sample:
    return Sample(text)


POSITIVES: list[Sample] = [
    # ---- e-mail
    pos("Contact jane.doe@example.com for details.", ("email", "jane.doe@example.com")),
    pos(
        "Reply-To: <support+billing@mail.example.org>",
        ("email", "support+billing@mail.example.org"),
    ),
    pos(
        '{"user": {"email": "o.brien_42@example.net", "id": 17}}',
        ("email", "o.brien_42@example.net"),
    ),
    pos(
        "2024-01-15T10:30:00Z INFO login ok user=ALICE@EXAMPLE.COM session=9f2c",
        ("email", "ALICE@EXAMPLE.COM"),
    ),
    pos(
        "--\nBob Smith | Head of Ops\nbob.smith@corp.example.co.uk | +44 20 7946 0321",
        ("email", "bob.smith@corp.example.co.uk"),
        ("phone", "+44 20 7946 0321"),
    ),
    pos(
        "mailto:first.last-name@sub.example.com?subject=hi",
        ("email", "first.last-name@sub.example.com"),
    ),
    pos(
        "cc: a@example.com, b.c@example.org; d_e@example.net.",
        ("email", "a@example.com"),
        ("email", "b.c@example.org"),
        ("email", "d_e@example.net"),
    ),
    pos("Sent by noreply%relay@example.com (automated)", ("email", "noreply%relay@example.com")),
    pos("Ask Chloé (chloe.martin@example.fr) tomorrow", ("email", "chloe.martin@example.fr")),
    pos("user_id=8812 email='x.y.z@example.travel' plan=pro", ("email", "x.y.z@example.travel")),
    # ---- phone
    pos("Call me on +44 20 7946 0958 after 5pm.", ("phone", "+44 20 7946 0958")),
    pos("US office: +1 (415) 555-0100", ("phone", "+1 (415) 555-0100")),
    pos("Front desk (415) 555-0132, ask for Sam", ("phone", "(415) 555-0132")),
    pos("cell: 415-555-0199", ("phone", "415-555-0199")),
    pos("Berlin: +49 30 901820", ("phone", "+49 30 901820")),
    pos("From abroad dial 0044 20 7946 0123.", ("phone", "0044 20 7946 0123")),
    pos("Toll free 1-800-555-0199 (24/7)", ("phone", "1-800-555-0199")),
    pos("tel:+14155550123", ("phone", "+14155550123")),
    pos("Paris office +33 1 99 00 12 34", ("phone", "+33 1 99 00 12 34")),
    pos("Appelez le 01 99 00 45 67 svp", ("phone", "01 99 00 45 67")),
    pos("UK mobile 07700 900123 (text only)", ("phone", "07700 900123")),
    pos("London landline 020 7946 0777", ("phone", "020 7946 0777")),
    pos(
        "Sydney: (02) 5550 1234; mobile +61 491 570 156",
        ("phone", "(02) 5550 1234"),
        ("phone", "+61 491 570 156"),
    ),
    pos(
        "Leeds +44 113 496 0000 / Manchester +44 161 496 0999",
        ("phone", "+44 113 496 0000"),
        ("phone", "+44 161 496 0999"),
    ),
    pos('{"phone": "+1-212-555-0147", "verified": true}', ("phone", "+1-212-555-0147")),
    pos("Dial 212.555.0183 for billing", ("phone", "212.555.0183")),
    pos("Phone: 3125550172", ("phone", "3125550172")),
    pos("WARN sms failed to=+447700900456 code=30006", ("phone", "+447700900456")),
    pos("Please call +44 (0)20 7946 0555 before noon", ("phone", "+44 (0)20 7946 0555")),
    pos("Fax 646 555 0111", ("phone", "646 555 0111")),
    pos("Reach me at +1 415-555-0100 ext. 12", ("phone", "+1 415-555-0100")),
    pos("phone: (415)555-0123", ("phone", "(415)555-0123")),
    # ---- SSN
    pos("SSN 123-45-6789 on file", ("ssn", "123-45-6789")),
    pos("applicant ssn: 234 56 7890", ("ssn", "234 56 7890")),
    pos('{"ssn":"321-54-9876","dob":"1990-04-01"}', ("ssn", "321-54-9876")),
    pos("Social Security number: 512345678.", ("ssn", "512345678")),
    pos(
        "Her SSN is 078-05-1121 and his is 665-12-3456",
        ("ssn", "078-05-1121"),
        ("ssn", "665-12-3456"),
    ),
    pos("W-2 employee 456-78-9012 (Jane Roe)", ("ssn", "456-78-9012")),
    pos("taxpayer id 899-01-2345 verified", ("ssn", "899-01-2345")),
    # ---- payment cards
    pos("Card 4242 4242 4242 4242 exp 12/28 cvc 123", ("card", "4242 4242 4242 4242")),
    pos("paid with 5555-5555-5555-4444", ("card", "5555-5555-5555-4444")),
    pos("amex 378282246310005 declined", ("card", "378282246310005")),
    pos("Amex 3782 822463 10005 on file", ("card", "3782 822463 10005")),
    pos('{"pan":"4111111111111111","exp":"01/27"}', ("card", "4111111111111111")),
    pos("Discover 6011 1111 1111 1117", ("card", "6011 1111 1111 1117")),
    pos("Mastercard 2-series 2223 0031 2200 3222", ("card", "2223 0031 2200 3222")),
    pos("JCB: 3566002020360505.", ("card", "3566002020360505")),
    pos(
        "Diners 3056 9300 0902 0004 and 36227206271667",
        ("card", "3056 9300 0902 0004"),
        ("card", "36227206271667"),
    ),
    pos("UnionPay 6200 0000 0000 0005 ok", ("card", "6200 0000 0000 0005")),
    pos("old visa 4222222222222 (13 digits)", ("card", "4222222222222")),
    pos(
        "ERROR charge failed card=4000056655665556 reason=insufficient_funds",
        ("card", "4000056655665556"),
    ),
    pos("qty 2 4242 4242 4242 4242", ("card", "4242 4242 4242 4242")),
    pos("Maestro 6759 6498 2643 8453", ("card", "6759 6498 2643 8453")),
    pos(
        "MC 5105 1051 0510 5100 / Visa 4012 8888 8888 1881",
        ("card", "5105 1051 0510 5100"),
        ("card", "4012 8888 8888 1881"),
    ),
    # ---- PII right after (or before) another number and a single space
    pos(
        "SSN 123-45-6780 5555555555554444",
        ("ssn", "123-45-6780"),
        ("card", "5555555555554444"),
    ),
    pos("order 12345 4111111111111111 shipped", ("card", "4111111111111111")),
    pos("row 17 4000056655665556 declined", ("card", "4000056655665556")),
    pos(
        "call 415-555-0132 4111111111111111 exp 01/27",
        ("phone", "415-555-0132"),
        ("card", "4111111111111111"),
    ),
    pos(
        "+44 20 7946 0958 4242 4242 4242 4242",
        ("phone", "+44 20 7946 0958"),
        ("card", "4242 4242 4242 4242"),
    ),
    pos(
        "WARN retry=3 to=+447700900456 4000056655665556",
        ("phone", "+447700900456"),
        ("card", "4000056655665556"),
    ),
    pos(
        "cards 4242424242424242 5555555555554444 on file",
        ("card", "4242424242424242"),
        ("card", "5555555555554444"),
    ),
    pos(
        "cards 4242 4242 4242 4242 5555 5555 5555 4444",
        ("card", "4242 4242 4242 4242"),
        ("card", "5555 5555 5555 4444"),
    ),
    pos(
        "match 4111111111111111 123-45-6789",
        ("card", "4111111111111111"),
        ("ssn", "123-45-6789"),
    ),
    pos(
        "SSNs 123-45-6780 234 56 7890",
        ("ssn", "123-45-6780"),
        ("ssn", "234 56 7890"),
    ),
    pos(
        "Applicant +44 20 7946 0958 234 56 7890 on file",
        ("phone", "+44 20 7946 0958"),
        ("ssn", "234 56 7890"),
    ),
    pos(
        "contacts: 646 555 0111 020 7946 0777",
        ("phone", "646 555 0111"),
        ("phone", "020 7946 0777"),
    ),
    pos(
        "dial 0044 20 7946 0123 0044 20 7946 0124",
        ("phone", "0044 20 7946 0123"),
        ("phone", "0044 20 7946 0124"),
    ),
    pos("since 2024 020 7946 0777 is the desk", ("phone", "020 7946 0777")),
    # ---- IP addresses
    pos("Failed login from 192.0.2.44 at 03:12", ("ip", "192.0.2.44")),
    pos("GET /health 200 client=198.51.100.7:54321", ("ip", "198.51.100.7")),
    pos("X-Forwarded-For: 203.0.113.195, 10.0.0.12", ("ip", "203.0.113.195"), ("ip", "10.0.0.12")),
    pos(
        "route add 192.168.10.0/24 via 192.168.10.1", ("ip", "192.168.10.0"), ("ip", "192.168.10.1")
    ),
    pos("peer [2001:db8::1]:443 closed", ("ip", "2001:db8::1")),
    pos("ip6=2001:db8:85a3::8a2e:370:7334 ok", ("ip", "2001:db8:85a3::8a2e:370:7334")),
    pos(
        "full form 2001:0db8:0000:0000:0000:ff00:0042:8329.",
        ("ip", "2001:0db8:0000:0000:0000:ff00:0042:8329"),
    ),
    pos("mapped ::ffff:192.0.2.128 seen", ("ip", "::ffff:192.0.2.128")),
    pos('{"remote_addr": "198.51.100.23", "status": 403}', ("ip", "198.51.100.23")),
    pos("listening on http://127.0.0.1:8000/", ("ip", "127.0.0.1")),
    pos("link-local fe80::1ff:fe23:4567:890a%eth0", ("ip", "fe80::1ff:fe23:4567:890a")),
    pos("blocked 203.0.113.0-203.0.113.255 range", ("ip", "203.0.113.0"), ("ip", "203.0.113.255")),
    # ---- mixed, realistic
    pos(
        "Customer Jane Roe (jane.roe@example.com, +1 415 555 0142) paid with card "
        "4242-4242-4242-4242 from IP 198.51.100.77; SSN 123-45-6780 verified.",
        ("email", "jane.roe@example.com"),
        ("phone", "+1 415 555 0142"),
        ("card", "4242-4242-4242-4242"),
        ("ip", "198.51.100.77"),
        ("ssn", "123-45-6780"),
    ),
    pos(
        "2024-03-02 11:04:55,120 ERROR [payments] order=ORD-2024-000123 card=5555555555554444 "
        "user=m.lee@example.org ip=203.0.113.9 ver=4.2.1",
        ("card", "5555555555554444"),
        ("email", "m.lee@example.org"),
        ("ip", "203.0.113.9"),
    ),
    pos(
        "Hi team, please ring Dr. Patel on 020 7946 0199 or e-mail r.patel@example.co.uk "
        "before the 2024-05-01 release of v2.3.1.",
        ("phone", "020 7946 0199"),
        ("email", "r.patel@example.co.uk"),
    ),
]

NEAR_MISSES: list[Sample] = [
    # dates and times
    neg("Meeting on 2024-01-15 at 10:30."),
    neg("Invoice date: 15/01/2024, due 14.02.2024"),
    neg("Between 2023-12-31 and 2024-01-01 inclusive"),
    neg("2024-01-15T10:30:00Z INFO worker started pid=4242"),
    neg("ts=2024-01-15T10:30:00.123456+05:30 level=debug"),
    neg("2024-01-15 10:30:00,123 WARN slow query 1234 ms"),
    neg("uptime 10:30:00, load 0.52 0.48 0.41"),
    neg("Range 1999-2024; fiscal 2023/2024"),
    neg("epoch 1705312200 ms=1705312200123"),
    neg("20240115 103000 batch"),
    # order, invoice, reference numbers
    neg("Order ORD-2024-000123 shipped"),
    neg("Your order #100234567 has been dispatched"),
    neg("Invoice INV-2024-0042 for 3 items"),
    neg("PO 4500012345 approved by finance"),
    neg("Ticket JIRA-4155550199 reopened"),
    neg("case id 20240115-0042-000123"),
    neg("ref: 2024/000123/77"),
    neg("SKU 12345-678-90 out of stock"),
    neg("ISBN 978-3-16-148410-0 / 9783161484100"),
    neg("IBAN GB82 WEST 1234 5698 7654 32"),
    neg("routing 021000021 account 000123456789"),
    # versions
    neg("Upgraded to v10.2.45 yesterday"),
    neg("version 1.2.3.4 is out"),
    neg("Using v1.2.3.4 of the client"),
    neg("Firmware build 4.19.0.1 flashed"),
    neg("dotted 1.2.3.4.5 is not an address"),
    neg("Mozilla/5.0 (X11) Chrome/120.0.0.0 Safari/537.36"),
    neg("Python 3.11.7 and semver 2.0.0-rc.1+build.5"),
    neg("kernel 5.15.0.91 released"),
    neg("See section 4.2.1.3 of the spec"),
    neg("package 1.2.3.4-beta is broken"),
    neg("Windows 10.0.19045.3803 update"),
    # hashes, ids
    neg("request_id=123e4567-e89b-12d3-a456-426614174000"),
    neg("sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
    neg("commit 9fceb02d0ae598e95dc970b74767f19372d61af8"),
    neg("Error 0x80070005 access denied"),
    neg("mac 00:1A:2B:3C:4D:5E on eth0"),
    neg("std::vector<int> v; auto x = a[::2];"),
    neg("Foo::Bar::baz() raised"),
    neg("GUID {3F2504E0-4F89-11D3-9A0C-0305E82C3301}"),
    neg("account 00123456789 and id=000123456789"),
    neg("ID 4242424242424242424242"),
    # money, quantities
    neg("Total $1,299.99 (was $1,499.00)"),
    neg("Price €4.242,00 incl. VAT"),
    neg("population 8,045,311,447 people"),
    neg("coordinates 37.7749, -122.4194"),
    neg("Math: 2+2=4 and 10+20=30"),
    neg("+100 upvotes and +1 from me"),
    # tracking numbers
    neg("UPS 1Z999AA10123456784 in transit"),
    neg("USPS 9400 1118 9922 3816 8214 25"),
    neg("FedEx tracking 771234567890"),
    # cards that are not cards
    neg("Card 4242 4242 4242 4241 rejected (bad checksum)"),
    neg("5555 5555 5555 4445 is a typo"),
    neg("Reference 1234 5678 9012 3456"),
    neg("test 0000 0000 0000 0000"),
    neg("serial 12345678901234567890123"),
    # digit runs that hold a valid card only if cut at an arbitrary place
    neg("ids 41111111111111110 and 0004111111111111111"),
    neg("tx 55555555555544440001"),
    neg("amount 4111111111111111.50"),
    neg("acct 4111111111111111-42"),
    neg("ref 123-4111111111111111"),
    neg("ref 1234 5678 4242 4242 4242 4242"),
    neg("ids 4242 4242 4242 4242 1234 5678 done"),
    neg("USPS 9400 4242 4242 4242 4242 25"),
    neg("serial 5555 5555 5555 4444 5555 5555 5555 444"),
    # numbers grouped in fours that hold a national phone shape (0xxx xxxx xxxx)
    neg("USPS 9400 1118 0922 3816 8214 25"),
    neg("IBAN ES91 2100 0418 4502 0005 1332"),
    neg("IBAN PL61 1090 1014 0000 0712 1981 2874"),
    # SSNs that are not valid
    neg("SSN 000-12-3456 invalid"),
    neg("SSN 666-12-3456 invalid"),
    neg("ITIN 912-34-5678"),
    neg("SSN 123-00-4567 invalid group"),
    neg("SSN 123-45-0000 invalid serial"),
    # IP-like
    neg("999.1.1.1 is not an address"),
    neg("256.100.50.25 out of range"),
    neg("partial 192.168.1 and 10.0"),
    neg("padded 01.02.03.04"),
    # short phone-ish
    neg("Call 555-0100 for the front desk"),
    neg("ext. 4021 or x1234"),
    neg("call 911 now"),
    neg("1-800-FLOWERS"),
    neg("zip 94105-1234"),
    # e-mail-like
    neg("user@localhost has no domain"),
    neg("assets/logo@2x.png and icon@3x.webp"),
    neg("follow @example.com on social"),
    neg("npm i left-pad@1.3.0"),
    neg("write to john.doe at example dot com"),
    neg("admin@intranet without tld"),
]

SAMPLES: list[Sample] = POSITIVES + NEAR_MISSES


@dataclass
class KindScore:
    """True positives, false positives and false negatives of one kind."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def score(
    detect: Callable[[str], Iterable[tuple[PiiKind, str]]],
    samples: Iterable[Sample] = SAMPLES,
) -> dict[str, KindScore]:
    """Score ``detect`` (text -> found ``(kind, value)`` pairs) per kind and in ``"all"``.

    A found pair counts as a true positive when the sample expects the same kind and exact
    value (multisets, so a value found twice but expected once is one false positive). A
    right value with the wrong kind is a false positive of the found kind and a false
    negative of the expected one.
    """
    scores = {k: KindScore() for k in (*ALL_KINDS, "all")}
    for sample in samples:
        expected = Counter(sample.expected)
        found = Counter(detect(sample.text))
        for (kind, _), n in (expected & found).items():
            scores[kind].tp += n
            scores["all"].tp += n
        for (kind, _), n in (found - expected).items():
            scores[kind].fp += n
            scores["all"].fp += n
        for (kind, _), n in (expected - found).items():
            scores[kind].fn += n
            scores["all"].fn += n
    return scores
