"""The small core every layer may use: hashing (``hashing``), the one error base class
(``errors``), the moment grid's constants (``grid``) and, in ``media``, the one media reader.

Nothing here imports another l2l package, torch or PyAV at import time.
"""
