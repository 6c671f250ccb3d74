"""Systems under test, each behind the one small `Service` contract in `base.py`."""
