"""The planner's pure maths on hand-built profiles: latency model, vote accuracy, plans."""

from __future__ import annotations

import json
import math

import pytest

from langchain_latts.errors import LattsValueError
from langchain_latts.planner.accuracy import (
    AccuracyModel,
    concentration_for_vote,
    fit_accuracy_model,
    observed_vote,
    paired_standard_error,
    vote_accuracy,
)
from langchain_latts.planner.engine_config import engine_config
from langchain_latts.planner.latency import (
    SpeculationSetting,
    first_token_seconds,
    predict_latency,
    seconds_per_token,
)
from langchain_latts.planner.lengths import LengthEstimate
from langchain_latts.planner.plan import Plan, choose_speculation, derive_schedule, plan_call
from langchain_latts.planner.profile import (
    Identity,
    LatencyError,
    Prefill,
    Profile,
    StepCurve,
    load_profile,
    save_profile,
)
from langchain_latts.planner.risk import NODES, expected_outcome, finished_distribution

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
    # The prefill gives the first token; each of the other 99 takes a step.
    assert latency == pytest.approx(0.005 + 0.00001 * 20 + 99 * (0.010 + 0.0001))


def test_launching_branches_costs_their_measured_first_token_time() -> None:
    # Measured with a 20-token prompt: all of 1 branch's first tokens after 10 ms, of 16 after 50 ms.
    p = profile()
    p.steps["off"] = p.steps["off"].model_copy(update={"batch_sizes": [1, 16], "step_s": [0.010, 0.010],
                                                       "first_token_s": [0.010, 0.050], "prompt_tokens": 20})
    assert first_token_seconds(p, 1, 20) == pytest.approx(0.010)
    assert first_token_seconds(p, 16, 20) == pytest.approx(0.050)
    assert first_token_seconds(p, 16, 120) == pytest.approx(0.050 + 100 * 0.00001), "longer prompt: its prefill"
    assert predict_latency(p, lengths=[100] * 16, prompt_tokens=20) == pytest.approx(0.050 + 99 * 0.010)


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


def test_concentration_is_fitted_to_what_the_calibration_votes_scored() -> None:
    # Each question: 3 of 8 right, its 5 wrong answers split 3 + 2, so its vote of 8 ties 3-3.
    correct, main_wrong = [3] * 12, [3] * 12
    votes = [observed_vote(3, 3, tied_wrong=1)] * 12
    assert votes[0] == 0.5
    model = fit_accuracy_model(correct, main_wrong, samples=8, votes=votes)
    assert model.vote_accuracy(8) == pytest.approx(0.5, abs=0.005)
    assert "vote of 8 (50.0%)" in model.source
    # Votes that all went right need wrong answers that never agree; votes that all failed, ones that always do.
    assert fit_accuracy_model(correct, main_wrong, samples=8, votes=[1.0] * 12).concentration == 0.0
    assert fit_accuracy_model(correct, main_wrong, samples=8, votes=[0.0] * 12).concentration == 1.0


def test_observed_vote_counts_ties_and_losses() -> None:
    assert observed_vote(5, 3) == 1.0
    assert observed_vote(3, 5) == 0.0
    assert observed_vote(0, 0) == 0.0
    assert observed_vote(2, 2, tied_wrong=2) == pytest.approx(1 / 3)


def test_concentration_for_vote_inverts_vote_accuracy() -> None:
    for c in (0.1, 0.4, 0.8):
        target = vote_accuracy(8, 2.0, 1.5, c)
        assert concentration_for_vote(8, 2.0, 1.5, target) == pytest.approx(c, abs=1e-3)


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


def exact(median: float) -> LengthEstimate:
    """A question whose branches all write ``median`` tokens, known in advance."""
    return LengthEstimate(median, 0.0, 0.0)


def flat_profile(step_s: list[float], batches: list[int], *, sigma: float = 0.0, bias: float = 0.0) -> Profile:
    """No prefill, the given step times, and a timing error of spread ``sigma``."""
    return Profile(identity=identity(), created="2026-11-30", steps={"off": StepCurve(batch_sizes=batches, step_s=step_s)},
                   prefill=Prefill(intercept_s=0.0, per_token_s=0.0), output_lengths=[100],
                   accuracy=AccuracyModel(alpha=2.0, beta=1.0, concentration=0.2),
                   latency_error=LatencyError(bias=bias, sigma=sigma))


