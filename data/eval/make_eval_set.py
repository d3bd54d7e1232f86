#!/usr/bin/env python3
"""Writes the bundled evaluation set (qa.jsonl, summarization.jsonl, sentiment.jsonl) beside this
script. All text is written for finllm: the companies are fictional and every figure is made up
(drawn from a fixed seed), so no third-party data is involved. See README.md for the fields.
Run: python3 data/eval/make_eval_set.py  (standard library only; output is deterministic).
"""
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))

COMPANIES = [
    ("Northwind Logistics", "freight volumes"), ("Harbor Point Bancorp", "loan growth"),
    ("Cedar Ridge Software", "subscription renewals"), ("Alder Foods", "snack demand"),
    ("Meridian Semiconductors", "data-center chip orders"), ("Bluewater Insurance", "premium growth"),
    ("Summit Retail Group", "holiday traffic"), ("Ironwood Energy", "natural gas prices"),
    ("Lakeshore Pharmaceuticals", "oncology sales"), ("Crescent Media", "advertising spending"),
    ("Pinecrest Airlines", "business travel"), ("Granite Industrial", "equipment orders"),
    ("Willow Health Systems", "patient volumes"), ("Orion Telecom", "fiber subscribers"),
    ("Silverline Payments", "transaction volumes"), ("Redwood Materials", "construction activity"),
    ("Falcon Aerospace", "aftermarket services"), ("Juniper Consumer Brands", "pricing actions"),
    ("Beacon Utilities", "rate increases"), ("Quarry Lane Homebuilders", "new orders"),
    ("Tidewater Shipping", "container rates"), ("Maple Street Financial", "fee income"),
    ("Cobalt Robotics", "warehouse automation demand"), ("Evergreen Apparel", "online sales"),
    ("Horizon Hotels", "occupancy"), ("Sterling Chemicals", "specialty volumes"),
    ("Aspen Medical Devices", "surgical procedure volumes"), ("Keystone Rail", "intermodal volumes"),
    ("Larkspur Cloud", "enterprise adoption"), ("Vantage Auto Parts", "replacement demand"),
]
QUARTERS = ["first", "second", "third", "fourth"]


def poss(name):
    return name + ("'" if name.endswith("s") else "'s")


def money(x_millions):
    """'$1.42 billion' or '$640 million' (x in millions)."""
    if x_millions >= 1000:
        return f"${x_millions / 1000:.2f} billion"
    return f"${x_millions:,.0f} million"


