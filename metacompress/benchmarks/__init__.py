"""Benchmarks behind ``metacompress bench``: speed of the core, the env, and policy quality."""
