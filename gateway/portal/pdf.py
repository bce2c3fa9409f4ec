"""The bill as a PDF to hand to a bank teller (fpdf2, built-in fonts only, so
nothing is fetched or installed). Labels are bilingual, Indonesian first,
because the teller and the employer may not share a language."""

from __future__ import annotations

import datetime as dt

from gateway.domain.periods import WIB

PROGRAM_NAMES = {
    "JKK": "Jaminan Kecelakaan Kerja",
    "JKM": "Jaminan Kematian",
    "JHT": "Jaminan Hari Tua",
    "JP": "Jaminan Pensiun",
    "JKP": "Jaminan Kehilangan Pekerjaan",
    "DENDA": "Denda / Late fees",
}


def rupiah(amount_rupiah: int) -> str:
    """Indonesian grouping with a point and no space after Rp: Rp1.101.222."""
    sign = "-" if amount_rupiah < 0 else ""
    return f"{sign}Rp{abs(amount_rupiah):,}".replace(",", ".")


def _latin1(text: str) -> str:
    # The built-in PDF fonts cover Latin-1; anything else shows as '?'
    # rather than failing the whole bill.
    return text.encode("latin-1", "replace").decode("latin-1")


def last_payable_day(expires_at: dt.datetime) -> dt.date:
    """The last day (WIB) a bank takes the bill: `expires_at` is the start of
    the day after it (gateway.domain.periods.bill_expires_at)."""
    return (expires_at.astimezone(WIB) - dt.timedelta(microseconds=1)).date()


def status_label(bill: dict, now: dt.datetime) -> str:
    if bill["status"] == "paid":
        return "LUNAS / PAID"
    expires = bill.get("expires_at")
    if isinstance(expires, dt.datetime) and expires <= now:
        return "KEDALUWARSA / EXPIRED"
    return "BELUM DIBAYAR / UNPAID"


def bill_pdf(bill: dict, employer: dict, *, generated_at: dt.datetime) -> bytes:
    # Imported here: a gateway without fpdf2 still serves everything else.
    try:
        from fpdf import FPDF
    except ModuleNotFoundError:
        from gateway.portal.sheets import Unavailable

        raise Unavailable(
            "the bill PDF needs the fpdf2 package (pip install 'fpdf2>=2.7')",
            [{"field": "pdf", "problem": "fpdf2 is not installed"}],
        ) from None
    pdf = FPDF(format="A4")
    pdf.set_title(f"Tagihan iuran {bill['payment_code']}")
    pdf.set_author("Kanal")
    pdf.set_creation_date(generated_at)
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.epw

    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(width, 9, "Tagihan Iuran BPJS Ketenagakerjaan", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(
        width,
        5,
        "Contribution bill - pay at any Bank Kalbar teller, ATM or mobile banking",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(4)

    pdf.set_font("Helvetica", "", 10)
    pdf.cell(width, 6, "Kode iuran / Payment code", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Courier", "B", 26)
    pdf.cell(width, 12, bill["payment_code"], new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    pdf.cell(
        width,
        6,
        "Jumlah yang harus dibayar / Amount due",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_font("Helvetica", "B", 20)
    pdf.cell(width, 10, rupiah(bill["total_rupiah"]), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)

    due = bill["due_date"]
    expires = bill["expires_at"]
    facts = [
        ("Pemberi kerja / Employer", f"{employer['name']} (NPP {employer['npp']})"),
        (
            "Wilayah / Regency",
            employer.get("regency_name", employer.get("regency_code", "")),
        ),
        (
            "Periode / Period",
            bill["period"] + (f" - BPU {bill['kpj']}" if bill.get("kpj") else ""),
        ),
        (
            "Jatuh tempo / Due date",
            due.isoformat() if hasattr(due, "isoformat") else str(due),
        ),
        (
            "Berlaku sampai / Payable until",
            last_payable_day(expires).isoformat() if isinstance(expires, dt.datetime) else str(expires),
        ),
        ("Status", status_label(bill, generated_at)),
    ]
    pdf.set_font("Helvetica", "", 10)
    for label, value in facts:
        pdf.set_font("Helvetica", "", 10)
        pdf.cell(60, 6, _latin1(label))
        pdf.set_font("Helvetica", "B", 10)
        pdf.cell(width - 60, 6, _latin1(str(value)), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(
        width,
        7,
        "Rincian per program / Totals per program",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    headers = (
        "Program\n ",
        "Pemberi kerja\nEmployer",
        "Pekerja\nWorker",
        "Pemerintah*\nGovernment*",
        "Ditagih\nBilled",
    )
    widths = (width * 0.32, width * 0.17, width * 0.17, width * 0.17, width * 0.17)
    pdf.set_font("Helvetica", "B", 9)
    pdf.set_fill_color(230, 236, 242)
    y = pdf.get_y()
    x = pdf.l_margin
    for header, w in zip(headers, widths, strict=True):
        pdf.set_xy(x, y)
        pdf.multi_cell(w, 5, header, border=1, align="C" if x > pdf.l_margin else "L", fill=True)
        x += w
    pdf.set_xy(pdf.l_margin, y + 10)
    pdf.set_font("Helvetica", "", 9)
    for total in bill["totals"]:
        name = f"{total['program']} - {PROGRAM_NAMES.get(total['program'], '')}"
        cells = (
            name,
            rupiah(total["employer_rupiah"]),
            rupiah(total["worker_rupiah"]),
            rupiah(total["government_rupiah"]),
            rupiah(total["billed_rupiah"]),
        )
        for n, (text, w) in enumerate(zip(cells, widths, strict=True)):
            pdf.cell(w, 6, _latin1(text), border=1, align="L" if n == 0 else "R")
        pdf.ln(6)
    pdf.set_font("Helvetica", "B", 10)
    pdf.cell(sum(widths[:4]), 7, "Total", border=1)
    pdf.cell(
        widths[4],
        7,
        rupiah(bill["total_rupiah"]),
        border=1,
        align="R",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(2)
    pdf.set_font("Helvetica", "", 8)
    if bill.get("late_fees_rupiah"):
        pdf.multi_cell(
            width,
            4,
            f"Termasuk denda keterlambatan {rupiah(bill['late_fees_rupiah'])} (2% per bulan atas tagihan sebelumnya yang "
            f"terlambat). Includes late fees of {rupiah(bill['late_fees_rupiah'])} (2% a month of an earlier late bill).",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    pdf.multi_cell(
        width,
        4,
        "* Bagian pemerintah (JKP) dicatat tetapi tidak ditagihkan. The government's JKP share is recorded, not billed.",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(2)
    pdf.cell(
        width,
        4,
        f"Dibuat / Generated {generated_at.astimezone(WIB).strftime('%Y-%m-%d %H:%M')} WIB - Kanal (simulator)",
        new_x="LMARGIN",
        new_y="NEXT",
    )
    return bytes(pdf.output())