def test_a_near_miss_plan_loses_to_a_safe_plan() -> None:
    # 100-token branches, deadline 1 s: 2 branches take 0.70 s, 8 branches 0.97 s, and the
    # latency model is off by 7% (sd of ln(measured / predicted)).
    p = flat_profile([0.007, 0.007, 0.0097, 0.02], [1, 2, 8, 16], sigma=0.07)
    outcomes = {b: expected_outcome(b, seconds_per_token=seconds_per_token(p, b), first_token_s=0.0, deadline_s=1.0,
                                    length=exact(100), vote_accuracy=p.accuracy.vote_accuracy, timing_sigma=0.07)
                for b in (2, 8)}
    # 8 branches all finish only when the machine is < 3% slower than predicted: Phi(ln(1/0.97)/0.07) = 0.67;
    # 2 branches miss only at a 43% slowdown (5 standard deviations).
    assert outcomes[8].p_complete == pytest.approx(0.668, abs=0.01)
    assert outcomes[2].p_complete > 0.999
    assert p.accuracy.vote_accuracy(8) > p.accuracy.vote_accuracy(2), "when both finish, 8 branches are better"
    assert outcomes[8].expected_accuracy < outcomes[2].expected_accuracy, "but the near miss loses"
    plan = plan_call(p, prompt_tokens=0, max_tokens=512, max_branches=8, deadline_s=1.0, length=exact(100))
    assert plan.branches < 8 and plan.predicted_latency_s < 0.9 and plan.p_none < 0.01
    assert plan.limited_by == "deadline"


def test_a_branch_finishes_with_the_probability_of_its_timing_error() -> None:
    p = flat_profile([0.01, 0.01], [1, 16], sigma=0.1)
    # One 100-token branch predicted at 1.0 s, deadline e^0.1 s: it finishes when the error is < 1 sd.
    one = expected_outcome(1, seconds_per_token=0.01, first_token_s=0.0, deadline_s=math.exp(0.1), length=exact(100),
                           vote_accuracy=p.accuracy.vote_accuracy, timing_sigma=0.1)
    assert one.p_complete == pytest.approx(0.8413, abs=1 / NODES)  # Phi(1), to the quadrature's resolution
    assert one.p_none == pytest.approx(1 - one.p_complete)
    assert one.expected_accuracy == pytest.approx(one.p_complete * p.accuracy.vote_accuracy(1), rel=1e-6)
    # A biased model (the machine runs 10% slower than predicted) moves the median to the deadline.
    biased = expected_outcome(1, seconds_per_token=0.01, first_token_s=0.0, deadline_s=math.exp(0.1),
                              length=exact(100), vote_accuracy=p.accuracy.vote_accuracy, timing_bias=0.1,
                              timing_sigma=0.1)
    assert biased.p_complete == pytest.approx(0.5, abs=0.002)


def test_branches_of_a_question_share_its_length_error_but_not_their_own() -> None:
    vote = AccuracyModel(alpha=2.0, beta=1.0, concentration=0.2).vote_accuracy
    # Each of 4 branches independently finishes with probability 1/2 (its own spread only):
    # none finishes with probability 1/16.
    own = expected_outcome(4, seconds_per_token=0.01, first_token_s=0.0, deadline_s=1.0,
                           length=LengthEstimate(100, 0.0, 0.3), vote_accuracy=vote)
    assert own.p_none == pytest.approx(1 / 16, abs=0.001) and own.p_complete == pytest.approx(1 / 16, abs=0.001)
    assert own.expected_finished == pytest.approx(2.0, abs=0.01)
    # The same spread shared by the question: all or nothing, each half the time.
    shared = expected_outcome(4, seconds_per_token=0.01, first_token_s=0.0, deadline_s=1.0,
                              length=LengthEstimate(100, 0.3, 0.0), vote_accuracy=vote)
    assert shared.p_none == pytest.approx(0.5, abs=0.01) and shared.p_complete == pytest.approx(0.5, abs=0.01)


def test_without_a_deadline_every_branch_counts() -> None:
    vote = AccuracyModel(alpha=2.0, beta=1.0, concentration=0.2).vote_accuracy
    outcome = expected_outcome(5, seconds_per_token=1.0, first_token_s=0.0, deadline_s=None, length=exact(10 ** 6),
                               vote_accuracy=vote)
    assert (outcome.expected_accuracy, outcome.p_complete, outcome.p_none) == (vote(5), 1.0, 0.0)


