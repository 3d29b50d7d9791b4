"""The built-in task: generator, grader and step verifier on hand-built solutions."""

from __future__ import annotations

import random

import pytest

from langchain_latts.tasks.arithmetic import (
    LEVELS,
    MAX_OPERAND,
    Problem,
    calculator,
    final_answer,
    generate_problem,
    generate_problems,
    grade,
    parse_problem,
    step_scores,
)

# 48 + 17 = 65, 65 - 23 = 42, 42 + 5 = 47
PROBLEM = Problem(first=48, terms=(("+", 17), ("-", 23), ("+", 5)))
GOOD = "48 + 17 = 65\n65 - 23 = 42\n42 + 5 = 47\n#### 47"


def test_question_answer_and_solution() -> None:
    assert PROBLEM.question == "Compute 48 + 17 - 23 + 5."
    assert PROBLEM.answer == 47
    assert PROBLEM.solution() == GOOD


def test_generator_is_seeded_and_levels_set_shape() -> None:
    first = generate_problems(50, seed=7)
    assert first == generate_problems(50, seed=7)
    assert first != generate_problems(50, seed=8)
    assert len({p.expression for p in first}) == 50  # distinct
    for p in first:
        assert len(p.terms) == p.level  # level k = k operations = k + 1 numbers
        assert all(0 <= b < MAX_OPERAND for _, b in [("+", p.first), *p.terms])


def test_operands_mix_digit_counts_and_questions_mix_phrasings() -> None:
    problems = generate_problems(600, seed=3)
    digits = {len(str(b)) for p in problems for _, b in p.terms}
    assert digits == {1, 2, 3}  # any digit mix, up to 999
    assert {len(p.terms) for p in problems} == set(LEVELS)  # 2 to 6 numbers
    questions = [p.question for p in problems]
    assert any(q.startswith("What is ") for q in questions) and any(q.endswith("=") for q in questions)
    assert any(q[0].isdigit() and q[-1].isdigit() for q in questions)  # bare expressions
    assert any("+" in q and " + " not in q for q in questions)  # unspaced operators
    # Most chains stay non-negative (subtraction below zero is allowed but rarer).
    assert 0.6 < sum(p.answer >= 0 for p in problems) / len(problems) < 1.0


def test_every_phrasing_parses_back_to_its_problem() -> None:
    for p in generate_problems(300, seed=11):
        parsed = parse_problem(p.question)
        assert (parsed.first, parsed.terms) == (p.first, p.terms), p.question


def test_generator_excludes_held_out_expressions() -> None:
    held_out = {p.expression for p in generate_problems(30, seed=1, levels=[1])}
    fresh = generate_problems(200, seed=1, levels=[1], exclude=held_out)
    assert not held_out & {p.expression for p in fresh}


def test_canonical_question_without_phrasing() -> None:
    p = generate_problem(random.Random(0), 3, phrased=False)
    assert p.question == f"Compute {p.expression}."


def test_unknown_level_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="level must be one of"):
        generate_problem(random.Random(0), 9)


def test_slipped_solution_stays_consistent_after_the_slip() -> None:
    rng = random.Random(3)
    text = PROBLEM.solution(slip_rate=1.0, rng=rng)  # every step slips
    scores = step_scores(PROBLEM, text)
    # Each step's result is off by a slip, so every step is wrong, but each next step
    # starts from the previous (wrong) result and the answer repeats the last one.
    assert scores[:-1] == [0.0, 0.0, 0.0]
    assert scores[-1] == 1.0
    assert not grade(PROBLEM, text)


def test_grade_exact() -> None:
    assert grade(PROBLEM, GOOD)
    assert grade(PROBLEM, "whatever\n#### 47")  # grading reads the answer only
    assert not grade(PROBLEM, GOOD.replace("#### 47", "#### 48"))
    assert not grade(PROBLEM, "48 + 17 = 65")  # no answer line
    assert final_answer("#### -3") == -3


