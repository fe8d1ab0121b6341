"""Tools beside run.py and sweep.py: `python -m sota.tools.bench` (speed and memory of configurations),
`sota.tools.drift` (perplexity before and after recovery), `sota.tools.convert` (converters),
`sota.tools.whisper_baseline` (Whisper's own decoder on a manifest)."""
