"""Data shipped inside the package: ``sts_sample.tsv``, 250 STS Benchmark test pairs (see README.md here for its
source and licence), which ``st-backend compare`` uses as its default texts and as ``--sts sample``."""

from __future__ import annotations

from pathlib import Path

#: 250 STS Benchmark test pairs (the 'images' and 'track5.en-en' sources), in the STS Benchmark's tab-separated layout.
STS_SAMPLE = Path(__file__).with_name("sts_sample.tsv")
