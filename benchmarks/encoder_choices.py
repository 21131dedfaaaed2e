"""Encoder choices (issue 18, item 1): the encoder's input, compute type and pooling, on grouped CV.

Usage (from the repository root; embeddings are cached, so a second run only re-trains)::

    python benchmarks/encoder_choices.py --ravdess ../shared/data/ravdess

Writes ``benchmarks/results/encoder_choices.md`` and ``encoder_choices.json``.

Protocol: RAVDESS actors 1-20, 8 emotions, speaker-independent cross-validation
(:func:`ser_model.training.cross_validate`: GroupKFold by actor, 5 folds), the MLP of
:func:`ser_model.model.build_pipeline` with its defaults, ``--seeds`` seeds averaged (one seed moves WA
by up to 0.03). Clean training, without the degraded copies of the packaged recipe: the copies would
quadruple the cost of every variant and blur the comparison of the encoder's own choices. Each
variant is scored twice: the encoder embedding beside the 989 hand-crafted values (as the accurate
feature set is built) and the embedding alone.

Every variant starts from the signal :func:`ser_model.featureset.extract` gives the encoder: the
recording level-normalised to -26 dBFS with the fixed noise floor. Variants:

- **trimmed, padded to 4 s, int8, mean + std** -- the packaged choice (``ser-feat-3+whisper-2``,
  :func:`ser_model.featureset.encoder_input`): the speech span of the hand-crafted features with
  0.1 s either side, zero-padded to 4 s;
- **own length, int8, mean + std** -- the whole recording at its own length, the packaged choice
  before 2026-12-05 (``ser-feat-3+whisper-1``);
- **own length, float32, mean + std** -- the same weights without int8 quantisation;
- **own length, int8, mean** -- the mean over time alone (384 values);
- **30 s, pooled over all frames** -- the recording zero-padded to Whisper's 30-s input, as Whisper
  itself runs, and pooled over all 1,500 encoder frames (mostly padding);
- **30 s, pooled over the speech** -- the same encoder run, pooled over the frames of the recording
  only (the first ``ceil(T / 2)`` of ``T`` log-mel frames).

**TESS** (another corpus; 1 file in ``--tess-every``): each variant's MLP trained on all 1,200 RAVDESS
files (the same seeds), WA on TESS: what the variant keeps across corpora.

Timing: the encoder's wall time per file (log-mel + encode, one thread, this process), the median
over the files, for each input length and compute type.

Corpora: RAVDESS (Livingstone & Russo 2018, CC BY-NC-SA 4.0), TESS (Pichora-Fuller & Dupuis 2020,
CC BY-NC-ND 4.0); see ../shared/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ser_model.audio import SAMPLE_RATE, load_audio  # noqa: E402
from ser_model.datasets import load_dataset  # noqa: E402
from ser_model.encoder import (  # noqa: E402
    CHUNK_FRAMES,
    WhisperEncoder,
    default_encoder_dir,
    log_mel,
    pool_frames,
)
from ser_model.features import N_FEATURES, _noise_floor  # noqa: E402
from ser_model.featureset import ACCURATE, ENCODER_MIN_SECONDS, encoder_input  # noqa: E402
from ser_model.labels import EMOTIONS  # noqa: E402
from ser_model.level import normalise_level  # noqa: E402
from ser_model.model import build_pipeline  # noqa: E402
from ser_model.training import FeatureTable, cross_validate, encode_labels, extract_table  # noqa: E402

VARIANTS = (
    "trim-4s-int8-meanstd",
    "own-int8-meanstd",
    "own-float32-meanstd",
    "own-int8-mean",
    "30s-all-frames",
    "30s-speech-frames",
)
"""Encoder variants, in the order of the table (the first is the packaged choice)."""
LABELS = {
    "trim-4s-int8-meanstd": "trimmed, padded to 4 s, int8, mean + std (packaged)",
    "own-int8-meanstd": "own length, int8, mean + std (whisper-1)",
    "own-float32-meanstd": "own length, float32, mean + std",
    "own-int8-mean": "own length, int8, mean only",
    "30s-all-frames": "padded to 30 s, int8, mean + std over all frames",
    "30s-speech-frames": "padded to 30 s, int8, mean + std over the speech frames",
}
_ENC: dict[str, WhisperEncoder] = {}


def _encoders() -> dict[str, WhisperEncoder]:
    if not _ENC:
        folder = default_encoder_dir()
        _ENC["int8"] = WhisperEncoder(folder, compute_type="int8")
        _ENC["float32"] = WhisperEncoder(folder, compute_type="float32")
    return _ENC


def _timed(enc: WhisperEncoder, mel: np.ndarray) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    h = enc.encode(mel)
    return h, time.perf_counter() - t


def embed_variants(path: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every variant's embedding of one file and the encoder's seconds per input kind.

    Returns:
        ``(embeddings, seconds)``: embeddings by :data:`VARIANTS` name (768 values; 384 for the
        mean only); seconds for ``trim-4s-int8``, ``own-int8``, ``own-float32`` and ``30s-int8``
        (log-mel + encode).
    """
    enc = _encoders()
    y, _ = load_audio(path)
    y = normalise_level(np.asarray(y, np.float32), SAMPLE_RATE)
    floor = _noise_floor(y.shape[0])
    secs: dict[str, float] = {}
    t = time.perf_counter()
    trim = enc["int8"].embed(encoder_input(y, floor, ACCURATE), min_seconds=ENCODER_MIN_SECONDS[ACCURATE])
    secs["trim-4s-int8"] = time.perf_counter() - t
    y = y + floor
    t = time.perf_counter()
    mel = log_mel(y)[:, :CHUNK_FRAMES]
    t_mel = time.perf_counter() - t
    h8, s = _timed(enc["int8"], mel)
    secs["own-int8"] = t_mel + s
    h32, s = _timed(enc["float32"], mel)
    secs["own-float32"] = t_mel + s
    t = time.perf_counter()
    n30 = CHUNK_FRAMES * 160
    ypad = np.zeros(n30, np.float32)
    ypad[: min(n30, y.shape[0])] = y[:n30]
    mel30 = log_mel(ypad)[:, :CHUNK_FRAMES]
    t_mel30 = time.perf_counter() - t
    h30, s = _timed(enc["int8"], mel30)
    secs["30s-int8"] = t_mel30 + s
    speech = int(np.ceil(mel.shape[1] / 2))
    emb = {
        "trim-4s-int8-meanstd": trim,
        "own-int8-meanstd": pool_frames(h8),
        "own-float32-meanstd": pool_frames(h32),
        "own-int8-mean": h8.mean(axis=0).astype(np.float32),
        "30s-all-frames": pool_frames(h30),
        "30s-speech-frames": pool_frames(h30[:speech]),
    }
    return emb, secs


