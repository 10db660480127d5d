import numpy as np
import pandas as pd
import pytest
import torch

from embedkit.nn.model import (
    SPARSE_MIN_ENTRIES,
    SPARSE_MIN_ROWS,
    Dropout,
    NetConfig,
    TabularNet,
    default_emb_dim,
    loss_fn,
    to_prediction,
    value_keyed_init,
)
from embedkit.nn.optim import LazyAdamW, _Hyper, _update_masked, configure_optimizer, param_groups


def _net(task="binary", **kw):
    return TabularNet(["a", "b"], [10, 500], 3, NetConfig(task=task, n_classes=4, **kw))


def test_default_embedding_width_rule():
    assert default_emb_dim(10) == round(1.6 * 10**0.56)
    assert default_emb_dim(10**7) == 12  # the default cap (NetConfig.max_emb_dim)
    assert default_emb_dim(10**7, max_dim=600) == 600
    net = _net(emb_dims={"b": 7})
    assert net.emb_dims == [default_emb_dim(10), 7]


@pytest.mark.parametrize(
    ("task", "shape"), [("binary", (8, 1)), ("multiclass", (8, 4)), ("regression", (8, 1))]
)
def test_heads(task, shape):
    net = _net(task).eval()
    out = net(torch.randint(0, 10, (8, 2)), torch.randn(8, 3))
    assert out.shape == shape
    pred = to_prediction(task, out)
    if task == "multiclass":
        assert torch.allclose(pred.sum(1), torch.ones(8))
    if task == "binary":
        assert ((pred > 0) & (pred < 1)).all()


def test_y_range_bounds_regression_outputs():
    net = _net("regression", y_range=(2.0, 3.0)).eval()
    out = net(torch.randint(0, 10, (64, 2)), torch.randn(64, 3) * 100)
    assert (out >= 2).all() and (out <= 3).all()


def test_architecture_rebuilds_the_same_net():
    net = _net(layers=[16, 8], dropout=0.1)
    clone = TabularNet.from_architecture(net.architecture())
    clone.load_state_dict(net.state_dict())
    x = (torch.randint(0, 10, (5, 2)), torch.randn(5, 3))
    assert torch.equal(net.eval()(*x), clone.eval()(*x))


def test_sample_weights_change_the_loss():
    out = torch.tensor([[2.0], [-2.0]])
    y = torch.tensor([1.0, 1.0])
    unweighted = loss_fn("binary", out, y, None)
    only_bad = loss_fn("binary", out, y, torch.tensor([0.0, 1.0]))
    assert only_bad > unweighted


def test_param_groups_decay_only_linear_weights():
    net = _net()
    g = param_groups(net, 0.1, decay_embeddings=False)
    lin_weights = {id(m.weight) for m in net.modules() if isinstance(m, torch.nn.Linear)}
    assert {id(p) for p in g["decay"]} == lin_weights
    assert all(p.ndim == 1 for p in g["no_decay"])  # biases and batch-norm
    assert {id(p) for p in g["embeddings"]} == {id(e.weight) for e in net.embeds}
    opt = configure_optimizer(net, 1e-3, weight_decay=0.1, decay_embeddings=True)
    wds = {g.get("name"): g["weight_decay"] for g in opt.param_groups}
    assert wds == {"decay": 0.1, "no_decay": 0.0, "embeddings": 0.1}


def test_adamw_decay_is_decoupled_from_the_gradient():
    # with a zero gradient Adam moves nothing; decoupled decay still shrinks the weight by lr*wd
    net = _net(sparse_embeddings=False)
    opt = configure_optimizer(net, lr=0.1, weight_decay=0.5)
    w = net.head.weight
    before = w.detach().clone()
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.allclose(w.detach(), before * (1 - 0.1 * 0.5))


def _lazy_net(**kw):
    # "b" has SPARSE_MIN_ROWS rows (updated lazily), small enough for the one gather (dense gradient)
    return TabularNet(["a", "b"], [10, SPARSE_MIN_ROWS], 3, NetConfig(task="binary", **kw))


