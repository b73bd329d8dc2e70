"""Writes emails.json: 60 synthetic e-mails of a hardware team (deterministic, seed 2024).

A story runs through them (a supplier's late chips and a firmware bug push the Falcon
launch back, a VP decides the new date, finance counts the cost) among ordinary office
noise. Run ``python examples/rlm_analysis/make_corpus.py`` to regenerate the committed file.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

PEOPLE = {
    "alice": "alice@falcon.example", "bob": "bob@falcon.example", "carol": "carol@falcon.example",
    "dan": "dan@falcon.example", "erin": "erin@falcon.example", "sam": "sam@acmechips.example",
    "hr": "hr@falcon.example", "news": "newsletter@falcon.example",
}

STORY = [  # (day offset from 1 March, sender, recipients, subject, body)
    (3, "sam", ["bob"], "Acme order 4411 confirmation",
     "Order 4411 for 5,000 radio chips is confirmed for delivery on 2 April."),
    (12, "bob", ["alice"], "Falcon build plan",
     "Pilot build starts the week of 8 April once the Acme radio chips arrive."),
    (20, "sam", ["bob", "alice"], "Order 4411 shipment delay",
     "Our fab had a contamination issue. Order 4411 will slip by four weeks to 30 April. We apologise for the delay."),
    (21, "bob", ["alice", "erin"], "Re: Order 4411 shipment delay",
     "A four week slip on the radio chips delays the pilot build. I am looking for a second supplier."),
    (27, "carol", ["bob"], "Firmware bug FW-212 found in QA",
     "Bug FW-212: the radio firmware drops packets above 40 degrees. It blocks certification until fixed."),
    (33, "bob", ["carol", "alice"], "Re: Firmware bug FW-212 found in QA",
     "The FW-212 fix needs two more weeks of work and another certification run."),
    (38, "alice", ["erin"], "Launch date at risk",
     "With the chip slip and FW-212 the 15 May launch is at risk. We need a decision on the launch date."),
    (41, "erin", ["alice", "bob", "carol", "dan"], "Decision: Falcon launch moves to 12 June",
     "I decided to postpone the Falcon launch from 15 May to 12 June because of the Acme chip delay and bug FW-212."),
    (44, "dan", ["erin", "alice"], "Budget impact of the launch delay",
     "The four week delay costs 180,000 dollars: expedited freight, extra certification and idle line time. The budget overrun is +6% against plan."),
    (47, "erin", ["dan"], "Re: Budget impact of the launch delay",
     "Approved. Take the 180,000 dollars from the contingency reserve."),
    (58, "sam", ["bob"], "Order 4411 shipped",
     "Order 4411 left the fab today and will arrive on 29 April."),
    (66, "carol", ["bob", "alice"], "FW-212 verified",
     "The FW-212 fix passed certification. No further blockers from QA."),
    (80, "alice", ["erin", "bob", "carol", "dan"], "Falcon launch readiness",
     "All launch criteria are met for 12 June."),
]

NOISE_SUBJECTS = [
    ("hr", "Benefits enrolment closes Friday", "Please complete your benefits enrolment by Friday."),
    ("news", "Weekly newsletter", "Team lunch on Thursday, new coffee machine on floor two."),
    ("hr", "Office closed on Monday", "The office is closed on Monday for maintenance."),
    ("news", "Hackathon sign-up", "Sign up for the spring hackathon by the end of the month."),
    ("alice", "Weekly status", "Tasks on track. Marketing assets in review."),
    ("bob", "Lab booking", "I booked the RF lab for Tuesday afternoon."),
    ("carol", "Test rig maintenance", "The thermal chamber is down for calibration on Wednesday."),
    ("dan", "Expense reports", "Please submit expense reports before the monthly close."),
    ("erin", "All-hands agenda", "Agenda for the all-hands: roadmap, hiring, questions."),
]


def build() -> list[dict[str, object]]:
    rng = random.Random(2024)
    start = dt.date(2024, 3, 1)
    rows = [(day, sender, to, subject, body) for day, sender, to, subject, body in STORY]
    names = [n for n in PEOPLE if n not in ("sam", "hr", "news")]
    while len(rows) < 60:
        sender, subject, body = rng.choice(NOISE_SUBJECTS)
        to = rng.sample([n for n in names if n != sender], k=rng.randint(1, 3))
        rows.append((rng.randint(0, 89), sender, to, subject, body))
    rows.sort(key=lambda r: (r[0], r[3]))
    return [
        {"id": f"m{i:03d}", "date": (start + dt.timedelta(days=day)).isoformat(), "sender": PEOPLE[sender],
         "recipients": [PEOPLE[r] for r in to], "subject": subject, "body": body}
        for i, (day, sender, to, subject, body) in enumerate(rows, 1)
    ]


if __name__ == "__main__":
    path = Path(__file__).with_name("emails.json")
    path.write_text(json.dumps(build(), indent=1) + "\n")
    print(f"wrote {path}")
