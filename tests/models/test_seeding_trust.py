"""Trust in seeding plans (plan_seeds): collusive rings left out, max_fatigue, spammer scores, and a world
without fatigue or rings planned as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.csv as pcsv
import pytest

from sharerank.dataset.reader import load_dataset
from sharerank.models.seeding.plan import SeedingContext, SeedingError, plan_seeds
from sharerank.training.sources.simulate import simulate_world


@pytest.fixture(scope="module")
def trust_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trust_world")
    simulate_world(out, users=2000, seed=5, fatigue_window_days=14, fatigue_tolerance=1.0, rings=12)
    return out


@pytest.fixture(scope="module")
def trust_context(trust_world: Path) -> SeedingContext:
    return SeedingContext.from_dataset(load_dataset(trust_world))


def _ring_members(world: Path) -> set[str]:
    return set(pcsv.read_csv(world / "truth" / "rings.csv").column("user_id").to_pylist())


def test_a_planted_ring_is_excluded_from_seeds(trust_world: Path, trust_context: SeedingContext) -> None:
    members = _ring_members(trust_world)
    # Their collusive conversions make ring members look like KOCs: asked to ignore rings, a plan takes some.
    ignoring = plan_seeds(trust_context, 40, ring_policy="ignore", mc_runs=200)
    picked = {s.user_id for s in ignoring.seeds} & members
    assert picked, "the planted ring is no temptation here; the test would prove nothing"
    default = plan_seeds(trust_context, 40, mc_runs=200)
    assert not {s.user_id for s in default.seeds} & members
    assert default.selection["rings"]["policy"] == "exclude"
    assert default.selection["rings"]["excluded_candidates"] >= len(picked)
    # Discounted, a ring member's influence shrinks by their ring score, so fewer of them are picked.
    discounted = plan_seeds(trust_context, 40, ring_policy="discount", mc_runs=200)
    assert len({s.user_id for s in discounted.seeds} & members) < len(picked)
    flagged = [s for s in ignoring.seeds if s.user_id in members]
    assert all(s.trust.ring_score >= 0.55 for s in flagged)


def test_max_fatigue_is_honoured(trust_context: SeedingContext) -> None:
    assert trust_context.fatigue.active, trust_context.fatigue.info()
    free = plan_seeds(trust_context, 20, mc_runs=200)
    fatigue = sorted(s.trust.audience_fatigue for s in free.seeds)
    limit = fatigue[len(fatigue) // 2]
    assert fatigue[-1] > limit, "every seed's audience is as fatigued: the limit would not bite"
    bounded = plan_seeds(trust_context, 20, max_fatigue=limit, mc_runs=200)
    audience = trust_context.audience_fatigue(None)
    rows = {u: i for i, u in enumerate(trust_context.users.tolist())}
    for s in bounded.seeds:
        assert s.trust.audience_fatigue <= limit
        assert s.trust.audience_fatigue == audience[rows[s.user_id]]
    assert bounded.selection["fatigue"]["max_fatigue"] == limit
    with pytest.raises(SeedingError, match="max_fatigue"):
        plan_seeds(trust_context, 5, max_fatigue=1.5)
    with pytest.raises(SeedingError, match="ring_policy"):
        plan_seeds(trust_context, 5, ring_policy="welcome")


def test_audience_fatigue_is_the_share_of_direct_conversions_fatigue_takes(trust_context: SeedingContext) -> None:
    influence, state = trust_context.influence, trust_context.fatigue
    src, dst = influence.arrays["arc_src"], influence.arrays["arc_dst"]
    audience = trust_context.audience_fatigue("Beauty")
    assert np.all((audience >= 0) & (audience <= 1))
    for user in np.flatnonzero(np.bincount(src, minlength=len(audience)))[:25]:
        mine = src == user
        p = influence.probability(src[mine], dst[mine], "Beauty")
        expected = 1.0 - (p * state.arc_factor[mine]).sum() / p.sum() if p.sum() > 0 else 0.0
        assert audience[user] == pytest.approx(expected, abs=1e-9)


def test_spammers_score_above_kocs_with_intervals(trust_world: Path, trust_context: SeedingContext) -> None:
    roles = pcsv.read_csv(trust_world / "truth" / "users.csv")
    rows = {u: i for i, u in enumerate(trust_context.users.tolist())}
    by_role = {role: np.array([rows[u] for u, r in zip(roles.column("user_id").to_pylist(),
                                                        roles.column("role").to_pylist(), strict=True)
                               if r == role and u in rows]) for role in ("koc", "spammer")}
    scores = {role: trust_context.spammer_scores(users) for role, users in by_role.items()}
    for sent, converted, score, low, high in scores.values():
        assert np.all(converted <= sent)
        assert np.all((low <= score + 1e-12) & (score <= high + 1e-12))
        assert np.all((low >= 0) & (high <= 1))
    assert scores["spammer"][2].mean() > scores["koc"][2].mean() + 0.3
    # More evidence, a narrower interval: the spammers' (many shares) against the KOCs'.
    assert np.median(scores["spammer"][4] - scores["spammer"][3]) < np.median(scores["koc"][4] - scores["koc"][3])


def test_a_world_without_fatigue_or_rings_plans_as_before(tiny_world: Path) -> None:
    context = SeedingContext.from_dataset(load_dataset(tiny_world))
    assert not context.fatigue.active and "off" in context.fatigue.info()
    assert not (context.ring_score >= 0.55).any()
    aware = plan_seeds(context, 10, category="Beauty", mc_runs=500)
    blind = plan_seeds(context, 10, category="Beauty", fatigue=False, ring_policy="ignore", mc_runs=500)
    assert [s.user_id for s in aware.seeds] == [s.user_id for s in blind.seeds]
    assert aware.expected_reach == blind.expected_reach
    assert all(s.trust.audience_fatigue == 0.0 for s in aware.seeds)


def test_the_context_keeps_fatigue_and_rings_through_save_and_load(trust_context: SeedingContext,
                                                                  tmp_path: Path) -> None:
    loaded = SeedingContext.load(trust_context.save(tmp_path / "seeding"))
    assert loaded.fatigue.active
    assert np.array_equal(loaded.fatigue.arc_factor, trust_context.fatigue.arc_factor)
    assert np.array_equal(loaded.ring_score, trust_context.ring_score)
    a = plan_seeds(trust_context, 10, mc_runs=200)
    b = plan_seeds(loaded, 10, mc_runs=200)
    assert [s.user_id for s in a.seeds] == [s.user_id for s in b.seeds]
