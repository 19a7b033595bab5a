"""Side-by-side timings of torchnde against torchdiffeq, torchode, diffrax and scipy.

Run ``python -m benchmarks.run [--quick]``; see ``benchmarks/README.md`` for what each row means.
"""