def embeddings(paths: list[str], cache: Path, jobs: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Embeddings ``{variant: (n, d)}`` and seconds ``{input kind: (n,)}`` of ``paths``, cached in ``cache``."""
    key = hashlib.sha256("\n".join([*paths, *VARIANTS]).encode() + str(default_encoder_dir()).encode()).hexdigest()[:16]
    f = cache / f"encoder-choices-{key}.npz"
    if f.exists():
        d = np.load(f)
        return {v: d[v] for v in VARIANTS}, {k[2:]: d[k] for k in d.files if k.startswith("t:")}
    with ProcessPoolExecutor(jobs) as ex:
        res = list(ex.map(embed_variants, paths, chunksize=8))
    emb = {v: np.stack([r[0][v] for r in res]) for v in VARIANTS}
    secs = {k: np.array([r[1][k] for r in res]) for k in res[0][1]}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(f, **emb, **{f"t:{k}": v for k, v in secs.items()})
    return emb, secs


def score(table: FeatureTable, X: np.ndarray, seeds: int, Xt: np.ndarray, yt: np.ndarray) -> dict[str, Any]:
    """Grouped-CV WA / UAR / macro-F1 of ``X`` (rows of ``table``), averaged over ``seeds`` MLP seeds,
    and ``tess_wa``: the WA on ``Xt`` (labels ``yt``, indices into :data:`EMOTIONS`) of the same
    seeds' MLPs trained on all of ``X``."""
    t = FeatureTable(X, table.labels, table.speakers, table.paths, [], table.fingerprint, table.feature_version)
    reps = [cross_validate(t, labels=EMOTIONS, params={"random_state": s}) for s in range(seeds)]
    out: dict[str, Any] = {m: float(np.mean([r[m] for r in reps])) for m in ("wa", "uar", "macro_f1")}
    out["wa_per_seed"] = [float(r["wa"]) for r in reps]
    y = encode_labels(table.labels, EMOTIONS)
    tess = [float(np.mean(build_pipeline(random_state=s).fit(X, y).predict(Xt) == yt)) for s in range(seeds)]
    out["tess_wa"] = float(np.mean(tess))
    return out


def render(res: dict[str, Any]) -> str:
    """The Markdown report."""
    lines = [
        "# Encoder choices: input, compute type and pooling (issue 18)",
        "",
        f"Made by `python benchmarks/encoder_choices.py` (protocol in its docstring) in {res['seconds'] / 60:.0f} min "
        f"on 2 cores: RAVDESS actors 1-20, 8 emotions, GroupKFold by actor (5 folds), clean training, "
        f"MLP defaults, {res['seeds']} seeds averaged. Cells: **WA** / UAR / macro-F1.",
        "",
        "| encoder variant | with the 989 hand-crafted values | encoder alone | TESS WA, with / alone |",
        "|---|---|---|---|",
    ]
    for v in VARIANTS:
        a, b = res["scores"][v]["with_handcrafted"], res["scores"][v]["alone"]
        lines.append(
            f"| {LABELS[v]} | **{a['wa']:.3f}** / {a['uar']:.3f} / {a['macro_f1']:.3f} "
            f"| **{b['wa']:.3f}** / {b['uar']:.3f} / {b['macro_f1']:.3f} | {a['tess_wa']:.3f} / {b['tess_wa']:.3f} |"
        )
    h = res["scores"]["handcrafted"]
    lines += [
        f"| (no encoder: the 989 hand-crafted values, the fast set) | **{h['wa']:.3f}** / {h['uar']:.3f} / "
        f"{h['macro_f1']:.3f} | - | {h['tess_wa']:.3f} |",
        "",
        "Encoder time per file (log-mel + encode, one thread; median over the files, 3.8 s of audio on average):",
        "",
        "| input | compute type | ms per file |",
        "|---|---|---|",
    ]
    for k, (inp, ct) in {
        "trim-4s-int8": ("trimmed, padded to 4 s", "int8"),
        "own-int8": ("own length", "int8"),
        "own-float32": ("own length", "float32"),
        "30s-int8": ("padded to 30 s", "int8"),
    }.items():
        lines.append(f"| {inp} | {ct} | {res['ms_per_file'][k]:.1f} |")
    sc, ms = res["scores"], res["ms_per_file"]
    pk, pad = sc["own-int8-meanstd"]["with_handcrafted"], sc["30s-all-frames"]["with_handcrafted"]
    trim = sc["trim-4s-int8-meanstd"]["with_handcrafted"]
    f32 = sc["own-float32-meanstd"]["with_handcrafted"]
    alone = sc["own-int8-meanstd"]["alone"]
    lines += [
        "",
        "Reading (differences against the whole recording at its own length, int8): the packaged input, "
        f"the speech trimmed and padded to 4 s, changes RAVDESS WA by {trim['wa'] - pk['wa']:+.3f} and TESS WA "
        f"by {trim['tess_wa'] - pk['tess_wa']:+.3f} at {ms['trim-4s-int8'] / ms['own-int8']:.1f}x the encoder time "
        "(why trim as well as pad: a segment of a long recording then hears what a whole file hears, "
        "`babble_and_encoder_probes.md`). "
        f"Whisper's own 30-s input changes WA by {pad['wa'] - pk['wa']:+.3f} at "
        f"{ms['30s-int8'] / ms['own-int8']:.0f}x the encoder time ({ms['30s-int8']:.0f} ms per file, more than the "
        f"whole of a file's budget against the seeds' extractor); float32 changes it by {f32['wa'] - pk['wa']:+.3f} at "
        f"{ms['own-float32'] / ms['own-int8']:.1f}x. One MLP seed moves WA by up to 0.03 (the per-seed values are in "
        "the JSON), so neither buys anything measurable. The encoder alone scores "
        f"{alone['wa'] - pk['wa']:+.3f} against its pair on RAVDESS, but {alone['tess_wa'] - pk['tess_wa']:+.3f} "
        "on TESS: the hand-crafted values carry what transfers to another corpus (and to other languages, issue "
        "18's probe), which is why the accurate set keeps them.",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ravdess", default="../shared/data/ravdess")
    ap.add_argument("--tess", default="../shared/data/tess")
    ap.add_argument("--tess-every", type=int, default=7, help="use 1 TESS file in N (default 7: 400 files)")
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/ser-batch/bench-encoder"))
    ap.add_argument("--feature-cache", default=os.path.expanduser("~/.cache/ser-batch/features"))
    ap.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seeds", type=int, default=2, help="MLP seeds averaged per variant (default 2)")
    ap.add_argument("--out", default="benchmarks/results/encoder_choices")
    a = ap.parse_args()
    t0 = time.time()
    files = load_dataset([a.ravdess], "ravdess")
    table = extract_table(files, n_jobs=a.jobs, cache_dir=a.feature_cache, feature_version=ACCURATE)
    hand = table.X[:, :N_FEATURES]
    emb, secs = embeddings(table.paths, Path(a.cache), a.jobs)
    ttable = extract_table(
        load_dataset([a.tess], "tess")[:: a.tess_every],
        n_jobs=a.jobs,
        cache_dir=a.feature_cache,
        feature_version=ACCURATE,
    )
    temb, _ = embeddings(ttable.paths, Path(a.cache), a.jobs)
    yt = encode_labels(ttable.labels, EMOTIONS)
    print(f"embeddings of {len(table.paths)} + {len(ttable.paths)} files ({time.time() - t0:.0f} s)", flush=True)
    thand = ttable.X[:, :N_FEATURES]
    jobs = [("handcrafted", "", hand, thand)]
    for v in VARIANTS:
        jobs += [
            (v, "with_handcrafted", np.hstack([hand, emb[v]]), np.hstack([thand, temb[v]])),
            (v, "alone", emb[v], temb[v]),
        ]
    with ProcessPoolExecutor(a.jobs) as ex:
        done = list(
            ex.map(
                score,
                [table] * len(jobs),
                [j[2] for j in jobs],
                [a.seeds] * len(jobs),
                [j[3] for j in jobs],
                [yt] * len(jobs),
            )
        )
    scores: dict[str, Any] = {}
    for (v, kind, *_), r in zip(jobs, done, strict=True):
        if kind:
            scores.setdefault(v, {})[kind] = r
        else:
            scores[v] = r
    res = {
        "scores": scores,
        "ms_per_file": {k: float(np.median(v) * 1000) for k, v in secs.items()},
        "seeds": a.seeds,
        "n_files": len(table.paths),
        "n_tess": len(ttable.paths),
        "seconds": time.time() - t0,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(str(out) + ".json").write_text(json.dumps(res, indent=1) + "\n")
    Path(str(out) + ".md").write_text(render(res) + "\n")
    print(f"wrote {out}.md ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