def test_the_finished_count_is_poisson_binomial() -> None:
    assert finished_distribution([]) == [1.0]
    assert finished_distribution([0.5, 0.5]) == pytest.approx([0.25, 0.5, 0.25])
    assert finished_distribution([1.0, 0.2, 0.0]) == pytest.approx([0.0, 0.8, 0.2, 0.0])


def test_branches_beyond_the_free_slots_finish_a_wave_later() -> None:
    vote = AccuracyModel(alpha=2.0, beta=1.0, concentration=0.2).vote_accuracy
    # 100 tokens at 10 ms: one wave takes 1 s. Deadline 1.5 s, 2 free slots: 2 of 4 finish.
    outcome = expected_outcome(4, seconds_per_token=0.01, first_token_s=0.0, deadline_s=1.5, length=exact(100),
                               vote_accuracy=vote, free_slots=2)
    assert outcome.expected_finished == pytest.approx(2.0) and outcome.p_complete == 0.0
    assert outcome.expected_accuracy == pytest.approx(vote(2))


def test_a_long_question_gets_a_plan_it_can_finish() -> None:
    # Step time grows with the batch: 8 branches of a 36-token question fit 0.3 s, the same
    # 8 branches of a 69-token question would not.
    p = flat_profile([0.002, 0.0025, 0.003, 0.004], [1, 4, 8, 16], sigma=0.05)
    short = plan_call(p, prompt_tokens=0, max_tokens=512, max_branches=16, deadline_s=0.3, length=exact(36))
    long = plan_call(p, prompt_tokens=0, max_tokens=512, max_branches=16, deadline_s=0.3, length=exact(69))
    assert short.branches > long.branches >= 1
    assert long.predicted_latency_s < 0.3 and long.p_none < 0.01


def test_a_loaded_engine_gets_fewer_branches_than_an_idle_one() -> None:
    p = flat_profile([0.002, 0.0025, 0.003, 0.004, 0.007], [1, 4, 8, 16, 32], sigma=0.05)
    idle = plan_call(p, prompt_tokens=0, max_tokens=512, max_branches=16, deadline_s=0.25, length=exact(69))
    loaded = plan_call(p, prompt_tokens=0, max_tokens=512, max_branches=16, deadline_s=0.25, length=exact(69),
                       load=16)
    assert loaded.branches < idle.branches and loaded.load == 16


def test_a_token_budget_caps_the_branches() -> None:
    p = profile()
    plan = plan_call(p, prompt_tokens=20, max_tokens=512, max_branches=16, token_budget=3 * 100, length=exact(100))
    assert plan.branches == 3 and plan.limited_by == "budget"
    # With a spread, the budget must hold the 90th percentile of the length, 100 * e^(1.28 * 0.2) = 129.2
    # tokens per branch: 516 tokens hold 3 of them, not 4.
    spread = plan_call(p, prompt_tokens=20, max_tokens=512, max_branches=16, token_budget=516,
                       length=LengthEstimate(100, 0.2, 0.0))
    assert spread.branches == 3 and spread.limited_by == "budget"


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
    from langchain_latts.planner.engine_config import forget_cached_profiles, profile_identity
    from langchain_latts.settings import TTSSettings

    save_profile(p.model_copy(update={"identity": profile_identity(TTSSettings())}))
    forget_cached_profiles()


def test_auto_speculation_follows_the_profile() -> None:
    from langchain_latts.models import DEFAULT_DRAFT
    from langchain_latts.planner.engine_config import forget_cached_profiles
    from langchain_latts.settings import TTSSettings

    forget_cached_profiles()
    assert engine_config(TTSSettings()).speculative is None  # no profile: the built-in draft is not assumed
    unprofiled = engine_config(TTSSettings(speculative_method="draft_model")).speculative
    assert unprofiled is not None and unprofiled.num_speculative_tokens == 4  # a configured drafter: k = 4

    _cache(profile(draft_helps=True))
    spec = engine_config(TTSSettings()).speculative
    assert spec is not None and (spec.method, spec.num_speculative_tokens, spec.model) == (
        "draft_model", 4, str(DEFAULT_DRAFT))
    assert engine_config(TTSSettings(num_speculative_tokens=0)).speculative is None  # an int pins it

    _cache(profile(draft_helps=False))
    assert engine_config(TTSSettings()).speculative is None


