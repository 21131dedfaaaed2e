"""Long recordings: block-wise decoding, segmentation and per-segment emotion classification.

A long recording (a call, an interview, a therapy session) gets one label per *segment* plus a
file-level aggregate, in memory that does not grow with the file's length. Data flows one way through
the package's modules:

1. :mod:`~ser_model.segment.decode` -- **block-wise decoding** (:func:`iter_blocks`,
   :func:`iter_channel_blocks`): ``soundfile`` blocks of :data:`DEFAULT_BLOCK_S` seconds through a
   streaming soxr resampler to 16 kHz, equal to ``soxr.resample`` of the whole signal.
2. :mod:`~ser_model.segment.modes` -- what the caller chooses: the segmentation spec
   (:func:`parse_segment_mode`: ``"vad"``, ``"window:LEN:HOP"``, ``"none"``) and the VAD's rules
   (:class:`VadParams`).
3. :mod:`~ser_model.segment.levels` -- **level measurement**: 32 ms frame levels, the first VAD pass
   (:func:`measure_levels`: reference level, noise floor, threshold), and for ``--channels split`` the
   bleed gate (:class:`ChannelGate`) and a channel's own-speech span (:func:`own_speech_span`).
4. :mod:`~ser_model.segment.segmenter` -- **segmentation** (:func:`iter_segments`): VAD (two passes:
   levels, then segments) or fixed windows, streaming, as :class:`Segment` objects.
5. :mod:`~ser_model.segment.classify` -- **classification and aggregation**
   (:func:`classify_segments`): features and model per segment, the duration-weighted mean of the
   segment probabilities and the trust flags (:class:`SegmentedResult`).

Every public name is re-exported here: ``from ser_model.segment import classify_segments``. A setting
read by the code (e.g. :data:`BLEED_MARGIN_DB`) lives in the module that reads it; patch it there.
"""

from ser_model.segment.classify import DEFAULT_MIN_DURATION_S, SegmentedResult, classify_segments
from ser_model.segment.decode import DEFAULT_BLOCK_S, iter_blocks, iter_channel_blocks
from ser_model.segment.levels import (
    BLEED_DELAY_S,
    BLEED_MARGIN_DB,
    FRAME_LENGTH,
    HOP_LENGTH,
    LEVEL_FLOOR_DB,
    MIN_OWN_SPEECH_S,
    ChannelGate,
    measure_levels,
    own_speech_span,
)
from ser_model.segment.modes import DEFAULT_SEGMENT_MODE, SegmentMode, VadParams, parse_segment_mode
from ser_model.segment.segmenter import Segment, SegmentStats, iter_segments

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
