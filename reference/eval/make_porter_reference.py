#!/usr/bin/env python3
"""Reference stems for tests/pipeline/eval/porter.test.ts.

Runs NLTK's PorterStemmer in its default mode (NLTK_EXTENSIONS), which is the stemmer Google's
rouge-score uses with use_stemmer=True, over a fixed word list (general English words that exercise
every step of the algorithm plus financial vocabulary) and writes porter_reference.json beside this
script. Needs NLTK (Debian: apt-get install python3-nltk; run with /usr/bin/python3).
"""
import json
import os

import nltk
from nltk.stem.porter import PorterStemmer

WORDS = """
caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated troubled sized
hopping tanned falling hissing fizzed failing filing happy sky skies dying lying tying news innings
relational conditional rational valenci hesitanci digitizer conformabli radicalli differentli vileli
analogousli vietnamization predication operator feudalism decisiveness hopefulness callousness
formaliti sensitiviti sensibiliti triplicate formative formalize electriciti electrical hopeful
goodness revival allowance inference airliner gyroscopic adjustable defensible irritant replacement
adjustment dependent adoption homologou communism activate angulariti homologous effective
bowdlerize probate rate cease controll roll generalizations oscillators enjoy spy spied tried flies
fully logically archaeology analogies cried died lied ied eed ing ed succeeded proceeding exceeded
revenue revenues earnings guidance guided margins marginal operating operational profitability
profitable dividends dividend repurchases repurchased acquisitions acquired impairment impairments
restructuring headwinds tailwinds increased increasing increases decreased declining declined
growth growing grew quarterly quarter fiscal billion millions percent basis points liquidity
volatility volatile hedging hedged securities security derivatives amortization depreciation
capitalization capitalized outperformed underperformed downgraded upgraded bankruptcy insolvency
sustainability sustainable consolidated consolidation expectations expected exceeding shareholders
y by ay yy tree trees ivy troubles private oaten orrery abilities sensational happiness agreement
1990s 2023 q3 10k bps ebitda eps yoy
allowances analysts announced announcement anticipated approximately assets audited backlog
balances bookings borrowings buybacks capabilities categories ceased challenges charged
collaboration commercial commitments companies competitive conditions contributed conversion
customers debts delivered demand difficulties disclosed diversified divisions earned efficiencies
emerging engineering equity estimates excluding executives facilities financing forecasts
generated generally geographies globally happening hiring improvements including indicated
industries inflation initiatives innovation integration inventories investing investors leasing
lending licensing maintained managing manufacturing meaningful momentum negotiations normalized
obligations offerings opportunities optimization ordering organizations partially partnerships
performing positioned pricing priorities proceeds productivity projections provisions purchases
realized receivables recognized reduction regulatory relatively remained reported reporting
representing resulting retailers revised rising sequentially servicing significantly softness
spending strategically strengthening subscribers substantially suppliers supplying transactions
uncertainties underlying utilization valuations weakened weighted writedowns yielding
feed fly flying triplicated allied rallies tallied centralization hopefulli generously
""".split()


def main() -> None:
    stemmer = PorterStemmer()
    out = {
        "generator": "reference/eval/make_porter_reference.py",
        "nltk_version": nltk.__version__,
        "mode": stemmer.mode,
        "stems": {w: stemmer.stem(w) for w in WORDS},
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "porter_reference.json")
    with open(path + ".tmp", "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