def test_auto_speculation_passes_a_dynamic_schedule_to_vllm() -> None:
    from langchain_latts.settings import TTSSettings

    p = profile()
    p.steps["k=4"] = StepCurve(batch_sizes=BATCHES, step_s=[0.014 + 0.003 * b for b in BATCHES], tokens_per_step=3.5)
    _cache(p)
    spec = engine_config(TTSSettings()).speculative
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


# -- calls that start together: reservations -------------------------------------------------
def test_concurrent_plans_see_each_others_reservations() -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from langchain_latts.planner.runtime import EngineProfile, plan_for_call, reservations
    from langchain_latts.settings import TTSSettings

    from .fakes import ScriptedEngine

    engine = ScriptedEngine([])  # nothing launched: the engine itself reports no load at all
    p = flat_profile([0.002, 0.0025, 0.003, 0.004, 0.007, 0.013], [1, 4, 8, 16, 32, 64], sigma=0.05)
    state = EngineProfile(p, "test", SpeculationSetting.off())
    settings = TTSSettings(max_branches=16, max_tokens=160)
    start = threading.Barrier(8)

    def call(i: int) -> Plan:
        start.wait()  # all eight plan at once, like llm.batch(..., max_concurrency=8)
        return plan_for_call(state, settings, engine, prompt_tokens=0, time_left_s=0.4, question="", call_id=f"c{i}")

    with ThreadPoolExecutor(8) as pool:
        plans = list(pool.map(call, range(8)))
    book = reservations(engine)
    # Each plan counted every plan reserved before it: in planning order, the loads are running sums.
    ordered = sorted(plans, key=lambda plan: plan.load)
    seen = 0
    for plan in ordered:
        assert plan.load == seen
        seen += plan.branches
    assert book.held == seen
    assert ordered[-1].branches < ordered[0].branches, "the last caller plans for everyone's sequences"
    alone = plan_call(p, prompt_tokens=0, max_tokens=160, max_branches=16, deadline_s=0.4)
    assert ordered[0].branches == alone.branches
    # Branches that end free their share; a call that returns frees the rest.
    book.hold("c0", 0)
    book.release("c1")
    assert book.held == seen - plans[0].branches - plans[1].branches
    for i in range(8):
        book.release(f"c{i}")
    assert book.held == 0


def test_the_engine_s_own_load_counts_when_it_is_larger() -> None:
    from langchain_latts.planner.runtime import Reservations

    book = Reservations()
    seen: list[int] = []

    def make(load: int, peers: int) -> Plan:
        seen.append(load)
        return Plan(3, "off", 0.1, 0.5, 50, "p", "plateau", load, peers=peers)

    book.plan("a", 0, make)
    book.plan("b", 10, make)  # ten requests from elsewhere (a benchmark's background load)
    book.plan("c", 1, make)
    assert seen == [0, 10, 6]
    book.plan("a", 0, make)  # re-planning a call does not count its own reservation
    assert seen[-1] == 6


def test_a_longer_prompt_slows_each_step_by_the_profiled_context_slope() -> None:
    p = profile()
    p.steps["off"] = p.steps["off"].model_copy(update={"prompt_tokens": 20, "context_slope": 0.001})
    short = seconds_per_token(p, 1, prompt_tokens=20)
    assert seconds_per_token(p, 1, prompt_tokens=420) == pytest.approx(short * 1.4)  # 400 more tokens: 40% longer
    assert seconds_per_token(p, 1, prompt_tokens=5) == pytest.approx(short), "a shorter prompt is not faster"


def test_noisy_measurements_become_non_decreasing_in_the_batch_size() -> None:
    from langchain_latts.planner.profile import monotone

    assert monotone([1.0, 2.0, 3.0]) == [1.0, 2.0, 3.0]
    # 12.2 ms at 4 sequences and 9.9 at 8 cannot both hold: pooled to their mean.
    assert monotone([8.3, 12.2, 9.9, 13.2]) == pytest.approx([8.3, 11.05, 11.05, 13.2])
    assert monotone([3.0, 2.0, 1.0]) == pytest.approx([2.0, 2.0, 2.0])
    assert monotone([]) == []


def test_the_validated_error_grows_with_the_branch_count() -> None:
    from langchain_latts.planner.validate import latency_error

    # Calls of 3 and 24 branches: 10% and 40% over their predictions, +-5%.
    rows = [{"branches": b, "predicted_s": 0.1, "measured_s": 0.1 * over * wobble}
            for b, over in ((3, 1.1), (24, 1.4)) for wobble in (0.95, 1.05)]
    error = latency_error(rows)
    assert error.bias_at(3) == pytest.approx(math.log(1.1) + 0.5 * (math.log(0.95) + math.log(1.05)), abs=1e-9)
    assert error.bias_at(24) == pytest.approx(math.log(1.4) + 0.5 * (math.log(0.95) + math.log(1.05)), abs=1e-9)
    assert error.sigma == pytest.approx(0.5 * (math.log(1.05) - math.log(0.95)), rel=1e-6)
    assert error.calls == 4