def facts(rng, name, driver):
    rev = rng.choice([rng.randint(180, 950), rng.randint(1000, 9800)])
    growth = rng.choice([-1, 1, 1, 1]) * rng.randint(2, 19)
    prior = round(rev / (1 + growth / 100))
    margin = round(rng.uniform(6, 32), 1)
    bps = rng.choice([-1, 1]) * rng.choice([40, 60, 80, 110, 150, 180, 220, 260, 300])
    eps = round(rng.uniform(0.2, 4.5), 2)
    cons = round(eps + rng.choice([-1, 1]) * rng.choice([0.03, 0.05, 0.08, 0.12]), 2)
    fcf = rng.randint(20, max(40, rev // 5))
    guidance = "raised" if growth > 8 else ("lowered" if growth < 0 else "reaffirmed")
    return dict(name=name, driver=driver, q=rng.choice(QUARTERS), year=rng.choice([2023, 2024]), rev=rev,
                prior=prior, growth=growth, margin=margin, bps=bps, eps=eps, cons=cons, fcf=fcf, guidance=guidance)


def context(f):
    up = "rose" if f["growth"] > 0 else "fell"
    exp = "expanded" if f["bps"] > 0 else "contracted"
    beat = "ahead of" if f["eps"] > f["cons"] else "below"
    return (f"{f['name']} reported {f['q']}-quarter {f['year']} revenue of {money(f['rev'])}, which {up} "
            f"{abs(f['growth'])}% from {money(f['prior'])} a year earlier, driven by {f['driver']}. "
            f"Operating margin {exp} {abs(f['bps'])} basis points to {f['margin']}%. Diluted earnings per "
            f"share were ${f['eps']:.2f}, {beat} the ${f['cons']:.2f} consensus estimate. Free cash flow "
            f"was {money(f['fcf'])}, and management {f['guidance']} its full-year guidance.")


def summary(f):
    up = "rose" if f["growth"] > 0 else "fell"
    exp = "expanded" if f["bps"] > 0 else "contracted"
    beat = "beating" if f["eps"] > f["cons"] else "missing"
    return (f"{poss(f['name'])} {f['q']}-quarter revenue {up} {abs(f['growth'])}% to {money(f['rev'])} and operating "
            f"margin {exp} {abs(f['bps'])} bps to {f['margin']}%; EPS of ${f['eps']:.2f} {beat} consensus, and "
            f"full-year guidance was {f['guidance']}.")


def source_text(f, rng):
    up = "grew" if f["growth"] > 0 else "declined"
    tone = {"raised": "We are raising our outlook for the year.", "lowered": "Given the environment, we are lowering our outlook for the year.",
            "reaffirmed": "We are reaffirming our outlook for the year."}[f["guidance"]]
    exp = "improved" if f["bps"] > 0 else "declined"
    filler = rng.choice([
        "Our teams executed well and we continued to invest in the business.",
        "We remain focused on disciplined capital allocation.",
        "Customer conversations remain constructive, although the macro picture is mixed.",
        "We closed the quarter with a healthy balance sheet.",
    ])
    return (f"Chief executive: Thank you for joining the {f['name']} {f['q']}-quarter {f['year']} earnings call. "
            f"Revenue {up} {abs(f['growth'])}% year over year to {money(f['rev'])}, reflecting {f['driver']}. {filler} "
            f"Chief financial officer: Operating margin was {f['margin']}%, which {exp} {abs(f['bps'])} basis points from last year. "
            f"Diluted EPS came in at ${f['eps']:.2f} against a consensus of ${f['cons']:.2f}, and free cash flow was {money(f['fcf'])}. "
            f"{tone}")


QA_TEMPLATES = [
    ("revenue", "What was {pname} revenue in the {q} quarter of {year}?", lambda f: money(f["rev"])),
    ("growth", "By what percentage did {pname} revenue change year over year?",
     lambda f: f"{'up' if f['growth'] > 0 else 'down'} {abs(f['growth'])}%"),
    ("margin_change", "By how many basis points did {pname} operating margin change?",
     lambda f: f"{'expanded' if f['bps'] > 0 else 'contracted'} {abs(f['bps'])} basis points"),
    ("eps", "What were {pname} diluted earnings per share?", lambda f: f"${f['eps']:.2f}"),
    ("fcf", "How much free cash flow did {name} generate?", lambda f: money(f["fcf"])),
    ("guidance", "What did {name} do with its full-year guidance?", lambda f: f"it {f['guidance']} its full-year guidance"),
]

# Hand-written sentences with their labels (fictional; no company is named).
SENTIMENT = [
    ('positive', 'Quarterly revenue rose 14% to a record $2.3 billion, ahead of analyst expectations.'),
    ('positive', 'The company raised its full-year guidance after strong demand in its cloud segment.'),
    ('positive', 'Operating margin expanded 180 basis points as cost discipline paid off.'),
    ('positive', 'Net income more than doubled from a year earlier on higher loan volumes.'),
    ('positive', 'The board approved a 10% dividend increase and a new $500 million buyback.'),
    ('positive', 'Same-store sales grew 6%, the best result in three years.'),
    ('positive', 'Free cash flow improved to $410 million, allowing the firm to pay down debt early.'),
    ('positive', 'Analysts upgraded the shares to buy after the margin recovery.'),
    ('positive', 'Bookings accelerated for the fourth straight quarter, lifting the backlog to a record.'),
    ('positive', 'The lender reported solid credit quality, with delinquencies at multi-year lows.'),
    ('positive', 'Gross margin benefited from favorable pricing and a richer product mix.'),
    ('positive', 'The acquisition is expected to be accretive to earnings in its first full year.'),
    ('positive', 'Subscriber growth beat consensus and churn fell to 1.9%.'),
    ('positive', 'Management said synergies from the merger are running ahead of plan.'),
    ('positive', 'The retailer posted a surprise profit thanks to robust holiday traffic.'),
    ('positive', 'Earnings per share of $1.42 exceeded the $1.30 consensus estimate.'),
    ('positive', 'The turnaround plan is working: the unit returned to profitability this quarter.'),
    ('positive', "Strong export orders pushed the manufacturer's order book to an all-time high."),
    ('positive', "The bank's net interest margin widened as deposit costs stayed low."),
    ('positive', 'Shares rallied after the company reported resilient demand across all regions.'),
    ('negative', 'Revenue fell 9% as weak demand in Europe weighed on results.'),
    ('negative', 'The company cut its full-year outlook, citing persistent supply chain headwinds.'),
    ('negative', 'Operating margin contracted 250 basis points on higher input costs.'),
    ('negative', 'The insurer booked a $1.1 billion impairment on its commercial property portfolio.'),
    ('negative', 'Quarterly earnings missed estimates and the stock dropped 12% in early trading.'),
    ('negative', 'The retailer announced layoffs of 2,000 employees as part of a restructuring.'),
    ('negative', 'Credit card delinquencies rose sharply, forcing higher loan loss provisions.'),
    ('negative', "Regulators opened an investigation into the firm's accounting practices."),
    ('negative', 'The chipmaker warned that inventory corrections will hurt sales through year end.'),
    ('negative', 'Net loss widened to $340 million from $120 million a year ago.'),
    ('negative', "Rating agencies downgraded the company's debt after leverage climbed."),
    ('negative', 'Management suspended the dividend to preserve liquidity.'),
    ('negative', 'Same-store sales declined for a fifth consecutive quarter.'),
    ('negative', "The airline's unit revenue slumped as fares came under pressure."),
    ('negative', "A costly product recall erased most of the quarter's profit."),
    ('negative', 'The developer defaulted on an interest payment due to bondholders.'),
    ('negative', 'Gross margin deteriorated as discounting intensified.'),
    ('negative', 'Free cash flow turned negative because of a build-up in working capital.'),
    ('negative', 'The lawsuit could result in penalties that management described as material.'),
    ('negative', 'Weaker advertising spending led to a disappointing quarter for the media group.'),
    ('neutral', 'The company will report second-quarter results on July 24 after the market closes.'),
    ('neutral', 'The board appointed a new chief financial officer effective March 1.'),
    ('neutral', 'The annual shareholder meeting is scheduled for May 15 in Chicago.'),
    ('neutral', 'The firm operates 420 stores across 12 states.'),
    ('neutral', 'The bonds mature in 2031 and pay a fixed coupon semiannually.'),
    ('neutral', 'The company reports its results in three segments: consumer, commercial and services.'),
    ('neutral', 'Management reiterated its previously issued guidance for the year.'),
    ('neutral', 'The transaction is subject to customary closing conditions and regulatory approval.'),
    ('neutral', 'Revenue was flat compared with the same period last year.'),
    ('neutral', 'The bank has about 9,000 employees and is headquartered in Charlotte.'),
    ('neutral', 'The filing lists the fiscal year end as the last Saturday in September.'),
    ('neutral', 'The conference call will be webcast on the investor relations website.'),
    ('neutral', 'The company completed the previously announced sale of its logistics unit.'),
    ('neutral', 'Shares outstanding were roughly 310 million at the end of the quarter.'),
    ('neutral', 'The stock will begin trading under a new ticker symbol next Monday.'),
    ('neutral', 'The report covers the twelve months ended December 31.'),
    ('neutral', "The firm's auditors issued their opinion on the consolidated financial statements."),
    ('neutral', 'The dividend of $0.25 per share is payable on April 10 to holders of record on March 20.'),
    ('neutral', 'The company said it would provide an update on its strategy at an investor day in October.'),
    ('neutral', 'Capital expenditures are planned at a level similar to last year.'),
]


def write_jsonl(name, rows):
    path = os.path.join(HERE, name)
    with open(path + ".tmp", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def main():
    rng = random.Random(20240611)
    all_facts = [facts(rng, n, d) for n, d in COMPANIES]
    qa = []
    for i in range(40):
        f = all_facts[i % len(all_facts)]
        kind, q, a = QA_TEMPLATES[(i * 5 + i // len(all_facts)) % len(QA_TEMPLATES)]
        qa.append({"id": f"qa-{i + 1:03d}", "context": context(f), "question": q.format(pname=poss(f["name"]), **f), "answer": a(f), "kind": kind})
    summ = [{"id": f"sum-{i + 1:03d}", "source": source_text(f, rng), "summary": summary(f)} for i, f in enumerate(all_facts)]
    sent = [{"id": f"sent-{i + 1:03d}", "text": t, "label": lab} for i, (lab, t) in enumerate(SENTIMENT)]
    # Interleave labels so that any prefix of the file is balanced.
    order = sorted(range(len(sent)), key=lambda i: (i % 20, ["positive", "negative", "neutral"].index(sent[i]["label"])))
    sent = [dict(sent[i], id=f"sent-{k + 1:03d}") for k, i in enumerate(order)]
    write_jsonl("qa.jsonl", qa)
    write_jsonl("summarization.jsonl", summ)
    write_jsonl("sentiment.jsonl", sent)


if __name__ == "__main__":
    main()
