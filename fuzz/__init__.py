"""Fuzzing of the AdmissionReview parser and the whole HTTP handler.

Cases are built from the real manifests in tests/fixtures (every kind the gateway reads),
wrapped in AdmissionReviews of several identities and operations, then mutated: types,
sizes, encodings, nesting depth, nulls, unicode, huge numbers, truncated JSON, wrong content
types, broken GPU quantities. Each case is answered by the real Starlette app in-process
(real SQLite store) and checked against the goals in `fuzz.checks`.

    python3 -m fuzz --cases 100000        # the long run; prints cases/s and any failure's reproducer
    python3 -m fuzz --replay 1234         # one case again, by its number

`fuzz.strategies` offers the same cases to hypothesis (tests/unit/test_fuzz_quick.py).
"""
