"""A labelled PII set, generated, and per-type precision/recall of the `pii` stage's recognisers.

Values follow the real formats (numbering plans, Luhn and mod-97 check digits, key prefixes) in
many spellings, embedded in ordinary sentences; look-alikes that must not be flagged (version
numbers, dates, order and tracking numbers, ISBNs, DOIs, prices...) are mixed in. The tests hold
the recognisers to recall >= 0.95 and precision >= 0.90 per type; the benchmark reuses the
documents. A second set holds phone numbers spelled by python-phonenumbers' own formatters (US ones
under area codes not assigned today) and look-alikes by kind (dates, versions, order numbers, ISBNs,
bad-Luhn card numbers, prices, times), for phone recall and what must stay. Everything is generated from a seed, so a failure is reproducible.
"""
from __future__ import annotations

import random
import string
from dataclasses import dataclass

import phonenumbers

FILLER = [
    "The quarterly review went better than anyone expected.",
    "We moved the meeting to the small room on the third floor.",
    "Thanks again for your patience while we sorted this out.",
    "The shipment left the warehouse on Tuesday morning.",
    "Let me know if anything in the draft looks wrong to you.",
    "Our team spent most of the week on the migration plan.",
    "The weather held up, so the outdoor session went ahead.",
    "I have attached the notes from yesterday's call.",
    "Please keep this thread for your records.",
    "Nothing else has changed since the last update.",
    "The library closes early on public holidays.",
    "She said the new schedule works for everyone on her side.",
]

# (template, where the value goes). Templates read naturally around each kind of value.
PII_TEMPLATES = {
    "EMAIL": [
        "You can write to {v} with any questions.",
        "Contact: {v}",
        "Send the signed form to <{v}> before Friday.",
        "Her address is {v}.",
        "(reply to {v})",
        "mailto:{v}",
        "Questions? Email {v}, or ask at the front desk.",
    ],
    "PHONE": [
        "Call me on {v} after six.",
        "Phone: {v}",
        "You can reach the office at {v} during business hours.",
        "His mobile number is {v}.",
        "For bookings ring {v} or visit the desk.",
        "Tel. {v}",
    ],
    "CREDIT_CARD": [
        "The card on file is {v}.",
        "Payment was made with card number {v} last month.",
        "Please charge {v} for the deposit.",
        "Visa {v}, expiry 09/27.",
        "cc: {v}",
    ],
    "IBAN": [
        "Please transfer the amount to IBAN {v}.",
        "Bank details: {v} (reference: invoice 2231).",
        "Our account is {v} at the local branch.",
        "IBAN: {v}",
    ],
    "IP_ADDRESS": [
        "The login came from {v} at midnight.",
        "Server IP: {v}",
        "Requests from {v} were blocked by the firewall.",
        "ssh admin@{v} -p 2222",
        "The device was assigned {v} by DHCP.",
    ],
    "US_SSN": [
        "SSN: {v}",
        "His social security number is {v}.",
        "Please confirm the SSN {v} on the tax form.",
        "Social Security No. {v} was listed on the application.",
    ],
    "CREDENTIAL_URL": [
        "Connect with {v} from the staging box.",
        "DATABASE_URL={v}",
        "The old mirror was {v} until last year.",
        "Clone it from {v} and run the setup script.",
    ],
    "SECRET": [
        "My key is {v}, please rotate it.",
        "export API_TOKEN={v}",
        "Found this in the logs: {v}",
        "Authorization: Bearer {v}",
        "The leaked credential ({v}) has been revoked.",
    ],
}

# Values with no recognisable format are secrets only by the name they are assigned to.
ASSIGNED_SECRET_TEMPLATES = [
    "export API_TOKEN={v}",
    "client_secret: {v}",
    'db_password = "{v}"',
    "Authorization: Bearer {v}",
    "set apiKey={v} in the environment",
]

LOOKALIKE_TEMPLATES = [
    "We upgraded to version {v} last week.",
    "The release notes for {v} mention the fix.",
    "The report is dated {v}.",
    "Your order {v} has shipped.",
    "See {v} for the full reference.",
    "The total came to {v} including tax.",
    "Tracking number: {v}",
    "The meeting is at {v} in room 4.",
    "Reference {v} applies to this case.",
]

