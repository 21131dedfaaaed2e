"""Build ``examples/calls/call-agent-customer.flac``: a two-party stereo call from the example recordings.

Usage (from the repository root)::

    python examples/make_call.py

Six turns of actor 01's RAVDESS recordings in ``examples/recordings`` (the same actor plays both
parties): the agent (channel 0) says the neutral, calm and happy takes, the customer (channel 1)
the angry, disgust and fearful ones, alternating, with pauses of 0.4-1.0 s, barge-ins and each
party leaking into the other channel at -25 dB, as a call recorder's stereo file does
(:func:`ser_model.callsim.build_call`, seed 20). Written as 16 kHz 16-bit FLAC; the turns are
printed. Attribution and licence: ``examples/calls/ATTRIBUTION.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ser_model.audio import load_audio  # noqa: E402
from ser_model.callsim import build_call  # noqa: E402

REC = ROOT / "examples" / "recordings"
OUT = ROOT / "examples" / "calls" / "call-agent-customer.flac"
TURNS = (  # (party, file): agent 0, customer 1
    (0, "03-01-01-01-01-01-01.wav"),  # neutral
    (1, "03-01-05-02-01-01-01.wav"),  # angry
    (0, "03-01-02-02-01-01-01.wav"),  # calm
    (1, "03-01-07-02-01-01-01.wav"),  # disgust
    (0, "03-01-03-02-01-01-01.wav"),  # happy
    (1, "03-01-06-02-01-01-01.wav"),  # fearful
)


def main() -> int:
    utts = [(party, load_audio(REC / name)[0], name) for party, name in TURNS]
    call, turns = build_call(utts, pause_s=(0.4, 1.0), overlap_prob=0.25, bleed_db=-25.0, rng=np.random.default_rng(20))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    sf.write(OUT, call, 16000, format="FLAC", subtype="PCM_16")
    print(f"wrote {OUT.relative_to(ROOT)}: {call.shape[0] / 16000:.1f} s, {call.shape[1]} channels")
    for t in turns:
        print(f"  {['agent', 'customer'][t.party]:8s} {t.start_s:5.2f}-{t.end_s:5.2f} s  {t.source}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
