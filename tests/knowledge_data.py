"""Small documents for the knowledge tests."""

from __future__ import annotations

FAQ = """# Acme help

Q: How do I reset my password?
A: Open Settings, choose Security, and press "Reset password". A link arrives by email.

Q: What is the refund policy?
A: Annual plans are refunded in full within 30 days of purchase.
Monthly plans are not refunded.

Q: Which payment methods do you accept?
A: Visa, Mastercard and bank transfer.
"""

GUIDE = """# Gardening guide

## Tomatoes

Tomatoes need six hours of sun a day and deep watering twice a week.

## Roses

Prune roses in late winter, just above an outward-facing bud.
"""


def pdf_bytes(*pages: str) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Test PDF")
    for text in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", size=12)
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())
