"""The tree samplers' incremental state equals the same statistics computed from scratch.

The samplers absorb each finished trial once (``_tree/ledger.py``, ``_tree/tree_stats.py``); the references
here recompute everything from all finished trials, plainly: records by :func:`build_records`, MCTS edges
as a loop over the records in trial order, a numeric leaf's observations and weights as a loop over the
records, the Parzen choice with ``np.average`` / ``rng.choice`` / ``rng.uniform``, and evolution's population
as a sort. They must agree exactly (floats compared with ``==``) after trials that finish out of order,
move the normalisation scale, are pruned, diverge or fail, come from another worker, and after the sampler
is pickled and rebuilt from the storage.
"""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from autokd.search.samplers import EvolutionSampler, MCTSSampler
from autokd.search.samplers._tree import parzen
from autokd.search.samplers._tree.distributions import from_unit, to_unit, uniform
from autokd.search.samplers._tree.records import FINISHED, branch_key, build_records
from autokd.search.samplers._tree.tree_stats import sample_leaf

optuna.logging.set_verbosity(optuna.logging.WARNING)

LEAVES = {"lr": FloatDistribution(1e-4, 1.0, log=True), "x": FloatDistribution(-1.0, 1.0),
          "width": IntDistribution(4, 64, log=True), "k": IntDistribution(1, 9, step=2)}


def suggest(trial) -> None:
    """A small tree: a family, a conditional sub-choice, shared and conditional numeric leaves."""
    fam = trial.suggest_categorical("family", ["a", "b", "c"])
    if fam == "a":
        trial.suggest_categorical("a.kind", [1, 2, 3])
        trial.suggest_float("lr", 1e-4, 1.0, log=True)
    elif fam == "b":
        trial.suggest_int("width", 4, 64, log=True)
    trial.suggest_float("x", -1.0, 1.0)
    trial.suggest_int("k", 1, 9, step=2)


def finish(study, trial, rng: random.Random, n: int) -> None:
    """Tell ``trial`` an outcome: mostly completed (the scale keeps moving: values grow with ``n``),
    some pruned with or without intermediate values, diverged or failed."""
    u = rng.random()
    if u < 0.08:
        study.tell(trial, state=TrialState.FAIL)
    elif u < 0.14:
        trial.report(rng.random(), 0)
        trial.set_user_attr("prune_reason", "training diverged at epoch 0, step 1 (loss=nan)")
        study.tell(trial, state=TrialState.PRUNED)
    elif u < 0.22:
        if u < 0.2:
            trial.report(rng.random() * n / 10, 0)
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, rng.random() * (1 + n / 10))


def run(study, n: int, seed: int, pool: int = 3) -> None:
    """``n`` trials, up to ``pool`` running at once: each new trial is suggested, then (once the pool is
    full) a random running one is told, so trials finish out of order and are absorbed between suggestions."""
    rng = random.Random(seed)
    running = []
    for i in range(n):
        t = study.ask()
        suggest(t)
        running.append(t)
        if len(running) == pool or i == n - 1:
            finish(study, running.pop(rng.randrange(len(running))), rng, i)
    while running:
        finish(study, running.pop(rng.randrange(len(running))), rng, n)


# ---- references: everything from scratch -------------------------------------------------------------
def finished(study):
    return study.get_trials(deepcopy=False, states=FINISHED)


def reference_records(sampler, study):
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return build_records(finished(study), maximize, sampler._info)


def reference_edges(records):
    edges: dict = {}
    for r in records:
        for i, k in enumerate(r.path):
            nw = edges.setdefault(r.path[:i], {}).setdefault(k, [0, 0.0])
            nw[0] += 1
            nw[1] += r.q
    return {node: {k: tuple(nw) for k, nw in kids.items()} for node, kids in edges.items()}


def reference_observations(records, node, name, dist, decay):
    """The Parzen inputs of a numeric leaf: values on [0, 1], qualities and weights by tree distance."""
    def shared(a, b):
        s = 0
        for x, y in zip(a, b, strict=False):
            if x != y:
                break
            s += 1
        return s

    obs = []  # (tree distance, value on [0, 1], quality)
    for r in records:
        if name in r.params and not isinstance(r.dists[name], CategoricalDistribution):
            u = to_unit(dist, r.params[name])
            if u is not None:
                p = r.node_of[name]
                obs.append((len(node) + len(p) - 2 * shared(p, node), u, r.q))
    if not obs:
        return 0, None
    nearest = min(d for d, _, _ in obs)
    ws = np.array([decay ** (d - nearest) if decay > 0 else float(d == nearest) for d, _, _ in obs])
    keep = ws > 1e-12
    return len(obs), (np.array([u for _, u, _ in obs])[keep], np.array([q for _, _, q in obs])[keep], ws[keep])


