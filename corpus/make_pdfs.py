"""Generate the PDF documents of the sample corpus with fpdf2.

Run from anywhere:  python corpus/make_pdfs.py
Output is deterministic: fixed creation date, core fonts only.
"""

from datetime import UTC, datetime
from pathlib import Path

from fpdf import FPDF

DOCS = Path(__file__).resolve().parent / "docs"
FIXED_DATE = datetime(2026, 1, 1, tzinfo=UTC)

# Each document: (relative path, title, list of (heading, [paragraphs]))
DOCUMENTS = [
    (
        "manuals/aurora-k5-pro-quick-start.pdf",
        "Aurora K5 Pro Quick Start Guide",
        [
            (
                "Welcome",
                [
                    "Thank you for choosing the Aurora K5 Pro gooseneck kettle from "
                    "Brightwater Kettleworks. This quick start guide, document number "
                    "QSG-K5P-03, walks you through unpacking, first fill and app setup. "
                    "Keep it with your kettle for future reference.",
                ],
            ),
            (
                "Unpacking",
                [
                    "Remove the kettle and base from the moulded pulp tray. Peel the "
                    "protective film from the display before first use. Keep the "
                    "thermometer-calibration card; you will need it if readings ever drift.",
                ],
            ),
            (
                "First fill and rinse",
                [
                    "Before the first brew, fill the vessel to the 0.9 litre MAX line, "
                    "boil once and discard the water. Repeat this first rinse 2 times to "
                    "remove any manufacturing residue. The minimum fill for the K5 Pro is "
                    "0.3 litres; below that the kettle will not start heating.",
                ],
            ),
            (
                "Setting up the app",
                [
                    "Download the Brightwater Home app and tap Add device. Hold the dial "
                    "on the base for 4 seconds until the Bluetooth symbol appears. The app "
                    "finds the kettle, asks for your Wi-Fi password and then installs any "
                    "pending firmware. Initial setup usually takes less than 6 minutes.",
                ],
            ),
            (
                "Using the dial",
                [
                    "Turn the dial to choose a temperature and press it once to start "
                    "heating. Press and hold the dial for 2 seconds to switch hold mode on "
                    "or off. Double-press the dial to start the brew stopwatch manually.",
                ],
            ),
            (
                "Calibrating the temperature sensor",
                [
                    "If the displayed temperature differs from a reference thermometer "
                    "by more than 1 C, use the calibration card. Enter calibration by "
                    "holding the dial and the hold button together for 10 seconds until "
                    "the display shows CAL-T. The offset can be adjusted in steps of 0.5 C "
                    "up to plus or minus 3 C.",
                ],
            ),
            (
                "Getting help",
                [
                    "For support, call 1-800-555-0142 and choose extension 210, or visit "
                    "the support library. Please have your serial number ready; on the "
                    "K5 Pro it starts with AK5P and is printed under the base.",
                ],
            ),
        ],
    ),
    (
        "policies/commercial-warranty.pdf",
        "Commercial Warranty Terms for Food Service Customers",
        [
            (
                "Scope",
                [
                    "These terms apply to Brightwater Kettleworks appliances purchased "
                    "through a commercial account for use in cafes, restaurants, hotels "
                    "and offices. Household warranty terms do not apply to commercial use. "
                    "This document is revision CW-2025-B, effective 1 June 2025.",
                ],
            ),
            (
                "Coverage period",
                [
                    "Commercial customers receive a 1-year warranty on all appliances, "
                    "covering parts and labour. Because commercial appliances run many "
                    "more cycles per day, coverage also ends once an appliance records "
                    "15,000 heating cycles, whichever comes first. The cycle count is "
                    "read from the appliance's telemetry or its service menu.",
                ],
            ),
            (
                "Commercial models",
                [
                    "The Aurora K5 Pro Cafe Edition, model AK5P-220C, is the only kettle "
                    "approved for commercial use. It has a reinforced relay rated for "
                    "40 heating cycles per hour. Using a standard Aurora K3 in a "
                    "commercial setting voids its warranty.",
                ],
            ),
            (
                "Response times",
                [
                    "Commercial claims are handled by the commercial accounts desk at "
                    "extension 325. Brightwater commits to shipping a replacement unit "
                    "within 2 business days of an approved claim. Customers on the "
                    "Priority Service Agreement, which costs $240 per site per year, "
                    "receive next-business-day replacement and a dedicated account "
                    "manager.",
                ],
            ),
            (
                "Loaner pool",
                [
                    "Sites with 5 or more Brightwater appliances may request a loaner "
                    "unit while a claim is processed. Loaners must be returned within "
                    "10 days of the replacement arriving, or a fee equal to the list "
                    "price is charged.",
                ],
            ),
            (
                "Maintenance obligations",
                [
                    "Commercial customers must descale kettles at least every 2 weeks and "
                    "keep a maintenance log. Claims for scale-related failures are "
                    "refused if no maintenance log can be produced.",
                ],
            ),
        ],
    ),
    (
        "handbook/travel-policy.pdf",
        "Employee Business Travel Policy",
        [
            (
                "Purpose",
                [
                    "This policy explains how Brightwater Kettleworks employees book and "
                    "pay for business travel. It complements the expense reimbursement "
                    "policy in the employee handbook. Policy owner: Finance, revision "
                    "TRV-7, approved 14 October 2025.",
                ],
            ),
            (
                "Booking",
                [
                    "All flights, hotels and rental cars must be booked through the "
                    "company travel desk, operated by the agency Compass Fairway. Book "
                    "flights at least 14 days before departure whenever possible. "
                    "Bookings made outside the travel desk are not reimbursed unless "
                    "the travel desk was unavailable.",
                ],
            ),
            (
                "Flights",
                [
                    "Economy class is standard for all flights. Premium economy is "
                    "allowed for flights longer than 6 hours of scheduled flying time. "
                    "Checked baggage fees are reimbursed for up to one bag per trip.",
                ],
            ),
            (
                "Hotels",
                [
                    "The nightly hotel limit is $210 in most US cities and $295 in high-"
                    "cost cities, defined as New York, San Francisco, Boston and Seattle. "
                    "Employees who stay with friends or family instead of a hotel may "
                    "claim a flat $40 per night.",
                ],
            ),
            (
                "Meals and per diem",
                [
                    "Travelling employees receive a daily meal per diem of $68. On the "
                    "first and last day of travel the per diem is reduced to 75 percent. "
                    "Meals provided by a conference or client are deducted from the "
                    "per diem.",
                ],
            ),
            (
                "Ground transport",
                [
                    "Personal car use is reimbursed at 67 cents per mile. Rental cars "
                    "must be compact or mid-size, and the company's insurance covers "
                    "rentals booked through the travel desk, so extra insurance should "
                    "be declined.",
                ],
            ),
            (
                "Emergencies",
                [
                    "In an emergency while travelling, call the 24-hour travel assistance "
                    "line operated by Compass Fairway and quote the company code "
                    "BWK-TRAVEL-88.",
                ],
            ),
        ],
    ),
]


def build(rel_path: str, title: str, sections) -> Path:
    pdf = FPDF(format="letter")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(title)
    pdf.set_author("Brightwater Kettleworks (fictional)")
    pdf.set_subject("Sample knowledge corpus for the ladder project")
    pdf.set_creator("corpus/make_pdfs.py")
    pdf.set_producer("fpdf2")
    pdf.set_margins(20, 20, 20)
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.add_page()

    pdf.set_font("Helvetica", "B", 18)
    pdf.multi_cell(0, 9, title, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)

    for heading, paragraphs in sections:
        pdf.set_font("Helvetica", "B", 13)
        pdf.multi_cell(0, 7, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
        pdf.set_font("Helvetica", "", 11)
        for para in paragraphs:
            pdf.multi_cell(0, 6, para, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(3)

    out = DOCS / rel_path
    out.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(out))
    return out


def main() -> None:
    for rel_path, title, sections in DOCUMENTS:
        out = build(rel_path, title, sections)
        print(f"wrote {out.relative_to(DOCS.parent)}")


if __name__ == "__main__":
    main()