NAMES = ["john", "maria", "wei", "olga", "ahmed", "sofia", "liam", "priya", "kenji", "fatima", "noah", "chloe"]
SURNAMES = ["smith", "garcia", "chen", "ivanova", "hassan", "rossi", "murphy", "patel", "tanaka", "okafor", "brown", "martin"]
DOMAINS = ["example.com", "mail.example.org", "company.co.uk", "uni-heidelberg.de", "startup.io", "gmail.com",
           "posteo.de", "orange.fr", "agency.gov", "student.unimelb.edu.au", "shop.example.net", "research.ac.uk"]
US_AREA_CODES = ["212", "213", "312", "415", "617", "646", "702", "718", "805", "917", "305", "404", "512", "206"]


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _email(rng: random.Random) -> str:
    first, last = rng.choice(NAMES), rng.choice(SURNAMES)
    local = rng.choice([
        f"{first}.{last}", f"{first}_{last}{rng.randint(1, 99)}", f"{first[0]}{last}", f"{first}+news@",
        f"{first}.{last}.{rng.randint(1970, 2005)}", f"{first.upper()}.{last.upper()}", f"{last}-{first}",
    ]).rstrip("@")
    return f"{local}@{rng.choice(DOMAINS)}"


def _phone(rng: random.Random) -> str:
    """Numbers that follow their country's numbering plan, in the spellings people use."""
    area, exchange, line = rng.choice(US_AREA_CODES), str(rng.randint(2, 9)) + _digits(rng, 2), _digits(rng, 4)
    d = _digits
    return rng.choice([
        f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}", f"{area}.{exchange}.{line}",
        f"+1 {area} {exchange} {line}", f"+1-{area}-{exchange}-{line}", f"1-800-{exchange}-{line}",
        f"+44 20 7{d(rng, 3)} {d(rng, 4)}", f"020 7{d(rng, 3)} {d(rng, 4)}", f"07400 {d(rng, 6)}",
        f"+44 7400 {d(rng, 6)}", f"+49 30 {d(rng, 8)}", f"030 {d(rng, 8)}", f"+49 (0)89 {d(rng, 7)}",
        f"+49 151 {d(rng, 8)}", f"+33 1 {d(rng, 2)} {d(rng, 2)} {d(rng, 2)} {d(rng, 2)}",
        f"06 {d(rng, 2)} {d(rng, 2)} {d(rng, 2)} {d(rng, 2)}", f"+91 9{d(rng, 4)} {d(rng, 5)}",
        f"+55 11 9{d(rng, 4)}-{d(rng, 4)}", f"+81 3-{rng.randint(1000, 9999)}-{d(rng, 4)}", f"+61 2 9{d(rng, 3)} {d(rng, 4)}",
        f"+34 91{d(rng, 1)} {d(rng, 3)} {d(rng, 3)}", f"+31 20 {d(rng, 3)} {d(rng, 4)}",
    ])


def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + _digits(rng, length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        n = int(ch)
        if i % 2 == 0:
            n = n * 2 - 9 if n * 2 > 9 else n * 2
        total += n
    return body + str((10 - total % 10) % 10)


def _card(rng: random.Random) -> str:
    kind = rng.choice(["visa", "mc", "mc2", "amex", "discover", "jcb", "diners"])
    prefix, length = {
        "visa": ("4", 16), "mc": (str(rng.randint(51, 55)), 16), "mc2": (str(rng.randint(2221, 2720)), 16),
        "amex": (rng.choice(["34", "37"]), 15), "discover": ("6011", 16), "jcb": ("35" + str(rng.randint(28, 89)), 16),
        "diners": ("36", 14),
    }[kind]
    number = luhn_complete(prefix, length, rng)
    if length == 15:
        groups = [number[:4], number[4:10], number[10:]]
    elif length == 14:
        groups = [number[:4], number[4:10], number[10:]]
    else:
        groups = [number[i:i + 4] for i in range(0, 16, 4)]
    return rng.choice([" ", "-", ""]).join(groups)


IBAN_LAYOUT = {"DE": 18, "GB": None, "FR": 23, "ES": 20, "IT": None, "NL": None, "BE": 12, "CH": 17, "AT": 16, "PL": 24}


def iban(country: str, rng: random.Random) -> str:
    if country == "GB":
        bban = rng.choice(["NWBK", "BARC", "HBUK", "LOYD"]) + _digits(rng, 14)
    elif country == "IT":
        bban = rng.choice(string.ascii_uppercase) + _digits(rng, 10) + _digits(rng, 12)
    elif country == "NL":
        bban = rng.choice(["ABNA", "INGB", "RABO"]) + _digits(rng, 10)
    else:
        bban = _digits(rng, IBAN_LAYOUT[country])
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


def _iban(rng: random.Random) -> str:
    value = iban(rng.choice(list(IBAN_LAYOUT)), rng)
    return value if rng.random() < 0.5 else " ".join(value[i:i + 4] for i in range(0, len(value), 4))


def _ip(rng: random.Random) -> str:
    hexes = [f"{rng.randint(0, 0xffff):x}" for _ in range(8)]
    return rng.choice([
        ".".join(str(rng.randint(1, 254)) for _ in range(4)),
        f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}/24",
        ":".join(hexes),
        f"2001:db8:{hexes[0]}::{hexes[1]}",
        f"fe80::{hexes[2]}:{hexes[3]}",
        f"2a00:1450:{hexes[4]}:{hexes[5]}::200e",
    ])