def reference_pick(xs, qs, ws, rng, gamma, n_candidates):
    """The Parzen choice written plainly (``np.average``, ``rng.choice``, ``rng.uniform``, scalar CDF)."""
    def cdf(z):
        return np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in np.ravel(z)])

    def bandwidth(pts, w):
        m = float(w.sum() ** 2 / (w * w).sum())
        mean = float(np.average(pts, weights=w))
        sigma = math.sqrt(float(np.average((pts - mean) ** 2, weights=w))) if len(pts) > 1 else 0.5
        return float(np.clip(1.06 * sigma * m ** -0.2, 1.0 / min(100.0, 1.0 + m), 0.5)), m

    def logpdf(x, pts, w):
        h, m = bandwidth(pts, w)
        w0 = 1.0 / (m + 1.0)
        z = (x[:, None] - pts[None, :]) / h
        mass = cdf((1.0 - pts) / h) - cdf(-pts / h)
        dens = np.exp(-0.5 * z * z) / (h * math.sqrt(2 * math.pi) * mass[None, :])
        return np.log(w0 + (1 - w0) * (dens * (w / w.sum())[None, :]).sum(axis=1))

    order = np.argsort(-qs, kind="stable")
    xs, qs, ws = xs[order], qs[order], ws[order]
    cum = np.cumsum(ws)
    n_good = min(max(1, int(np.searchsorted(cum, gamma * cum[-1], side="left")) + 1), len(xs) - 1)
    good, bad = (xs[:n_good], ws[:n_good]), (xs[n_good:], ws[n_good:])
    h, m = bandwidth(*good)
    p = good[1] / good[1].sum()
    cands = np.empty(n_candidates)
    for i in range(n_candidates):
        if rng.uniform() < 1.0 / (m + 1.0):
            cands[i] = rng.uniform()
            continue
        mu = good[0][int(rng.choice(len(p), p=p))]
        x = mu
        for _ in range(20):
            x = rng.normal(mu, h)
            if 0.0 <= x <= 1.0:
                break
        cands[i] = min(1.0, max(0.0, x))
    return float(cands[int(np.argmax(logpdf(cands, *good) - logpdf(cands, *bad)))])


def assert_matches_reference(sampler: MCTSSampler, study) -> None:
    led = sampler._ledger(study)
    records, low, high = reference_records(sampler, study)
    assert (led.low, led.high) == (low, high)
    assert [(r.number, r.state, r.q, r.path, r.node_of, r.diverged) for r in led.records] == \
        [(r.number, r.state, r.q, r.path, r.node_of, r.diverged) for r in records]
    incremental = {node: {k: (e.n, e.w(led.version)) for k, e in kids.items()} for node, kids in led.edges.items()}
    assert incremental == reference_edges(records)
    # every numeric leaf: one row per record that suggested it inside the range, by number, its node's
    # branch ids padded with -1; seen from nodes trials have been at: the same Parzen inputs and choice
    for name, dist in LEAVES.items():
        leaf = led.leaf(name, dist)
        rows = [r for r in records if name in r.params and to_unit(dist, r.params[name]) is not None]
        assert leaf.numbers == [r.number for r in rows]
        assert leaf.u[: leaf.n].tolist() == [to_unit(dist, r.params[name]) for r in rows]
        assert leaf.qs(led.version).tolist() == [r.q for r in rows]
        for r, ids in zip(rows, leaf.nodes[: leaf.n].tolist(), strict=True):
            node = [led._ids[k] for k in r.node_of[name]]
            assert ids == node + [-1] * (len(ids) - len(node))
    nodes = sorted({r.node_of[name] for r in records for name in r.node_of}, key=repr)[:5]
    nodes.append((branch_key("family", "never tried"),))
    for name, dist in LEAVES.items():
        leaf = led.leaf(name, dist)
        for node in nodes:
            n_obs, kept = reference_observations(records, node, name, dist, sampler.leaf_decay)
            seed = len(records) + len(node)
            got = sample_leaf(leaf, led.node_ids(node), led.version, np.random.RandomState(seed), n_startup=2,
                              gamma=sampler.gamma, n_candidates=sampler.n_ei_candidates, decay=sampler.leaf_decay)
            rng = np.random.RandomState(seed)
            if n_obs < 2 or len(kept[0]) < 2:
                expected = uniform(dist, rng)
            else:
                expected = from_unit(dist, reference_pick(*kept, rng, sampler.gamma, sampler.n_ei_candidates))
            assert got == expected, (name, node)


# ---- the tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("decay", [0.5, 0.0])
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_mcts_state_equals_the_from_scratch_statistics(decay, direction):
    sampler = MCTSSampler(seed=3, leaf_decay=decay)
    study = optuna.create_study(direction=direction, sampler=sampler)
    study.enqueue_trial({}, user_attrs={"baseline": "ce"})  # param-less: ignored by both
    t = study.ask()
    study.tell(t, 5.0)
    for step in range(4):  # check along the way, then keep going (later trials reuse the kept state)
        run(study, 15, seed=step)
        assert_matches_reference(sampler, study)


