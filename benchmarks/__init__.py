"""Benchmarks: jaxgan vs torch_ref step throughput, end-to-end epochs, and % of a measured roofline.

Entry point: `python -m benchmarks.throughput [--quick]` (see benchmarks/throughput.py).
Benchmarks print ratios measured in one run; they are never timed tests.
"""
