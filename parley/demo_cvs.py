"""The demo CVs of the `recruiter` assistant: fictional people, one PDF each.

The PDFs are generated, not committed: a server with the default knowledge writes them into
its data dir the first time it starts (``parley.startup``); ``scripts/make_demo_cvs.py OUT_DIR``
writes them anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fpdf import FPDF


@dataclass(frozen=True)
class Person:
    name: str
    role: str
    city: str
    summary: str
    skills: list[str]
    jobs: list[tuple[str, str, str, str]]  # years, title, employer, what they did
    education: list[str]
    languages: str


PEOPLE = [
    Person(
        "Amelia Hartley",
        "Senior Backend Engineer",
        "Leeds, UK",
        "Backend engineer with nine years of Python who builds reliable APIs and data pipelines.",
        ["Python", "FastAPI", "PostgreSQL", "SQLAlchemy", "Redis", "Docker", "Kubernetes", "AWS"],
        [
            (
                "2020-now",
                "Senior Backend Engineer",
                "Northwind Payments",
                "Designed the settlement API in FastAPI and PostgreSQL handling 4 million payments a day; "
                "cut p95 latency from 480 ms to 90 ms; led a team of five.",
            ),
            (
                "2016-2020",
                "Software Engineer",
                "Larkspur Health",
                "Built Django services for appointment booking and an ETL pipeline with Celery and Redis.",
            ),
        ],
        ["MSc Computer Science, University of Manchester, 2016"],
        "English (native), German (B2)",
    ),
    Person(
        "Rahul Mehta",
        "Data Scientist",
        "Pune, India",
        "Data scientist focused on forecasting and recommendation systems with machine learning.",
        ["Python", "pandas", "scikit-learn", "PyTorch", "SQL", "Spark", "A/B testing", "statistics"],
        [
            (
                "2021-now",
                "Data Scientist",
                "Kestrel Retail",
                "Built a demand forecasting model with gradient boosting that reduced stock-outs by 18%; "
                "ran A/B tests for the recommendation engine.",
            ),
            (
                "2018-2021",
                "Analyst",
                "Bluefin Insurance",
                "Churn prediction with logistic regression and dashboards in Tableau.",
            ),
        ],
        ["MTech Data Science, IIT Bombay, 2018"],
        "English, Hindi, Marathi",
    ),
    Person(
        "Sofia Lindqvist",
        "Registered Nurse",
        "Gothenburg, Sweden",
        "Intensive care nurse with eleven years of experience in critical care and patient safety.",
        ["intensive care", "patient assessment", "ventilator management", "medication safety", "triage"],
        [
            (
                "2017-now",
                "ICU Nurse",
                "Sahlgrenska University Hospital",
                "Cared for ventilated patients in a 24-bed intensive care unit; trained new nurses.",
            ),
            ("2013-2017", "Staff Nurse", "Angered Hospital", "Emergency department triage and care."),
        ],
        ["BSc Nursing, University of Gothenburg, 2013", "Specialist diploma in intensive care, 2016"],
        "Swedish (native), English (C1)",
    ),
    Person(
        "Daniel Okafor",
        "Chartered Accountant",
        "Lagos, Nigeria",
        "Accountant with audit and tax experience across manufacturing and banking clients.",
        ["financial reporting", "IFRS", "audit", "tax compliance", "Excel", "SAP", "budgeting"],
        [
            (
                "2019-now",
                "Senior Accountant",
                "Adeyemi & Partners",
                "Prepared IFRS financial statements and led year-end audits for twelve clients.",
            ),
            (
                "2015-2019",
                "Audit Associate",
                "Crestline Advisory",
                "Statutory audits of banks and manufacturers.",
            ),
        ],
        ["BSc Accounting, University of Lagos, 2015", "ICAN Chartered Accountant, 2018"],
        "English, Yoruba",
    ),
    Person(
        "Chloe Dubois",
        "Product Designer",
        "Lyon, France",
        "Product designer who turns research into simple interfaces for web and mobile apps.",
        ["Figma", "user research", "prototyping", "design systems", "accessibility", "UX writing"],
        [
            (
                "2020-now",
                "Senior Product Designer",
                "Mistral Travel",
                "Redesigned the booking flow, raising conversion by 12%; built the company's design system.",
            ),
            (
                "2017-2020",
                "UX Designer",
                "Atelier Numérique",
                "User research and prototypes for banking apps.",
            ),
        ],
        ["Master in Interaction Design, Strate School of Design, 2017"],
        "French (native), English (C1), Spanish (B1)",
    ),
    Person(
        "Marcus Chen",
        "DevOps Engineer",
        "Toronto, Canada",
        "Site reliability and DevOps engineer who automates infrastructure and keeps services up.",
        ["Kubernetes", "Terraform", "AWS", "GitHub Actions", "Prometheus", "Grafana", "Linux", "Go"],
        [
            (
                "2019-now",
                "Site Reliability Engineer",
                "Maple Logistics",
                "Moved 60 services to Kubernetes with Terraform; on-call lead; SLOs with Prometheus.",
            ),
            (
                "2016-2019",
                "Systems Administrator",
                "Birchwood Media",
                "Linux servers, CI pipelines, backups.",
            ),
        ],
        ["BEng Computer Engineering, University of Waterloo, 2016", "Certified Kubernetes Administrator"],
        "English, Mandarin",
    ),
    Person(
        "Isabella Rossi",
        "Sales Manager",
        "Milan, Italy",
        "B2B sales manager who grows accounts in industrial equipment across Southern Europe.",
        ["B2B sales", "account management", "negotiation", "CRM", "Salesforce", "team leadership"],
        [
            (
                "2018-now",
                "Regional Sales Manager",
                "Alpina Machinery",
                "Grew regional revenue from 8 to 14 million euros; managed a team of seven sales reps.",
            ),
            ("2014-2018", "Account Executive", "Tecnoflow", "Sold pumps and valves to manufacturers."),
        ],
        ["Laurea in Economics, Bocconi University, 2014"],
        "Italian (native), English (C1), French (B2)",
    ),
    Person(
        "Tomás García",
        "Secondary School Teacher",
        "Valencia, Spain",
        "Mathematics and physics teacher who brings programming into the classroom.",
        ["mathematics", "physics", "curriculum design", "classroom management", "Python for teaching"],
        [
            (
                "2015-now",
                "Mathematics Teacher",
                "IES Luis Vives",
                "Taught mathematics and physics to students aged 12 to 18; started a robotics club.",
            ),
        ],
        ["Degree in Physics, University of Valencia, 2013", "Master in Teacher Training, 2014"],
        "Spanish, Catalan, English (B2)",
    ),
    Person(
        "Hannah Becker",
        "Mechanical Engineer",
        "Stuttgart, Germany",
        "Mechanical engineer designing drivetrain components for electric vehicles.",
        ["CAD", "SolidWorks", "CATIA", "finite element analysis", "ANSYS", "automotive", "GD&T"],
        [
            (
                "2018-now",
                "Design Engineer",
                "Neckar Drive Systems",
                "Designed gearbox housings for electric vehicles; FEA in ANSYS cut part weight by 15%.",
            ),
            ("2016-2018", "Graduate Engineer", "Boschwerk Components", "Test rigs and tolerance analysis."),
        ],
        ["MSc Mechanical Engineering, University of Stuttgart, 2016"],
        "German (native), English (C1)",
    ),
    Person(
        "Aisha Rahman",
        "Digital Marketing Specialist",
        "Dubai, UAE",
        "Marketer running paid search, social and email campaigns with measurable results.",
        ["SEO", "Google Ads", "social media", "email marketing", "content strategy", "Google Analytics"],
        [
            (
                "2020-now",
                "Digital Marketing Lead",
                "Oasis Home",
                "Ran paid campaigns with a 4x return on ad spend; grew organic traffic by 70% through SEO.",
            ),
            ("2017-2020", "Marketing Coordinator", "Sandline Events", "Social media and newsletters."),
        ],
        ["BBA Marketing, American University of Sharjah, 2017"],
        "English, Arabic, Urdu",
    ),
]


def write_cv(person: Person, path: Path) -> None:
    pdf = FPDF(format="A4")
    pdf.set_title(f"{person.name} - {person.role}")
    pdf.set_author(person.name)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 20)
    pdf.cell(0, 10, person.name, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 12)
    pdf.cell(0, 7, f"{person.role} - {person.city}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(3)
    section(pdf, "Summary", person.summary)
    section(pdf, "Skills", ", ".join(person.skills))
    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(0, 8, "Experience", new_x="LMARGIN", new_y="NEXT")
    for years, title, employer, what in person.jobs:
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 6, f"{title}, {employer} ({years})", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 11)
        pdf.multi_cell(0, 6, what, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
    section(pdf, "Education", "\n".join(person.education))
    section(pdf, "Languages", person.languages)
    pdf.output(str(path))


def section(pdf: FPDF, heading: str, body: str) -> None:
    pdf.set_font("Helvetica", "B", 13)
    pdf.cell(0, 8, heading, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 11)
    pdf.multi_cell(0, 6, body, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)


def main(out: Path) -> int:
    """Write every CV into ``out`` (created if missing); returns how many."""
    out.mkdir(parents=True, exist_ok=True)
    for person in PEOPLE:
        slug = person.name.lower().replace(" ", "-").replace("á", "a")
        write_cv(person, out / f"{slug}.pdf")
    return len(PEOPLE)