def test_calls_that_run_together_share_the_engine_fairly() -> None:
    p = flat_profile([0.002, 0.0025, 0.003, 0.004, 0.007, 0.013], [1, 4, 8, 16, 32, 64], sigma=0.05)
    alone = plan_call(p, prompt_tokens=0, max_tokens=160, max_branches=16, deadline_s=0.3, length=exact(60))
    # Seven other planned calls: 8 branches each would be 64 sequences (13 ms steps): too slow.
    shared = plan_call(p, prompt_tokens=0, max_tokens=160, max_branches=16, deadline_s=0.3, length=exact(60),
                       peers=7)
    assert shared.branches < alone.branches and shared.peers == 7
    assert shared.seconds_per_token == pytest.approx(seconds_per_token(p, shared.branches * 8))


def test_the_planner_remembers_how_many_calls_ran_together_for_a_while() -> None:
    from langchain_latts.planner.runtime import PEERS_MEMORY_S, Reservations

    now = [100.0]
    book = Reservations(clock=lambda: now[0])
    peers_seen: list[int] = []

    def make(load: int, peers: int) -> Plan:
        peers_seen.append(peers)
        return Plan(2, "off", 0.1, 0.5, 50, "p", "plateau", load, peers=peers)

    for i in range(4):  # four calls at once
        book.plan(f"c{i}", 0, make)
    for i in range(4):
        book.release(f"c{i}")
    assert peers_seen == [0, 1, 2, 3]
    book.plan("next", 0, make)  # alone now, but three others ran a moment ago: the next wave
    assert peers_seen[-1] == 3
    book.release("next")
    now[0] += 5 * PEERS_MEMORY_S
    book.plan("later", 0, make)
    assert peers_seen[-1] == 0, "forgotten after a while"


def test_votes_integrate_the_beta_exactly_even_when_it_piles_up_at_one() -> None:
    # beta < 1: the density is infinite at p = 1; a vote of one is still its mean exactly.
    assert vote_accuracy(1, 1.47, 0.30, 0.25) == pytest.approx(1.47 / 1.77, abs=1e-12)
    # Two samples: a 1-1 split is a coin flip, so the vote of two equals the vote of one.
    assert vote_accuracy(2, 1.47, 0.30, 0.25) == pytest.approx(1.47 / 1.77, abs=1e-12)


def test_longer_questions_can_be_harder() -> None:
    from langchain_latts.planner.accuracy import fit_length_slope

    # Short questions (30-40 tokens) right 7-8 times of 8, long ones (70-90) 2-4 times.
    slope, reference = fit_length_slope([8, 8, 7, 4, 3, 2], 8, [30, 35, 40, 70, 80, 90])
    assert slope < -2 and 40 < reference < 70
    model = AccuracyModel(alpha=2.0, beta=1.0, concentration=0.2, length_slope=slope, reference_length=reference)
    easy, hard = model.for_length(30), model.for_length(90)
    assert easy.mean_single_accuracy > 0.85 > 0.35 > hard.mean_single_accuracy
    assert easy.alpha + easy.beta == pytest.approx(3.0), "the spread is kept"
    assert model.for_length(reference).mean_single_accuracy == pytest.approx(2 / 3, abs=1e-3)
    assert AccuracyModel(alpha=2.0, beta=1.0, concentration=0.2).for_length(90).mean_single_accuracy == 2 / 3


def greedy_profile(greedy: float | None, sigma: float = 0.0) -> Profile:
    p = flat_profile([0.001, 0.001, 0.0012, 0.002], [1, 2, 8, 16], sigma=sigma)
    return p.model_copy(update={"accuracy": p.accuracy.model_copy(update={"greedy_accuracy": greedy})})


def test_greedy_is_chosen_when_its_answer_beats_the_best_vote() -> None:
    p = greedy_profile(0.97)  # the vote of Beta(2, 1) samples plateaus at 0.948 (14 branches)
    plan = plan_call(p, prompt_tokens=0, max_tokens=512, max_branches=16, length=exact(100))
    assert plan.greedy and plan.branches == 1 and plan.limited_by == "greedy"
    assert plan.expected_accuracy == pytest.approx(0.97)
    assert plan.sampled == (14, pytest.approx(0.948, abs=0.001))
    assert plan.as_metadata()["greedy"] is True


