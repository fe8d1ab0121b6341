"""Sweeps over compression configurations (grid and multi-objective search) with a Pareto-frontier report."""

import sys

if __name__ == "__main__":
    sys.exit("sweep.py: not yet available. Use Hydra multirun meanwhile: python run.py -m llm=tiny_s,tiny_m")
