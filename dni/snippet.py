"""The built website snippet: its bytes, content hash and Subresource Integrity value.

`npm run build` (run by scripts/setup with a pinned terser) writes
`dni/static/dni.min.js` from `static/snippet/dni.js`; the service serves that file at
`/dni.js` and at a content-hashed path that may be cached for a year.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

BUILD_HINT = "build it with `npm ci && npm run build` (scripts/setup does)"


@dataclass(frozen=True)
class Snippet:
    body: bytes
    digest: str  # first 16 hex digits of SHA-256, for the hashed file name
    integrity: str  # "sha384-…" for <script integrity>

    @property
    def hashed_name(self) -> str:
        return f"dni.{self.digest}.js"

    def embed(self, base_url: str, site: str, no_flash: bool = False) -> str:
        """The <script> tag a shop pastes, pinned to this build.

        `no_flash` adds blocking="render": pages after a visit's first never paint the shop's
        number (the script is cached by then), at the cost of the first page's render waiting
        for this 3 KB file.
        """
        src = f"{base_url.rstrip('/')}/{self.hashed_name}"
        blocking = ' blocking="render"' if no_flash else ""
        return (
            f'<script async{blocking} src="{src}" integrity="{self.integrity}" '
            f'crossorigin="anonymous" data-site="{site}"></script>'
        )


def read_snippet(path: Path) -> Snippet:
    """Load the built snippet; FileNotFoundError says how to build it."""
    if not path.is_file():
        raise FileNotFoundError(f"no built snippet at {path}: {BUILD_HINT}")
    body = path.read_bytes()
    sri = base64.b64encode(hashlib.sha384(body).digest()).decode()
    return Snippet(body, hashlib.sha256(body).hexdigest()[:16], f"sha384-{sri}")
