"""The planner's pure maths on hand-built profiles: latency model, vote accuracy, plans."""

from __future__ import annotations

import json

import pytest

from langchain_latts.errors import LattsValueError
from langchain_latts.planner.accuracy import AccuracyModel, fit_accuracy_model, vote_accuracy
from langchain_latts.planner.latency import SpeculationSetting, predict_latency
from langchain_latts.planner.plan import choose_speculation, derive_schedule, plan_call
from langchain_latts.planner.profile import Identity, Prefill, Profile, StepCurve, load_profile, save_profile

BATCHES = [1, 2, 4, 8, 16, 32, 64]


def identity(**changes: object) -> Identity:
    values: dict[str, object] = dict(hardware="test cpu x 2 cores", vllm="0.32.0", torch="2.13.0", latts="0",
                                     target="t", target_hash="abc", draft="d", draft_hash="def",
                                     speculative_method="draft_model", max_num_seqs=256)
    return Identity(**(values | changes))  # type: ignore[arg-type]


def curve(base: float, per_seq: float, tokens_per_step: float = 1.0) -> StepCurve:
    return StepCurve(batch_sizes=BATCHES, step_s=[base + per_seq * b for b in BATCHES],
                     tokens_per_step=tokens_per_step)


def profile(*, draft_helps: bool = True, per_seq: float = 0.0001, lengths: list[int] | None = None,
            accuracy: AccuracyModel | None = None) -> Profile:
    """10 ms steps without speculation; with k=4 a 14 ms step gains 3.5 tokens (helps) or
    a 40 ms step gains 1.5 (hurts); k=0 with the drafter loaded costs 12 ms."""
    k4 = curve(0.014, per_seq * 2, 3.5) if draft_helps else curve(0.040, per_seq * 2, 1.5)
    return Profile(
        identity=identity(), created="2026-11-26",
        steps={"off": curve(0.010, per_seq), "k=4": k4, "k=0+draft": curve(0.012, per_seq)},
        prefill=Prefill(intercept_s=0.005, per_token_s=0.00001),
        output_lengths=lengths or list(range(50, 150)),
        accuracy=accuracy or AccuracyModel(alpha=2.0, beta=1.0, concentration=0.2),
    )


# -- latency model -----------------------------------------------------------------------
def test_one_branch_latency_is_prefill_plus_steps() -> None:
    p = profile()
    latency = predict_latency(p, lengths=[100], prompt_tokens=20)
    assert latency == pytest.approx(0.005 + 0.00001 * 20 + 100 * (0.010 + 0.0001))


def test_branches_that_finish_early_shrink_the_batch() -> None:
    p = profile(per_seq=0.001)
    mixed = predict_latency(p, lengths=[10, 100], prompt_tokens=0)
    long_both = predict_latency(p, lengths=[100, 100], prompt_tokens=0)
    long_one = predict_latency(p, lengths=[100], prompt_tokens=0)
    assert long_one < mixed < long_both


def test_load_and_speculation_enter_the_step_time() -> None:
    p = profile(per_seq=0.001)
    idle = predict_latency(p, lengths=[100] * 4, prompt_tokens=10)
    loaded = predict_latency(p, lengths=[100] * 4, prompt_tokens=10, load=28)
    assert loaded > idle
    fast = predict_latency(p, lengths=[100], prompt_tokens=10, speculation=SpeculationSetting.fixed(4))
    assert fast < predict_latency(p, lengths=[100], prompt_tokens=10)


def test_branches_beyond_max_num_seqs_wait_for_a_slot() -> None:
    p = profile()
    two_waves = predict_latency(p, lengths=[100] * 4, prompt_tokens=0, max_num_seqs=2)
    one_wave = predict_latency(p, lengths=[100] * 2, prompt_tokens=0, max_num_seqs=2)
    assert two_waves == pytest.approx(2 * one_wave - p.prefill.at(0), rel=0.02)


def test_step_curve_interpolates_and_extrapolates() -> None:
    c = StepCurve(batch_sizes=[1, 4], step_s=[0.01, 0.04])
    assert c.at(2) == pytest.approx(0.02)
    assert c.at(8) == pytest.approx(0.08)
    assert c.at(0.5) == pytest.approx(0.01)


# -- vote accuracy -------------------------------------------------------------------------
def test_vote_of_one_is_the_mean_single_accuracy() -> None:
    assert vote_accuracy(1, 2.0, 1.0, 0.3) == pytest.approx(2 / 3, abs=1e-3)
    assert vote_accuracy(2, 2.0, 1.0, 0.3) == pytest.approx(2 / 3, abs=1e-3)  # a 1-1 tie is a coin flip


def test_vote_accuracy_grows_and_concentrated_errors_hurt() -> None:
    accs = [vote_accuracy(b, 2.0, 1.0, 0.2) for b in (1, 3, 8, 16)]
    assert accs == sorted(accs) and accs[-1] > accs[0] + 0.15
    assert vote_accuracy(8, 2.0, 1.0, 0.9) < vote_accuracy(8, 2.0, 1.0, 0.1)


