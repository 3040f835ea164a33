"""medimg benchmarks, each against a named baseline in the same run: ``python -m benchmarks`` (docs/benchmarks.md)."""
