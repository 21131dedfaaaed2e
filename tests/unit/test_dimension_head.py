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


def _bundle_with_head() -> tuple[np.ndarray, object]:
    """40 feature rows of four categories and a small bundle trained on them with the dimension head."""
    labels = ["angry", "calm", "happy", "sad"] * 10
    X = _rows(labels, informative=True).astype(np.float32)
    table = FeatureTable(X, labels, [f"s{i % 4}" for i in range(40)], [f"/d/{i}.wav" for i in range(40)], [], "fp")
    b = train_bundle(
        table,
        labels=["angry", "calm", "happy", "sad"],
        params={"hidden_layer_sizes": (8,), "max_iter": 20},
        dimension_head=True,
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


def test_rows_of_a_normalised_group_take_the_mapped_probabilities_and_rows_alone_the_head():
    from ser_model.dimensions import mapped_dimensions
    from ser_model.speaker import MODE_BATCH, MODE_GLOBAL, MODE_SPEAKER

    X, b = _bundle_with_head()
    proba = b.predict_proba(X[:3])
    d = b.dimensions(X[:3], proba, [MODE_GLOBAL, MODE_BATCH, MODE_SPEAKER])
    np.testing.assert_allclose(d[0], b.dimension_head.predict(X[:1])[0])
    np.testing.assert_allclose(d[1:], mapped_dimensions(proba[1:], b.labels))
    assert not np.allclose(d[0], mapped_dimensions(proba[:1], b.labels)[0])  # the two ways differ
    with pytest.raises(ValueError, match="analysis modes"):
        b.dimensions(X[:3], proba, [MODE_GLOBAL])