def test_the_vote_is_kept_when_it_beats_greedy_or_greedy_is_not_allowed() -> None:
    vote = plan_call(greedy_profile(0.6), prompt_tokens=0, max_tokens=512, max_branches=16, length=exact(100))
    assert not vote.greedy and vote.branches > 1 and vote.expected_accuracy > 0.6
    unmeasured = plan_call(greedy_profile(None), prompt_tokens=0, max_tokens=512, max_branches=16, length=exact(100))
    assert not unmeasured.greedy and unmeasured.sampled is None
    barred = plan_call(greedy_profile(0.99), prompt_tokens=0, max_tokens=512, max_branches=16, length=exact(100),
                       greedy=False)
    assert not barred.greedy and barred.branches == vote.branches


def test_greedy_pays_for_one_branch_s_risk_of_missing_the_deadline() -> None:
    # One branch of 100 tokens takes 0.1 s; at 0.1 s with a 10% timing spread it finishes half the time.
    # More branches are slower still, so the vote has the same trouble; greedy at 0.97 wins.
    p = greedy_profile(0.97, sigma=0.1)
    plan = plan_call(p, prompt_tokens=0, max_tokens=512, max_branches=16, length=exact(100), deadline_s=0.1)
    assert plan.greedy and plan.expected_accuracy == pytest.approx(0.485, abs=0.03)


def test_greedy_accuracy_follows_the_question_s_length_like_the_samples() -> None:
    model = AccuracyModel(alpha=2.0, beta=1.0, concentration=0.2, length_slope=-2.0, reference_length=50,
                          greedy_accuracy=0.8)
    hard = model.for_length(100)
    shift = -2.0 * math.log(2)
    assert hard.greedy_accuracy == pytest.approx(1 / (1 + math.exp(-(math.log(4) + shift))))
    assert model.for_length(50).greedy_accuracy == pytest.approx(0.8)


def test_a_vote_gain_the_calibration_cannot_tell_from_noise_plans_greedy() -> None:
    # The vote of 8 is expected 3 points above greedy: a plan when the calibration measured the
    # gain to +-1 point, not when its standard error is 5 points.
    base = profile()
    vote = base.accuracy.vote_accuracy(8)
    sure = base.model_copy(update={"accuracy": base.accuracy.model_copy(
        update={"greedy_accuracy": vote - 0.03, "vote_gain_se": 0.01})})
    noisy = base.model_copy(update={"accuracy": base.accuracy.model_copy(
        update={"greedy_accuracy": vote - 0.03, "vote_gain_se": 0.05})})
    assert not plan_call(sure, prompt_tokens=20, max_tokens=512, max_branches=8).greedy
    plan = plan_call(noisy, prompt_tokens=20, max_tokens=512, max_branches=8)
    assert plan.greedy and plan.branches == 1 and plan.limited_by == "greedy"


def test_paired_standard_error() -> None:
    assert paired_standard_error([1, 1, 0, 0], [0, 1, 0, 1]) == pytest.approx(math.sqrt(2 / 3 / 4))
    assert paired_standard_error([1.0], [0.0]) == 0.0


def test_the_quorum_is_the_fewest_finishers_whose_vote_is_within_tolerance() -> None:
    from langchain_latts.planner.accuracy import quorum_size

    flat = AccuracyModel(alpha=4.0, beta=1.0, concentration=0.9)  # the vote hardly grows
    steep = AccuracyModel(alpha=1.0, beta=1.0, concentration=0.0)
    assert quorum_size(flat, 8, 0.005) < quorum_size(steep, 8, 0.005) <= 8
    m = quorum_size(steep, 8, 0.005)
    assert steep.vote_accuracy(m) >= steep.vote_accuracy(8) - 0.005 > steep.vote_accuracy(m - 1)
    assert quorum_size(steep, 1, 0.005) == 1


