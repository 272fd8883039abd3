"""T5 encoder (GTR, sentence-T5: ST loads T5EncoderModel for T5 configs): its first layer's bucketed relative bias
is handed to every layer's attention as ``position_bias``, so it runs the grouped runner (engine/grouped.py).
Only the encoder: a full encoder-decoder (T5ForSequenceClassification) has no spec and runs ST's own path."""

from dataclasses import replace

from . import ArchSpec, register

_ENCODER = ArchSpec("t5", family="T5 encoder", runner="grouped")

# T5EncoderModel sets is_encoder_decoder = False on the config it is built with.
register(
    replace(
        _ENCODER,
        resolve=lambda config: (
            "an encoder-decoder (only T5's encoder is packed)" if config.is_encoder_decoder else _ENCODER
        ),
    )
)
