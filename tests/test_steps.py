"""Step sets: every method's per-step rule decided on the fraction's decimal value, never on a float32."""

from fractions import Fraction
from math import floor

import numpy as np
import pytest
import torch

from ale_edit import steps
from ale_edit.methods.ale import AleController
from ale_edit.methods.fpe import FreePromptController
from ale_edit.methods.infedit import InfEditController
from ale_edit.methods.masactrl import MasaCtrlController
from ale_edit.methods.p2p import PromptToPromptBlend, PromptToPromptController

from stage_utils import project_params

PARAMS_SCHEDULES = sorted(set(project_params()["schedule"].values()))
FRACTIONS = sorted(set(PARAMS_SCHEDULES) | {round(0.1 * i, 1) for i in range(1, 11)})
STEP_COUNTS = range(1, 51)


def expected_injection(s: float, num_steps: int) -> set[int]:
    exact = Fraction(str(s))
    return {k for k in range(num_steps) if exact * num_steps > k + 1}


TENSOR_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)
NUMPY_DTYPES = (np.float16, np.float32, np.float64)


def ale_injected(schedule: float, num_steps: int, dtype=torch.float32) -> set[int]:
    """The steps ALE's controller injects on, its schedules a tensor of ``dtype``."""
    ctl = AleController(num_steps=num_steps, schedules=torch.tensor([schedule], dtype=dtype))
    injected = set()
    for k in range(num_steps):
        ctl.begin_step(k)
        if bool(ctl.injecting()[0]):
            injected.add(k)
    return injected


@pytest.mark.parametrize("schedule,num_steps,expected", [
    (0.6, 15, range(8)), (0.8, 5, range(3)), (0.8, 15, range(11)), (0.5, 4, range(1)), (1.0, 15, range(14)),
    (0.0, 15, range(0)),
])
def test_spelled_out_cases(schedule, num_steps, expected):
    assert ale_injected(schedule, num_steps) == set(expected)


def test_float32_schedules_inject_exactly_the_decimal_rule():
    # float32(0.6) = 0.6000000238 > 9/15 once injected on step 8 too; float32(0.8) > 4/5 made 0.8 equal 1.0 at 5.
    assert float(torch.tensor(0.6)) > 9 / 15
    for s in FRACTIONS:
        for num_steps in STEP_COUNTS:
            assert ale_injected(s, num_steps) == expected_injection(s, num_steps), (s, num_steps)


@pytest.mark.parametrize("dtype", TENSOR_DTYPES)
def test_schedules_of_every_dtype_inject_exactly_the_decimal_rule(dtype):
    # bfloat16(0.6) = 0.6015625 and float16(0.6) = 0.60009765625 both exceed 9/15: read as binary, step 8 joins.
    assert float(torch.tensor(0.6, dtype=dtype)) * 15 > 9 or dtype == torch.float64
    assert ale_injected(0.6, 15, dtype) == set(range(8))
    for s in FRACTIONS:
        for num_steps in STEP_COUNTS:
            assert ale_injected(s, num_steps, dtype) == expected_injection(s, num_steps), (s, dtype, num_steps)


@pytest.mark.parametrize("kind", NUMPY_DTYPES)
def test_numpy_scalar_schedules_inject_exactly(kind):
    for s in FRACTIONS:
        assert steps.exceeds(kind(s), 15) == expected_injection(s, 15), (s, kind)
    assert steps.exceeds(kind(0.6), 15) == set(range(8))


@pytest.mark.parametrize("value", [np.float32(0.6), np.float16(0.6), torch.tensor(0.6, dtype=torch.bfloat16), 0.6])
def test_an_edit_request_keeps_the_decimal_of_its_schedule(value):
    from ale_edit.editor import EditRequest

    schedule = EditRequest(None, [("a", "b")], schedule=value).resolved_schedule()
    assert type(schedule) is float and repr(schedule) == "0.6"
    assert steps.exceeds(schedule, 15) == set(range(8))


