"""GPU scheduling on one host: --gpus forms, visible ids, one CUDA_VISIBLE_DEVICES per candidate (no GPU needed)."""

from __future__ import annotations

import threading

import pytest

from automodel.executors import GpuSlots, gpu_envs, parse_gpus, resolve_gpus, visible_gpus


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("0,1", [0, 1]),
        (" 2 , 0 ", [2, 0]),
        ("1,", [1]),
        ("all", [0, 1, 2, 3]),
        ("ALL", [0, 1, 2, 3]),
        ("2", [0, 1]),
        (3, [0, 1, 2]),
        ("0", []),
        ("", []),
        ("none", []),
        ("cpu", []),
        (None, []),
        ([3, 1], [3, 1]),
        ("0,0,1,1", [0, 0, 1, 1]),
    ],
)
def test_parse_gpus_forms(spec: str | int | list[int] | None, expected: list[int]) -> None:
    assert parse_gpus(spec, available=4) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("5", "asks for 5 GPUs but this process sees 4"),
        ("0,4", r"GPU id\(s\) 4 not visible.*valid ids: 0, 1, 2, 3"),
        ("cuda", "not understood"),
        ("0,a", "not a list of GPU ids"),
        ("-1", "not understood"),
        (True, "boolean"),
    ],
)
def test_parse_gpus_errors_name_the_valid_choices(spec: str | int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_gpus(spec, available=4)


def test_no_visible_gpu_says_so() -> None:
    with pytest.raises(ValueError, match="no GPU is visible"):
        parse_gpus("0,", available=0)
    assert parse_gpus("all", available=0) == []


def test_visible_gpus_follow_an_inherited_mask() -> None:
    # Under CUDA_VISIBLE_DEVICES=2,3 this process's GPU 0 is physical GPU 2.
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-aa,GPU-bb"}) == ["GPU-aa", "GPU-bb"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}) == ["1"]  # CUDA stops at the first invalid id
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({}, count=lambda: 3) == ["0", "1", "2"]
    assert resolve_gpus("1,", {"CUDA_VISIBLE_DEVICES": "2,3"}) == ["3"]
    assert resolve_gpus("all", {}, count=lambda: 2) == ["0", "1"]
    with pytest.raises(ValueError, match="valid ids: 0, 1"):
        resolve_gpus("0,2", {"CUDA_VISIBLE_DEVICES": "4,5"})


def test_gpu_envs_spread_candidates_round_robin() -> None:
    assert gpu_envs(["0", "1"], 3) == [
        {"CUDA_VISIBLE_DEVICES": "0"},
        {"CUDA_VISIBLE_DEVICES": "1"},
        {"CUDA_VISIBLE_DEVICES": "0"},
    ]
    assert gpu_envs([], 2) == [{"CUDA_VISIBLE_DEVICES": ""}] * 2


def test_gpu_slots_give_each_holder_its_own_gpu() -> None:
    slots = GpuSlots(["4", "7"])
    held: list[str] = []
    both_held = threading.Barrier(2, timeout=30)
    third_done = threading.Event()

    def hold_one() -> None:
        with slots.hold() as env:
            held.append(env["CUDA_VISIBLE_DEVICES"])
            both_held.wait()

    threads = [threading.Thread(target=hold_one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(held) == ["4", "7"]

    # A holder beyond the slots waits until one is released.
    with slots.hold() as first, slots.hold() as second:
        assert {first["CUDA_VISIBLE_DEVICES"], second["CUDA_VISIBLE_DEVICES"]} == {"4", "7"}
        def third() -> None:
            with slots.hold():
                third_done.set()

        waiter = threading.Thread(target=third)
        waiter.start()
        assert not third_done.wait(timeout=0.2)
    waiter.join(timeout=30)
    assert third_done.is_set()
    with pytest.raises(ValueError, match="at least one GPU slot"):
        GpuSlots([])
