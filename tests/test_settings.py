"""Run settings: one typed model, defaults once, validated when read back."""

from __future__ import annotations

import pytest

from automodel.cli import build_parser
from automodel.settings import SETTINGS_VERSION, RunSettings, SettingsError


def test_only_set_values_override_defaults():
    s = RunSettings.build(data="demo", out="runs/x", iterations=None, time_budget_s=None, threads=3)
    assert s.iterations is None and s.time_budget_s == RunSettings.model_fields["time_budget_s"].default
    assert s.threads == 3


def test_round_trip_through_the_run_record():
    s = RunSettings.build(data="demo", out="runs/x", time_budget_s=120, strategy="paper", resume=True)
    record = {"settings": s.record()}
    back = RunSettings.from_run_record(record)
    assert back.time_budget_s == 120 and back.strategy == "paper"
    assert back.resume is False  # an invocation flag, not a setting of the run


def test_run_dirs_of_other_versions_and_edited_nonsense_are_refused_with_a_message():
    with pytest.raises(SettingsError, match="older AutoModel"):
        RunSettings.from_run_record({"budget": {"time_budget_s": 10}})
    record = {"settings": {**RunSettings.build(data="d", out="o").record(), "version": SETTINGS_VERSION + 1}}
    with pytest.raises(SettingsError, match="version"):
        RunSettings.from_run_record(record)
    bad = {"settings": {**RunSettings.build(data="d", out="o").record(), "time_budget_s": -5}}
    with pytest.raises(SettingsError, match="time_budget_s"):
        RunSettings.from_run_record(bad)


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="extra"):
        RunSettings.model_validate({"data": "d", "out": "o", "time_budget": 5})


def test_cli_defaults_come_from_the_settings_model():
    args = build_parser().parse_args(["run", "demo"])
    # Every run flag defaults to "not set", so RunSettings owns the default.
    for flag in ("iterations", "time_budget", "threads", "strategy", "device", "seed", "val_fraction"):
        assert getattr(args, flag) is None, flag