def test_step_scores_of_a_correct_solution() -> None:
    assert step_scores(PROBLEM, GOOD) == [1.0, 1.0, 1.0, 1.0]


def test_step_scores_find_the_wrong_step() -> None:
    # Step 2 writes 41 instead of 42; step 3 correctly continues from 41.
    text = "48 + 17 = 65\n65 - 23 = 41\n41 + 5 = 46\n#### 46"
    assert step_scores(PROBLEM, text) == [1.0, 0.0, 1.0, 1.0]


def test_step_scores_check_operands_against_the_problem() -> None:
    # Arithmetic is right but the solver used 22 instead of the problem's 23.
    text = "48 + 17 = 65\n65 - 22 = 43\n43 + 5 = 48\n#### 48"
    assert step_scores(PROBLEM, text) == [1.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        ("", [0.0, 0.0, 0.0, 0.0]),  # empty: every step missing, no answer
        ("48 + 17 = 65", [1.0, 0.0, 0.0, 0.0]),  # truncated: two steps missing
        ("48 + 17 = 65\nfoo bar\n42 + 5 = 47\n#### 47", [1.0, 0.0, 0.0, 1.0]),  # junk line
        ("48 * 17 = 816\n#### 816", [0.0, 0.0, 0.0, 0.0]),  # unsupported operator
        ("__import__('os') = 1\n#### 1", [0.0, 0.0, 0.0, 0.0]),  # code is never evaluated
        # Text after the answer: the '####' line is then not the last line, so it counts
        # as a malformed step, the extra step scores 0 and there is no answer line.
        (GOOD + "\n47 + 1 = 48", [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]),
        ("#### 47", [0.0, 0.0, 0.0, 0.0]),  # answer without steps does not score
    ],
)
def test_step_scores_of_malformed_candidates(candidate: str, expected: list[float]) -> None:
    assert step_scores(PROBLEM, candidate) == expected


@pytest.mark.parametrize(
    ("text", "first", "terms"),
    [
        ("Compute 12 + 35 - 7.", 12, (("+", 35), ("-", 7))),
        ("What is 512+37-908?", 512, (("+", 37), ("-", 908))),
        ("48+17-23=", 48, (("+", 17), ("-", 23))),
        ("9 -4", 9, (("-", 4),)),
    ],
)
def test_parse_problem_reads_each_phrasing(text: str, first: int, terms: tuple) -> None:
    parsed = parse_problem(text)
    assert (parsed.first, parsed.terms) == (first, terms)


def test_calculator_parses_and_never_evaluates_code() -> None:
    assert calculator("12 + 35 - 7") == "40"  # 12 + 35 = 47, 47 - 7 = 40
    assert calculator(" 7 ") == "7"
    assert calculator("3-10") == "-7"
    for bad in ("__import__('os')", "2 * 3", "1 + ", ""):
        with pytest.raises(ValueError, match="expression must be integers joined by"):
            calculator(bad)


def test_json_answer_lines_are_answers() -> None:
    assert final_answer('48 + 17 = 65\n{"answer": 65}') == 65
    assert final_answer('{"total": -3}') == -3
    assert grade(Problem(first=48, terms=(("+", 17),)), '48 + 17 = 65\n{"result": 65}')
    assert step_scores(Problem(first=48, terms=(("+", 17),)), '48 + 17 = 65\n{"answer": 65}') == [1.0, 1.0]
    assert PROBLEM.solution(json_key="x").endswith('{"x": 47}')


def test_parse_problem_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="does not hold an arithmetic problem"):
        parse_problem("What is the capital of France?")


def test_slips_never_break_generation() -> None:
    # After a slip the chain may go below zero; later slips must still be drawable.
    rng = random.Random(0)
    for _ in range(3000):
        problem = generate_problem(rng, 5)
        text = problem.solution(slip_rate=1.0, rng=rng)
        assert len(step_scores(problem, text)) == len(problem.terms) + 1
