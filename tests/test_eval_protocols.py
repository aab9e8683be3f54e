"""Protocols against independent references: sklearn's L-BFGS logistic
regression, a direct kNN loop, a direct 1-NN / mAP@R computation, scipy's t."""
import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from ssl_zoo.eval.context import EvalContext
from ssl_zoo.eval.features import Features
from ssl_zoo.eval.few_shot import choose_lambda, few_shot, mean_ci95, sample_support
from ssl_zoo.eval.linear import LogRegProblem, fit_logreg, linear_probe, linear_probe_scores
from ssl_zoo.eval.protocols import PROTOCOLS, knn
from ssl_zoo.eval.retrieval import retrieval


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    x, y = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order])
    return Features(x[:1400], y[:1400]), Features(x[1400:], y[1400:])


def ctx_of(train, test, **kw):
    return EvalContext.from_features(train, test, [str(i) for i in range(10)], None, "digits", **kw)


def test_logreg_matches_sklearn_objective(digits):
    """Same objective: mean CE + lam/2 ||W||^2 == sklearn with C = 1 / (n lam)."""
    train, test = digits
    train = Features(train.x[:700], train.y[:700])
    x = (train.x - train.x.mean(0)) / train.x.std(0).clamp_min(1e-6)
    xt = (test.x - train.x.mean(0)) / train.x.std(0).clamp_min(1e-6)
    n = len(train.y)
    for lam in (1e-1, 1e-2):
        model = fit_logreg(x, train.y, 10, [lam], max_iter=1000, tol=1e-6)
        w, b = model.w[0], model.b[0]
        ref = LogisticRegression(C=1.0 / (n * lam), solver="lbfgs", max_iter=2000, tol=1e-6).fit(x.numpy(), train.y.numpy())
        ours = ((xt @ w + b).argmax(1) == test.y).float().mean().item()
        theirs = (ref.predict(xt.numpy()) == test.y.numpy()).mean()
        assert abs(ours - theirs) <= 0.005
        assert np.abs(w.numpy() - ref.coef_.T).max() < 0.02 * np.abs(ref.coef_).max()


def test_bf16_anchored_fit_matches_sklearn(digits):
    """bf16 matmuls with fp32 anchors and an exact final check reach sklearn's optimum."""
    train, test = digits
    x = (train.x - train.x.mean(0)) / train.x.std(0).clamp_min(1e-6)
    n, lam = len(train.y), 1e-2
    model = LogRegProblem(x, train.y, 10, bf16=True).fit([lam], max_iter=1000, tol=1e-5, exact=True)
    ref = LogisticRegression(C=1.0 / (n * lam), max_iter=2000, tol=1e-7).fit(x.numpy(), train.y.numpy())
    w = model.w[0].numpy()
    assert np.abs(w - ref.coef_.T).max() < 0.01 * np.abs(ref.coef_).max()
    # the exact fp32 gradient at the bf16 solution is at sklearn's tolerance
    exact = LogRegProblem(x, train.y, 10)
    theta = np.concatenate([model.w.reshape(-1).numpy(), model.b.reshape(-1).numpy()]).astype(np.float64)
    _, grad = exact.loss_grad(theta, torch.tensor([lam]))
    assert np.abs(grad).max() < 1e-5


def test_linear_probe_protocol_matches_sklearn_at_chosen_lambda(digits):
    train, test = digits
    scores, lam, accs = linear_probe_scores(train.x, train.y, test.x, 10, {"num_lambdas": 4}, seed=0)
    mu, sd = train.x.mean(0), train.x.std(0).clamp_min(1e-6)
    ref = LogisticRegression(C=1.0 / (len(train.y) * lam), max_iter=2000, tol=1e-6).fit(((train.x - mu) / sd).numpy(), train.y.numpy())
    theirs = (ref.predict(((test.x - mu) / sd).numpy()) == test.y.numpy()).mean()
    ours = (scores.argmax(1) == test.y).float().mean().item()
    assert len(accs) == 4 and lam in accs and accs[lam] == max(accs.values())
    assert abs(ours - theirs) <= 0.005 and ours > 0.9


def test_linear_probe_with_offset_features_matches_sklearn(digits):
    """Features far from zero relative to their spread (as DINO's are) must not lose their
    variation to bf16 rounding: same chosen-lambda accuracy as sklearn on the same features."""
    train, test = digits
    tx, sx = 50.0 + 0.01 * train.x, 50.0 + 0.01 * test.x
    scores, lam, accs = linear_probe_scores(tx, train.y, sx, 10, {"num_lambdas": 4, "bf16": True}, seed=0)
    mu, sd = tx.mean(0), tx.std(0).clamp_min(1e-6)
    ref = LogisticRegression(C=1.0 / (len(train.y) * lam), max_iter=2000, tol=1e-6).fit(((tx - mu) / sd).numpy(), train.y.numpy())
    theirs = (ref.predict(((sx - mu) / sd).numpy()) == test.y.numpy()).mean()
    assert abs((scores.argmax(1) == test.y).float().mean().item() - theirs) <= 0.01 and theirs > 0.9


