"""Long recordings: block-wise decoding, segmentation and per-segment emotion classification.

The code lives in :mod:`ser_model.segment.segmenter`; this package re-exports its public names, so
``from ser_model.segment import classify_segments`` keeps working.
"""

from ser_model.segment.segmenter import (
    BLEED_DELAY_S,
    BLEED_MARGIN_DB,
    DEFAULT_BLOCK_S,
    DEFAULT_MIN_DURATION_S,
    DEFAULT_SEGMENT_MODE,
    FRAME_LENGTH,
    HOP_LENGTH,
    LEVEL_FLOOR_DB,
    MIN_OWN_SPEECH_S,
    ChannelGate,
    Segment,
    SegmentedResult,
    SegmentMode,
    SegmentStats,
    VadParams,
    classify_segments,
    iter_blocks,
    iter_channel_blocks,
    iter_segments,
    measure_levels,
    own_speech_span,
    parse_segment_mode,
)

__all__ = [
    "BLEED_DELAY_S",
    "BLEED_MARGIN_DB",
    "DEFAULT_BLOCK_S",
    "DEFAULT_MIN_DURATION_S",
    "DEFAULT_SEGMENT_MODE",
    "FRAME_LENGTH",
    "HOP_LENGTH",
    "LEVEL_FLOOR_DB",
    "MIN_OWN_SPEECH_S",
    "ChannelGate",
    "Segment",
    "SegmentMode",
    "SegmentStats",
    "SegmentedResult",
    "VadParams",
    "classify_segments",
    "iter_blocks",
    "iter_channel_blocks",
    "iter_segments",
    "measure_levels",
    "own_speech_span",
    "parse_segment_mode",
]