def _step(net, opt, x_cat):
    y = torch.arange(len(x_cat), dtype=torch.float32) % 2
    loss_fn("binary", net(x_cat, torch.randn(len(x_cat), 3)), y, None).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def test_large_tables_update_only_the_rows_of_the_batch():
    torch.manual_seed(0)
    net = _lazy_net()
    big = net.embeds[1]
    assert net.lazy_embeddings() == [big] and not big.sparse  # in the one gather, dense gradient
    opt = configure_optimizer(net, lr=0.1)
    assert isinstance(opt.optimizers[1], LazyAdamW)
    _step(net, opt, torch.tensor([[1, 3], [2, 7], [4, 7]]))
    before = big.weight.detach().clone()
    # second step without rows 3 and 7: dense Adam would move them on their momentum; lazy Adam does not
    _step(net, opt, torch.tensor([[1, 5], [2, 9], [4, 9]]))
    changed = (big.weight.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [5, 9]
    # the small table is updated densely: its untouched rows drift on their momentum
    assert opt.optimizers[0].param_groups[-1]["params"] == [net.embeds[0].weight]


@pytest.mark.floats
def test_lazy_updates_agree_for_row_sparse_dense_and_masked_gradients():
    # the three ways LazyAdamW takes a table's gradient (row-sparse lookup; dense gradient on the CPU,
    # by row indices; dense gradient elsewhere, under a row mask) make the same update, and rows that
    # no batch touched keep their start
    torch.manual_seed(0)
    rows, dim, lr, b1, b2, eps, wd = 50, 4, 0.05, 0.9, 0.99, 1e-5, 0.1
    start = torch.randn(rows, dim)
    tables = [torch.nn.Parameter(start.clone()) for _ in range(3)]
    opts = [LazyAdamW([t], lr=lr, betas=(b1, b2), weight_decay=wd, eps=eps) for t in tables[:2]]
    masked = {
        "step": torch.zeros(()),
        "exp_avg": torch.zeros(rows, dim),
        "exp_avg_sq": torch.zeros(rows, dim),
    }
    seen = torch.zeros(rows, dtype=torch.bool)
    for _ in range(6):
        idx = torch.randint(0, rows // 2, (20,))  # the upper half of the table is never touched
        seen[idx] = True
        g = torch.randn(20, dim)
        tables[0].grad = torch.sparse_coo_tensor(idx[None], g, (rows, dim), check_invariants=True).coalesce()
        tables[1].grad = torch.zeros(rows, dim).index_add_(0, idx, g)
        for o in opts:
            o.step()
        masked["step"] += 1
        t = float(masked["step"])
        with torch.no_grad():
            hyper = _Hyper(lr, b1, b2, eps, wd, lr / (1 - b1**t), 1 - b2**t)
            _update_masked(tables[2], masked, tables[1].grad, hyper)
    for table in tables:
        assert torch.equal(table.detach()[~seen], start[~seen])
        assert table.detach()[seen].ne(start[seen]).all()
    np.testing.assert_allclose(tables[1].detach(), tables[0].detach(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tables[2].detach(), tables[0].detach(), rtol=1e-6, atol=1e-7)


def test_lazy_tables_stay_lazy_with_dense_gradients_under_ddp():
    # the trainer turns every row-sparse lookup off under DDP: the largest tables join the gather and
    # keep their lazy update (the same optimizer layout as one process)
    torch.manual_seed(0)
    net = TabularNet(["a", "b"], [10, SPARSE_MIN_ENTRIES], 3, NetConfig(task="binary", emb_dims={"b": 2}))
    assert net.embeds[1].sparse and net.lazy_embeddings() == [net.embeds[1]]
    for e in net.embeds:
        e.sparse = False
    opt = configure_optimizer(net, lr=0.1)
    assert [type(o) for o in opt.optimizers][1] is LazyAdamW
    _step(net, opt, torch.tensor([[1, 3], [2, 7]]))
    before = net.embeds[1].weight.detach().clone()
    _step(net, opt, torch.tensor([[1, 5], [2, 5]]))
    assert (net.embeds[1].weight.detach() != before).any(dim=1).nonzero().flatten().tolist() == [5]


@pytest.mark.parametrize(
    ("p", "rate"),
    [(0.2, 51 / 256), (0.1, 26 / 256), (0.01, 655 / 65536), (0.001, 66 / 65536)],  # 8-bit, 8, 16, 16
)
def test_dropout_keeps_one_minus_p_and_scales_the_rest(p, rate):
    # the CPU mask honours p to 1/256 where that is within 2% of p, else to 1/65536, and scales by the
    # rate it used: the mean is kept
    drop = Dropout(p).train()
    x = torch.ones(400, 1000)
    torch.manual_seed(3)
    a = drop(x)
    torch.manual_seed(3)
    b = drop(x)
    assert torch.equal(a, b)  # torch.manual_seed makes the mask reproducible
    kept = a != 0
    sd = (rate * (1 - rate) / x.numel()) ** 0.5
    assert float(1 - kept.float().mean()) == pytest.approx(rate, abs=5 * sd)
    assert torch.allclose(a[kept], torch.full_like(a[kept], 1 / (1 - rate)))
    assert float(a.mean()) == pytest.approx(1.0, abs=5 * sd / (1 - rate))
    # every uniform of each random word counts alike (a skewed one would show at one position of 8 / 4)
    per_word = 8 if p >= 0.1 else 4
    by_position = 1 - kept.flatten().view(-1, per_word).float().mean(0)
    assert torch.allclose(by_position, torch.full((per_word,), rate), atol=5 * sd * per_word**0.5)
    assert not torch.equal(drop(x), a)  # a new mask each call
    assert torch.equal(drop.eval()(x), x)


def test_dropout_of_zero_or_a_negligible_rate_is_the_identity():
    x = torch.ones(50, 60)
    assert torch.equal(Dropout(0.0).train()(x), x)
    assert torch.equal(Dropout(1e-6).train()(x), x)  # below 1/131072: rounds to no dropout


def test_embedding_init_std_sets_the_spread_and_is_validated():
    for std in (0.01, 1.0):
        w = torch.cat([e.weight.detach().flatten() for e in _net(emb_init_std=std).embeds])
        assert w.abs().max() <= 2 * std + 1e-7  # truncated at 2 std
        # a normal truncated at 2 std has std 0.880 of the untruncated one
        assert float(w.std()) == pytest.approx(0.880 * std, rel=0.05)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="emb_init_std must be a finite number > 0"):
            NetConfig(emb_init_std=bad)
    with pytest.raises(ValueError, match="emb_init_seed must be an integer or None"):
        NetConfig(emb_init_seed=3.9)
    assert NetConfig(emb_init_seed=np.int64(3)).emb_init_seed == 3


# value_keyed_init(["x"], "col", 2, seed=3, std=1.0)[2] when the function was written: the vectors are
# part of what a seed means, so a change to the hash or the key format must show here
PINNED_X = [1.65200936794281, 1.7999835014343262]


@pytest.mark.floats
def test_value_keyed_init_depends_on_the_value_not_its_position():
    a = value_keyed_init(["x", "y", "z"], "col", 8, seed=3, std=1.0)
    b = value_keyed_init(["z", "q", "x"], "col", 8, seed=3, std=1.0)
    assert a.shape == (5, 8)  # the missing and unknown rows, then one row per value
    np.testing.assert_array_equal(a[:2], b[:2])
    np.testing.assert_array_equal(a[2], b[4])
    np.testing.assert_array_equal(a[4], b[2])
    assert not np.allclose(a[3], b[3])
    # another seed or another column gives other vectors; a narrower table gets the leading entries
    assert not np.allclose(value_keyed_init(["x"], "col", 8, seed=4, std=1.0)[2], a[2])
    assert not np.allclose(value_keyed_init(["x"], "other", 8, seed=3, std=1.0)[2], a[2])
    np.testing.assert_array_equal(value_keyed_init(["x"], "col", 3, seed=3, std=1.0)[2], a[2, :3])
    big = value_keyed_init([str(i) for i in range(5000)], "col", 16, seed=0, std=0.5)
    assert big.dtype == np.float32 and np.abs(big).max() <= 1.0
    assert abs(float(big.mean())) < 0.01 and float(big.std()) == pytest.approx(0.880 * 0.5, rel=0.02)
    # the same key gives the same vector in any process and version: pinned
    np.testing.assert_allclose(value_keyed_init(["x"], "col", 2, seed=3, std=1.0)[2], PINNED_X, rtol=1e-6)
    # keys that UTF-8 cannot encode (a lone surrogate) still get a vector
    assert np.isfinite(value_keyed_init(["\ud800"], "col", 2, seed=0, std=1.0)).all()
    with pytest.raises(ValueError, match="finite number > 0"):
        value_keyed_init(["x"], "col", 2, seed=0, std=float("inf"))


def test_learners_with_one_init_seed_start_shared_categories_at_the_same_vector():
    from embedkit.nn.learner import Learner
    from embedkit.spec import FeatureSpec

    spec = FeatureSpec(target="y", categorical=["c"], continuous=["v"], dates=[])
    one = pd.DataFrame({"c": ["a", "b", "c", "d"], "v": [0.0, 1.0, 2.0, 3.0], "y": [0, 1, 0, 1]})
    two = pd.DataFrame({"c": ["d", "e", "a"], "v": [1.0, 2.0, 3.0], "y": [1, 0, 1]})

    def initial(frame, **kw):
        cfg = NetConfig(emb_dims={"c": 4}, emb_init_std=1.0, **kw)
        learn = Learner.from_frame(frame, spec, net_config=cfg, min_frequency=1)
        table = learn.embedding_tables()["c"]
        return table, dict(zip(table.vocab.index, table.weights[2:], strict=True))

    t1, v1 = initial(one, emb_init_seed=7)
    t2, v2 = initial(two, emb_init_seed=7)
    for value in ("a", "d"):
        np.testing.assert_array_equal(v1[value], v2[value])
    np.testing.assert_array_equal(t1.weights[:2], t2.weights[:2])  # missing and unknown rows
    assert not np.allclose(v1["a"], v1["d"])
    _, v3 = initial(two, emb_init_seed=8)
    assert not np.allclose(v2["a"], v3["a"])
    # without a seed the torch generator draws them: the shared value gets different vectors
    _, u1 = initial(one)
    _, u2 = initial(two)
    assert not np.allclose(u1["a"], u2["a"])


@pytest.mark.parametrize("sparse", [True, False])
def test_one_gather_for_the_dense_tables_equals_a_lookup_per_table(sparse):
    # a row-sparse table between dense ones: the output keeps the column order, and every table's
    # gradient (row-sparse or dense) is what its own nn.Embedding lookup gives, to the bit
    torch.manual_seed(0)
    cards = [18, 5, 1500, 40, 3]
    cfg = NetConfig(sparse_embeddings=sparse, emb_dims={"c2": 200})
    net = TabularNet([f"c{i}" for i in range(5)], cards, 3, cfg)
    assert [e.sparse for e in net.embeds] == [False, False, sparse, False, False]
    x = torch.stack([torch.randint(0, c, (300,)) for c in cards], 1)
    g = torch.randn(300, sum(net.emb_dims))
    out = net.embed(x)
    (out * g).sum().backward()
    grads = [e.weight.grad for e in net.embeds]
    net.zero_grad(set_to_none=True)
    ref = torch.cat([e(x[:, i]) for i, e in enumerate(net.embeds)], dim=1)
    (ref * g).sum().backward()
    assert torch.equal(out, ref)
    for mine, theirs in zip(grads, (e.weight.grad for e in net.embeds), strict=True):
        assert mine.is_sparse == theirs.is_sparse
        assert torch.equal(mine.to_dense(), theirs.to_dense())
    # the trainer turns the sparse flags off under DDP: the next lookup gathers every table at once
    for e in net.embeds:
        e.sparse = False
    assert torch.equal(net.embed(x), ref)


def test_fused_adamw_steps_like_torch_adamw_and_shares_its_state_dict():
    from embedkit.nn.optim import FusedAdamW

    torch.manual_seed(0)
    net = _net(sparse_embeddings=False)
    ref = TabularNet.from_architecture(net.architecture())
    ref.load_state_dict(net.state_dict())
    ours = configure_optimizer(net, 1e-2, weight_decay=0.1).optimizers[0]
    theirs = configure_optimizer(ref, 1e-2, weight_decay=0.1).optimizers[0]
    assert isinstance(ours, FusedAdamW)
    theirs.__class__ = torch.optim.AdamW  # torch's own step on the same groups
    for it in range(4):
        for p, q in zip(net.parameters(), ref.parameters(), strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        net.head.bias.grad = ref.head.bias.grad = None  # a parameter without a gradient stays put
        for opt in (ours, theirs):
            for group in opt.param_groups:  # what the one-cycle schedule does each step
                group["lr"], group["betas"] = 1e-2 * (it + 1), (0.95 - 0.02 * it, 0.99)
            opt.step()
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)
    state = ours.state_dict()
    assert state["param_groups"] == theirs.state_dict()["param_groups"]
    fresh = configure_optimizer(TabularNet.from_architecture(net.architecture()), 1e-3).optimizers[0]
    fresh.load_state_dict(theirs.state_dict())  # a checkpoint written with torch's AdamW loads
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], state["state"][0]["exp_avg"])