def test_linear_probe_never_sees_test_labels(digits):
    train, test = digits
    shuffled = Features(test.x, test.y[torch.randperm(len(test.y), generator=torch.Generator().manual_seed(1))])
    a = linear_probe(ctx_of(train, test), {"num_lambdas": 3})
    b = linear_probe(ctx_of(train, shuffled), {"num_lambdas": 3})
    assert a[0].extra["lambda"] == b[0].extra["lambda"] and a[0].extra["val_top1"] == b[0].extra["val_top1"]
    assert {r.metric for r in a} == {"top1", "top5", "mean_per_class_recall"}
    assert a[0].params == {"feature": "backbone"}


def test_knn_matches_direct_loop(digits):
    train, test = digits
    test = Features(test.x[:40], test.y[:40])
    k, T = 20, 0.07
    results = {(r.params["k"], r.metric): r.value for r in knn(ctx_of(train, test), {"k": [k], "temperature": T})}
    tr = train.x / train.x.norm(dim=1, keepdim=True)
    correct = 0
    for q, label in zip(test.x, test.y):
        sims = [float(tr[j] @ (q / q.norm())) for j in range(len(tr))]
        nearest = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        votes = [0.0] * 10
        for j in nearest:
            votes[int(train.y[j])] += math.exp(sims[j] / T)
        correct += int(max(range(10), key=lambda c: votes[c]) == int(label))
    assert results[(k, "top1")] == pytest.approx(correct / len(test.y))


def test_retrieval_matches_direct_formula(digits):
    train, test = digits
    test = Features(test.x[:50], test.y[:50])
    res = {r.metric: r.value for r in retrieval(ctx_of(train, test), {})}
    tr = torch.nn.functional.normalize(train.x, dim=1)
    p1, aps = [], []
    for q, label in zip(torch.nn.functional.normalize(test.x, dim=1), test.y):
        order = torch.argsort(tr @ q, descending=True)
        rel = (train.y[order] == label).float()
        r = int((train.y == label).sum())
        p1.append(rel[0].item())
        hits = rel[:r]
        aps.append(float((hits * hits.cumsum(0) / torch.arange(1, r + 1)).sum() / r))  # MAP@R (Musgrave et al.)
    assert res["precision_at_1"] == pytest.approx(np.mean(p1), abs=1e-6)
    assert res["mean_average_precision_at_r"] == pytest.approx(np.mean(aps), abs=1e-4)


def test_few_shot_sampler_deterministic_and_from_train_only():
    labels = np.repeat(np.arange(5), 30)
    a, b, c = sample_support(labels, 4, 7, 5), sample_support(labels, 4, 7, 5), sample_support(labels, 4, 8, 5)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(np.bincount(labels[a]), [4] * 5)
    assert len(set(a.tolist())) == 20 and a.max() < len(labels)


def test_few_shot_lambda_search_uses_support_only(digits):
    train, test = digits
    cfg = {"shots": [1, 4], "seeds": 2, "lambdas": [1e-2, 1.0]}
    garbage = Features(torch.randn_like(test.x), torch.randint(0, 10, test.y.shape))
    a, b = few_shot(ctx_of(train, test), cfg), few_shot(ctx_of(train, garbage), cfg)
    la = [r.extra["lambdas"] for r in a if r.params["classifier"] == "logistic"]
    lb = [r.extra["lambdas"] for r in b if r.params["classifier"] == "logistic"]
    assert la == lb and la[0] == [0.1] * 2  # 1 shot: the fixed one_shot_lambda
    # the chosen lambda is a function of the support set alone
    idx = torch.as_tensor(sample_support(train.y.numpy(), 4, 0, 10))
    assert choose_lambda(train.x[idx], train.y[idx], 10, cfg, 0) == la[1][0]
    rows = {(r.shots, r.params["classifier"]): r for r in a}
    assert rows[(4, "ncm")].seeds == 2 and rows[(4, "ncm")].ci95 > 0 and rows[(4, "ncm")].extra["n_train"] == 40
    assert rows[(4, "logistic")].value > rows[(1, "logistic")].value


def test_ci95_is_student_t():
    values = [0.5, 0.6, 0.7, 0.55, 0.65]
    mean, ci = mean_ci95(values)
    sd = np.std(values, ddof=1)
    assert mean == pytest.approx(0.6) and ci == pytest.approx(2.7764451051977987 * sd / math.sqrt(5))


def test_registered_protocols():
    assert {"knn", "linear_probe", "few_shot", "zero_shot", "retrieval"} <= set(PROTOCOLS)


def test_linear_probe_rejects_unknown_bf16_setting(digits):
    from ssl_zoo.errors import UserError

    train, test = digits
    with pytest.raises(UserError, match="expected auto, true or false"):
        linear_probe_scores(train.x, train.y, test.x, 10, {"bf16": "maybe"})


def test_bf16_auto_needs_a_large_problem_and_bf16_hardware():
    from ssl_zoo.eval.linear import SMALL_PROBLEM, use_bf16
    from ssl_zoo.eval.products import bf16_onednn_ok

    big, small = torch.empty(-(-SMALL_PROBLEM // (10 * 64)), 64), torch.empty(1000, 64)  # n*D*C >= SMALL_PROBLEM
    assert use_bf16("auto", big, 10) == bf16_onednn_ok(big)
    assert not use_bf16("auto", small, 10)
    assert use_bf16(True, small, 10) and not use_bf16(False, big, 10)
