"""Beam wiring only: each DoFn opens its resources once per worker and calls corebuild stages."""
