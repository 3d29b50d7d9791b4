"""MATH-500 mode: the vendored data loads, and the math-verify grader accepts the reference
solutions' own boxed answers (the grader's check on real data)."""

from __future__ import annotations

from langchain_latts.bench.tts import bench_items
from langchain_latts.tasks.math500 import grade_answer, load_math500
from langchain_latts.tts.answers import extract_boxed

#: Problems whose reference solution's last \\boxed{} is not math-verify equivalent to the
#: dataset's answer field (found by this test; each checked by hand).
KNOWN_EXCEPTIONS: set[int] = set()


def test_the_vendored_file_has_the_500_problems() -> None:
    problems = load_math500()
    assert len(problems) == 500 and {p.level for p in problems} == {1, 2, 3, 4, 5}
    assert problems[0].question.endswith("Put the final answer in \\boxed{}.")


def test_the_grader_marks_at_least_99_percent_of_reference_answers_correct() -> None:
    problems = load_math500()
    wrong = [i for i, p in enumerate(problems) if not grade_answer(extract_boxed(p.solution), p.answer)]
    assert len(wrong) <= 5, [(i, extract_boxed(problems[i].solution), problems[i].answer) for i in wrong]
    assert set(wrong) == KNOWN_EXCEPTIONS, [(i, extract_boxed(problems[i].solution), problems[i].answer)
                                            for i in wrong]


def test_grading_is_by_equivalence_not_by_string() -> None:
    assert grade_answer("\\frac{1}{2}", "0.5") and grade_answer("0.5", "\\dfrac12")
    assert not grade_answer("3", "\\frac{1}{2}") and not grade_answer(None, "1")
    item = bench_items("math500", 3)[0]
    assert item.grade("\\left( 3, \\frac{\\pi}{2} \\right)") and not item.grade("(3, 0)")


def test_the_pareto_front_keeps_only_undominated_methods() -> None:
    from langchain_latts.bench.tts import pareto_front

    points = [{"method": "fast", "accuracy": 0.6, "median_s": 0.1}, {"method": "slow-better", "accuracy": 0.9,
                                                                     "median_s": 0.5},
              {"method": "dominated", "accuracy": 0.5, "median_s": 0.2}, {"method": "tie-slower", "accuracy": 0.6,
                                                                          "median_s": 0.3}]
    assert pareto_front(points) == ["fast", "slow-better"]


def test_the_tts_benchmark_problems_avoid_the_held_out_split() -> None:
    from langchain_latts.bench.tts import bench_problems
    from langchain_latts.models.train import HELD_OUT_SEED, HELD_OUT_SIZE
    from langchain_latts.tasks.arithmetic import generate_problems

    held_out = {p.expression for p in generate_problems(HELD_OUT_SIZE, seed=HELD_OUT_SEED)}
    problems = bench_problems(200)
    assert len({p.expression for p in problems}) == 200 and not held_out & {p.expression for p in problems}
