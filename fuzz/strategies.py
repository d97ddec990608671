"""The fuzz cases as hypothesis strategies (for the quick run in the test suite).

A case is drawn by number, so hypothesis shrinks toward small case numbers and a failure
prints a number that `python3 -m fuzz --replay N` reproduces outside hypothesis.
"""

from __future__ import annotations

from hypothesis import strategies as st

from fuzz.cases import Case, make_case


def cases(max_number: int = 2**32) -> st.SearchStrategy[Case]:
    return st.integers(min_value=0, max_value=max_number).map(make_case)
