"""MPNet (all-mpnet-base-v2): a bucketed relative-position bias added inside its own attention, so it runs the
grouped runner (engine/grouped.py); its positions (padding_idx + 1 on, as RoBERTa's) come from its own code."""

from ..positions import classify_first_token
from . import ArchSpec, register

register(ArchSpec("mpnet", family="MPNet", classify=classify_first_token, runner="grouped"))
