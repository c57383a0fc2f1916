"""Benchmarks behind ``cdcrouter bench <subject>``, one module per subject, kept out of the product
packages so that capture, route, deploy and stack hold only what runs in production."""