def test_shortest_decimal_is_the_shortest_that_reads_back_in_its_dtype():
    # bfloat16 keeps 8 significant bits: 0.6 and 0.601 are the same number there; the shorter is what was written.
    assert torch.tensor(0.601, dtype=torch.bfloat16) == torch.tensor(0.6, dtype=torch.bfloat16)
    assert steps.exact(torch.tensor(0.601, dtype=torch.bfloat16)) == Fraction(3, 5)
    # float32 tells them apart, and 0.123456789 reads back as its nearest short decimal in float32
    assert steps.exact(torch.tensor(0.601)) == Fraction(601, 1000)
    assert steps.exact(torch.tensor(0.123456789)) == Fraction(12345679, 10**8)
    for dtype in TENSOR_DTYPES:
        for s in FRACTIONS + [0.05, 0.35, 0.123]:
            value = torch.tensor(s, dtype=dtype)
            decimal = steps.exact(value)
            assert torch.tensor(float(decimal), dtype=dtype) == value, (s, dtype)  # it reads back
            assert decimal == Fraction(str(s)), (s, dtype)
    with pytest.raises(ValueError, match="finite"):
        steps.exact(torch.tensor(float("nan"), dtype=torch.bfloat16))


def test_every_method_uses_the_exact_rule_on_float32_schedules():
    for s in FRACTIONS:
        for num_steps in STEP_COUNTS:
            schedules = torch.tensor([s, s], dtype=torch.float32)
            exact = Fraction(str(s))
            infedit = InfEditController(num_steps, schedules, torch.zeros(2, 77, dtype=torch.long), torch.ones(2, 77),
                                        torch.zeros(2, 77), torch.zeros(2, 77), torch.tensor([5, 5]),
                                        cross_replace=s)
            p2p = PromptToPromptController(num_steps, schedules, torch.zeros(2, 77, 77), torch.zeros(2, 77),
                                           cross_replace=s)
            blend = PromptToPromptBlend(torch.zeros(2, 2, 77), num_steps, start=torch.tensor(s, dtype=torch.float32))
            fpe = FreePromptController(num_steps, fraction=torch.tensor(s, dtype=torch.float32))
            got = {"infedit self": set(), "infedit cross": set(), "p2p self": set(), "p2p cross": set(),
                   "fpe": set()}
            for k in range(num_steps):
                for ctl in (infedit, p2p, fpe):
                    ctl.begin_step(k)
                if infedit.injection_mask("cpu") is True:
                    got["infedit self"].add(k)
                if infedit.cross_replacing():
                    got["infedit cross"].add(k)
                if bool(p2p.self_replacing().all()):
                    got["p2p self"].add(k)
                if p2p.cross_replacing():
                    got["p2p cross"].add(k)
                if fpe.active(level=fpe.min_level):
                    got["fpe"].add(k)
            want = {
                "infedit self": expected_injection(s, num_steps),
                "infedit cross": {k for k in range(num_steps) if exact * num_steps >= k + 1},
                "p2p self": set(range(floor(exact * num_steps))),
                "p2p cross": set(range(min(floor(exact * (num_steps + 1)), num_steps))),
                "fpe": set(range(floor(exact * num_steps))),
            }
            assert got == want, (s, num_steps)
            assert blend.steps == {k for k in range(num_steps) if k + 1 > floor(exact * num_steps)}


def test_masactrl_starts_at_its_step():
    ctl = MasaCtrlController(num_steps=15, start_step=4, start_layer=0)
    assert [k for k in range(15) if (ctl.begin_step(k), ctl.active(0))[1]] == list(range(4, 15))


@pytest.mark.parametrize("value", [0.6, np.float16(0.6), np.float32(0.6), np.float64(0.6), np.longdouble("0.6"),
                                   *(torch.tensor(0.6, dtype=d) for d in TENSOR_DTYPES), "0.6", Fraction(3, 5)])
def test_exact_reads_the_decimal_written(value):
    assert steps.exact(value) == Fraction(3, 5)


def test_bad_fractions_are_named():
    with pytest.raises(TypeError, match="must be a number"):
        steps.exact([0.5])
    with pytest.raises(ValueError, match="one number"):
        steps.exact(torch.tensor([0.5, 0.6]))
    with pytest.raises(ValueError, match="at least 1"):
        steps.exceeds(0.5, 0)


def test_step_sets_mask_per_edit():
    sets = steps.StepSets(steps.per_edit(steps.exceeds, torch.tensor([1.0, 0.5]), 4))
    assert sets.mask(0, "cpu") is True and sets.mask(3, "cpu") is False
    mixed = sets.mask(1, "cpu")  # 1.0 injects on steps 0-2, 0.5 on step 0 only
    assert mixed.shape == (2, 1, 1, 1) and mixed.flatten().tolist() == [True, False]
    assert sets.mask(1, "cpu") is mixed  # made once per step and device
