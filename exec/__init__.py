"""exec: run a Plan with real CKKS on numpy virtual devices (or CuPy GPUs) and measure it."""
