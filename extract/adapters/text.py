"""Reading a dataset's text files (transcripts, annotations, split lists) without mojibake.

UTF-8 first. A file that is not UTF-8 is decoded as Latin-1 (ISO-8859-1, in
which every byte is a character, so nothing becomes U+FFFD), with a warning
naming the file: older corpora such as IEMOCAP's transcripts were written in
it ("Café crème naïve"). Pass `encoding` to an adapter's reader to force one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from amid.errors import ManifestError

log = logging.getLogger(__name__)
FALLBACK = "latin-1"


def read_text(path: Path, encoding: str | None = None) -> str:
    """The text of `path`: UTF-8 (a BOM dropped), else Latin-1 with a warning."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None
    if encoding is not None:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ManifestError(f"{path}: cannot be decoded as {encoding}: {exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        log.warning("%s is not UTF-8 (byte %d); read as %s", path, exc.start, FALLBACK)
        return data.decode(FALLBACK)
