"""QR images of a visit's token: SVG (pure XML) and PNG through pypng, no Pillow."""

from __future__ import annotations

import io

import qrcode
from qrcode.image.pure import PyPNGImage
from qrcode.image.svg import SvgPathImage


def _code(token: str) -> qrcode.QRCode:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=8, border=4)
    code.add_data(token)
    code.make(fit=True)
    return code


def svg(token: str) -> bytes:
    img = _code(token).make_image(image_factory=SvgPathImage)
    return img.to_string(encoding="utf-8")


def png(token: str) -> bytes:
    img = _code(token).make_image(image_factory=PyPNGImage)
    buf = io.BytesIO()
    img.save(buf)
    return buf.getvalue()