def test_fit_recovers_spread_and_concentration() -> None:
    # Half the questions always right, half right 2 of 8 times with their 6 wrong answers on one value.
    model = fit_accuracy_model([8] * 10 + [2] * 10, [0] * 10 + [6] * 10, samples=8)
    assert model.mean_single_accuracy == pytest.approx(0.625, abs=0.01)
    assert model.concentration == pytest.approx(1.0)
    assert model.alpha + model.beta < 5  # a very spread distribution, not a point mass


# -- plans ---------------------------------------------------------------------------------
def test_without_a_deadline_the_plan_stops_at_the_plateau() -> None:
    p = profile()
    plan = plan_call(p, prompt_tokens=20, max_tokens=512, max_branches=64)
    assert 1 < plan.branches < 64
    assert plan.limited_by == "plateau"
    assert p.accuracy.vote_accuracy(64) - plan.expected_accuracy <= 0.005


def test_a_deadline_shorter_than_one_branch_gives_one_branch() -> None:
    plan = plan_call(profile(), prompt_tokens=20, max_tokens=512, max_branches=16, deadline_s=0.05)
    assert plan.branches == 1 and plan.limited_by == "nothing fits"


def test_a_loaded_engine_gets_fewer_branches_than_an_idle_one() -> None:
    p = profile(per_seq=0.0005)
    deadline = predict_latency(p, lengths=[p.output_length(0.9)] * 8, prompt_tokens=20)
    idle = plan_call(p, prompt_tokens=20, max_tokens=512, max_branches=16, deadline_s=deadline)
    loaded = plan_call(p, prompt_tokens=20, max_tokens=512, max_branches=16, deadline_s=deadline, load=24)
    assert idle.branches == 8 and idle.limited_by == "deadline"
    assert loaded.branches < idle.branches


def test_a_call_asking_for_log_probs_plans_with_the_measured_slowdown() -> None:
    p = profile(per_seq=0.0005).model_copy(update={"logprobs_slowdown": {"0": 1.15, "5": 1.5}})
    assert p.slowdown(None) == 1.0 and p.slowdown(0) == 1.15 and p.slowdown(3) == 1.0, "unmeasured k: none assumed"
    deadline = predict_latency(p, lengths=[p.output_length(0.9)] * 8, prompt_tokens=20)
    plain = plan_call(p, prompt_tokens=20, max_tokens=512, max_branches=16, deadline_s=deadline)
    slow = plan_call(p, prompt_tokens=20, max_tokens=512, max_branches=16, deadline_s=deadline, slowdown=p.slowdown(0))
    assert plain.branches == 8 and slow.branches < 8
    assert slow.predicted_latency_s <= deadline


def test_a_token_budget_caps_the_branches() -> None:
    p = profile()
    plan = plan_call(p, prompt_tokens=20, max_tokens=512, max_branches=16, token_budget=3 * p.output_length(0.9))
    assert plan.branches == 3 and plan.limited_by == "budget"


def test_a_drafter_that_slows_decoding_gets_no_speculation() -> None:
    p = profile(draft_helps=False)
    assert derive_schedule(p, 64).max_k == 0
    allowed = [SpeculationSetting.off(), SpeculationSetting.fixed(4), derive_schedule(p, 64)]
    chosen, _ = choose_speculation(p, allowed, prompt_tokens=20, max_tokens=512, max_branches=16)
    assert chosen == SpeculationSetting.off()


def test_a_drafter_that_helps_everywhere_gets_a_fixed_length() -> None:
    p = profile(draft_helps=True)
    allowed = [SpeculationSetting.off(), SpeculationSetting.fixed(4), derive_schedule(p, 64)]
    chosen, seconds = choose_speculation(p, allowed, prompt_tokens=20, max_tokens=512, max_branches=16)
    assert chosen == SpeculationSetting.fixed(4) and seconds > 0


def test_schedule_speculates_at_small_batches_only_when_drafting_saturates() -> None:
    # Drafting gains 3.5 tokens per step but its step grows fast with the batch.
    p = profile()
    p.steps["k=4"] = StepCurve(batch_sizes=BATCHES, step_s=[0.014 + 0.003 * b for b in BATCHES], tokens_per_step=3.5)
    schedule = derive_schedule(p, 64)
    assert schedule.dynamic
    assert schedule.k_at(1) == 4 and schedule.k_at(64) == 0
    assert schedule.schedule[0][0] == 1 and schedule.schedule[-1][1] >= 64


def test_plan_metadata_is_json() -> None:
    plan = plan_call(profile(), prompt_tokens=20, max_tokens=512, max_branches=8, deadline_s=1.0)
    assert json.loads(json.dumps(plan.as_metadata()))["profile_id"] == identity().profile_id