def _ssn(rng: random.Random) -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    group, serial = rng.randint(1, 99), rng.randint(1, 9999)
    sep = rng.choice(["-", "-", " ", ""])
    return f"{area:03d}{sep}{group:02d}{sep}{serial:04d}"


def _password(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(rng.randint(8, 14))) + rng.choice("!#%")


def _credential_url(rng: random.Random) -> str:
    user = rng.choice(["admin", "deploy", "app_user", rng.choice(NAMES)])
    host = rng.choice(["db.internal", "10.0.3.7", "mirror.example.org", "cache-01.prod.local", "git.example.com"])
    return rng.choice([
        f"postgres://{user}:{_password(rng)}@{host}:5432/app",
        f"mysql://{user}:{_password(rng)}@{host}/shop",
        f"https://{user}:{_password(rng)}@{host}/repo.git",
        f"ftp://{user}:{_password(rng)}@{host}/pub/",
        f"redis://default:{_password(rng)}@{host}:6379/0",
        f"mongodb+srv://{user}:{_password(rng)}@{host}/test?retryWrites=true",
        f"amqp://{user}:{_password(rng)}@{host}:5672/%2F",
    ])


def _random(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _secret(rng: random.Random) -> str:
    alnum = string.ascii_letters + string.digits
    upper = string.ascii_uppercase + string.digits
    return rng.choice([
        "AKIA" + _random(rng, upper, 16),
        "ghp_" + _random(rng, alnum, 36),
        "github_pat_" + _random(rng, alnum + "_", 60),
        "glpat-" + _random(rng, alnum, 20),
        "xoxb-" + _digits(rng, 12) + "-" + _digits(rng, 12) + "-" + _random(rng, alnum, 24),
        "sk_live_" + _random(rng, alnum, 24),
        "AIza" + _random(rng, alnum + "_-", 35),
        "sk-proj-" + _random(rng, alnum, 48),
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI" + _random(rng, alnum, 20) + "." + _random(rng, alnum + "_-", 43),
    ])


GENERATORS = {
    "EMAIL": _email, "PHONE": _phone, "CREDIT_CARD": _card, "IBAN": _iban, "IP_ADDRESS": _ip,
    "US_SSN": _ssn, "CREDENTIAL_URL": _credential_url, "SECRET": _secret,
}


def lookalike(rng: random.Random) -> str:
    """Strings that look like numbers or identifiers but are not personal data."""
    return rng.choice([
        f"{rng.randint(1, 4)}.{rng.randint(0, 20)}.{rng.randint(0, 30)}",  # semantic versions
        f"v{rng.randint(0, 9)}.{rng.randint(0, 99)}.{rng.randint(0, 99)}-rc.{rng.randint(1, 5)}",
        f"10.0.{rng.randint(19041, 22631)}.{rng.randint(1000, 3999)}",  # Windows build numbers
        f"{rng.randint(100, 130)}.0.{rng.randint(5000, 6999)}.{rng.randint(50, 250)}",  # browser versions
        f"{rng.randint(2000, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",  # ISO dates
        f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2025)}",
        f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(1990, 2025)}",
        f"{rng.randint(2000, 2025)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
        f"#{_digits(rng, 3)}-{_digits(rng, 7)}-{_digits(rng, 7)}",  # marketplace order numbers
        f"ORD-{rng.randint(2019, 2025)}-{_digits(rng, 6)}",
        f"INV-{_digits(rng, 5)}",
        f"{_digits(rng, 2)}-{_digits(rng, 5)}-{_digits(rng, 5)}",
        f"ISBN 978-{rng.randint(0, 1)}-{_digits(rng, 3)}-{_digits(rng, 5)}-{rng.randint(0, 9)}",
        f"ISBN-10 {rng.randint(0, 1)}-{_digits(rng, 3)}-{_digits(rng, 5)}-{rng.randint(0, 9)}",
        f"ISBN {rng.randint(0, 1)}{_digits(rng, 9)}",
        f"doi:10.{rng.randint(1000, 9999)}/{_random(rng, string.ascii_lowercase, 5)}.{rng.randint(100, 999)}",
        f"${rng.randint(1, 99)},{_digits(rng, 3)}.{_digits(rng, 2)}",
        f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d} pm",
        f"1Z{_random(rng, string.ascii_uppercase + string.digits, 16)}",
        f"pp. {rng.randint(10, 300)}-{rng.randint(301, 600)}",
        f"commit {_random(rng, '0123456789abcdef', 12)}",
        f"{rng.uniform(-90, 90):.4f}, {rng.uniform(-180, 180):.4f}",
    ])


