"""The arousal/valence head (ser_model.training.fit_dimension_head, ser_model.dimensions.DimensionHead):
sides balanced, nothing fitted where a dimension has one side, bundles old and new load (issue 30)."""

from __future__ import annotations

import numpy as np
import pytest

from ser_model.dimensions import DimensionHead, binary, positions, uar_binary
from ser_model.training import FeatureTable, fit_dimension_head, train_bundle


def _rows(labels: list[str], informative: bool, seed: int = 0) -> np.ndarray:
    """Feature rows: noise, plus (when ``informative``) a column that follows the arousal side."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(len(labels), 8))
    if informative:
        X[:, 0] += 2.0 * binary(positions(labels)[:, 0])
    return X


def _bundle_with_head(**options: object) -> tuple[np.ndarray, object]:
    """40 feature rows of four categories and a small bundle trained on them with the dimension head
    (``options``: more arguments of ``train_bundle``)."""
    labels = ["angry", "calm", "happy", "sad"] * 10
    X = _rows(labels, informative=True).astype(np.float32)
    table = FeatureTable(X, labels, [f"s{i % 4}" for i in range(40)], [f"/d/{i}.wav" for i in range(40)], [], "fp")
    b = train_bundle(
        table,
        labels=["angry", "calm", "happy", "sad"],
        params={"hidden_layer_sizes": (8,), "max_iter": 20},
        dimension_head=True,
        **options,
    )
    return X, b


def test_the_head_learns_the_side_of_each_category_and_outputs_probabilities():
    labels = ["angry", "calm", "happy", "sad"] * 30
    X = _rows(labels, informative=True)
    head = fit_dimension_head(X, labels)
    assert head is not None and head.output == "logistic"
    assert head.coefs[0].shape == (8, 2) and head.intercepts[0].shape == (2,)
    test_labels = ["angry", "calm", "happy", "sad"] * 10
    d = head.predict(_rows(test_labels, informative=True, seed=1))
    assert d.shape == (40, 2) and ((d > 0) & (d < 1)).all()
    truth = binary(positions(test_labels))
    assert uar_binary(truth[:, 0], binary(d[:, 0])) > 0.75  # arousal follows the informative column


def test_both_sides_weigh_the_same_whatever_the_mix_of_categories():
    """Nine high-arousal rows for one low-arousal row and features that say nothing: without the side
    balance the head would call almost everything high; with it, about half."""
    labels = ["angry"] * 540 + ["calm"] * 60
    head = fit_dimension_head(_rows(labels, informative=False), labels, alpha=1e-6)
    d = head.predict(_rows(labels, informative=False, seed=2))
    assert 0.35 < float(np.mean(d[:, 0] > 0.5)) < 0.65, np.mean(d[:, 0] > 0.5)


def test_a_dimension_with_one_side_gives_no_head_and_the_bundle_maps_its_probabilities():
    """angry and happy are both high arousal: nothing to learn for arousal, so no head; a bundle trained
    with dimension_head=True then maps its category probabilities."""
    labels = ["angry", "happy"] * 20
    X = _rows(labels, informative=False)
    assert fit_dimension_head(X, labels) is None
    table = FeatureTable(
        X.astype(np.float32), labels, [f"s{i % 4}" for i in range(40)], [f"/d/{i}.wav" for i in range(40)], [], "fp"
    )
    b = train_bundle(
        table, labels=["angry", "happy"], params={"hidden_layer_sizes": (8,), "max_iter": 20}, dimension_head=True
    )
    assert b.dimension_head is None and "weighted" in b.meta["dimensions"]["source"]
    d = b.dimensions(table.X, b.predict_proba(table.X))
    assert d is not None and (d[:, 0] > 0.5).all()  # both categories sit on the high side


def test_a_head_of_an_older_bundle_is_a_regression_and_an_unknown_output_is_refused():
    """Heads stored before the logistic head have no ``output`` key: they load as a regression
    (identity output, clipped to [0, 1]); an unknown output function is a clear error."""
    head = DimensionHead(np.zeros(3), np.ones(3), [np.eye(3)[:, :2] * 0.1], [np.full(2, 0.5)])
    d = head.to_dict()
    del d["output"]
    old = DimensionHead.from_dict(d)
    assert old.output == "identity"
    np.testing.assert_allclose(old.predict(np.array([[1.0, -1.0, 0.0]])), [[0.6, 0.4]])
    with pytest.raises(ValueError, match="unknown output"):
        DimensionHead.from_dict({**d, "output": "softmax"})


def test_a_logistic_head_survives_the_bundle_bytes():
    from ser_model.model import bundle_from_bytes, bundle_to_bytes, sha256_bytes

    X, b = _bundle_with_head()
    data = bundle_to_bytes(b)
    again = bundle_from_bytes(data, sha256_bytes(data))
    assert again.dimension_head is not None and again.dimension_head.output == "logistic"
    np.testing.assert_allclose(
        again.dimensions(X, again.predict_proba(X)), b.dimensions(X, b.predict_proba(X)), atol=1e-9
    )


def test_each_row_takes_the_mean_of_its_modes_head_and_its_mapped_probabilities():
    """Global rows: the global head and the mapping; rows of a speaker or a batch: that pipeline's head on
    the rows normalised by their group, and the mapping; without the group keys, the mapping alone."""
    from ser_model.dimensions import mapped_dimensions
    from ser_model.speaker import MODE_BATCH, MODE_GLOBAL, MODE_SPEAKER, speaker_normalise

    X, b = _bundle_with_head(batch_normalised=True, min_speaker_files=5)
    assert set(b.dimension_heads) == {MODE_SPEAKER, MODE_BATCH} and b.dimension_head is not None
    proba = b.predict_proba(X[:12])
    mapped = mapped_dimensions(proba, b.labels)
    alone = b.dimensions(X[:12], proba)
    np.testing.assert_allclose(alone, 0.5 * (mapped + b.dimension_head.predict(X[:12])))
    for mode in (MODE_SPEAKER, MODE_BATCH):
        d = b.dimensions(X[:12], proba, [mode] * 12, ["g"] * 12)
        Z = speaker_normalise(X[:12], ["g"] * 12, min_files=2)[0]
        np.testing.assert_allclose(d, 0.5 * (mapped + b.dimension_heads[mode].predict(Z)))
        assert not np.allclose(d, alone)
        np.testing.assert_allclose(b.dimensions(X[:12], proba, [mode] * 12), mapped)  # no group keys
    unknown = b.dimensions(X[:12], proba, ["utterance"] * 12)  # an unknown mode counts as global
    np.testing.assert_allclose(unknown, alone)
    assert b.dimensions(X[:0], proba[:0]).shape == (0, 2)
    with pytest.raises(ValueError, match="length"):
        b.dimensions(X[:3], proba[:3], [MODE_GLOBAL])


def test_label_fields_pass_the_modes_and_groups_on(tmp_path):
    """What a grouped batch stores (worker.engine.analyse.label_fields) is ModelBundle.dimensions with the
    rows' modes and group keys, not the global answer."""
    from ser_model.speaker import MODE_BATCH
    from worker.engine.analyse import label_fields

    X, b = _bundle_with_head(batch_normalised=True)
    Xb = X[:20] + 2.0  # a batch recorded louder: its own statistics remove the offset
    proba, modes = b.predict_proba_speakers(Xb, ["batch"] * 20, mode=MODE_BATCH, min_files=2)
    assert set(modes) == {MODE_BATCH}
    want = b.dimensions(Xb, proba, modes, ["batch"] * 20)
    got = label_fields(b, Xb, proba, modes, ["batch"] * 20)
    np.testing.assert_allclose([[r["arousal"], r["valence"]] for r in got], want)
    assert not np.allclose(want, b.dimensions(Xb, proba))


def test_zero_or_bad_weights():
    """A side whose rows all weigh 0 leaves nothing to learn (no head); negative or NaN weights are refused."""
    labels = ["angry", "calm"] * 20
    X = _rows(labels, informative=True)
    w = np.where(np.asarray(labels) == "calm", 0.0, 1.0)
    assert fit_dimension_head(X, labels, w) is None
    with pytest.raises(ValueError, match="finite and non-negative"):
        fit_dimension_head(X, labels, np.full(40, np.nan))
    with pytest.raises(ValueError, match="finite and non-negative"):
        fit_dimension_head(X, labels, -np.ones(40))