# -- the cache -----------------------------------------------------------------------------
def test_profiles_round_trip_and_refuse_other_setups(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LATTS_CACHE_DIR", str(tmp_path))
    p = profile()
    path = save_profile(p)
    assert path.parent.parent == tmp_path
    assert load_profile(p.identity) == p
    assert load_profile(identity(vllm="0.33.0")) is None  # another setup: not found by id
    with pytest.raises(LattsValueError, match="vllm: '0.32.0' \\(profile\\) != '0.33.0'"):
        load_profile(identity(vllm="0.33.0"), path=path)
    stale = json.loads(path.read_text()) | {"schema_version": 0}
    path.write_text(json.dumps(stale))
    with pytest.raises(LattsValueError, match="schema 0"):
        load_profile(p.identity)


# -- num_speculative_tokens="auto": the engine's speculation from the cached profile ----------
def _cache(p: Profile) -> None:
    from langchain_latts.planner.profiler import profile_identity
    from langchain_latts.planner.runtime import forget_cached_profiles
    from langchain_latts.settings import TTSSettings

    save_profile(p.model_copy(update={"identity": profile_identity(TTSSettings())}))
    forget_cached_profiles()


def test_auto_speculation_follows_the_profile() -> None:
    from langchain_latts.models import DEFAULT_DRAFT
    from langchain_latts.planner.runtime import forget_cached_profiles
    from langchain_latts.settings import TTSSettings

    forget_cached_profiles()
    assert TTSSettings().engine_config().speculative is None  # no profile: the built-in draft is not assumed
    unprofiled = TTSSettings(speculative_method="draft_model").engine_config().speculative
    assert unprofiled is not None and unprofiled.num_speculative_tokens == 4  # a configured drafter: k = 4

    _cache(profile(draft_helps=True))
    spec = TTSSettings().engine_config().speculative
    assert spec is not None and (spec.method, spec.num_speculative_tokens, spec.model) == (
        "draft_model", 4, str(DEFAULT_DRAFT))
    assert TTSSettings(num_speculative_tokens=0).engine_config().speculative is None  # an int pins it

    _cache(profile(draft_helps=False))
    assert TTSSettings().engine_config().speculative is None


def test_auto_speculation_passes_a_dynamic_schedule_to_vllm() -> None:
    from langchain_latts.settings import TTSSettings

    p = profile()
    p.steps["k=4"] = StepCurve(batch_sizes=BATCHES, step_s=[0.014 + 0.003 * b for b in BATCHES], tokens_per_step=3.5)
    _cache(p)
    spec = TTSSettings().engine_config().speculative
    assert spec is not None and spec.schedule is not None
    vllm = spec.to_vllm()
    assert vllm["num_speculative_tokens"] == 4
    ranges = vllm["num_speculative_tokens_per_batch_size"]
    assert ranges[0][0] == 1 and ranges[0][2] == 4 and ranges[-1][2] == 0


def test_calibration_prompts_from_jsonl_and_their_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from langchain_latts.planner.profiler import load_calibration

    good = tmp_path / "prompts.jsonl"
    good.write_text("\n".join(json.dumps({"prompt": f"What is {i} + 1?", "answer": str(i + 1)}) for i in range(4)))
    items = load_calibration(good)
    assert [p.answer for p in items] == ["1", "2", "3", "4"] and items[0].messages == (("user", "What is 0 + 1?"),)
    assert load_calibration(["a", "b", "c", "d"])[3].answer is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n{"question": "y"}\n')
    with pytest.raises(LattsValueError, match=r"prompts must hold one JSON object .*bad\.jsonl:2"):
        load_calibration(bad)
    with pytest.raises(LattsValueError, match="at least 4 calibration prompts"):
        load_calibration(["a"])


def test_the_confidence_calibration_sorts_each_samples_lowest_values_and_profiles_without_it_still_load() -> None:
    from langchain_latts.planner.profiler import confidence_calibration

    runs = [{"confidences": [3.0] * 20, "logprobs": [-0.1] * 19 + [-2.0]},
            {"confidences": [1.0] * 20, "logprobs": [-0.3] * 20},
            {"confidences": [], "logprobs": []}]  # asked without log-probs: not a sample of the calibration
    calibration = confidence_calibration(runs)
    assert calibration is not None
    assert calibration.lowest_logprob == [-2.0, -0.3] and calibration.lowest_group == [1.0, 3.0]
    assert calibration.threshold("lowest_logprob") == -2.0, "ungraded: 90% of the samples pass"
    assert confidence_calibration(runs[2:]) is None
    right = [{"confidences": [2.0] * 20, "logprobs": [-0.1] * 19 + [lp]} for lp in (-0.05, -0.4, -0.6, -1.0)]
    graded = confidence_calibration(runs[:2] + right, [False, False, True, True, True, True])
    assert graded is not None and graded.right_lowest_logprob == [-1.0, -0.6, -0.4, -0.1]
    assert graded.threshold("lowest_logprob") == -1.0, "graded: 95% of the right samples pass"
    assert graded.threshold("lowest_group") == 2.0
    old = profile().model_dump()
    old.pop("confidence")
    assert Profile.model_validate(old).confidence is None
