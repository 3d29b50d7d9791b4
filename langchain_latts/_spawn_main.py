"""What a spawned engine process runs as its main module when the user's has no file.

vLLM starts its engine core with multiprocessing's spawn method, whose child re-imports the
parent's main module before anything else. A script's main module imports this package,
which quiets vLLM's import-time warnings (:mod:`langchain_latts._quiet`) before vLLM is
imported in the child. ``python -c`` and interactive sessions have no main module to
re-import, so vLLM's import-time warnings (Triton's "doesn't include CPU backend") reached
the user from the child; :func:`langchain_latts._quiet.quiet_spawned_children` names this
module instead, and importing it applies the same policy.
"""

from langchain_latts._quiet import quiet_dependencies

quiet_dependencies()
