"""Real PDFs for tests, generated with fpdf2."""

from __future__ import annotations

from fpdf import FPDF


def pdf_of_pages(pages: int, line: str = "Page {n} about hybrid search.") -> bytes:
    """A PDF of ``pages`` pages, each holding ``line`` with its page number."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for n in range(1, pages + 1):
        pdf.add_page()
        pdf.cell(text=line.format(n=n))
    return bytes(pdf.output())
