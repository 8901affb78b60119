"""The try-out switch: ``--no-try-out`` reaches the run's settings, ``run.json`` and every role of the team."""

from __future__ import annotations

from autogen_agentchat.conditions import ExternalTermination

from automodel.cli import build_parser, run_settings
from automodel.run import _team, prepare_run
from automodel.runtime import open_run


def test_no_try_out_reaches_every_role_of_the_team(tmp_path):
    assert run_settings(build_parser().parse_args(["run", "demo"])).try_out is True  # the default: code is tried
    args = build_parser().parse_args(["run", "demo", "--out", str(tmp_path / "run"), "--device", "cpu",
                                      "--max-train", "100", "--no-try-out"])
    settings = run_settings(args)
    assert settings.try_out is False
    store = prepare_run(settings)
    run = open_run(store.root)
    assert run.record["settings"]["try_out"] is False  # stored with the run, read back validated
    team = _team(run, ExternalTermination())
    roles = {p["config"]["name"]: p["config"] for p in team.dump_component().config["participants"]}
    assert len(roles) == 7
    assert {name: config["try_out"] for name, config in roles.items()} == dict.fromkeys(roles, False)
