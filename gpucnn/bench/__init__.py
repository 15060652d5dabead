"""Benchmarks side by side with PyTorch: `python -m gpucnn.bench` (see `__main__`).

`cases` says what is timed, `rivals` how each framework runs and times it, `report`
how the results are shown and saved.
"""
