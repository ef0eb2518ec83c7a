"""The otpauth:// URI of a new authenticator as an inline SVG QR code (segno).

Inline SVG markup, not an image URL: the strict CSP allows no data: images, and the secret never
lands in a URL, a log or a cache.
"""

import segno
from django.utils.safestring import SafeString, mark_safe


def qr_svg(uri: str, *, title: str = "QR code for your authenticator app") -> SafeString:
    code = segno.make(uri, error="m")
    svg = code.svg_inline(scale=5, border=4, dark="#000", light="#fff", title=title)
    # Safe: segno's own markup (the title is escaped), nothing user-controlled.
    return mark_safe(svg)  # noqa: S308  # nosec B308 B703
