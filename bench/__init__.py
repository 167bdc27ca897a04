"""Benchmarks of the product against hand-written HF+PEFT loops, the seed's hardware promises and the queue.

Each module is a script: `python -m bench.<name> --help`. See bench/README.md.
"""