def test_a_quorum_plan_predicts_the_time_until_its_mth_branch_finishes() -> None:
    from langchain_latts.planner.lengths import LengthEstimate

    p = profile()
    length = LengthEstimate(median=60.0, sigma_question=0.1, sigma_branch=0.5)
    base = plan_call(p, prompt_tokens=20, max_tokens=512, max_branches=16, length=length, greedy=False)
    plan = plan_call(p, prompt_tokens=20, max_tokens=512, max_branches=16, length=length, greedy=False, quorum=True)
    assert base.quorum is None and plan.branches == base.branches > 1
    assert plan.quorum is not None and 1 <= plan.quorum <= plan.branches
    expected = plan.first_token_s + length.mth_of(plan.quorum, plan.branches) * plan.seconds_per_token
    assert plan.quorum_latency_s == pytest.approx(expected)
    assert plan.as_metadata()["quorum"] == plan.quorum


def test_profile_identity_keeps_old_ids_and_tells_engine_options_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A default setup hashes as before engine options were recorded (cached profiles keep
    their id); memory, context, engine arguments and the model runner each change it."""
    import hashlib

    from langchain_latts.planner.engine_config import profile_identity
    from langchain_latts.settings import TTSSettings

    plain = identity()
    before = hashlib.sha256(plain.model_dump_json(exclude={"engine"}).encode()).hexdigest()[:16]
    assert plain.engine == {} and plain.profile_id == before
    monkeypatch.delenv("VLLM_USE_V2_MODEL_RUNNER", raising=False)
    base = profile_identity(TTSSettings())
    assert base.engine == {}
    ids = {base.profile_id}
    for changes in ({"max_model_len": 2048}, {"kv_cache_gib": 2.0}, {"gpu_memory_utilization": 0.45},
                    {"engine_kwargs": {"tensor_parallel_size": 2}},
                    {"engine_kwargs": {"compilation_config": {"cudagraph_mode": "PIECEWISE"}}}):
        changed = profile_identity(TTSSettings(**changes))
        assert changed.engine == changes.get("engine_kwargs", changes)
        assert "engine: {} (profile) != " in " ".join(changed.differences(base))
        ids.add(changed.profile_id)
    monkeypatch.setenv("VLLM_USE_V2_MODEL_RUNNER", "1")
    runner = profile_identity(TTSSettings())
    assert runner.engine == {"VLLM_USE_V2_MODEL_RUNNER": "1"}
    ids.add(runner.profile_id)
    assert len(ids) == 7


def test_member_vote_accuracy_counts_every_subset_with_ties_to_greedy() -> None:
    from langchain_latts.planner.accuracy import member_vote_accuracy, member_vote_table

    # Question 1: greedy right, samples [right, wrong "9", wrong "9"].
    # k=0: greedy alone, 1. k=1: {r} 1, {9} tie -> greedy 1, {9} 1: 1. k=2: {r,9} 1, {r,9} 1, {9,9} 0: 2/3.
    # (k=3, all samples, one draw per question, is not counted.)
    # Question 2: greedy wrong ("4"), samples [right, right, None].
    # k=0: 0. k=1: {r} tie -> greedy "4": 0, {r}: 0, {None}: 0 -> 0. k=2: {r,r} 1, {r,None} tie -> 0, again 0: 1/3.
    samples, greedy, truths = [["7", "9", "9"], ["5", "5", None]], ["7", "4"], ["7", "5"]
    assert member_vote_table(samples, greedy, truths) == [[1.0, 1.0, pytest.approx(2 / 3)],
                                                          [0.0, 0.0, pytest.approx(1 / 3)]]
    curve = member_vote_accuracy(samples, greedy, truths)
    assert curve == pytest.approx([0.5, 0.5, (2 / 3 + 1 / 3) / 2])
    assert member_vote_accuracy([], [], []) == []


def test_a_greedy_member_is_planned_where_it_was_counted_better() -> None:
    base = greedy_profile(0.6)
    sampled = [base.accuracy.vote_accuracy(b) for b in range(1, 10)]
    better = base.model_copy(update={"accuracy": base.accuracy.model_copy(
        update={"greedy_member": [0.6, *(a + 0.02 for a in sampled[1:])]})})
    plan = plan_call(better, prompt_tokens=0, max_tokens=512, max_branches=8, length=exact(100))
    assert plan.greedy_member and not plan.greedy and plan.branches > 1
    assert plan.expected_accuracy == pytest.approx(sampled[plan.branches - 1] + 0.02)
    assert plan.as_metadata()["greedy_member"] is True
    worse = base.model_copy(update={"accuracy": base.accuracy.model_copy(
        update={"greedy_member": [0.6, *(a - 0.02 for a in sampled[1:])]})})
    assert not plan_call(worse, prompt_tokens=0, max_tokens=512, max_branches=8, length=exact(100)).greedy_member
    barred = plan_call(better, prompt_tokens=0, max_tokens=512, max_branches=8, length=exact(100), greedy=False)
    assert not barred.greedy_member  # a verifier or confidence strategy needs samples only
    # Beyond the sizes the calibration counted, the sampled curve is all there is.
    assert better.accuracy.member_accuracy(9) is not None and better.accuracy.member_accuracy(10) is None
    assert better.accuracy.best_vote(12) == (pytest.approx(base.accuracy.vote_accuracy(12)), False)


def test_the_greedy_member_curve_follows_the_question_s_length() -> None:
    model = AccuracyModel(alpha=2.0, beta=1.0, concentration=0.2, length_slope=-2.0, reference_length=50,
                          greedy_accuracy=0.8, greedy_member=[0.8, 0.8, 0.85])
    hard = model.for_length(100)
    assert hard.greedy_member is not None and hard.greedy_member[0] == pytest.approx(hard.greedy_accuracy)
    assert hard.greedy_member[2] < 0.85


def test_a_schedule_timed_as_a_whole_is_priced_with_its_own_step_times() -> None:
    """`latts profile` times the derived schedule on its own engine; when vLLM runs it slower
    than the fixed lengths it is made of, the planner prices it so and keeps the fixed length."""
    p = profile()
    p.steps["k=4"] = StepCurve(batch_sizes=BATCHES, step_s=[0.014 + 0.003 * b for b in BATCHES], tokens_per_step=3.5)
    schedule = derive_schedule(p, 64)
    assert schedule.dynamic
    allowed = [SpeculationSetting.off(), SpeculationSetting.fixed(4), schedule]
    untimed, _ = choose_speculation(p, allowed, prompt_tokens=20, max_tokens=512, max_branches=16)
    assert untimed == schedule  # priced from the fixed lengths' curves, the schedule wins
    fixed_latency = predict_latency(p, lengths=[100] * 8, prompt_tokens=20, speculation=schedule)
    slow = StepCurve(batch_sizes=BATCHES, step_s=[3 * (0.014 + 0.003 * b) for b in BATCHES])  # e.g. no full graphs
    timed = p.model_copy(update={"steps": p.steps | {"schedule": slow},
                                 "timed_schedule": [tuple(r) for r in schedule.schedule]})
    assert timed.schedule_curve(schedule.schedule) is slow
    assert predict_latency(timed, lengths=[100] * 8, prompt_tokens=20, speculation=schedule) > 2 * fixed_latency
    chosen, _ = choose_speculation(timed, allowed, prompt_tokens=20, max_tokens=512, max_branches=16)
    assert chosen != schedule
    # Another schedule, or a fixed length, is still priced from the fixed-length curves.
    other = SpeculationSetting(drafter=True, schedule=((1, 2, 4), (3, 1 << 30, 0)))
    assert timed.schedule_curve(other.schedule) is None
    assert predict_latency(timed, lengths=[100], prompt_tokens=20, speculation=SpeculationSetting.fixed(4)) == \
        predict_latency(p, lengths=[100], prompt_tokens=20, speculation=SpeculationSetting.fixed(4))
    assert timed.speculative_lengths() == [4] and timed.max_batch == 64


def test_a_greedy_member_vote_must_clear_two_standard_errors_of_its_own_gain() -> None:
    """The member vote's gain over greedy is weighed against its own paired standard error
    (GAIN_Z = 2 of them), not the sampled vote's."""
    from langchain_latts.planner.plan import GAIN_Z

    base = greedy_profile(0.95)
    member = [0.95, *[0.99] * 8]  # +4 points over greedy from 2 branches on (sampled votes plateau at 0.948)
    sampled = base.accuracy.model_copy(update={"greedy_member": member, "vote_gain_se": 0.001})

    def plan(se: float) -> Plan:
        accuracy = sampled.model_copy(update={"member_gain_se": se})
        return plan_call(base.model_copy(update={"accuracy": accuracy}), prompt_tokens=0, max_tokens=512,
                         max_branches=8, length=exact(100))

    assert GAIN_Z == 2.0
    sure = plan(0.01)  # 4 points > 2 x 1 point
    assert sure.greedy_member and not sure.greedy and sure.branches >= 2
    noisy = plan(0.03)  # 4 points < 2 x 3 points: greedy
    assert noisy.greedy and noisy.branches == 1 and noisy.limited_by == "greedy"
