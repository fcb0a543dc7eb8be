"""RLWE layer: sampling, keys, hybrid key switching."""
