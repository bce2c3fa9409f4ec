"""The simulator's pure parts: scenario files and the planned province."""

from __future__ import annotations

import pytest

from gateway.domain import codes
from gateway.domain.regencies import PROVINCE_WORKFORCE, workforce_by_regency
from gateway.sim import population
from gateway.sim.scenario import ScenarioError, load, shipped_names


def test_every_shipped_scenario_loads_and_the_default_is_the_go_live():
    assert {"go-live", "rush", "faults"} <= set(shipped_names())
    for name in shipped_names():
        assert load(name).name == name
    default = load(None)
    assert default.baseline_coverage_basis_points == 3163
    assert default.workers == 3000
    assert {b.protocol for b in default.banks} == {"snap", "iso8583"}


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("workerz = 5", "workerz", "unknown key"),
        ("workers = 0", "workers", "must be from 1 to 2000000"),
        ("start_period = '2025-13'", "start_period", "YYYY-MM"),
        ("[behaviour]\nlate_percent = 101", "behaviour.late_percent", "from 0 to 100"),
        ("[behaviour]\nlate = 1", "behaviour.late", "unknown key"),
        ("[[banks]]\nname = 'A'\nprotocol = 'snap'\nshare_percent = 60", "banks", "add up to 100, got 60"),
        ("[[banks]]\nname = 'A'\nprotocol = 'swift'\nshare_percent = 100", "banks[0].protocol", "snap, iso8583"),
        ("months = 'three'", "months", "whole number"),
        ("name = [", "file", "not valid TOML"),
        # A bank table without one of its required keys.
        ("[[banks]]\nprotocol = 'snap'\nshare_percent = 100", "banks[0].name", "is required"),
        ("[[banks]]\nname = 'A'\nshare_percent = 100", "banks[0].protocol", "is required"),
        # The first wage reports are for the month before start_period: no rate table before 2023-03.
        ("start_period = '2019-01'", "start_period", "must be 2023-04 or later"),
        ("start_period = '2100-11'", "start_period", "runs past the last period"),
        # SNAP client keys are made from the name in lower case.
        (
            (
                "[[banks]]\nname = 'bank'\nprotocol = 'snap'\nshare_percent = 50\n"
                "[[banks]]\nname = 'BANK'\nprotocol = 'snap'\nshare_percent = 50"
            ),
            "banks[1].name",
            "appears twice",
        ),
        ("name = 5", "name", "must be a string"),
    ],
)
def test_a_bad_scenario_names_the_file_the_key_and_what_is_accepted(tmp_path, text, key, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load(path)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(path) in str(caught.value)


def test_a_scenario_file_that_is_not_utf8_is_refused_with_its_path(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("name = 'Sekadau \u00e9t\u00e9'\n".encode("latin-1"))
    with pytest.raises(ScenarioError) as caught:
        load(path)
    assert caught.value.key == "file"
    assert "not UTF-8" in caught.value.problem
    assert str(path) in str(caught.value)


def test_a_missing_scenario_file_lists_the_shipped_ones(tmp_path):
    with pytest.raises(ScenarioError, match="go-live"):
        load(tmp_path / "nope.toml")


def test_command_line_values_override_the_file_and_are_checked():
    scenario = load("rush").with_overrides(workers=500, months=1, rate_per_second=None, concurrency=4)
    assert (scenario.workers, scenario.months, scenario.load.concurrency) == (500, 1, 4)
    assert scenario.load.rate_per_second == load("rush").load.rate_per_second
    with pytest.raises(ScenarioError, match="workers"):
        load("rush").with_overrides(workers=0)


def test_the_whole_province_keeps_the_published_mix():
    assert population.workforce_mix(PROVINCE_WORKFORCE) == {
        "formal": 800_904, "informal": 864_518, "construction": 154_008,
    }
    mix = population.workforce_mix(100_000)
    assert sum(mix.values()) == 100_000
    assert mix["informal"] == 47_516  # 864,518 / 1,819,430 of 100,000, rounded


def test_a_planned_province_splits_workers_by_regency_kind_and_size():
    province = population.plan_province(20_000, seed=7, baseline_coverage_basis_points=3163)
    assert sum(e.workers for e in province.employers) == 20_000
    assert sum(province.workforce.values()) == 20_000
    # Each kind is split by population share, so the regencies follow it within rounding.
    for code, expected in workforce_by_regency(20_000).items():
        assert abs(province.workforce[code] - expected) <= 3, code
    construction = [e for e in province.employers if e.kind == "construction"]
    assert construction and all(e.jkk_risk_class >= 3 for e in construction)
    informal = [e for e in province.employers if e.kind == "informal"]
    assert all(e.size_class == "micro" for e in informal)
    for e in province.employers:
        low, _ = population.SIZE_BANDS[e.size_class]
        assert e.kind == "informal" or e.workers >= low or e.workers == sum(
            x.workers for x in province.employers if x.regency_code == e.regency_code and x.kind == e.kind and x.size_class == e.size_class
        )
    # Baseline: whole PU employers, never above 31.63 % of a regency's PU workers.
    for code in province.workforce:
        pu = [e for e in province.employers if e.regency_code == code and e.kind != "informal"]
        covered = sum(e.workers for e in pu if e.compliant)
        assert covered <= (sum(e.workers for e in pu) * 3163 + 5000) // 10_000
    assert len({e.npp for e in province.employers}) == len(province.employers)
    for e in province.employers:
        codes.validate_npp(e.npp)


def test_the_same_seed_plans_the_same_province_and_another_seed_does_not():
    a = population.plan_province(5_000, seed=1, baseline_coverage_basis_points=3163)
    b = population.plan_province(5_000, seed=1, baseline_coverage_basis_points=3163)
    c = population.plan_province(5_000, seed=2, baseline_coverage_basis_points=3163)
    assert a.employers == b.employers
    assert a.employers != c.employers


def test_generated_workers_have_valid_identities():
    import random

    province = population.plan_province(3_000, seed=3, baseline_coverage_basis_points=3163)
    serials = population._Serials()
    rng = random.Random(0)
    for employer in province.employers:
        rows = population._participant_rows(rng, employer, serials)
        # The simulator finds an employer's workers by serial range, without reading them back.
        assert [r[0] for r in rows] == [population.kpj_for(employer.first_serial + i) for i in range(employer.workers)]
        for kpj, npp, nik, name, wage, segment, regency in rows:
            assert codes.validate_nik(nik)[:4] == regency == employer.regency_code
            codes.validate_kpj(kpj)
            assert wage > 0 and isinstance(wage, int)
            assert segment == ("BPU" if employer.kind == "informal" else "PU")