def test_out_of_order_finishes_are_absorbed_once():
    sampler = MCTSSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    run(study, 12, seed=1)
    asked = [study.ask() for _ in range(4)]
    for t in asked:
        suggest(t)
    study.tell(asked[2], 0.25)  # finishes while 0, 1 and 3 run: the ledger's frontier stays behind it
    led = sampler._ledger(study)
    assert [t.number for t in led.running] == [asked[i].number for i in (0, 1, 3)]
    for _ in range(3):  # re-reading the storage must not absorb it again
        sampler._ledger(study)
    assert [r.number for r in led.records].count(asked[2].number) == 1
    study.tell(asked[3], 0.5)
    study.tell(asked[0], 0.75)
    study.tell(asked[1], state=TrialState.FAIL)
    assert_matches_reference(sampler, study)
    assert led.running == [] and led._frontier == len(study.trials)


def test_two_workers_and_a_pickled_sampler_rebuild_the_same_state():
    storage = optuna.storages.InMemoryStorage()
    first = optuna.create_study(storage=storage, study_name="shared", sampler=MCTSSampler(seed=1))
    second = optuna.load_study(storage=storage, study_name="shared", sampler=MCTSSampler(seed=2))
    for i in range(6):
        run(first if i % 2 == 0 else second, 6, seed=i)
        a = first.ask()  # one trial of each worker in flight at once: each sees the other's running
        suggest(a)
        b = second.ask()
        suggest(b)
        second.tell(b, 0.5)
        first.tell(a, 1.5)
    for study in (first, second):  # each absorbed the other's trials
        assert_matches_reference(study.sampler, study)
    clone = pickle.loads(pickle.dumps(first.sampler))
    assert clone._cache is None  # dropped: rebuilt from the storage in one go
    assert clone.tree_stats(first) == first.sampler.tree_stats(first)
    assert_matches_reference(clone, first)
    # the pickled copy continues as the original would, on a copy of the study
    twin = optuna.create_study(sampler=clone)
    twin.add_trials(first.trials)
    a, b = first.ask(), twin.ask()
    suggest(a)
    suggest(b)
    assert b.params == a.params


def test_threads_sharing_a_sampler_keep_a_consistent_state():
    sampler = MCTSSampler(seed=0)
    study = optuna.create_study(sampler=sampler)
    rng = random.Random(0)

    def objective(trial):
        suggest(trial)
        return rng.random()

    study.optimize(objective, n_trials=40, n_jobs=3)
    assert_matches_reference(sampler, study)


def test_evolution_population_equals_the_from_scratch_ranking():
    sampler = EvolutionSampler(population_size=5, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for step in range(3):
        run(study, 12, seed=step)
        led = sampler._ledger(study)
        records, _, _ = reference_records(sampler, study)
        assert [r.number for r in led.records] == [r.number for r in records]
        assert [r.q for r in led.records] == [r.q for r in records]
        assert [r.number for r in led.ranked[:5]] == [r.number for r in sampler.population(records, True)]
    clone = pickle.loads(pickle.dumps(sampler))
    assert [r.number for r in clone._ledger(study).ranked] == [r.number for r in led.ranked]


@pytest.mark.parametrize("n, weights", [(2, "ones"), (9, "ones"), (40, "decayed"), (300, "decayed")])
def test_parzen_pick_equals_the_plain_formulation(n, weights):
    g = np.random.RandomState(n)
    xs, qs = g.uniform(size=n), g.uniform(size=n)
    xs[: n // 4] = 0.0  # points on the edge of [0, 1] and ties in quality
    qs[n // 2:] = qs[0]
    ws = np.ones(n) if weights == "ones" else 0.5 ** g.randint(0, 12, size=n)
    for seed in range(5):
        got = parzen.parzen_pick(xs, qs, ws, np.random.RandomState(seed), 0.25, 24)
        assert got == reference_pick(xs, qs, ws, np.random.RandomState(seed), 0.25, 24)


@pytest.mark.parametrize("make", [lambda: MCTSSampler(seed=0), lambda: EvolutionSampler(seed=0, population_size=4)])
def test_the_storage_is_read_once_per_trial(make, monkeypatch):
    """All of one trial's sampler calls share one read of the study (each read costs ms on an RDB storage);
    a trial finished meanwhile by another worker counts from the next trial on."""
    study = optuna.create_study(sampler=make())
    run(study, 12, seed=0)
    reads = []
    real = study.get_trials
    monkeypatch.setattr(study, "get_trials", lambda *a, **k: (reads.append(1), real(*a, **k))[1])
    for n in range(3):
        trial = study.ask()
        suggest(trial)  # 3-4 parameters
        assert len(reads) == n + 1
        study.tell(trial, 1.0)
    if isinstance(study.sampler, MCTSSampler):  # and the statistics still equal the from-scratch ones
        assert_matches_reference(study.sampler, study)
