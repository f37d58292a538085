"""The few fields of an X.509 certificate the server checks: serial and validity period.

The standard library loads certificates into a context but does not say when the one it
will present expires, and refusing an expired certificate at start-up (with the date)
beats serving handshakes every client rejects. So the first certificate of the PEM file
(the one OpenSSL presents: a chain file starts with the server's own) is decoded here,
just far enough to reach ``validity`` (RFC 5280, section 4.1)::

    Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
        [0] version OPTIONAL, serialNumber INTEGER, signature SEQUENCE,
        issuer SEQUENCE, validity SEQUENCE { notBefore Time, notAfter Time }, ... } ... }

Pure functions over bytes; no clock is read here.
"""

from __future__ import annotations

import base64
import binascii
import datetime

import attrs

__all__ = ["CertificateInfo", "certificate_info", "first_certificate"]

_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"
_SEQUENCE, _INTEGER, _VERSION = 0x30, 0x02, 0xA0
_UTC_TIME, _GENERALIZED_TIME = 0x17, 0x18


@attrs.frozen
class CertificateInfo:
    """What the server logs and checks about the certificate it presents."""

    serial: int
    not_before: datetime.datetime  # aware, UTC
    not_after: datetime.datetime  # aware, UTC

    @property
    def serial_hex(self) -> str:
        """The serial as ``ssl.SSLSocket.getpeercert()`` spells it (upper-case hex)."""
        text = f"{self.serial:X}"
        return text if len(text) % 2 == 0 else "0" + text


def first_certificate(pem: bytes) -> bytes | None:
    """The DER bytes of the first ``CERTIFICATE`` block of ``pem``, or ``None`` if none.

    Raises:
        ValueError: the block is not valid base64.
    """
    start = pem.find(_BEGIN)
    if start < 0:
        return None
    end = pem.find(_END, start)
    if end < 0:
        raise ValueError("unterminated PEM certificate block")
    try:
        return base64.b64decode(b"".join(pem[start + len(_BEGIN):end].split()), validate=True)
    except binascii.Error:
        raise ValueError("the PEM certificate block is not valid base64") from None


def certificate_info(der: bytes) -> CertificateInfo:
    """Serial and validity of the DER-encoded certificate ``der``.

    Raises:
        ValueError: ``der`` is not a certificate this decoder understands.
    """
    tag, start, _ = _element(der, 0)
    _expect(tag, _SEQUENCE, "certificate")
    tag, pos, tbs_end = _element(der, start)
    _expect(tag, _SEQUENCE, "tbsCertificate")
    tag, start, end = _element(der, pos)
    if tag == _VERSION:
        tag, start, end = _element(der, end)
    _expect(tag, _INTEGER, "serialNumber")
    serial = int.from_bytes(der[start:end], "big", signed=True)
    for name in ("signature", "issuer"):
        tag, _, end = _element(der, end)
        _expect(tag, _SEQUENCE, name)
    tag, start, end = _element(der, end)
    _expect(tag, _SEQUENCE, "validity")
    if end > tbs_end:
        raise ValueError("validity runs past the end of tbsCertificate")
    not_before, pos = _time(der, start)
    not_after, _ = _time(der, pos)
    return CertificateInfo(serial, not_before, not_after)


def _element(der: bytes, pos: int) -> tuple[int, int, int]:
    """``(tag, content start, content end)`` of the DER element at ``pos``."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER element")
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or pos + count > len(der):
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[pos:pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("DER element longer than the certificate")
    return tag, pos, pos + length


def _expect(tag: int, wanted: int, name: str) -> None:
    if tag != wanted:
        raise ValueError(f"unexpected DER tag 0x{tag:02x} for {name}")


def _time(der: bytes, pos: int) -> tuple[datetime.datetime, int]:
    """A ``Time`` (UTCTime or GeneralizedTime, both ending in Z) and the position after it."""
    tag, start, end = _element(der, pos)
    text = der[start:end].decode("ascii", "replace")
    if tag == _UTC_TIME and len(text) == 13:
        year = int(text[:2])
        text = ("19" if year >= 50 else "20") + text  # RFC 5280, 4.1.2.5.1
    elif tag != _GENERALIZED_TIME or len(text) != 15:
        raise ValueError(f"unsupported certificate time {text!r}")
    try:
        when = datetime.datetime.strptime(text, "%Y%m%d%H%M%SZ")
    except ValueError:
        raise ValueError(f"unsupported certificate time {text!r}") from None
    return when.replace(tzinfo=datetime.UTC), end