@dataclass
class LabelledDoc:
    text: str
    spans: list[tuple[str, int, int]]  # (entity type, start, end) of every planted value

    def values(self) -> list[str]:
        return [self.text[s:e] for _, s, e in self.spans]


def generate(n_per_type: int = 60, n_lookalike_docs: int = 120, seed: int = 7) -> list[LabelledDoc]:
    """Documents each holding one or two PII values among filler sentences, plus look-alike-only documents."""
    rng = random.Random(seed)
    plan = [entity for entity in GENERATORS for _ in range(n_per_type)]
    rng.shuffle(plan)
    docs = []
    while plan:
        picks = [plan.pop() for _ in range(min(len(plan), rng.choice([1, 1, 2])))]
        docs.append(_compose(rng, picks, with_lookalike=rng.random() < 0.5))
    docs += [_compose(rng, [], with_lookalike=True) for _ in range(n_lookalike_docs)]
    return docs


def _compose(rng: random.Random, entities: list[str], with_lookalike: bool) -> LabelledDoc:
    parts: list[tuple[str, str | None, str | None]] = [(s, None, None) for s in rng.sample(FILLER, 3)]
    for entity in entities:
        template, value = rng.choice(PII_TEMPLATES[entity]), GENERATORS[entity](rng)
        if entity == "SECRET" and rng.random() < 0.3:
            template = rng.choice(ASSIGNED_SECRET_TEMPLATES)
            value = _random(rng, string.ascii_letters + string.digits, rng.randint(20, 40))
        parts.insert(rng.randint(0, len(parts)), (template, entity, value))
    if with_lookalike:
        parts.insert(rng.randint(0, len(parts)), (rng.choice(LOOKALIKE_TEMPLATES), None, lookalike(rng)))
    text, spans = "", []
    for template, entity, value in parts:
        if text:
            text += " "
        if value is None:
            text += template
            continue
        before, after = template.split("{v}")
        start = len(text) + len(before)
        text += before + value + after
        if entity is not None:
            spans.append((entity, start, start + len(value)))
    return LabelledDoc(text, spans)


def score(docs: list[LabelledDoc], predictions: list[list[tuple[str, int, int]]]) -> dict[str, dict[str, float]]:
    """Per entity type: a planted value counts as found when a prediction of its type covers it whole;
    a prediction counts as correct when it overlaps a planted value of its type."""
    stats: dict[str, dict[str, int]] = {}
    for doc, predicted in zip(docs, predictions):
        for entity, start, end in doc.spans:
            s = stats.setdefault(entity, {"gold": 0, "found": 0, "predicted": 0, "correct": 0})
            s["gold"] += 1
            s["found"] += any(p == entity and ps <= start and pe >= end for p, ps, pe in predicted)
        for entity, start, end in predicted:
            s = stats.setdefault(entity, {"gold": 0, "found": 0, "predicted": 0, "correct": 0})
            s["predicted"] += 1
            s["correct"] += any(g == entity and gs < end and start < ge for g, gs, ge in doc.spans)
    return {
        entity: {
            "gold": s["gold"], "predicted": s["predicted"],
            "recall": s["found"] / s["gold"] if s["gold"] else 1.0,
            "precision": s["correct"] / s["predicted"] if s["predicted"] else 1.0,
        }
        for entity, s in sorted(stats.items())
    }


