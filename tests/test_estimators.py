import pickle

import numpy as np
import pytest
from _synthetic import grouped_categories
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from embedkit.nn.estimators import TabularNetClassifier, TabularNetRegressor

FAST = dict(layers=(16,), epochs=3, lr=2e-2, batch_size=128, random_state=0)


def test_classifier_fit_predict_score_and_pickle():
    df, _ = grouped_categories(n=1500, task="binary")
    X, y = df[["cat", "other", "x"]], df["y"]
    clf = TabularNetClassifier(categorical=["cat", "other"], **FAST).fit(X, y)
    assert list(clf.classes_) == [0, 1]
    p = clf.predict_proba(X)
    assert p.shape == (len(X), 2) and np.allclose(p.sum(1), 1)
    assert clf.score(X, y) > 0.75
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), p)


def test_multiclass_labels_and_regressor():
    df, _ = grouped_categories(n=1500, task="multiclass")
    X = df[["cat", "other", "x"]]
    clf = TabularNetClassifier(categorical=["cat", "other"], **FAST).fit(X, df["y"])
    assert list(clf.classes_) == ["high", "low", "mid"]
    assert clf.predict_proba(X).shape == (1500, 3)
    assert set(clf.predict(X)) <= set(clf.classes_)
    rdf, _ = grouped_categories(n=1500, task="regression")
    reg = TabularNetRegressor(categorical=["cat", "other"], **{**FAST, "epochs": 6}).fit(
        rdf[["cat", "other", "x"]], rdf["y"]
    )
    assert reg.score(rdf[["cat", "other", "x"]], rdf["y"]) > 0.8  # R^2


def test_clone_and_grid_search():
    df, _ = grouped_categories(n=800, task="binary")
    X, y = df[["cat", "other", "x"]], df["y"]
    base = TabularNetClassifier(categorical=["cat", "other"], **FAST)
    c = clone(base)
    assert c.get_params() == base.get_params() and not hasattr(c, "learner_")
    gs = GridSearchCV(base, {"lr": [1e-3, 2e-2]}, cv=2, scoring="roc_auc").fit(X, y)
    assert gs.best_params_["lr"] in (1e-3, 2e-2) and np.isfinite(gs.best_score_)


def test_predict_before_fit():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TabularNetRegressor().predict(np.zeros((2, 2)))
