"""The planner: how many branches and how much speculation, from a measured profile.

``profile``   what this machine measured (step times, prefill, acceptance, output lengths)
``latency``   the latency model: one call's predicted latency from a profile (pure)
``accuracy``  expected accuracy of a vote over B branches (pure)
``plan``      the per-call choice of branches and the per-engine speculation schedule (pure)
``profiler``  the measurements behind a profile (needs a vLLM engine)
"""