# Phone numbers made with python-phonenumbers' own formatters (not the recogniser's code), in sentences
# with and without a phone word, and look-alikes of each kind that must stay.
PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN")
PHONE_CONTEXT_TEMPLATES = ["Call me on {v} after six.", "Phone: {v}", "Tel. {v}", "Mobile {v} (any time).",
                           "Fax: {v}", "You can ring {v} on weekdays."]
PHONE_PLAIN_TEMPLATES = ["Write this down: {v}.", "Ask Maria at {v} about the keys.", "{v} is the one to use now.",
                         "Her details are on the card ({v}).", "The front desk, {v}, opens at nine."]
LOOKALIKE_KIND_TEMPLATES = ["The file says {v} and nothing else.", "Noted: {v}.", "See {v} in the appendix.",
                            "It was {v}, as far as I remember."]


def unassigned_us_area_codes() -> list[str]:
    """NANP area codes (N = 2-9, not N11) under which phonenumbers knows no valid number today."""

    def assigned(area: str) -> bool:
        return any(phonenumbers.is_valid_number(phonenumbers.parse(f"+1{area}{exchange}1234"))
                   for exchange in ("201", "234", "555", "642", "785", "918"))

    return [f"{n}{d1}{d2}" for n in range(2, 10) for d1 in range(10) for d2 in range(10)
            if not (d1 == 1 and d2 == 1) and not assigned(f"{n}{d1}{d2}")]


def _random_valid_number(region: str, rng: random.Random):
    lengths = phonenumbers.PhoneMetadata.metadata_for_region(region).general_desc.possible_length
    wanted = {phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE,
              phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
    code = phonenumbers.country_code_for_region(region)
    while True:
        nsn = str(rng.randint(1, 9)) + _digits(rng, rng.choice(lengths) - 1)
        number = phonenumbers.parse(f"+{code}{nsn}")
        if phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in wanted:
            return number


def phone_spellings(region: str, rng: random.Random, us_area_codes: list[str]) -> list[str]:
    """One random number of `region` in the spellings people use: phonenumbers' national, international
    and E.164 formats, the international one with spaces only, and for Indian mobiles the 5-5 grouping.
    US numbers get an area code no number is assigned under today."""
    formats = phonenumbers.PhoneNumberFormat
    if region == "US":
        number = phonenumbers.parse(f"+1{rng.choice(us_area_codes)}{rng.randint(2, 9)}{_digits(rng, 6)}")
    else:
        number = _random_valid_number(region, rng)
    international = phonenumbers.format_number(number, formats.INTERNATIONAL)
    spellings = [phonenumbers.format_number(number, formats.NATIONAL), international,
                 phonenumbers.format_number(number, formats.E164), international.replace("-", " ")]
    nsn = phonenumbers.national_significant_number(number)
    if region == "IN" and phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE:
        spellings += [f"+91 {nsn[:5]} {nsn[5:]}", f"0{nsn[:5]} {nsn[5:]}"]
    return spellings


def phone_recall_set(n_per_region: int = 60, seed: int = 17) -> list[LabelledDoc]:
    """Documents each holding one phone number (see `phone_spellings`), half after a phone word."""
    rng = random.Random(seed)
    area_codes = unassigned_us_area_codes()
    docs = []
    for region in PHONE_REGIONS:
        for i in range(n_per_region):
            value = rng.choice(phone_spellings(region, rng, area_codes))
            template = rng.choice(PHONE_CONTEXT_TEMPLATES if i % 2 else PHONE_PLAIN_TEMPLATES)
            docs.append(_compose_one(rng, template, value, "PHONE"))
    return docs


def _isbn13(rng: random.Random) -> str:
    body = "978" + _digits(rng, 9)
    check = (10 - sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(body)) % 10) % 10
    return rng.choice([f"{body[:3]}-{body[3]}-{body[4:7]}-{body[7:]}-{check}", body + str(check)])


