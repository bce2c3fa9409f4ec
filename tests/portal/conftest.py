"""Helpers for the portal tests: workbooks with planted errors, API calls
with an employer's key, PDF text and images."""

from __future__ import annotations

import io
from dataclasses import dataclass

import aiohttp
import pytest
from openpyxl import Workbook

from tests.conftest import make_kpj, make_nik

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HEADER = ("kpj", "nik", "name", "wage", "segment")


def workbook_bytes(rows: list[tuple]) -> bytes:
    """An .xlsx whose first sheet has the header then `rows`, as Excel writes
    them: numbers stay numbers (a wage typed 4500000.5 is a float cell)."""
    book = Workbook()
    sheet = book.active
    sheet.title = "Pekerja"
    sheet.append(HEADER)
    for row in rows:
        sheet.append(list(row))
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@dataclass(frozen=True)
class Planted:
    """A workbook of 7 data rows (sheet rows 2-8): 3 valid, 4 with one error each."""

    content: bytes
    valid_kpjs: tuple[str, ...]
    # sheet row -> (field, fixed value)
    errors: dict[int, tuple[str, str]]


def planted_workbook(base: int = 7000) -> Planted:
    k = [make_kpj(base + i) for i in range(7)]
    n = [make_nik(base + i) for i in range(7)]
    rows = [
        (
            int(k[0]),
            n[0],
            "Budi Santoso",
            5_000_000,
            "PU",
        ),  # sheet row 2: valid, KPJ typed as a number
        (k[1], n[1][:-2], "Sari Dewi", 4_500_000, "PU"),  # row 3: NIK 14 digits
        (k[2], n[2], "Agus Salim", 4_250_000.5, "PU"),  # row 4: wage with decimals
        (k[3], n[3], "Rina Wati", 3_900_000, "PU"),  # row 5: valid
        (k[4], n[4], "Yohanes Ade", 4_100_000, "XX"),  # row 6: unknown segment
        (k[5], n[5], "Fitri Ani", 3_800_000, "PU"),  # row 7: valid
        (k[0], n[6], "Dedi Kurnia", 3_700_000, "PU"),  # row 8: KPJ duplicate of row 2
    ]
    return Planted(
        content=workbook_bytes(rows),
        valid_kpjs=(k[0], k[3], k[5]),
        errors={
            3: ("nik", n[1]),
            4: ("wage", "4250000"),
            6: ("segment", "PU"),
            8: ("kpj", k[6]),
        },
    )


@pytest.fixture
def planted() -> Planted:
    return planted_workbook()


async def call(server, method: str, path: str, key: str | None = None, **kwargs) -> tuple[int, dict | bytes, dict]:
    headers = dict(kwargs.pop("headers", {}))
    if key:
        headers["Authorization"] = f"Bearer {key}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, headers=headers, **kwargs) as response,
    ):
        body = await response.json() if "json" in response.content_type else await response.read()
        return response.status, body, dict(response.headers)


def pdf_text_and_image(content: bytes, image_path) -> str:
    """The PDF's text, with its first page rendered to `image_path` (PNG)."""
    import pypdfium2

    document = pypdfium2.PdfDocument(content)
    try:
        page = document[0]
        text = page.get_textpage().get_text_range()
        page.render(scale=1.5).to_pil().save(image_path)
        return text
    finally:
        document.close()
