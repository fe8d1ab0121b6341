"""Compression techniques applied to a built AudioLLM, in one fixed order (see `pipeline`)."""