def _isbn10(rng: random.Random) -> str:
    body = _digits(rng, 9)
    check = sum((10 - i) * int(c) for i, c in enumerate(body)) * 10 % 11
    check_char = "X" if check == 10 else str(check)
    return rng.choice([f"{body[0]}-{body[1:4]}-{body[4:]}-{check_char}", body + check_char])


def _bad_luhn_card(rng: random.Random) -> str:
    good = luhn_complete(rng.choice(["4", "51", "55", "6011"]), 16, rng)
    number = good[:-1] + str((int(good[-1]) + rng.randint(1, 9)) % 10)
    return rng.choice([" ", "-", ""]).join(number[i:i + 4] for i in range(0, 16, 4))


LOOKALIKE_KINDS = {
    "date": lambda rng: rng.choice([
        f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(1990, 2030)}",
        f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(1990, 2030)}",
        f"{rng.randint(1, 28):02d}-{rng.randint(1, 12):02d}-{rng.randint(1990, 2030)}",
        f"{rng.randint(1990, 2030)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
        f"{rng.randint(1990, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
    ]),
    "version": lambda rng: rng.choice([
        f"{rng.randint(0, 20)}.{rng.randint(0, 40)}.{rng.randint(0, 300)}",
        f"v{rng.randint(0, 9)}.{rng.randint(0, 99)}.{rng.randint(0, 99)}-rc.{rng.randint(1, 5)}",
        f"10.0.{rng.randint(10240, 26100)}.{rng.randint(1, 9999)}",
        f"{rng.randint(90, 140)}.0.{rng.randint(4000, 7999)}.{rng.randint(1, 300)}",
        f"{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(1000, 99999)}",
    ]),
    "order number": lambda rng: rng.choice([
        f"#{_digits(rng, 3)}-{_digits(rng, 7)}-{_digits(rng, 7)}", f"{_digits(rng, 3)}-{_digits(rng, 7)}-{_digits(rng, 7)}",
        f"ORD-{rng.randint(2019, 2030)}-{_digits(rng, 6)}", f"PO-{_digits(rng, 10)}",
        f"{_digits(rng, 2)}-{_digits(rng, 5)}-{_digits(rng, 5)}", f"order #{_digits(rng, 8)}",
    ]),
    "ISBN": lambda rng: rng.choice(["", "ISBN ", "ISBN-13: ", "ISBN-10 "]) + rng.choice([_isbn13, _isbn10])(rng),
    "bad-Luhn card number": _bad_luhn_card,
    "price": lambda rng: rng.choice([
        f"${rng.randint(1, 999)},{_digits(rng, 3)}.{_digits(rng, 2)}", f"€{rng.randint(1, 999)}.{_digits(rng, 3)},{_digits(rng, 2)}",
        f"{rng.randint(1, 999)}.{_digits(rng, 3)},{_digits(rng, 2)} €", f"£{rng.randint(1, 99)},{_digits(rng, 3)}",
        f"USD {rng.randint(1, 99)},{_digits(rng, 3)},{_digits(rng, 3)}.{_digits(rng, 2)}",
    ]),
    "time": lambda rng: rng.choice([
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}", f"{rng.randint(1, 12)}:{rng.randint(0, 59):02d} pm",
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        f"{rng.randint(8, 11)}:{rng.randint(0, 59):02d}-{rng.randint(12, 20)}:{rng.randint(0, 59):02d}",
    ]),
}


def lookalike_set(n_per_kind: int = 60, seed: int = 19) -> dict[str, list[LabelledDoc]]:
    """Per look-alike kind, documents each holding one; `spans` marks the look-alike (type LOOKALIKE)."""
    rng = random.Random(seed)
    return {kind: [_compose_one(rng, rng.choice(LOOKALIKE_KIND_TEMPLATES), make(rng), "LOOKALIKE")
                   for _ in range(n_per_kind)] for kind, make in LOOKALIKE_KINDS.items()}


def _compose_one(rng: random.Random, template: str, value: str, label: str) -> LabelledDoc:
    before = " ".join(rng.sample(FILLER, 2)) + " "
    head, tail = template.split("{v}")
    start = len(before) + len(head)
    return LabelledDoc(before + head + value + tail + " " + rng.choice(FILLER), [(label, start, start + len(value))])
