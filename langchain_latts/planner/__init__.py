"""The planner: how many branches and how much speculation, from a measured profile.

``profile``      what this machine measured (step times, prefill, acceptance, output lengths)
``latency``      the latency model: one call's predicted latency from a profile (pure)
``lengths``      a question's predicted output length and its spreads (pure)
``accuracy``     expected accuracy of a vote over B branches, and of one greedy answer (pure)
``risk``         expected accuracy counting the chance that branches miss the deadline (pure)
``plan``         the per-call choice of branches and the per-engine speculation schedule (pure)
``calibration``  the latency model's error, moved by what calls measured (pure)
``runtime``      the planner inside a call: which profile, reservations, the lifeline's numbers
``profiler``     the measurements behind a profile (needs a vLLM engine)
``validate``     the latency model against calls it was not fitted on (needs a vLLM engine)
``report``       the profile as tables and plots
"""
